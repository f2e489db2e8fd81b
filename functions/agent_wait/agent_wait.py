"""AgentWait handler: SQS batch of nodes waiting for their SSM agent (partial batch failures)."""

import json
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext
from eks_ca_remediator import telemetry, wiring
from eks_ca_remediator.edge import own_origin, parse
from eks_ca_remediator.errors import InvalidRequest
from eks_ca_remediator.logic.agent_wait import on_agent_wait
from eks_ca_remediator.models import AgentWaitMessage

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@telemetry.publish(metrics)
@own_origin
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Parse every message; re-check the valid ones in one pass. Failed ids are redelivered by SQS
    and, after maxReceiveCount, moved to the dead-letter queue - never dropped."""
    failures: list[str] = []
    messages: list[tuple[str, AgentWaitMessage]] = []
    for record in event.get("Records", []):
        try:
            body = json.loads(record["body"])
            messages.append((record["messageId"], parse(AgentWaitMessage, body, "agent-wait message")))
        except (ValueError, KeyError, InvalidRequest) as exc:
            logger.error("unreadable agent-wait message", message_id=record.get("messageId"), error=str(exc))
            failures.append(record.get("messageId", ""))
    if messages:
        try:
            on_agent_wait([m for _, m in messages], wiring.remediator)
        except Exception:
            logger.exception("agent-wait re-check failed; SQS will redeliver", messages=len(messages))
            failures += [message_id for message_id, _ in messages]
    return {"batchItemFailures": [{"itemIdentifier": f} for f in failures]}
