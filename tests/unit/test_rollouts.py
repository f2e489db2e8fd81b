"""Rollouts in waves: the pure decisions (rollouts.py)."""

from __future__ import annotations

import pytest
from eks_ca_remediator.rollouts import (
    DEFAULT_WAVES,
    Rollout,
    RolloutStatus,
    bundle_choice,
    halts,
    parse_waves,
    trust_change,
    trust_changed,
    wave_move,
    wave_targets,
)

DEFAULT = parse_waves(DEFAULT_WAVES)


@pytest.mark.parametrize(
    ("total", "targets"),
    [
        (1, [1]),  # a one-node cluster: one wave
        (2, [1, 2]),
        (10, [1, 5, 10]),  # 10 % of 10 is the 1 already done
        (300, [1, 30, 150, 300]),
        (5000, [1, 500, 2500, 5000]),
        (7, [1, 4, 7]),  # rounded up
        (0, [0]),
    ],
)
def test_default_waves_are_1_then_10_50_100_percent_cumulative(total, targets):
    assert wave_targets(DEFAULT, total) == targets


def test_waves_are_configurable_and_the_last_always_reaches_every_node():
    assert wave_targets(parse_waves("5,25%"), 100) == [5, 25, 100]
    assert wave_targets(parse_waves("100%"), 40) == [40]
    assert wave_targets(parse_waves("3"), 2) == [2]


@pytest.mark.parametrize("spec", ["", "0", "150%", "ten", "1,,x", ",".join(["1"] * 11)])
def test_bad_wave_specs_are_refused_with_the_form_to_give(spec):
    with pytest.raises(ValueError, match="wave"):
        parse_waves(spec)


def rolling(wave: int = 0, done_at: float | None = None) -> Rollout:
    return Rollout("prod-a", "f" * 64, wave=wave, wave_done_at=done_at)


def test_first_wave_sends_one_node():
    move = wave_move(rolling(), [1, 30, 150, 300], done=0, in_flight=0, now=0, bake=60)
    assert (move.kind, move.wave, move.send) == ("send", 0, 1)


def test_a_wave_in_flight_waits_for_every_result():
    move = wave_move(rolling(), [1, 30, 150, 300], done=0, in_flight=1, now=0, bake=60)
    assert (move.kind, move.send) == ("wait", 0)


def test_a_finished_wave_bakes_then_the_next_wave_starts():
    targets = [1, 30, 150, 300]
    bake = wave_move(rolling(), targets, done=1, in_flight=0, now=100, bake=60)
    assert (bake.kind, bake.delay, bake.wave_done_at) == ("bake", 60, 100)
    still = wave_move(rolling(done_at=100), targets, done=1, in_flight=0, now=130, bake=60)
    assert (still.kind, still.delay) == ("bake", 30)
    nxt = wave_move(rolling(done_at=100), targets, done=1, in_flight=0, now=160, bake=60)
    assert (nxt.kind, nxt.wave, nxt.send, nxt.wave_done_at) == ("send", 1, 29, None)


def test_no_bake_time_moves_on_at_once_and_the_last_wave_completes():
    targets = [1, 30]
    assert wave_move(rolling(), targets, done=1, in_flight=0, now=0, bake=0).send == 29
    assert wave_move(rolling(1), targets, done=30, in_flight=0, now=0, bake=0).kind == "complete"


def test_a_wave_partly_sent_sends_only_the_rest():
    move = wave_move(rolling(1), [1, 30, 150, 300], done=10, in_flight=5, now=0, bake=60)
    assert (move.kind, move.send) == ("send", 15)


def test_a_halted_rollout_sends_nothing():
    halted = Rollout("prod-a", "f" * 64, status=RolloutStatus.HALTED)
    assert wave_move(halted, [1, 2], done=0, in_flight=0, now=0, bake=0).kind == "halted"


def test_other_triggers_send_the_good_bundle_until_the_rollout_completes():
    good, new = "a" * 64, "b" * 64
    assert bundle_choice(new, good, rolling(), force=False) == "good"
    assert bundle_choice(new, good, None, force=False) == "good"
    complete = Rollout("prod-a", new, status=RolloutStatus.COMPLETE)
    assert bundle_choice(new, good, complete, force=False) == "current"
    assert bundle_choice(new, good, rolling(), force=True) == "current"  # force skips the waves
    assert bundle_choice(new, None, rolling(), force=False) == "current"  # first deployment
    assert bundle_choice(good, good, None, force=False) == "current"


