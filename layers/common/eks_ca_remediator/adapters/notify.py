"""Messages to people: an SNS topic (the deployment's AlarmTopicArn, the one its alarms notify).

Used for what a person must read in words, once: a change of a cluster's CA trust before its first
wave, and a rollout's halt (logic/rollout.py). Publish limits (SNS API reference, Publish):
a Subject is ASCII without line breaks or control characters and under 100 characters; a message
is at most 256 KB. A topic encrypted with a customer managed KMS key also needs kms:GenerateDataKey*
and kms:Decrypt on that key for the publishing roles (README, Configuration).
"""

from __future__ import annotations

import re
from typing import Any

from botocore.exceptions import ClientError

from eks_ca_remediator.errors import NotificationFailed

SUBJECT_MAX = 99
MESSAGE_MAX = 200_000  # bytes; SNS allows 262,144 (leave room for the envelope)
_NOT_SUBJECT = re.compile(r"[^\x20-\x7e]")


def subject_line(text: str) -> str:
    """`text` as an SNS Subject: printable ASCII, one line, under 100 characters."""
    cleaned = _NOT_SUBJECT.sub("?", " ".join(text.split()))
    return cleaned if len(cleaned) <= SUBJECT_MAX else cleaned[: SUBJECT_MAX - 3] + "..."


def message_body(text: str) -> str:
    """`text` cut to what SNS accepts, saying so when it was cut."""
    data = text.encode()
    if len(data) <= MESSAGE_MAX:
        return text
    return data[:MESSAGE_MAX].decode(errors="ignore") + "\n[cut: the whole text is in the function's log]"


class Notifier:
    def __init__(self, sns_client: Any, topic_arn: str) -> None:
        self._sns = sns_client
        self._topic = topic_arn

    def publish(self, subject: str, message: str) -> str:
        """Publish; the MessageId. A refusal raises NotificationFailed (from the ClientError)."""
        try:
            response = self._sns.publish(
                TopicArn=self._topic, Subject=subject_line(subject), Message=message_body(message)
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "ClientError")
            raise NotificationFailed(f"SNS refused the message to {self._topic}: {code}") from exc
        return str(response["MessageId"])
