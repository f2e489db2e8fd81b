"""When an open attempt's result is overdue, and what SSM's silence means for it (reconcile.py)."""

from __future__ import annotations

import pytest
from eks_ca_remediator.models import Status
from eks_ca_remediator.reconcile import (
    EXECUTION_TIMEOUT_SECONDS,
    RECHECK_MARGIN_SECONDS,
    RESULT_MARGIN_SECONDS,
    recheck_due,
    result_due,
    without_result,
)

CMD = "0b2a6f4e-1c3d-4e5f-8a9b-0c1d2e3f4a5b"


def test_a_sent_result_is_due_after_delivery_and_execution_timeouts_and_a_margin():
    assert result_due(1000.0, 600) == 1000 + 600 + EXECUTION_TIMEOUT_SECONDS + RESULT_MARGIN_SECONDS == 2800
    assert result_due(0.0, 5) == 30 + EXECUTION_TIMEOUT_SECONDS + RESULT_MARGIN_SECONDS, "SSM's minimum is 30 s"


def test_a_lost_recheck_is_due_a_margin_after_the_agent_wait_deadline():
    assert recheck_due(5000.0) == 5000 + RECHECK_MARGIN_SECONDS


@pytest.mark.parametrize("state", ["running", "pending"])
def test_a_command_still_running_on_a_live_instance_is_left_alone(state):
    assert without_result(CMD, "InProgress", state, 60) is None
    assert without_result(CMD, "Pending", state, 60) is None


def test_a_command_ssm_forgot_on_a_live_instance_is_timed_out_with_the_reason():
    verdict = without_result(CMD, None, "running", 125.4)
    assert verdict is not None
    assert verdict.status is Status.TIMED_OUT
    assert verdict.reason == (
        f"no status event arrived for command {CMD} and SSM no longer knows it on this instance "
        "(125 s past the time its result was due)"
    )
    assert verdict.details == ""


@pytest.mark.parametrize(
    ("state", "ssm_status", "said"),
    [
        ("terminated", "InProgress", "instance is terminated: no status event arrived"),
        ("shutting-down", None, "instance is shutting-down: no status event arrived"),
        ("stopped", "Pending", "instance is stopped"),
        (None, None, "instance is gone from EC2"),
    ],
)
def test_an_instance_that_is_gone_fails_the_attempt_without_blaming_the_fix(state, ssm_status, said):
    verdict = without_result(CMD, ssm_status, state, 10)
    assert verdict is not None
    assert verdict.status is Status.FAILED
    assert verdict.reason.startswith(said)
    assert ("SSM reports the invocation" in verdict.reason) == (ssm_status is not None)
    assert verdict.details == "Terminated", "the breaker does not count a vanished node"


def test_output_pending_waits_for_the_script_but_not_for_a_step_ssm_skipped():
    from eks_ca_remediator.reconcile import output_pending

    skipped = 'Step execution skipped due to unsatisfied preconditions: \'"platformType" "Linux"\''
    assert output_pending(None, "", "", "")  # SSM does not know the invocation yet
    assert output_pending("InProgress", "InProgress", "", "")
    assert output_pending("Success", "Success", "", "")  # our script always prints a result line
    assert not output_pending("Success", "Success", "", "", skipped)  # the agent's words, final
    assert not output_pending("Success", "Success", '{"result":"success"}\n', "")
    assert not output_pending("TimedOut", "DeliveryTimedOut", "", "")