def test_what_halts_and_what_changed_trust():
    assert halts("FAILED", "Failed", frozenset({"Terminated"}))
    assert halts("TIMED_OUT", "ExecutionTimedOut", frozenset({"Terminated"}))
    assert not halts("FAILED", "Terminated", frozenset({"Terminated"}))  # not the bundle's fault
    assert not halts("SUCCEEDED", "Success", frozenset())
    rejected = {"status": "FAILED", "command_id": "c", "node_result": {"committed": False}}
    committed = {"status": "FAILED", "command_id": "c", "node_result": {"committed": True}}
    older_script = {"status": "FAILED", "command_id": "c", "node_result": {}}
    assert not trust_changed(rejected)
    assert trust_changed(committed)
    assert trust_changed(older_script)
    assert trust_changed({"status": "SUCCEEDED"})
    assert not trust_changed({"status": "SKIPPED"})


def test_a_trust_change_names_each_ca_gained_and_lost():
    old = (("CN=Old", "1" * 64, "2027-01-01T00:00:00Z"), ("CN=Kept", "2" * 64, "2028-01-01T00:00:00Z"))
    new = (("CN=Kept", "2" * 64, "2028-01-01T00:00:00Z"), ("CN=New", "3" * 64, "2029-01-01T00:00:00Z"))
    change = trust_change(old, new)
    assert change.lines() == [
        f"+ CA CN=New sha256 {'3' * 64} not after 2029-01-01T00:00:00Z",
        f"- CA CN=Old sha256 {'1' * 64} not after 2027-01-01T00:00:00Z",
    ]
    assert trust_change(new, new).empty
    assert len(trust_change(None, new).added) == 2  # first deployment: every CA is new trust


def test_status_shows_the_good_bundle_and_a_rollout_in_progress_or_halted():
    from eks_ca_remediator.status import ClusterStatus, render_rollouts, with_rollouts

    good = {"fingerprint": "a" * 64}
    rolling_item = {"fingerprint": "b" * 64, "rollout_status": "ROLLING", "wave": 2, "nodes_done": 30}
    rolling_item |= {"nodes_total": 300}
    halted_item = {"fingerprint": "c" * 64, "rollout_status": "HALTED", "wave": 0, "halted_node": "i-0abc"}
    halted_item |= {"halted_reason": "verification failed: x509: certificate signed by unknown authority"}
    prod_a = with_rollouts(ClusterStatus("prod-a"), good, [rolling_item])
    prod_b = with_rollouts(ClusterStatus("prod-b"), None, [halted_item, {**rolling_item, "rollout_status": "COMPLETE"}])
    lines = render_rollouts([prod_a, prod_b])
    assert lines == [
        "ROLLOUTS",
        "  prod-a: good bundle aaaaaaaaaaaa; rollout of bbbbbbbbbbbb ROLLING",
        "    wave 3, 30 of 300 nodes done",
        "  prod-b: good bundle none yet; rollout of cccccccccccc HALTED",
        "    halted in wave 1 on i-0abc",
        "    reason: verification failed: x509: certificate signed by unknown authority",
        '    resume: {"cluster": "prod-b", "rollout": "resume"}',
        '    rollback: {"cluster": "prod-b", "rollout": "rollback"}',
    ]
    assert all(len(line) <= 80 for line in lines)


def test_a_member_clusters_halt_names_its_account_in_the_invoke_not_its_key():
    from eks_ca_remediator.rollouts import control_event
    from eks_ca_remediator.status import ClusterStatus, render_rollouts, with_rollouts

    halted = {"fingerprint": "c" * 64, "rollout_status": "HALTED", "wave": 0, "halted_node": "i-0abc"}
    member = with_rollouts(ClusterStatus("111122223333/prod"), None, [halted | {"halted_reason": "x509"}])
    lines = render_rollouts([member])
    assert '    resume: {"cluster": "prod", "account": "111122223333", "rollout": "resume"}' in lines
    assert control_event("prod", "rollback") == '{"cluster": "prod", "rollout": "rollback"}'
