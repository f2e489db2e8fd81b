"""What the status command shows (pure: records in, summaries and text out; no I/O, no clock reads).

A node's state is read from its attempts in the records table, newest first:
- waiting: its newest attempt waits for the node's SSM agent (PENDING_AGENT);
- in flight: its newest attempt was sent and has no result yet (SENT, IN_PROGRESS);
- failed: its newest result is FAILED or TIMED_OUT;
- current: its last SUCCEEDED attempt sent the cluster's current bundle;
- skipped: its newest attempt was SKIPPED, NOT_REMEDIABLE or a DRY_RUN, and no success holds the
  current bundle;
- drifted: its last success sent another bundle.
A node EC2 lists as shutting-down or terminated (a scale-in after its remediation: its records stay
until their TTL) is not one of the cluster's nodes and is not counted.
Nodes our document is never run on (newest attempt NOT_REMEDIABLE with a `node_kind`: Windows, EKS
Auto Mode, no SSM agent, a step SSM skipped) are skipped, and counted apart by kind.
The cluster's current bundle is the one its newest attempt sent (the remediator reads the bundle
source on every trigger, so the newest attempt carries what the source holds).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from eks_ca_remediator.models import ClusterRef, NodeKind, Status, Trigger
from eks_ca_remediator.rollouts import control_event
from eks_ca_remediator.safety import Breaker, live_leases

STATES = ("current", "drifted", "in_flight", "failed", "waiting", "skipped")
FAILED = frozenset({Status.FAILED.value, Status.TIMED_OUT.value})
IN_FLIGHT = frozenset({Status.SENT.value, Status.IN_PROGRESS.value})
SKIPPED = frozenset({Status.SKIPPED.value, Status.NOT_REMEDIABLE.value, Status.DRY_RUN.value})
KINDS = tuple(NodeKind)
KIND_HEADERS = {
    NodeKind.WINDOWS: "WINDOWS",
    NodeKind.EKS_AUTO_MODE: "AUTO MODE",
    NodeKind.NO_SSM_AGENT: "NO SSM AGENT",
    NodeKind.STEP_SKIPPED: "STEP SKIPPED",
}
SINCE_RE = re.compile(r"^([1-9][0-9]{0,5})([mhd])$")
UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
GONE_STATES = frozenset({"shutting-down", "terminated"})  # EC2 instance states of nodes that are gone


def parse_since(text: str) -> int:
    """`30m`, `24h`, `7d` -> seconds; anything else is refused with the forms accepted."""
    match = SINCE_RE.match(text.strip())
    if not match:
        raise ValueError(f"--since {text!r}: give minutes, hours or days, like 30m, 24h or 7d")
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]


def node_state(attempts: Sequence[Mapping[str, Any]], fingerprint: str) -> str:
    """One node's state (module docstring); `attempts` newest first."""
    newest = attempts[0]["status"]
    if newest == Status.PENDING_AGENT.value:
        return "waiting"
    if newest in IN_FLIGHT:
        return "in_flight"
    if newest in FAILED:
        return "failed"
    success = next((a for a in attempts if a["status"] == Status.SUCCEEDED.value), None)
    if success is not None and success.get("fingerprint") == fingerprint:
        return "current"
    return "skipped" if newest in SKIPPED else "drifted"


@dataclass
class Sweep:
    sweep_id: str
    started_at: str
    nodes: int
    statuses: dict[str, int]


