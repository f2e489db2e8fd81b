"""The organisation's member accounts (AWS Organizations), read by each sweep in central mode.

ListAccounts answers only in the organisation's management account or in a member account that
is a delegated administrator for AWS Organizations (a resource-based delegation policy that allows
it `organizations:ListAccounts`):
https://docs.aws.amazon.com/organizations/latest/APIReference/API_ListAccounts.html
https://docs.aws.amazon.com/organizations/latest/userguide/security_iam_resource-based-policy-examples.html
It is paginated (NextToken, even after an empty page), and lists suspended or closing accounts
too: only ACTIVE ones are returned here.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from eks_ca_remediator.errors import AccountListingFailed

ACTIVE = "ACTIVE"


def active_accounts(organizations: Any) -> list[str]:
    """The ids of the organisation's ACTIVE accounts, sorted; AccountListingFailed when refused."""
    accounts: set[str] = set()
    try:
        for page in organizations.get_paginator("list_accounts").paginate():
            for account in page.get("Accounts", []):
                # `State` supersedes the deprecated `Status` (both say ACTIVE of a live account)
                if (account.get("State") or account.get("Status")) == ACTIVE:
                    accounts.add(account["Id"])
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        raise AccountListingFailed(f"organizations:ListAccounts failed: {code}") from exc
    return sorted(accounts)
