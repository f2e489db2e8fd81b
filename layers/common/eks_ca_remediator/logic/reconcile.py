"""Reconcile: every open attempt whose result is overdue gets a final, true record.

One pass (the Reconcile function, on a schedule):
1. query the sparse open-attempts index for attempts with reconcile_at <= now (reconcile.py says
   when that is), oldest first, at most PASS_LIMIT;
2. SENT / IN_PROGRESS: ask SSM for the invocation (GetCommandInvocation, the call the status
   handler makes) and record its final status and the node's result line through the status
   handler's own code path (command_status.record_result), which releases the node's claim and
   lease. A command SSM no longer knows, or one on an instance that is gone, is recorded TIMED_OUT
   or FAILED with a reason saying so (reconcile.without_result); a command still running on a
   live instance is left alone for a later pass;
3. PENDING_AGENT: its agent-wait re-check was lost (dead-lettered): queue one again, at most
   MAX_REQUEUES times, then record it FAILED without a command.

Every write is conditional on the attempt still being open, so a status event that lands at the
same time wins or loses cleanly: the second changes nothing and frees nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from eks_ca_remediator import telemetry
from eks_ca_remediator.adapters.records import RECONCILE_AT
from eks_ca_remediator.adapters.ssm import Invocation
from eks_ca_remediator.decisions import Outcome, chunks
from eks_ca_remediator.errors import AttemptNotFound
from eks_ca_remediator.logic.command_status import record_result
from eks_ca_remediator.logic.remediation import WAITING, Remediator, iso
from eks_ca_remediator.models import Status
from eks_ca_remediator.reconcile import MAX_REQUEUES, RECHECK_MARGIN_SECONDS, RUNNING, without_result

logger = Logger(child=True)

PASS_LIMIT = 5000  # overdue attempts looked at per pass (oldest first); the rest in the next pass
TIME_MARGIN_MS = 30_000  # no new chunk when less invocation time than this is left
CHUNK = 50  # attempts asked about, then recorded, at a time (one DescribeInstances per chunk at most)
THROTTLED = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"})
CLOSED_BY = "reconciler"


def reconcile(remediator_for: Callable[[str | None], Remediator], remaining_ms: Callable[[], int]) -> dict[str, Any]:
    """One reconciler pass; returns what it counted (repaired = records it made final or re-queued)."""
    home = remediator_for(None)
    now = home.clock()
    overdue = home.records.overdue(now, PASS_LIMIT)
    counts: Counter[str] = Counter(overdue=len(overdue))
    by_account: dict[str | None, list[dict[str, Any]]] = {}
    for attempt in overdue:
        by_account.setdefault(attempt.get("account"), []).append(attempt)
    for account, attempts in by_account.items():
        remediator = remediator_for(account)
        waiting = [a for a in attempts if Status(a["status"]) in WAITING]
        sent = [a for a in attempts if Status(a["status"]) not in WAITING]
        for attempt in waiting:
            _recheck_again(attempt, remediator, counts)
        _ask_ssm(sent, remediator, remaining_ms, counts)
    if counts["repaired"]:
        telemetry.count(telemetry.ATTEMPTS_RECONCILED, counts["repaired"])
    if counts["throttled"]:
        telemetry.count(telemetry.RECONCILE_THROTTLED, counts["throttled"])
    result = {"action": "reconciled", **{k: counts[k] for k in sorted(counts)}}
    logger.info("reconciler pass", **result)
    return result


def _recheck_again(attempt: dict[str, Any], remediator: Remediator, counts: Counter[str]) -> None:
    """A waiting attempt whose agent-wait re-check was lost: queue it again, or give up."""
    now = remediator.clock()
    requeues = int(attempt.get("requeues", 0))
    if requeues >= MAX_REQUEUES:
        reason = (
            f"no agent-wait re-check ran for this attempt after {requeues} re-queues "
            "(its messages were dead-lettered): nothing was sent"
        )
        if remediator.fail_unsent(attempt, reason, closed_by=CLOSED_BY):
            _repaired(attempt, Status.FAILED.value, reason, counts)
        return
    updated = remediator.records.update_attempt(
        attempt["pk"],
        attempt["sk"],
        {"requeues": requeues + 1, RECONCILE_AT: now + RECHECK_MARGIN_SECONDS, "updated_at": iso(now)},
        only_if_status_in=WAITING,
        only_if_unchanged={"requeues": attempt.get("requeues"), "command_id": None},
    )
    if updated is None:
        return  # moved on since the index was read (sent, or finished)
    remediator.wait_again(updated)
    _repaired(attempt, Status.PENDING_AGENT.value, "agent-wait re-check lost: queued again", counts)


def _ask_ssm(
    attempts: list[dict[str, Any]], remediator: Remediator, remaining_ms: Callable[[], int], counts: Counter[str]
) -> None:
    """Ask SSM about each overdue sent attempt and record what it says, or what its silence means;
    in chunks, so a pass that runs short of time leaves whole chunks to the next pass."""
    for chunk in chunks(attempts, CHUNK):
        if remaining_ms() < TIME_MARGIN_MS:
            counts["deferred"] += len(chunk)  # out of time: the next pass takes them
            continue
        _settle(chunk, remediator, counts)


def _settle(attempts: list[dict[str, Any]], remediator: Remediator, counts: Counter[str]) -> None:
    answers: list[tuple[dict[str, Any], Invocation | None]] = []
    for attempt in attempts:
        command_id = attempt.get("command_id")
        if not command_id:  # (an open sent attempt always has one; a damaged record is still closed)
            answers.append((attempt, None))
            continue
        try:
            answers.append((attempt, remediator.run_command.invocation(command_id, attempt["pk"])))
        except AttemptNotFound:
            answers.append((attempt, None))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in THROTTLED:
                raise
            # throttled past botocore's adaptive retries: left open for the next pass, not lost
            counts["throttled"] += 1
            logger.warning("GetCommandInvocation throttled: attempt left for the next pass", instance_id=attempt["pk"])
    undecided = [a["pk"] for a, inv in answers if inv is None or inv.status in RUNNING]
    states = {i: inst.state for i, inst in remediator.ec2.instances(undecided).items()} if undecided else {}
    now = remediator.clock()
    for attempt, invocation in answers:
        if invocation is not None and invocation.status not in RUNNING:
            updated = record_result(attempt, invocation.status, invocation, remediator, closed_by=CLOSED_BY)
        else:
            ssm_status = invocation.status if invocation else None
            overdue = now - float(attempt.get(RECONCILE_AT, now))
            verdict = without_result(str(attempt.get("command_id")), ssm_status, states.get(attempt["pk"]), overdue)
            if verdict is None:
                counts["running"] += 1  # SSM says it is still running on a live instance
                continue
            updated = record_result(
                attempt,
                ssm_status or "",
                invocation,
                remediator,
                closed_by=CLOSED_BY,
                verdict=Outcome(verdict.status, verdict.reason, None),
                details=verdict.details,
            )
        if updated is None:
            counts["raced"] += 1  # a status event recorded it first: nothing changed
            continue
        _repaired(attempt, updated["status"], updated.get("reason", ""), counts)


def _repaired(attempt: dict[str, Any], status: str, reason: str, counts: Counter[str]) -> None:
    counts["repaired"] += 1
    counts[f"to_{status}"] += 1
    logger.warning(
        "reconciled an open attempt whose result never arrived",
        instance_id=attempt["pk"],
        attempt=attempt["sk"],
        command_id=attempt.get("command_id"),
        was=attempt["status"],
        now_status=status,
        reason=reason,
    )
