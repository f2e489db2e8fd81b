"""SNS messages: a Subject SNS accepts (ASCII, one line, under 100 characters) and a message under
its 256 KB limit (SNS API reference, Publish), however long the cluster names or CA lists."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from eks_ca_remediator.adapters.notify import SUBJECT_MAX, Notifier, message_body, subject_line
from eks_ca_remediator.errors import NotificationFailed


def test_a_subject_is_one_printable_ascii_line_under_100_characters():
    subject = subject_line("eks-ca-remediator: CA trust of cluster prod-ä\nchanges: " + "x" * 200)
    assert len(subject) <= SUBJECT_MAX < 100
    assert subject.isascii()
    assert subject.isprintable()
    assert subject.endswith("...")
    assert subject_line("rollout halted in cluster prod-a (wave 1)") == "rollout halted in cluster prod-a (wave 1)"


def test_a_message_over_the_limit_is_cut_and_says_so():
    assert message_body("short") == "short"
    long = "- CA CN=x sha256 " + "f" * 64 + "\n"
    cut = message_body(long * 10_000)
    assert len(cut.encode()) < 262_144
    assert cut.endswith("[cut: the whole text is in the function's log]")


class RefusingSns:
    def publish(self, **_: Any) -> dict[str, Any]:
        raise ClientError({"Error": {"Code": "AuthorizationError", "Message": "no"}}, "Publish")


def test_a_refusal_is_a_domain_error_raised_from_the_client_error():
    with pytest.raises(NotificationFailed, match="AuthorizationError") as raised:
        Notifier(RefusingSns(), "arn:aws:sns:us-east-1:123456789012:ops").publish("s", "m")
    assert isinstance(raised.value.__cause__, ClientError)
