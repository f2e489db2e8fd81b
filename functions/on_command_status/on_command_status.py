"""OnCommandStatus handler: SSM command-invocation status events for our document."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from eks_ca_remediator import telemetry, wiring
from eks_ca_remediator.edge import own_origin, parse
from eks_ca_remediator.logic.command_status import on_command_status
from eks_ca_remediator.models import CommandInvocationStatusChange

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@telemetry.publish(metrics)
@own_origin
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    parsed = parse(CommandInvocationStatusChange, event, "SSM command status event")
    logger.append_keys(instance_id=parsed.detail.instance_id, command_id=parsed.detail.command_id)
    result = on_command_status(parsed, wiring.remediator(parsed.account))
    if result["action"] == "duplicate":
        metrics.add_metric(name="StatusEventsDeduplicated", unit=MetricUnit.Count, value=1)
    return result
