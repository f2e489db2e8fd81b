"""Sweep handler: the schedule or a bundle-source change (EventBridge), and sweep jobs (SQS, one per call)."""

import json
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from eks_ca_remediator import telemetry, wiring
from eks_ca_remediator.edge import own_origin, parse
from eks_ca_remediator.errors import InvalidRequest
from eks_ca_remediator.logic.sweep import on_sweep
from eks_ca_remediator.sweeps import SweepJob, SweepTrigger

logger = Logger()
metrics = Metrics()


def _request(event: Any) -> SweepTrigger | SweepJob:
    if isinstance(event, dict) and "Records" in event:
        records = event["Records"]
        if len(records) != 1:
            raise InvalidRequest(f"sweep queue: expected 1 message per invocation (BatchSize 1), got {len(records)}")
        try:
            body = json.loads(records[0]["body"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRequest(f"sweep queue: unreadable message: {exc}") from exc
        return parse(SweepJob, body, "sweep job")
    return parse(SweepTrigger, event, "sweep trigger event")


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@telemetry.publish(metrics)
@own_origin
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """A failed job raises: SQS redelivers it and, after maxReceiveCount, moves it to the dead-letter queue."""
    request = _request(event)
    if isinstance(request, SweepJob):
        logger.append_keys(cluster=request.cluster, account=request.account, sweep_origin=request.origin)
    result = on_sweep(request, wiring.sweeper(), context.get_remaining_time_in_millis)
    if result.get("started"):
        metrics.add_metric(name="SweepRemediationsStarted", unit=MetricUnit.Count, value=result["started"])
    if result.get("action") == "gave-up":
        metrics.add_metric(name="SweepsGaveUp", unit=MetricUnit.Count, value=1)
    return result