@dataclass
class ClusterStatus:
    cluster: str  # its key (models.ClusterRef): the name, `<account>/<name>` in a member account
    nodes: int = 0
    states: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    fingerprint: str = ""
    ca_not_after: str = ""
    breaker: str = "closed"
    consecutive_failures: int = 0
    breaker_open_until: float = 0.0
    leases: int = 0
    last_sweep: Sweep | None = None
    last_attempt_at: str = ""
    # nodes our document is never run on, by kind (their newest attempt: NOT_REMEDIABLE, node_kind)
    kinds: dict[str, int] = field(default_factory=lambda: dict.fromkeys((k.value for k in KINDS), 0))
    good_bundle: str = ""  # the fingerprint whose rollout completed last (rollouts.py)
    rollout: dict[str, Any] = field(default_factory=dict)  # the rollout in progress or halted, if any
    name: str = ""
    account: str = ""  # "" : the deployment's own account

    def __post_init__(self) -> None:
        if not self.name:  # given by its key alone: the name and account the key holds
            ref = ClusterRef.of_key(self.cluster)
            self.name, self.account = ref.name, self.account or ref.account or ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _by_node(attempts: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    nodes: dict[str, list[Mapping[str, Any]]] = {}
    for attempt in sorted(attempts, key=lambda a: a["sk"], reverse=True):
        nodes.setdefault(attempt["pk"], []).append(attempt)
    return nodes


def last_sweep(attempts: Sequence[Mapping[str, Any]]) -> Sweep | None:
    sweeps = [a for a in attempts if a.get("trigger") == Trigger.SWEEP.value]
    if not sweeps:
        return None
    newest = max(sweeps, key=lambda a: a["created_at"])
    mine = [a for a in sweeps if a.get("trigger_key") == newest.get("trigger_key")]
    return Sweep(
        sweep_id=str(newest.get("trigger_key", "")),
        started_at=min(a["created_at"] for a in mine),
        nodes=len({a["pk"] for a in mine}),
        statuses=dict(Counter(a["status"] for a in mine)),
    )


def summarize(
    cluster: ClusterRef,
    attempts: Sequence[Mapping[str, Any]],
    breaker_item: Mapping[str, Any] | None,
    leases: Mapping[str, float],
    now: float,
    gone: Collection[str] = frozenset(),
) -> ClusterStatus:
    """A cluster's status from its attempts (any order), its BREAKER item and its in-flight leases;
    the nodes in `gone` (shutting down or terminated) are not counted."""
    summary = ClusterStatus(cluster.key, name=cluster.name, account=cluster.account or "")
    breaker = Breaker.from_item(cluster.key, breaker_item)
    summary.consecutive_failures = breaker.failures
    if breaker.is_open(now):
        summary.breaker, summary.breaker_open_until = "OPEN", breaker.open_until
    summary.leases = len(live_leases(leases, now))
    if not attempts:
        return summary
    newest = max(attempts, key=lambda a: a["created_at"])
    summary.fingerprint = str(newest.get("fingerprint", ""))
    summary.ca_not_after = str(newest.get("ca_not_after", ""))
    summary.last_attempt_at = newest["created_at"]
    for node, history in _by_node(attempts).items():
        if node in gone:
            continue
        summary.states[node_state(history, summary.fingerprint)] += 1
        summary.nodes += 1
        kind = history[0].get("node_kind")
        if history[0]["status"] == Status.NOT_REMEDIABLE.value and kind in summary.kinds:
            summary.kinds[kind] += 1
    summary.last_sweep = last_sweep(attempts)
    return summary


def with_rollouts(
    summary: ClusterStatus, good: Mapping[str, Any] | None, rollouts: Sequence[Mapping[str, Any]]
) -> ClusterStatus:
    """Add the cluster's good bundle and its rollout in progress or halted (a halted one first)."""
    summary.good_bundle = str(good["fingerprint"]) if good else ""
    open_ones = [r for r in rollouts if r.get("rollout_status") in ("HALTED", "ROLLING")]
    open_ones.sort(key=lambda r: (r.get("rollout_status") != "HALTED", str(r.get("created_at_iso", ""))))
    if open_ones:
        item = open_ones[0]
        summary.rollout = {
            "fingerprint": str(item["fingerprint"]),
            "status": str(item["rollout_status"]),
            "wave": int(item.get("wave", 0)) + 1,
            "nodes_done": int(item.get("nodes_done", 0)),
            "nodes_total": int(item.get("nodes_total", 0)),
            "halted_node": str(item.get("halted_node", "")),
            "halted_reason": str(item.get("halted_reason", "")),
        }
    return summary


def render_rollouts(clusters: Sequence[ClusterStatus]) -> list[str]:
    """Per cluster: its good bundle, and a rollout in progress (wave, nodes done of total) or
    halted (node, reason, and the invokes that resume it or roll it back); lines of <= 80 columns."""
    lines = ["ROLLOUTS"]
    for c in clusters:
        good = c.good_bundle[:12] or "none yet"
        r = c.rollout
        if not r:
            lines.append(f"  {c.cluster}: good bundle {good}; no rollout in progress")
            continue
        lines.append(f"  {c.cluster}: good bundle {good}; rollout of {r['fingerprint'][:12]} {r['status']}")
        if r["status"] == "ROLLING":
            lines.append(f"    wave {r['wave']}, {r['nodes_done']} of {r['nodes_total']} nodes done")
            continue
        lines.append(f"    halted in wave {r['wave']} on {r['halted_node']}")
        lines.append(f"    reason: {r['halted_reason']}"[:80])
        for action in ("resume", "rollback"):
            lines.append(f"    {action}: {control_event(c.name, action, c.account or None)}"[:80])
    return lines


# ---------------------------------------------------------------- rendering


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[int] = ()) -> list[str]:
    """Aligned columns, two spaces apart; the columns in `right` (numbers) right-aligned."""
    text_rows = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in text_rows]) for i, h in enumerate(headers)]
    right = set(right)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(headers)] + [line(r) for r in text_rows]


def _day(iso_time: str) -> str:
    return iso_time[:16].replace("T", " ") if iso_time else "-"


