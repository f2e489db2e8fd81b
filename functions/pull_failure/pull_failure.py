"""PullFailure handler: CloudWatch Logs subscription payloads with image pulls failing on x509.

An undecodable payload (not base64, not gzip, truncated, not the subscription JSON) is logged as
an error and raised: Lambda retries the asynchronous invocation twice, then sends it to the
dead-letter queue, where the payload stays for inspection. Nothing is sent to any node for it.
"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from eks_ca_remediator import wiring
from eks_ca_remediator.edge import own_origin
from eks_ca_remediator.errors import InvalidRequest
from eks_ca_remediator.logic.pull_failure import on_pull_failures
from eks_ca_remediator.pull_failures import decode_subscription

logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@own_origin
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        batch = decode_subscription(event)
    except InvalidRequest as exc:
        logger.error("undecodable CloudWatch Logs payload: sent to the dead-letter queue after retries", error=str(exc))
        metrics.add_metric(name="UndecodablePayloads", unit=MetricUnit.Count, value=1)
        raise
    logger.append_keys(log_group=batch.log_group, log_stream=batch.log_stream)
    result = on_pull_failures(batch, wiring.remediator())
    metrics.add_metric(name="PullFailureLines", unit=MetricUnit.Count, value=result.get("pull_failures", 0))
    metrics.add_metric(name="PullFailureNodes", unit=MetricUnit.Count, value=result.get("nodes", 0))
    return result
