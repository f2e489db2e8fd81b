"""The agent re-check schedule: dense where new nodes' agents come Online, sparse elsewhere."""

import pytest
from eks_ca_remediator.decisions import (
    DENSE_RECHECK_SECONDS,
    DENSE_WINDOW_SECONDS,
    NoAgent,
    SendNow,
    WaitAgain,
    agent_recheck_delay,
    agent_wait_decision,
)


def check_times(recheck: int, deadline: float) -> list[float]:
    """When a node that never comes Online is checked: at 0, then as the schedule says, until the deadline."""
    times, now = [0.0], 0.0
    while True:
        decision = agent_wait_decision(None, "running", now, deadline, recheck, waited=now)
        if isinstance(decision, NoAgent):  # the deadline: given up
            return times
        assert isinstance(decision, WaitAgain)
        now += decision.delay_seconds
        times.append(now)


@pytest.mark.parametrize(
    ("waited", "expected"),
    [
        (0, 15),  # first re-check one interval after launch
        (15, 5),  # never past the start of the Online window
        (20, 5),
        (45, 5),
        (59.9, 5),
        (60, 15),  # after the window: back to the interval, growing with the wait
        (100, 25),
        (239, 59),
        (500, 60),  # capped
        (5000, 60),
    ],
)
def test_schedule_with_the_default_interval(waited, expected):
    assert agent_recheck_delay(waited, 15) == expected


def test_a_shorter_interval_is_never_slowed_down():
    assert [agent_recheck_delay(w, 2) for w in (0, 19, 30, 61)] == [2, 1, 2, 15]


def test_a_longer_interval_is_kept_outside_the_window_and_bounded_by_sqs():
    assert agent_recheck_delay(0, 120) == 20
    assert agent_recheck_delay(30, 120) == DENSE_RECHECK_SECONDS
    assert agent_recheck_delay(600, 120) == 120
    assert agent_recheck_delay(600, 5000) == 900


@pytest.mark.parametrize(
    "online_at", [x / 2 for x in range(2 * DENSE_WINDOW_SECONDS[0], 2 * DENSE_WINDOW_SECONDS[1] + 1)]
)
def test_an_agent_online_inside_the_window_is_seen_within_the_dense_interval(online_at):
    first_check_after = next(t for t in check_times(15, 900) if t >= online_at)
    assert first_check_after - online_at <= DENSE_RECHECK_SECONDS


def test_an_agent_online_at_any_time_is_seen_within_one_interval_or_a_quarter_of_its_wait():
    times = check_times(15, 900)
    for before, after in zip(times, times[1:], strict=False):
        assert after - before <= max(15, before / 4, 1)


def test_checks_are_bounded_and_cheaper_than_a_flat_interval():
    times = check_times(15, 900)
    assert times[-1] == 900  # the last check is at the deadline, where it gives up
    assert len(times) <= 900 // 15 // 2
    assert len(check_times(15, 600)) <= 600 // 15 + 2  # the integration test's bound


def test_the_deadline_still_wins():
    assert agent_wait_decision(None, "running", 898.0, 900.0, 15, waited=898.0) == WaitAgain(2)
    assert agent_wait_decision("Online", "running", 30.0, 900.0, 15, waited=30.0) == SendNow()
