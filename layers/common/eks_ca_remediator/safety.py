"""Fleet safety decisions (pure: no I/O, no clock reads): the per-cluster circuit breaker and the
per-cluster in-flight limit.

Circuit breaker, one per cluster (a `CLUSTER#<name>` / `BREAKER` item in the records table):
- every FAILED or TIMED_OUT result of a command adds one consecutive failure, every SUCCEEDED
  result resets the count (DRY_RUN, SKIPPED and NOT_REMEDIABLE change nothing);
- at `threshold` consecutive failures the breaker opens for `open_seconds`: nothing is sent to
  that cluster's nodes except a manual invoke with `"force": true`; waiting work is deferred,
  never dropped;
- it closes by itself when `open_seconds` have passed (half-open: the count is not reset, so the
  next FAILED result opens it again, the next SUCCEEDED closes it for good), or by a manual
  invoke `{"cluster": "<name>", "reset_breaker": true}`.

Cooldown, per instance: after a SUCCEEDED, FAILED or TIMED_OUT result on a node, an attempt
without `"force": true` (every automatic trigger, and a manual invoke that does not force) is
not sent to it for `cooldown_seconds`. The node's HEAD item keeps `last_finished_at`; the
conditional claim that lets one attempt at a time hold the node also checks it, and an attempt
that loses on it is recorded SKIPPED with a reason starting "cooldown". A sweep reads the same
fact from the attempt history it already has and leaves such nodes for a later pass.

In-flight limit: at most `max_in_flight` nodes of one cluster are being remediated at a time
(sent and not yet finished), and, when a percent is set, at most that share of the cluster's
running nodes (rounded up, at least one); the others wait and are sent later, never dropped.
The limit holds under concurrent triggers: a node is sent only with a lease on one of the
cluster's slots, taken by a compare-and-set on the cluster's `IN_FLIGHT` item (a map of instance
id to lease expiry). A lease ends with the node's result (or the attempt ending without a
command), or, if that never comes, when it expires - after as long as an attempt can be live.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eks_ca_remediator.models import Status

BREAKER_FAILURES = frozenset({Status.FAILED, Status.TIMED_OUT})
BREAKER_SUCCESSES = frozenset({Status.SUCCEEDED})
COOLDOWN_AFTER = frozenset({Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT})


@dataclass(frozen=True)
class Breaker:
    cluster: str
    failures: int = 0
    open_until: float = 0.0

    def is_open(self, now: float) -> bool:
        return self.open_until > now

    def why(self) -> str:
        return f"circuit breaker of cluster {self.cluster} is open ({self.failures} consecutive FAILED results)"

    @classmethod
    def from_item(cls, cluster: str, item: Mapping[str, Any] | None) -> Breaker:
        item = item or {}
        return cls(cluster, int(item.get("failures", 0)), float(item.get("open_until", 0)))


def breaker_effect(status: Status) -> str | None:
    """What a final record status does to its cluster's breaker: 'failure', 'success' or nothing."""
    if status in BREAKER_FAILURES:
        return "failure"
    if status in BREAKER_SUCCESSES:
        return "success"
    return None


def should_open(failures: int, open_until: float, now: float, threshold: int) -> bool:
    """After a failure brought the count to `failures`: open (again) unless already open."""
    return failures >= threshold and open_until <= now


def cooling_down(last_finished: float | None, now: float, cooldown_seconds: int) -> bool:
    """Whether a node whose last result came at `last_finished` is still in its cooldown."""
    return bool(cooldown_seconds) and last_finished is not None and now - last_finished < cooldown_seconds


def in_flight_limit(max_in_flight: int, percent: int, running_nodes: int | None) -> int:
    """The cluster's in-flight limit: the count, or percent of its running nodes if that is lower."""
    if not percent or running_nodes is None:
        return max_in_flight
    return min(max_in_flight, max(1, math.ceil(percent * running_nodes / 100)))


def in_flight_budget(in_flight: int, max_in_flight: int) -> int:
    """How many more of a cluster's nodes may be sent to now."""
    return max(0, max_in_flight - in_flight)


def live_leases(leases: Mapping[str, float], now: float) -> dict[str, float]:
    """The leases (instance id -> expiry) that have not expired at `now`."""
    return {node: float(until) for node, until in leases.items() if float(until) > now}


def grant_leases(wanted: Sequence[str], live: Mapping[str, float], limit: int) -> tuple[list[str], list[str]]:
    """(the wanted nodes that may be sent, in order; those of them that need a new lease).

    A node that holds a live lease already keeps it (a redelivered trigger, or another attempt on
    the node, which its in-flight claim will then turn away); the others take the free slots in
    order."""
    room = max(0, limit - len(live))
    new = [node for node in dict.fromkeys(wanted) if node not in live][:room]
    granted = set(new) | set(live)
    return [node for node in wanted if node in granted], new


def live_seconds(agent_wait_deadline: int, command_timeout: int) -> int:
    """How long an unfinished attempt may be in flight (and so a lease last): agent wait, then the
    in-flight claim's hold."""
    return agent_wait_deadline + command_timeout * 2 + 300
