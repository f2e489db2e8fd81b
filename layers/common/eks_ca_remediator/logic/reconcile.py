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
   MAX_REQUEUES times, then record it FAILED without a command - unless it carries a send mark
   and SSM lists a command of that send (ListCommands, by the send's comment): then it is
   recorded SENT with that command and followed like any sent attempt.

No single attempt or account stops a pass (reconcile.py): an attempt SSM does not answer for
(a GetCommandInvocation error) is looked at again later with backoff and, past its retries,
recorded TIMED_OUT "could not be reconciled"; a member account whose role cannot be assumed is
skipped for this pass, reported (log, metric, `accounts_unreachable` in the returned counts) and its
attempts' `reconcile_at` moved forward, so each later pass reaches the attempts behind them.

Every write is conditional on the attempt still being open, so a status event that lands at the
same time wins or loses cleanly: the second changes nothing and frees nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger

from eks_ca_remediator import telemetry
from eks_ca_remediator.adapters.records import RECONCILE_AT
from eks_ca_remediator.adapters.ssm import Invocation
from eks_ca_remediator.decisions import Outcome, chunks
from eks_ca_remediator.errors import (
    AgentNotRegistered,
    AttemptNotFound,
    InvocationUnreadable,
    MemberAccessDenied,
    RemediatorError,
)
from eks_ca_remediator.logic.command_status import OPEN, record_result
from eks_ca_remediator.logic.remediation import WAITING, Remediator, iso
from eks_ca_remediator.models import Status
from eks_ca_remediator.reconcile import (
    MAX_REQUEUES,
    RECHECK_MARGIN_SECONDS,
    RUNNING,
    THROTTLED,
    UNRECONCILED,
    Verdict,
    after_read_error,
    retry_at,
    without_result,
)

logger = Logger(child=True)

PASS_LIMIT = 5000  # overdue attempts looked at per pass (oldest first); the rest in the next pass
TIME_MARGIN_MS = 30_000  # no new chunk when less invocation time than this is left
CHUNK = 50  # attempts asked about, then recorded, at a time (one DescribeInstances per chunk at most)
CLOSED_BY = "reconciler"


def reconcile(remediator_for: Callable[[str | None], Remediator], remaining_ms: Callable[[], int]) -> dict[str, Any]:
    """One reconciler pass; returns what it counted (repaired = records it made final or re-queued;
    retrying = attempts SSM did not answer for, looked at again later; unreachable = attempts of
    member accounts whose role could not be assumed, `accounts_unreachable` of them)."""
    home = remediator_for(None)
    now = home.clock()
    overdue = home.records.overdue(now, PASS_LIMIT)
    counts: Counter[str] = Counter(overdue=len(overdue))
    by_account: dict[str | None, list[dict[str, Any]]] = {}
    for attempt in overdue:
        by_account.setdefault(attempt.get("account"), []).append(attempt)
    for account, attempts in by_account.items():
        try:
            remediator = remediator_for(account)
        except MemberAccessDenied as exc:
            _postpone_account(account, attempts, home, exc, counts)
            continue
        waiting = [a for a in attempts if Status(a["status"]) in WAITING]
        sent = [a for a in attempts if Status(a["status"]) not in WAITING]
        for attempt in waiting:
            _recheck_again(attempt, remediator, counts)
        _ask_ssm(sent, remediator, remaining_ms, counts)
    if counts["repaired"]:
        telemetry.count(telemetry.ATTEMPTS_RECONCILED, counts["repaired"])
    if counts["throttled"]:
        telemetry.count(telemetry.RECONCILE_THROTTLED, counts["throttled"])
    if counts["retrying"]:
        telemetry.count(telemetry.RECONCILE_RETRYING, counts["retrying"])
    if counts["accounts_unreachable"]:
        telemetry.count(telemetry.RECONCILE_ACCOUNTS_UNREACHABLE, counts["accounts_unreachable"])
    result = {"action": "reconciled", **{k: counts[k] for k in sorted(counts)}}
    logger.info("reconciler pass", **result)
    return result


def _postpone_account(
    account: str | None, attempts: list[dict[str, Any]], home: Remediator, exc: MemberAccessDenied, counts: Counter[str]
) -> None:
    """A member account whose role cannot be assumed: its attempts stay open, looked at again later
    (backoff per attempt); the pass goes on with the other accounts."""
    now = home.clock()
    counts["accounts_unreachable"] += 1
    logger.error(
        "member account unreachable: its overdue attempts are left for a later pass",
        account=account,
        attempts=len(attempts),
        error=str(exc),
    )
    for attempt in attempts:
        failures = int(attempt.get("account_errors", 0)) + 1
        updated = home.records.update_attempt(
            attempt["pk"],
            attempt["sk"],
            {
                RECONCILE_AT: retry_at(now, failures),
                "account_errors": failures,
                "reconcile_error": f"member account {account} unreachable: {exc}"[:300],
                "updated_at": iso(now),
            },
            only_if_status_in=OPEN,
        )
        if updated is not None:
            counts["unreachable"] += 1


def _recheck_again(attempt: dict[str, Any], remediator: Remediator, counts: Counter[str]) -> None:
    """A waiting attempt whose agent-wait re-check was lost: queue it again, or give up."""
    now = remediator.clock()
    requeues = int(attempt.get("requeues", 0))
    if requeues >= MAX_REQUEUES:
        sent = remediator.sent_unrecorded(attempt)
        if sent is not None and sent.get("command_id"):  # it did go out: follow it as a sent attempt
            _repaired(attempt, Status.SENT.value, f"command {sent['command_id']} found (ListCommands)", counts)
            _settle([sent], remediator, counts)
            return
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
    answers: list[tuple[dict[str, Any], Invocation | None, RemediatorError | None]] = []
    for attempt in attempts:
        command_id = attempt.get("command_id")
        if not command_id:  # (an open sent attempt always has one; a damaged record is still closed)
            answers.append((attempt, None, None))
            continue
        try:
            answers.append((attempt, remediator.run_command.invocation(command_id, attempt["pk"]), None))
        except AttemptNotFound:
            answers.append((attempt, None, None))
        except (AgentNotRegistered, InvocationUnreadable) as exc:
            answers.append((attempt, None, exc))
    undecided = [a["pk"] for a, inv, _ in answers if inv is None or inv.status in RUNNING]
    states = {i: inst.state for i, inst in remediator.ec2.instances(undecided).items()} if undecided else {}
    for attempt, invocation, error in answers:
        if error is not None:
            _after_error(attempt, error, states.get(attempt["pk"]), remediator, counts)
            continue
        updated = _record(attempt, invocation, states, remediator, counts)
        if updated is None:
            continue
        _repaired(attempt, updated["status"], updated.get("reason", ""), counts)


def _record(
    attempt: dict[str, Any],
    invocation: Invocation | None,
    states: dict[str, str],
    remediator: Remediator,
    counts: Counter[str],
) -> dict[str, Any] | None:
    """Record what SSM said of the attempt, or what its silence means; None: nothing recorded."""
    if invocation is not None and invocation.status not in RUNNING:
        updated = record_result(attempt, invocation.status, invocation, remediator, closed_by=CLOSED_BY)
    else:
        ssm_status = invocation.status if invocation else None
        now = remediator.clock()
        overdue = now - float(attempt.get(RECONCILE_AT, now))
        verdict = without_result(str(attempt.get("command_id")), ssm_status, states.get(attempt["pk"]), overdue)
        if verdict is None:
            counts["running"] += 1  # SSM says it is still running on a live instance
            return None
        updated = _record_verdict(attempt, verdict, ssm_status or "", invocation, remediator)
    if updated is None:
        counts["raced"] += 1  # a status event recorded it first: nothing changed
    return updated


def _record_verdict(
    attempt: dict[str, Any], verdict: Verdict, ssm_status: str, invocation: Invocation | None, remediator: Remediator
) -> dict[str, Any] | None:
    """Record what the reconciler concluded without a final status from SSM."""
    return record_result(
        attempt,
        ssm_status,
        invocation,
        remediator,
        closed_by=CLOSED_BY,
        verdict=Outcome(verdict.status, verdict.reason, None),
        details=verdict.details,
    )


def _after_error(
    attempt: dict[str, Any], error: RemediatorError, state: str | None, remediator: Remediator, counts: Counter[str]
) -> None:
    """SSM did not answer for this attempt: FAILED if its node is gone, else look again later
    (backoff), or, past MAX_READ_ERRORS, record that it could not be reconciled."""
    code = error.code if isinstance(error, InvocationUnreadable) else "InvalidInstanceId"
    now = remediator.clock()
    failures = int(attempt.get("read_errors", 0))
    decision = after_read_error(str(attempt.get("command_id")), code, str(error), failures, state, now)
    if isinstance(decision, Verdict):
        updated = _record_verdict(attempt, decision, "", None, remediator)
        if updated is None:
            counts["raced"] += 1
            return
        if decision.details == UNRECONCILED:
            counts["unreconciled"] += 1
        _repaired(attempt, updated["status"], updated.get("reason", ""), counts)
        return
    if code in THROTTLED:
        counts["throttled"] += 1  # throttled past botocore's adaptive retries
    counts["retrying"] += 1
    logger.warning(
        "SSM did not answer for an overdue attempt: looked at again later",
        instance_id=attempt["pk"],
        attempt=attempt["sk"],
        command_id=attempt.get("command_id"),
        error=decision.reason,
        failures=decision.failures,
        retry_in=round(decision.at - now),
    )
    remediator.records.update_attempt(
        attempt["pk"],
        attempt["sk"],
        {
            RECONCILE_AT: decision.at,
            "read_errors": decision.failures,
            "reconcile_error": decision.reason[:300],
            "updated_at": iso(now),
        },
        only_if_status_in=OPEN,
    )


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