def _sweep_cells(sweep: Sweep | None) -> list[Any]:
    if sweep is None:
        return ["-", 0, 0, 0]
    failed = sum(n for s, n in sweep.statuses.items() if s in FAILED)
    return [_day(sweep.started_at), sweep.nodes, sweep.statuses.get(Status.SUCCEEDED.value, 0), failed]


def render_clusters(clusters: Sequence[ClusterStatus], in_flight_limit: str = "") -> str:
    """Tables of at most 80 columns: nodes by state; bundle and safety; the last sweep; and, when
    any, the nodes our document never runs on, by kind."""
    states = table(
        ["CLUSTER", "NODES", "CURRENT", "DRIFTED", "IN FLIGHT", "FAILED", "WAITING", "SKIPPED"],
        [[c.cluster, c.nodes, *(c.states[s] for s in STATES)] for c in clusters],
        right=range(1, 8),
    )
    limit = f"/{in_flight_limit}" if in_flight_limit else ""
    safety = table(
        ["CLUSTER", "BUNDLE", "CA EXPIRES", "BREAKER", "FAILURES", "LEASES"],
        [
            [
                c.cluster,
                c.fingerprint[:12] or "-",
                c.ca_not_after[:10] or "-",
                c.breaker,
                c.consecutive_failures,
                f"{c.leases}{limit}",
            ]
            for c in clusters
        ],
        right=[4, 5],
    )
    sweeps = table(
        ["CLUSTER", "LAST SWEEP", "NODES", "SUCCEEDED", "FAILED"],
        [[c.cluster, *_sweep_cells(c.last_sweep)] for c in clusters],
        right=[2, 3, 4],
    )
    tables = [*states, "", *safety, "", *sweeps]
    if any(any(c.kinds.values()) for c in clusters):  # nodes our document is never run on, by kind
        tables += [
            "",
            *table(
                ["CLUSTER", *(KIND_HEADERS[k] for k in KINDS)],
                [[c.cluster, *(c.kinds[k.value] for k in KINDS)] for c in clusters],
                right=range(1, len(KINDS) + 1),
            ),
        ]
    if any(c.good_bundle or c.rollout for c in clusters):
        tables += ["", *render_rollouts(clusters)]
    return "\n".join(tables) + "\n"


def _result_text(attempt: Mapping[str, Any]) -> str:
    result = attempt.get("node_result") or {}
    if not result:
        return ""
    restarted = "restarted" if attempt.get("restarted") else "no restart"
    level = attempt.get("verification_level") or result.get("verification_level") or "none"
    return f"{result.get('strategy_used') or '-'}, {restarted}, verified: {level}"


def render_history(instance_id: str, attempts: Sequence[Mapping[str, Any]]) -> str:
    """A node's attempts, newest first: one row each (when, trigger, status, bundle), the node's
    result and the reason indented under it; then the newest result's output tail."""
    first = attempts[0]
    rows = table(
        ["CREATED", "TRIGGER", "STATUS", "BUNDLE"],
        [
            [_day(a["created_at"]), a.get("trigger", "-"), a["status"], str(a.get("fingerprint", ""))[:12] or "-"]
            for a in attempts
        ],
    )
    lines = [f"{instance_id}  cluster {first.get('cluster', '-')}  {len(attempts)} attempts", "", rows[0]]
    for row, attempt in zip(rows[1:], attempts, strict=True):
        lines.append(row)
        if _result_text(attempt):
            lines.append(f"    result: {_result_text(attempt)}")
        reason = " ".join(str(attempt.get("reason") or "").split())
        if reason:
            lines.append(f"    reason: {reason[:68]}")
    finished = next((a for a in attempts if a.get("stdout_tail") or a.get("stderr_tail")), None)
    if finished is not None:
        lines += ["", f"output of the newest result ({_day(finished['created_at'])}):"]
        tail = str(finished.get("stderr_tail") or finished.get("stdout_tail")).splitlines()
        lines += [f"  {line}" for line in tail[-10:]]
    return "\n".join(lines) + "\n"


def render_failed(attempts: Sequence[Mapping[str, Any]], since: str) -> str:
    """Failed attempts, newest first, each with its reason indented under it."""
    if not attempts:
        return f"no failed attempts since {since}\n"
    rows = table(
        ["CREATED", "CLUSTER", "INSTANCE", "STATUS", "TRIGGER"],
        [[_day(a["created_at"]), a.get("cluster", "-"), a["pk"], a["status"], a.get("trigger", "-")] for a in attempts],
    )
    lines = [rows[0]]
    for row, attempt in zip(rows[1:], attempts, strict=True):
        reason = " ".join(str(attempt.get("reason") or "-").split())
        lines += [row, f"    {reason[:76]}"]
    return "\n".join(lines) + f"\n\n{len(attempts)} failed attempts since {since}\n"
