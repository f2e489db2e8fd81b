"""SQS queues of pydantic messages, each with its own delay (0..900 s).

The agent-wait queue re-checks a node's SSM agent; the sweep queue carries sweep jobs and
their continuations.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class DelayQueue:
    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self._sqs = sqs_client
        self._url = queue_url

    def schedule(self, message: BaseModel, delay_seconds: int) -> None:
        self._sqs.send_message(
            QueueUrl=self._url,
            MessageBody=message.model_dump_json(),
            DelaySeconds=max(0, min(900, delay_seconds)),
        )


AgentWaitQueue = DelayQueue
