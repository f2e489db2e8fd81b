"""Metric names, and a small in-process tally that handlers publish as CloudWatch EMF.

The flow code counts where the fact is known (a SendCommand went out, a record reached a final
status, a trigger was a duplicate) without importing Powertools; each handler publishes the tally
through its own Powertools `Metrics` with `@telemetry.publish(metrics)` under `@metrics.log_metrics`.
All metrics go to the POWERTOOLS_METRICS_NAMESPACE (EksCaRemediator) with the single `service`
dimension, so dashboards and alarms in template.yaml address one metric per name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

# ------------------------------------------------------------------ metric names (template.yaml uses them)
REMEDIATIONS_SENT = "RemediationsSent"  # instances a SendCommand of our document went to
REMEDIATIONS_SUCCEEDED = "RemediationsSucceeded"
REMEDIATIONS_FAILED = "RemediationsFailed"  # FAILED records: node failure, agent deadline, rejected send
REMEDIATIONS_TIMED_OUT = "RemediationsTimedOut"
REMEDIATIONS_SKIPPED = "RemediationsSkipped"  # another remediation held the node
REMEDIATIONS_DRY_RUN = "RemediationsDryRun"
REMEDIATIONS_NOT_REMEDIABLE = "RemediationsNotRemediable"
# Nodes whose SSM agent was not Online by the agent-wait deadline (recorded NOT_REMEDIABLE, node_kind
# no-ssm-agent): an instance profile without AmazonSSMManagedInstanceCore, or no route to SSM.
NODES_WITHOUT_SSM_AGENT = "NodesWithoutSsmAgent"
REMEDIATIONS_DEDUPLICATED = "RemediationsDeduplicated"  # a redelivered trigger found its attempt already there
AGENT_WAIT_SECONDS = "AgentWaitSeconds"  # attempt created -> SendCommand (0 when the agent was Online)
TIME_TO_SUCCEEDED_SECONDS = "TimeToSucceededSeconds"  # trigger time (record created_at) -> SUCCEEDED
# Count 1 in every invocation in which the circuit breaker is open and refuses to send (issue 5).
CIRCUIT_BREAKER_OPEN = "CircuitBreakerOpen"
# CAs of a bundle that expire within CA_EXPIRY_WARNING_DAYS, counted whenever a plan is built.
CA_EXPIRING_SOON = "CaExpiringSoon"
ROLLOUT_HALTED = "RolloutHalted"  # a bundle's rollout halted by a failure (once per rollout)
ROLLOUT_COMPLETED = "RolloutCompleted"
NOTIFICATIONS_FAILED = "NotificationsFailed"  # SNS refused a message in words (the alarm still fires)
TRUST_CHANGED = "TrustChanged"  # CAs a cluster's bundle gains or loses, announced before its first wave
# Open attempts the reconciler made final (or whose lost agent-wait re-check it queued again):
# each is a status event or re-check that never arrived. Alarm: non-zero every hour for a day.
ATTEMPTS_RECONCILED = "AttemptsReconciled"
RECONCILE_THROTTLED = "ReconcileThrottled"  # GetCommandInvocation throttled past retries (next pass)
# Overdue attempts SSM did not answer for (GetCommandInvocation error): looked at again with backoff.
RECONCILE_RETRYING = "ReconcileRetrying"
# Member accounts whose role the reconciler could not assume in a pass (their attempts wait).
RECONCILE_ACCOUNTS_UNREACHABLE = "ReconcileAccountsUnreachable"
# Central mode: member accounts whose role a sweep could not assume (skipped by that sweep), and
# sweeps that could not list the organisation's accounts (only the deployment's own was swept).
SWEEP_ACCOUNTS_UNREACHABLE = "SweepAccountsUnreachable"
SWEEP_ACCOUNT_LISTING_FAILED = "SweepAccountListingFailed"

STATUS_METRICS = {
    "SUCCEEDED": REMEDIATIONS_SUCCEEDED,
    "FAILED": REMEDIATIONS_FAILED,
    "TIMED_OUT": REMEDIATIONS_TIMED_OUT,
    "SKIPPED": REMEDIATIONS_SKIPPED,
    "DRY_RUN": REMEDIATIONS_DRY_RUN,
    "NOT_REMEDIABLE": REMEDIATIONS_NOT_REMEDIABLE,
}

MAX_VALUES = 100  # EMF: at most 100 values per metric in one document

_counts: dict[str, float] = {}
_seconds: dict[str, list[float]] = {}


class MetricsSink(Protocol):
    def add_metric(self, name: str, unit: Any, value: float) -> None: ...


def count(name: str, value: float = 1) -> None:
    _counts[name] = _counts.get(name, 0) + value


def seconds(name: str, value: float) -> None:
    values = _seconds.setdefault(name, [])
    if len(values) < MAX_VALUES:
        values.append(max(0.0, round(value, 3)))


def status_reached(status: str) -> None:
    """A record reached a final status: count it under its metric (statuses without one are not counted)."""
    name = STATUS_METRICS.get(status)
    if name:
        count(name)


def elapsed(start_iso: str | None, end_iso: str | None) -> float | None:
    """Seconds between two record timestamps (ISO 8601, as the records store them), or None."""
    try:
        return (datetime.fromisoformat(str(end_iso)) - datetime.fromisoformat(str(start_iso))).total_seconds()
    except ValueError:
        return None


def drain() -> list[tuple[str, str, float]]:
    """Everything tallied since the last drain, as (name, unit, value); the tally is emptied."""
    out = [(name, "Count", value) for name, value in _counts.items()]
    out += [(name, "Seconds", value) for name, values in _seconds.items() for value in values]
    _counts.clear()
    _seconds.clear()
    return out


def publish(metrics: MetricsSink) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a handler (inside `@metrics.log_metrics`): what it tallies is added to `metrics`, also when it raises."""

    def decorate(handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            drain()  # leftovers of code run outside a handler are not this invocation's
            try:
                return handler(*args, **kwargs)
            finally:
                for name, unit, value in drain():
                    metrics.add_metric(name=name, unit=unit, value=value)

        return wrapper

    return decorate
