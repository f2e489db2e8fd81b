"""Remediate handler: manual invoke with {"instance_id": ...} or {"cluster": ...}."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from eks_ca_remediator import telemetry, wiring
from eks_ca_remediator.edge import own_origin, parse
from eks_ca_remediator.logic.manual import remediate
from eks_ca_remediator.models import ManualRequest

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@telemetry.publish(metrics)
@own_origin
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse(ManualRequest, event, "manual remediation request")
    logger.append_keys(instance_id=request.instance_id, cluster=request.cluster)
    result = remediate(request, context.aws_request_id, wiring.remediator(request.account))
    metrics.add_metric(name="RemediationsStarted", unit=MetricUnit.Count, value=result["count"])
    return result
