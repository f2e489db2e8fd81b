"""Rollouts of a new CA bundle, per cluster, in waves (pure: no I/O, no clock reads).

A bundle fingerprint new to a cluster (not its good bundle: the one whose rollout completed last)
is rolled out by the sweep in waves: by default 1 node, then 10 %, 50 % and 100 % of the cluster's
nodes (cumulative), with a bake time between waves (ROLLOUT_WAVES, ROLLOUT_BAKE_SECONDS). The next
wave starts only when every node of the last one SUCCEEDED with the new bundle and the bake time has
passed since. The first FAILED or TIMED_OUT result with the new bundle halts the rollout (the
status handler, logic/command_status.py): nothing more is sent with it until a manual resume.
Meanwhile launch, pull-failure and manual triggers send the cluster's good bundle (`bundle_choice`);
a cluster with no good bundle yet (the first deployment) has nothing better to send them than the
new one. The rollout state is one item per cluster and fingerprint in the records table
(adapters/records.py); the good bundle one more item per cluster.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

DEFAULT_WAVES = "1,10%,50%,100%"
WAVE_RE = re.compile(r"^(?:(\d{1,5})|(\d{1,3})%)$")
MAX_WAVES = 10


class RolloutStatus(StrEnum):
    ROLLING = "ROLLING"
    HALTED = "HALTED"
    COMPLETE = "COMPLETE"
    SUPERSEDED = "SUPERSEDED"  # a newer bundle started its own rollout before this one completed


@dataclass(frozen=True)
class WaveStep:
    count: int = 0  # an absolute number of nodes (cumulative) ...
    percent: int = 0  # ... or a percent of the cluster's nodes (cumulative, rounded up)


def parse_waves(spec: str) -> tuple[WaveStep, ...]:
    """'1,10%,50%,100%' -> the wave steps; the last wave always covers every node."""
    steps = []
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        match = WAVE_RE.fullmatch(token)
        if match is None:
            raise ValueError(f"rollout wave {token!r}: give a node count (e.g. 1) or a percent (e.g. 10%)")
        if match.group(1) is not None:
            count = int(match.group(1))
            if count < 1:
                raise ValueError("a rollout wave's node count is at least 1")
            steps.append(WaveStep(count=count))
        else:
            percent = int(match.group(2))
            if not 1 <= percent <= 100:
                raise ValueError(f"rollout wave {token!r}: a percent is 1..100")
            steps.append(WaveStep(percent=percent))
    if not steps or len(steps) > MAX_WAVES:
        raise ValueError(f"give 1..{MAX_WAVES} rollout waves, e.g. {DEFAULT_WAVES}")
    return tuple(steps)


def wave_targets(steps: tuple[WaveStep, ...], total: int) -> list[int]:
    """The cumulative number of nodes that hold the new bundle at the end of each wave, for a
    cluster of `total` nodes: increasing, the last one `total` (a 1-node cluster: one wave)."""
    if total <= 0:
        return [0]
    targets: list[int] = []
    for step in steps:
        size = step.count if step.count else math.ceil(step.percent * total / 100)
        size = min(total, max(1, size))
        if not targets or size > targets[-1]:
            targets.append(size)
    if targets[-1] < total:
        targets.append(total)
    return targets


@dataclass(frozen=True)
class Rollout:
    cluster: str
    fingerprint: str
    status: RolloutStatus = RolloutStatus.ROLLING
    origin: str = ""  # the sweep origin its attempts are keyed by (a resume starts a new one)
    wave: int = 0  # index into wave_targets
    wave_done_at: float | None = None  # when the current wave's last node SUCCEEDED (bake starts)
    halted_wave: int | None = None
    halted_node: str = ""
    halted_reason: str = ""

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Rollout:
        done_at = item.get("wave_done_at")
        halted_wave = item.get("halted_wave")
        return cls(
            cluster=str(item["cluster_name"]),
            fingerprint=str(item["fingerprint"]),
            status=RolloutStatus(item.get("rollout_status", RolloutStatus.ROLLING.value)),
            origin=str(item.get("origin", "")),
            wave=int(item.get("wave", 0)),
            wave_done_at=float(done_at) if done_at is not None else None,
            halted_wave=int(halted_wave) if halted_wave is not None else None,
            halted_node=str(item.get("halted_node", "")),
            halted_reason=str(item.get("halted_reason", "")),
        )


@dataclass(frozen=True)
class WaveMove:
    """What a sweep pass does for a rollout."""

    kind: str  # "send" | "wait" | "bake" | "complete" | "halted"
    wave: int  # the wave (index) after this move
    send: int = 0  # how many more nodes to send the new bundle now (before the in-flight limit)
    delay: int = 0  # for "bake": seconds until the bake time is over
    wave_done_at: float | None = None  # to record, when this pass saw the wave finish


def wave_move(rollout: Rollout, targets: list[int], done: int, in_flight: int, now: float, bake: int) -> WaveMove:
    """The next move of a rolling rollout: `done` nodes hold the new bundle (their last success),
    `in_flight` are being sent it. Moves one wave forward at most per pass after a bake."""
    if rollout.status is RolloutStatus.HALTED:
        return WaveMove("halted", rollout.wave)
    wave = min(rollout.wave, len(targets) - 1)
    done_at = rollout.wave_done_at
    if done >= targets[wave] and in_flight == 0:
        if wave == len(targets) - 1:
            return WaveMove("complete", wave)
        done_at = now if done_at is None else done_at
        if now < done_at + bake:
            return WaveMove("bake", wave, delay=max(1, math.ceil(done_at + bake - now)), wave_done_at=done_at)
        wave, done_at = wave + 1, None
    want = max(0, targets[wave] - done - in_flight)
    if want == 0:
        return WaveMove("wait", wave, wave_done_at=done_at)
    return WaveMove("send", wave, send=want, wave_done_at=done_at)


def bundle_choice(current: str, good: str | None, rollout: Rollout | None, force: bool) -> str:
    """Which bundle a launch, pull-failure or manual trigger sends: 'current' or 'good'.

    The good bundle while the current one's rollout has not completed; the current one when it is
    the good one, when there is no good bundle yet (first deployment), or when forced."""
    if force or good is None or current == good:
        return "current"
    if rollout is not None and rollout.status is RolloutStatus.COMPLETE:
        return "current"
    return "good"


def control_event(cluster: str, action: str, account: str | None = None) -> str:
    """The manual invoke's payload that resumes or rolls back a halted rollout of `cluster` (its
    name; a member account's cluster names its account too: the key is not a cluster name)."""
    named = {"account": account} if account else {}
    return json.dumps({"cluster": cluster} | named | {"rollout": action})


