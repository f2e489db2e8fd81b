"""Benchmark: how long a CA change that succeeds everywhere takes to reach every node of a
5,000-node cluster with the default safety settings (waves 1, 10 %, 50 %, 100 %; bake 60 s;
in-flight limit 500), in simulated time, and how many SendCommand calls it makes per node.

A model of the rollout's decisions, not of the handlers: the product's own pure functions
(rollouts.wave_targets / wave_move, safety.in_flight_budget) are stepped on a simulated clock,
with a node taking COMMAND_SECONDS from SendCommand to its result, a result queueing the
rollout's next pass KICK_SECONDS later (logic/rollout.py), and SendCommand batches of 50.
The handlers' own behaviour at 300 nodes is tests/integration/test_rollouts.py.
Prints figures (no assertion). Run: `PYTHONPATH=layers/common .venv/bin/python bench/rollout_bench.py [nodes]`
"""

from __future__ import annotations

import math
import sys

from eks_ca_remediator.logic.rollout import KICK_SECONDS
from eks_ca_remediator.rollouts import DEFAULT_WAVES, Rollout, parse_waves, wave_move, wave_targets
from eks_ca_remediator.safety import in_flight_budget

# SendCommand to the node's result event: the node script's own run is measured at 0.4-3.9 s in
# the node lab (README, Benchmarks: every image, restart included); the rest is SSM delivering the
# command to the agent and the status event reaching EventBridge and our function, which AWS does
# not publish a figure for. 30 s is our assumption for it all; the bench prints the figure for
# slower commands too, and the slowest command the defaults still meet the goal with.
COMMAND_SECONDS = 30
BAKE_SECONDS = 60  # ROLLOUT_BAKE_SECONDS' default
LIMIT = 500  # MAX_IN_FLIGHT_PER_CLUSTER's default
BATCH = 50


def simulate(
    nodes: int, command_seconds: int = COMMAND_SECONDS, bake: int = BAKE_SECONDS, limit: int = LIMIT
) -> dict[str, float]:
    targets = wave_targets(parse_waves(DEFAULT_WAVES), nodes)
    rollout = Rollout("bench", "f" * 64)
    now, done, calls = 0.0, 0, 0
    finishing: list[float] = []  # result times of the nodes in flight
    next_pass = 0.0
    while True:
        arrived = [t for t in finishing if t <= now]
        finishing = [t for t in finishing if t > now]
        done += len(arrived)
        if arrived:
            next_pass = min(next_pass, max(arrived) + KICK_SECONDS) if next_pass > now else max(arrived) + KICK_SECONDS
        if now >= next_pass:
            move = wave_move(rollout, targets, done, len(finishing), now, bake)
            if move.kind == "complete":
                return {"seconds": now, "calls": calls, "waves": len(targets)}
            rollout = Rollout("bench", "f" * 64, wave=move.wave, wave_done_at=move.wave_done_at)
            if move.kind == "bake":
                next_pass = now + move.delay
            else:
                send = min(move.send, in_flight_budget(len(finishing), limit))
                calls += math.ceil(send / BATCH)
                finishing += [now + command_seconds] * send
                next_pass = now + 300  # the pass's own fallback continuation; results come sooner
        now += 1


def slowest_within(nodes: int, goal_seconds: int) -> int:
    """The longest node command (s) with which the defaults still reach every node within the goal."""
    low, high = 1, 600
    while low < high:
        mid = (low + high + 1) // 2
        if simulate(nodes, command_seconds=mid)["seconds"] <= goal_seconds:
            low = mid
        else:
            high = mid - 1
    return low


def figures() -> list[tuple[str, str]]:
    result = simulate(5000)
    return [
        ("every node reached, defaults (simulated min)", f"{result['seconds'] / 60:.1f} (goal <= 15)"),
        ("SendCommand calls per node", f"{result['calls'] / 5000:.3f}"),
        ("slowest node command meeting the goal (s)", str(slowest_within(5000, 15 * 60))),
    ]


def main() -> None:
    nodes = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    result = simulate(nodes)
    print(f"rollout of a change that succeeds everywhere, {nodes} nodes, defaults (waves {DEFAULT_WAVES},")
    print(f"bake {BAKE_SECONDS} s, in-flight limit {LIMIT}, {COMMAND_SECONDS} s per node command):")
    print(f"  every node reached in {result['seconds'] / 60:.1f} min of simulated time (goal <= 15)")
    print(
        f"  waves: {result['waves']}; SendCommand calls: {result['calls']:.0f}, per node {result['calls'] / nodes:.3f}"
    )
    for seconds in (60, 90, 120):
        slower = simulate(nodes, command_seconds=seconds)
        print(f"  with {seconds} s per node command: {slower['seconds'] / 60:.1f} min")
    print(f"  the goal holds with the defaults for node commands of up to {slowest_within(nodes, 15 * 60)} s")
    for limit in (1000, 2500):
        wider = simulate(nodes, limit=limit)
        print(f"  with MaxInFlightPerCluster {limit}: {wider['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
