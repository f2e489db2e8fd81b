"""The organisation's accounts a central sweep goes to (adapters/organizations.py)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from eks_ca_remediator.adapters.organizations import active_accounts
from eks_ca_remediator.errors import AccountListingFailed


class Pages:
    """ListAccounts as its paginator answers: pages (one of them empty, as the API may send)."""

    def __init__(self, pages: list[list[dict[str, Any]]], error: str = "") -> None:
        self.pages, self.error = pages, error

    def get_paginator(self, name: str) -> Pages:
        assert name == "list_accounts"
        return self

    def paginate(self) -> Any:
        for page in self.pages:
            yield {"Accounts": page}
        if self.error:
            raise ClientError({"Error": {"Code": self.error, "Message": "no"}}, "ListAccounts")


def test_every_page_is_read_and_only_active_accounts_are_kept():
    pages = [
        [{"Id": "333333333333", "State": "ACTIVE"}, {"Id": "444444444444", "State": "SUSPENDED"}],
        [],
        [{"Id": "111111111111", "Status": "ACTIVE"}, {"Id": "555555555555", "State": "PENDING_CLOSURE"}],
    ]
    assert active_accounts(Pages(pages)) == ["111111111111", "333333333333"]


def test_a_refused_listing_is_one_clear_error():
    with pytest.raises(AccountListingFailed, match="organizations:ListAccounts failed: AccessDeniedException"):
        active_accounts(Pages([[{"Id": "111111111111", "State": "ACTIVE"}]], error="AccessDeniedException"))
