"""OnLaunch handler: EC2 instance `running` events from EventBridge."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from eks_ca_remediator import telemetry, wiring
from eks_ca_remediator.edge import own_origin, parse
from eks_ca_remediator.logic.launch import on_launch
from eks_ca_remediator.models import InstanceStateChange

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@telemetry.publish(metrics)
@own_origin
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    parsed = parse(InstanceStateChange, event, "EC2 state-change event")
    logger.append_keys(instance_id=parsed.detail.instance_id)
    result = on_launch(parsed, wiring.remediator(parsed.account))
    metrics.add_metric(name="LaunchEvents", unit=MetricUnit.Count, value=1)
    if result["action"] == "remediating":
        metrics.add_metric(name="RemediationsStarted", unit=MetricUnit.Count, value=len(result["records"]))
    return result
