"""The agent-wait queue: SQS messages with a per-message delay re-check a node's SSM agent."""

from __future__ import annotations

from typing import Any

from eks_ca_remediator.models import AgentWaitMessage


class AgentWaitQueue:
    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self._sqs = sqs_client
        self._url = queue_url

    def schedule(self, message: AgentWaitMessage, delay_seconds: int) -> None:
        self._sqs.send_message(
            QueueUrl=self._url,
            MessageBody=message.model_dump_json(),
            DelaySeconds=max(0, min(900, delay_seconds)),
        )