def halts(status: str, ssm_status_details: str | None, not_the_nodes_fault: frozenset[str]) -> bool:
    """Whether a final result halts the rollout of the bundle it carried."""
    return status in ("FAILED", "TIMED_OUT") and (ssm_status_details or "") not in not_the_nodes_fault


def trust_changed(attempt: Mapping[str, Any]) -> bool:
    """Whether the attempt changed the node's trust store: a success, or a failure the node did not
    report as rolled back before commit (`committed: false` in its result means nothing changed)."""
    if attempt.get("status") == "SUCCEEDED":
        return True
    if attempt.get("status") not in ("FAILED", "TIMED_OUT") or not attempt.get("command_id"):
        return False
    result = attempt.get("node_result") or {}
    return result.get("committed") is not False


@dataclass(frozen=True)
class TrustChange:
    added: tuple[tuple[str, str, str], ...]  # (subject, sha256, not_after)
    removed: tuple[tuple[str, str, str], ...]

    @property
    def empty(self) -> bool:
        return not self.added and not self.removed

    def lines(self) -> list[str]:
        return [f"+ CA {s} sha256 {h} not after {n}" for s, h, n in self.added] + [
            f"- CA {s} sha256 {h} not after {n}" for s, h, n in self.removed
        ]


def trust_change(old: tuple[tuple[str, str, str], ...] | None, new: tuple[tuple[str, str, str], ...]) -> TrustChange:
    """The CAs a cluster's trust gains and loses going from the good bundle `old` to `new`
    (each CA as (subject, sha256, not-after)); no good bundle yet: every CA is gained."""
    before = {c[1]: c for c in old or ()}
    after = {c[1]: c for c in new}
    added = tuple(after[h] for h in sorted(after) if h not in before)
    removed = tuple(before[h] for h in sorted(before) if h not in after)
    return TrustChange(added, removed)
