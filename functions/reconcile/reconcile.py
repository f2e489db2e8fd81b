"""Reconcile handler: the schedule (EventBridge) runs one pass over the overdue open attempts."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext
from eks_ca_remediator import telemetry, wiring
from eks_ca_remediator.edge import own_origin, parse
from eks_ca_remediator.logic.reconcile import reconcile
from eks_ca_remediator.models import ScheduledEvent

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@telemetry.publish(metrics)
@own_origin
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """A failed pass raises: EventBridge/Lambda retry it, then dead-letter it; the next scheduled
    pass finds the same overdue attempts anyway (the index is the work list)."""
    parse(ScheduledEvent, event, "reconciler schedule event")
    return reconcile(wiring.remediator, context.get_remaining_time_in_millis)
