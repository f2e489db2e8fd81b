"""PullFailure handler: image pulls failing with x509, from this account's node logs (a CloudWatch
Logs subscription payload) or, in central mode, a member account's (its forwarder's event on the
central bus, docs/scale.md).

An undecodable payload (not base64, not gzip, truncated, not the subscription JSON, or a member
event that does not parse) is logged as an error and raised: Lambda retries the asynchronous
invocation twice, then sends it to the dead-letter queue, where the payload stays for inspection.
Nothing is sent to any node for it.
"""

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from eks_ca_remediator import wiring
from eks_ca_remediator.edge import own_origin, parse
from eks_ca_remediator.errors import InvalidRequest
from eks_ca_remediator.logic.pull_failure import on_pull_failures
from eks_ca_remediator.models import MemberPullFailures
from eks_ca_remediator.pull_failures import LogBatch, decode_subscription

logger = Logger()
metrics = Metrics()


def _is_member_event(event: Any) -> bool:
    return isinstance(event, dict) and "detail-type" in event


def payload(event: Any) -> tuple[str | None, LogBatch]:
    """(account whose nodes logged the lines - None for our own -, the lines). A member's lines
    come in an EventBridge event: its account is the envelope's `account`, which EventBridge sets
    to the account that put it (the detail cannot name another); @own_origin has already refused
    another region, and another account outside central mode."""
    if _is_member_event(event):
        member = parse(MemberPullFailures, event, "member pull failures event")
        logs = member.detail
        messages = tuple(e.message for e in logs.log_events)
        return member.account, LogBatch("DATA_MESSAGE", logs.log_group, logs.log_stream, messages)
    return None, decode_subscription(event)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@own_origin
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        account, batch = payload(event)
    except InvalidRequest as exc:
        what = "member pull-failure event" if _is_member_event(event) else "CloudWatch Logs payload"
        logger.error(f"undecodable {what}: sent to the dead-letter queue after retries", error=str(exc))
        metrics.add_metric(name="UndecodablePayloads", unit=MetricUnit.Count, value=1)
        raise
    logger.append_keys(log_group=batch.log_group, log_stream=batch.log_stream, account=account)
    result = on_pull_failures(batch, wiring.remediator(account))
    metrics.add_metric(name="PullFailureLines", unit=MetricUnit.Count, value=result.get("pull_failures", 0))
    metrics.add_metric(name="PullFailureNodes", unit=MetricUnit.Count, value=result.get("nodes", 0))
    return result
