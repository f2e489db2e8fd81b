"""OnCommandStatus: an invocation of our document changed status; record what the node reported."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from eks_ca_remediator import telemetry
from eks_ca_remediator.adapters.records import RECONCILE_AT
from eks_ca_remediator.adapters.ssm import Invocation
from eks_ca_remediator.decisions import Outcome, outcome_of, record_status_for, tail
from eks_ca_remediator.errors import AttemptNotFound
from eks_ca_remediator.logic.remediation import Remediator, iso
from eks_ca_remediator.logic.rollout import on_result
from eks_ca_remediator.models import ClusterRef, CommandInvocationStatusChange, Status
from eks_ca_remediator.reconcile import OUTPUT_WAIT_SECONDS, UNRECONCILED, output_pending
from eks_ca_remediator.safety import COOLDOWN_AFTER, breaker_effect

logger = Logger(child=True)
OPEN = (Status.PENDING_AGENT, Status.SENT, Status.IN_PROGRESS)
# (UNRECONCILED: the reconciler could not get the result from SSM - says nothing of the node)
NOT_THE_NODES_FAULT = frozenset({"Terminated", "Undeliverable", "DeliveryTimedOut", UNRECONCILED})


def _count_for_breaker(record: dict[str, Any], status: Status, now: float, remediator: Remediator) -> None:
    """A final result moves its cluster's circuit breaker (safety.py)."""
    effect = breaker_effect(status)
    if effect is None or not record.get("cluster") or record.get("ssm_status_details") in NOT_THE_NODES_FAULT:
        return  # a node terminated or unreachable mid-command says nothing about the remediation
    cluster = ClusterRef.of_record(record)  # (account, region, name): that account's breaker
    if effect == "success":
        remediator.records.breaker_success(cluster)
        return
    settings = remediator.settings
    failures, opened = remediator.records.breaker_failure(
        cluster, now, settings.breaker_failure_threshold, settings.breaker_open_seconds
    )
    if opened:
        telemetry.count(telemetry.CIRCUIT_BREAKER_OPEN)
        logger.error(
            "circuit breaker opened: automatic remediations of the cluster are paused",
            cluster=cluster.key,
            consecutive_failures=failures,
            open_seconds=settings.breaker_open_seconds,
        )


def on_command_status(event: CommandInvocationStatusChange, remediator: Remediator) -> dict[str, Any]:
    detail = event.detail
    # in a member account our document is the shared one, run by its ARN (central mode)
    if detail.document_name not in {remediator.settings.document_name, remediator.run_command.document_name}:
        return {"action": "ignored", "reason": f"document {detail.document_name} is not ours"}
    attempt = remediator.records.find_by_command(detail.instance_id, detail.command_id)
    if attempt is None:
        # The status event can overtake our own record of the send: raising makes Lambda retry
        # (and, past its retries, the event lands in the dead-letter queue).
        raise AttemptNotFound(f"no attempt records command {detail.command_id} on {detail.instance_id} (yet)")
    now = remediator.clock()
    status = record_status_for(detail.status)
    if not status.terminal:
        updated = remediator.records.update_attempt(
            attempt["pk"],
            attempt["sk"],
            {"status": status.value, "updated_at": iso(now)},
            only_if_status_in=(Status.SENT,),
        )
        return {"action": "progress" if updated else "stale", "status": status.value}
    try:
        invocation = remediator.run_command.invocation(detail.command_id, detail.instance_id)
    except AttemptNotFound:
        invocation = None
    if invocation is None or output_pending(
        invocation.status, invocation.status_details, invocation.stdout, invocation.stderr, invocation.step_output
    ):
        return _await_output(attempt, detail.status, remediator, now)
    updated = record_result(attempt, detail.status, invocation, remediator, closed_by="status-event")
    if updated is None:
        logger.info("duplicate terminal status event", command_id=detail.command_id, instance_id=detail.instance_id)
        return {"action": "duplicate", "status": attempt["status"]}
    logger.info(
        "attempt finished",
        command_id=detail.command_id,
        instance_id=detail.instance_id,
        status=updated["status"],
    )
    return {"action": "recorded", "record": updated}


def _await_output(attempt: dict[str, Any], status: str, remediator: Remediator, now: float) -> dict[str, Any]:
    """A terminal status event before SSM has the invocation's output: nothing is recorded from
    it; the attempt stays open and the reconciler asks SSM again from OUTPUT_WAIT_SECONDS on."""
    updated = remediator.records.update_attempt(
        attempt["pk"],
        attempt["sk"],
        {RECONCILE_AT: now + OUTPUT_WAIT_SECONDS, "updated_at": iso(now)},
        only_if_status_in=OPEN,
    )
    if updated is None:
        return {"action": "duplicate", "status": attempt["status"]}
    logger.info(
        "status event before SSM has the output: left to the reconciler",
        instance_id=attempt["pk"],
        command_id=attempt.get("command_id"),
        event_status=status,
    )
    return {"action": "deferred", "status": status}


def record_result(
    attempt: dict[str, Any],
    ssm_status: str,
    invocation: Invocation | None,
    remediator: Remediator,
    closed_by: str,
    verdict: Outcome | None = None,
    details: str | None = None,
) -> dict[str, Any] | None:
    """Record the final result of a sent attempt - from a status event, or from the reconciler
    asking SSM - and let the node go. SSM's status and the node's result line decide it
    (decisions.outcome_of), unless `verdict` says what to record (no result from SSM at all).

    The write is conditional on the attempt still being open: of a status event and the
    reconciler (or two deliveries of one event), the second changes nothing and returns None.
    The node's claim and lease are let go either way (Remediator.let_go frees only what this
    attempt still holds), so a first handling that died half-way is completed by the second."""
    now = remediator.clock()
    stdout = (invocation.stdout or invocation.step_output) if invocation else ""
    stderr = invocation.stderr if invocation else ""
    if details is None:
        details = invocation.status_details if invocation else ""
    outcome = verdict or outcome_of(ssm_status, details, stdout, bool(attempt.get("dry_run")))
    fields: dict[str, Any] = {
        "status": outcome.status.value,
        "reason": outcome.reason,
        "ssm_status": ssm_status,
        "ssm_status_details": details,
        "node_result": outcome.result.model_dump() if outcome.result else None,
        "restarted": outcome.result.restarted if outcome.result else None,
        "verification_level": outcome.result.verification_level if outcome.result else None,
        "stdout_tail": tail(stdout),
        "stderr_tail": tail(stderr),
        "completed_at": iso(now),
        "updated_at": iso(now),
        "closed_by": closed_by,
    } | ({"node_kind": outcome.node_kind.value} if outcome.node_kind else {})
    updated = remediator.records.update_attempt(attempt["pk"], attempt["sk"], fields, only_if_status_in=OPEN)
    cools = updated is not None and outcome.status in COOLDOWN_AFTER  # the node's cooldown starts now
    remediator.let_go(attempt, finished_at=now if cools else None)
    if updated is None:
        return None
    telemetry.status_reached(outcome.status.value)
    _count_for_breaker(updated, outcome.status, now, remediator)
    on_result(updated, outcome.status, remediator, NOT_THE_NODES_FAULT)  # a rollout's halt or next pass
    if outcome.status is Status.SUCCEEDED:
        took = telemetry.elapsed(attempt.get("created_at"), fields["completed_at"])
        if took is not None:
            telemetry.seconds(telemetry.TIME_TO_SUCCEEDED_SECONDS, took)
    return updated
