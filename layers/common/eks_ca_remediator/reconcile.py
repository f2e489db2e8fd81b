"""Reconciling open attempts (pure: no I/O, no clock reads): when an attempt's result is overdue,
and what SSM's answer means for it.

An attempt is open while it is PENDING_AGENT, SENT or IN_PROGRESS. Its record becomes final when
SSM's "EC2 Command Invocation Status-change Notification" reaches OnCommandStatus - but AWS
services send events to EventBridge on a best-effort basis, "in some rare cases an event might not
be delivered" (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-service-event-delivery-level.html),
and a rule's target can be throttled or dead-lettered (.../userguide/rule-dlq.html). Every open attempt therefore carries `reconcile_at`: the time after which its
result is overdue, and the reconciler asks SSM for the truth instead.

- SENT / IN_PROGRESS: SendCommand's delivery timeout (TimeoutSeconds = COMMAND_TIMEOUT_SECONDS)
  plus the document step's execution timeout plus RESULT_MARGIN_SECONDS after the send. By then
  SSM has ended the invocation itself, so a still-running one is left alone (a later pass looks
  again).
- PENDING_AGENT: its agent-wait re-checks end by the agent-wait deadline (every re-check delay is
  capped by the time left); RECHECK_MARGIN_SECONDS after it, the re-check is taken as lost (its
  message dead-lettered) and one is queued again, at most MAX_REQUEUES times.

No single attempt or account stops a pass. When SSM does not answer GetCommandInvocation for an
attempt (after_read_error: InternalServerError, InvalidPluginName, InvalidInstanceId on a live
instance, AccessDenied, throttling - botocore's SSM model and the API reference list its errors),
its `reconcile_at` moves forward with a capped backoff (retry_at) and the pass goes on; after
MAX_READ_ERRORS such answers (throttling is not counted: it says nothing about the attempt) it is
recorded TIMED_OUT with a reason starting "could not be reconciled", status details UNRECONCILED
(not the node's fault: the breaker ignores it). Never SUCCEEDED: the node's result is unknown. A
member account whose role cannot be assumed has its attempts' `reconcile_at` moved forward the
same way (they stay open, never given up: the role can be fixed).
"""

from __future__ import annotations

from dataclasses import dataclass

from eks_ca_remediator.models import Status

# timeoutSeconds of the document's step (template.yaml, RemediationDocument mainSteps[0].inputs);
# a test reads the template and fails when they drift.
EXECUTION_TIMEOUT_SECONDS = 900
RESULT_MARGIN_SECONDS = 300
RECHECK_MARGIN_SECONDS = 900
MAX_REQUEUES = 3
# Instance states in which the node will never report (EC2 lifecycle; absent from EC2 = gone too).
GONE_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})
# SSM invocation statuses that are not final yet (Cancelling ends as Cancelled).
RUNNING = frozenset({"Pending", "InProgress", "Delayed", "Cancelling"})
# An attempt SSM does not answer for: retried after RETRY_BASE_SECONDS, doubling, at most
# RETRY_CAP_SECONDS apart; recorded TIMED_OUT ("could not be reconciled") at the MAX_READ_ERRORS-th.
RETRY_BASE_SECONDS = 300
RETRY_CAP_SECONDS = 3600
MAX_READ_ERRORS = 5
# A terminal status event that came before SSM had the node's output: the reconciler looks after this.
OUTPUT_WAIT_SECONDS = 60
UNRECONCILED = "Unreconciled"  # ssm_status_details of an attempt the reconciler gave up on
THROTTLED = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"})


def result_due(sent_at: float, delivery_timeout: int) -> float:
    """When a sent command's result is overdue: delivery + execution timeouts + a margin."""
    return sent_at + max(30, delivery_timeout) + EXECUTION_TIMEOUT_SECONDS + RESULT_MARGIN_SECONDS


def recheck_due(agent_wait_deadline: float) -> float:
    """When a waiting attempt's agent-wait re-check is taken as lost."""
    return agent_wait_deadline + RECHECK_MARGIN_SECONDS


@dataclass(frozen=True)
class Verdict:
    """What to record for an overdue sent attempt when SSM has no final status to give."""

    status: Status
    reason: str
    details: str  # recorded as ssm_status_details ("Terminated": not the node's fault, breaker.py)


def without_result(
    command_id: str, ssm_status: str | None, instance_state: str | None, overdue_seconds: float
) -> Verdict | None:
    """An overdue attempt whose invocation SSM does not know (`ssm_status` None) or reports still
    running: FAILED when the instance is gone (absent from EC2, or `instance_state` in GONE_STATES),
    TIMED_OUT when SSM no longer knows the command of a live instance, None (leave it alone) for a
    command still running on a live instance."""
    gone = instance_state is None or instance_state in GONE_STATES
    state = instance_state or "gone from EC2"
    if gone:
        seen = f"SSM reports the invocation {ssm_status}" if ssm_status else "SSM has no invocation of it"
        return Verdict(
            Status.FAILED,
            f"instance is {state}: no status event arrived for command {command_id} and {seen}",
            "Terminated",
        )
    if ssm_status is None:
        return Verdict(
            Status.TIMED_OUT,
            f"no status event arrived for command {command_id} and SSM no longer knows it on this instance "
            f"({overdue_seconds:.0f} s past the time its result was due)",
            "",
        )
    return None


def retry_at(now: float, failures: int) -> float:
    """When to look again at an attempt after its `failures`-th failed look (1, 2, ...)."""
    return now + min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2 ** max(0, failures - 1))


@dataclass(frozen=True)
class Retry:
    """Look at the attempt again at `at`; `failures` counted so far (kept on the record)."""

    at: float
    failures: int
    reason: str


def after_read_error(
    command_id: str, code: str, message: str, failures: int, instance_state: str | None, now: float
) -> Verdict | Retry:
    """SSM answered GetCommandInvocation for an overdue attempt with error `code` (`failures`: such
    answers before this one). The node is gone (absent from EC2, or in GONE_STATES): FAILED, as
    without_result says. Else retry with backoff; the MAX_READ_ERRORS-th counted error gives up:
    TIMED_OUT "could not be reconciled". Throttling is retried without being counted."""
    if instance_state is None or instance_state in GONE_STATES:
        verdict = without_result(command_id, None, instance_state, 0)
        assert verdict is not None
        return verdict
    said = message or f"GetCommandInvocation failed: {code}"
    if code in THROTTLED:
        return Retry(now + RETRY_BASE_SECONDS, failures, said)
    failures += 1
    if failures >= MAX_READ_ERRORS:
        return Verdict(
            Status.TIMED_OUT,
            f"could not be reconciled: SSM did not give the result of command {command_id} "
            f"{failures} times (the last: {said}); the node's result is unknown",
            UNRECONCILED,
        )
    return Retry(retry_at(now, failures), failures, said)


def output_pending(status: str | None, details: str, stdout: str, stderr: str, step_output: str = "") -> bool:
    """Whether GetCommandInvocation, asked after a terminal status event, does not have the
    invocation's output yet: it does not know the invocation (`status` None), still reports it
    running, or reports a run of the script (StatusDetails Success or Failed) with no output at
    all - our script prints its result line on every run. An invocation that ended without running
    it (Undeliverable, Terminated, DeliveryTimedOut, Cancelled, TimedOut) has nothing to wait for,
    nor has a step the agent skipped (its words are the step's Output: `step_output`)."""
    if not status or status in RUNNING:
        return True
    written = stdout.strip() or stderr.strip() or step_output.strip()
    return details in ("Success", "Failed") and not written
