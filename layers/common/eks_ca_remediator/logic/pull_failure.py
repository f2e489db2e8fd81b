"""PullFailure: node logs say image pulls fail with x509; remediate those nodes, deduplicated.

Dedupe reuses the foundation's two mechanisms, nothing of its own:
- the attempt sort key is deterministic per (node, cooldown window, CA bundle fingerprint):
  `ATTEMPT#<window start>#pull-failure#ca-<fingerprint>`, so every line of a flood, in this or
  any concurrent invocation, maps to the same item and Remediator.start's conditional put makes
  all but the first a no-op;
- a new window while the node's previous command is still in flight loses the node's HEAD claim
  and is recorded SKIPPED without a command.
NOT_REMEDIABLE findings are recorded the same way, one item per (node, window, kind, registry).
A warm Lambda also remembers what it already took to DynamoDB in the window, so the rest of a
flood costs no round trips there; that memo is only an optimisation, never the dedupe itself.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger

from eks_ca_remediator.adapters.ec2 import Instance
from eks_ca_remediator.decisions import Disagreement, node_cluster
from eks_ca_remediator.logic.plans import build_plan
from eks_ca_remediator.logic.remediation import Remediator
from eks_ca_remediator.models import Plan, Status, Strategy, Target, Trigger
from eks_ca_remediator.pull_failures import (
    LogBatch,
    NodeFailures,
    NodeRef,
    PullFailure,
    PullFailureLine,
    not_remediable_key,
    parse_lines,
    registry_hosts,
    remediation_key,
    strategy_for,
    window_start,
)

logger = Logger(child=True)
DISAGREEING_KEY = "tags-disagree"  # attempt key of the SKIPPED record of a node whose tags name two clusters
LIVE_STATES = frozenset({"pending", "running"})


class HandledInWindow:
    """(node, attempt key, window start) triples this warm Lambda already wrote or found."""

    def __init__(self, limit: int = 100_000) -> None:
        self._seen: set[tuple[str, str, float]] = set()
        self._limit = limit

    def unhandled(self, targets: list[Target], key: str, window: float) -> list[Target]:
        return [t for t in targets if (t.instance_id, key, window) not in self._seen]

    def add(self, targets: list[Target], key: str, window: float) -> None:
        if len(self._seen) > self._limit:
            self._seen.clear()
        self._seen.update((t.instance_id, key, window) for t in targets)


_handled = HandledInWindow()


@dataclass
class _Findings:
    """This payload's pull failures, per enrolled node, and what was left out and why."""

    nodes: dict[str, NodeFailures] = field(default_factory=dict)
    clusters: dict[str, str] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    disagreeing: dict[str, Disagreement] = field(default_factory=dict)  # tags name two clusters
    instances: dict[str, Instance] = field(default_factory=dict)  # what EC2 said of each node taken


def _resolve(lines: list[PullFailureLine], remediator: Remediator) -> dict[NodeRef, list[Instance]]:
    """Instances of the lines' nodes: batched, cached EC2 lookups by instance id and by DNS name.
    A DNS name may be several instances (VPCs with overlapping CIDRs): each one is kept."""
    refs = {line.node for line in lines if line.node is not None}
    by_id = remediator.ec2.cached_instances(sorted(r.instance_id for r in refs if r.instance_id))
    by_name = remediator.ec2.by_private_dns_name(sorted(r.hostname for r in refs if r.hostname))
    found = {
        ref: [by_id[ref.instance_id]] if ref.instance_id in by_id else by_name.get(ref.hostname, []) for ref in refs
    }
    return {ref: instances for ref, instances in found.items() if instances}


def _take(instance: Instance, failure: PullFailure, enrolled: tuple[str, ...], findings: _Findings) -> str | None:
    """Add the instance's failure to the findings; or why it is left out."""
    cluster = node_cluster(instance.tags, enrolled)
    if isinstance(cluster, Disagreement):
        findings.disagreeing[instance.instance_id] = cluster
        return "node tags name different clusters"
    if cluster is None:
        return "not an enrolled cluster's node"
    if instance.state not in LIVE_STATES:
        return f"instance {instance.state}"
    findings.clusters[instance.instance_id] = cluster
    findings.instances[instance.instance_id] = instance
    findings.nodes.setdefault(instance.instance_id, NodeFailures()).add(failure)
    return None


def _findings(lines: list[PullFailureLine], remediator: Remediator) -> _Findings:
    findings = _Findings()
    instances = _resolve(lines, remediator)
    enrolled = remediator.settings.enrolled_clusters
    for line in lines:
        candidates = instances.get(line.node, []) if line.node is not None else []
        if not candidates:
            findings.skipped["no node" if line.node is None else "node not found in EC2"] += 1
            continue
        # every instance the line may name is taken (a shared DNS name: all of them, none dropped)
        left_out = [why for instance in candidates if (why := _take(instance, line.failure, enrolled, findings))]
        if len(left_out) == len(candidates):
            findings.skipped[left_out[0]] += 1
    return findings


def _note_reason(failure: PullFailure) -> str:
    about = failure.image or failure.registry or failure.failing_host or "an image"
    return f"pull failure not fixable by installing the CA ({failure.kind}): {failure.reason}; pulling {about}"


def _act(findings: _Findings, remediator: Remediator) -> list[dict[str, Any]]:
    """One Remediator.start per (cluster, strategy, registry hosts) - batches of 50 - plus the notes."""
    settings = remediator.settings
    now = remediator.clock()
    window = window_start(now, settings.pull_failure_cooldown_seconds)
    plans: dict[str, Plan] = {}
    starts: dict[tuple[str, Strategy, tuple[str, ...]], tuple[str, list[Target]]] = {}
    notes: dict[tuple[str, str, str], tuple[PullFailure, list[Target]]] = {}
    for instance_id, failures in findings.nodes.items():
        cluster = findings.clusters[instance_id]
        target = Target(instance_id=instance_id, cluster=cluster)
        if cluster not in plans:
            plans[cluster] = build_plan(
                settings, Trigger.PULL_FAILURE, now, cluster=remediator.cluster(cluster), records=remediator.records
            )
        if failures.remediable:
            hosts = registry_hosts(failures)
            strategy, why = strategy_for(plans[cluster].strategy, hosts)
            starts.setdefault((cluster, strategy, hosts), (why, []))[1].append(target)
        for failure in failures.not_remediable.values():
            reason = _note_reason(failure)
            notes.setdefault((cluster, not_remediable_key(failure), reason), (failure, []))[1].append(target)

    records: list[dict[str, Any]] = []
    for (cluster, strategy, hosts), (why, targets) in starts.items():
        base = plans[cluster]
        key = remediation_key(base.fingerprint)
        if todo := _handled.unhandled(targets, key, window):
            plan = base.model_copy(
                update={"strategy": strategy, "registry_hosts": hosts or base.registry_hosts, "reason": why}
            )
            records += remediator.start(todo, plan, trigger_key=key, created_at=window, instances=findings.instances)
            _handled.add(todo, key, window)
    for (cluster, key, reason), (failure, targets) in notes.items():
        if todo := _handled.unhandled(targets, key, window):
            registry = (failure.registry,) if failure.registry else ()
            plan = plans[cluster].model_copy(update={"registry_hosts": registry})
            records += remediator.note(todo, plan, key, window, Status.NOT_REMEDIABLE, reason)
            _handled.add(todo, key, window)
    for instance_id, disagreement in findings.disagreeing.items():
        target = Target(instance_id=instance_id, cluster=disagreement.cluster)
        if _handled.unhandled([target], DISAGREEING_KEY, window):
            plan = plans.get(disagreement.cluster) or build_plan(
                settings, Trigger.PULL_FAILURE, now, cluster=disagreement.cluster
            )
            records += remediator.skip_disagreeing([(instance_id, disagreement)], plan, DISAGREEING_KEY, window)
            _handled.add([target], DISAGREEING_KEY, window)
    return records


def on_pull_failures(batch: LogBatch, remediator: Remediator) -> dict[str, Any]:
    """Classify the payload's lines and remediate (or record) the enrolled nodes they name."""
    if batch.message_type == "CONTROL_MESSAGE":
        return {"action": "ignored", "reason": "CONTROL_MESSAGE"}
    lines = parse_lines(batch.messages, batch.log_stream)
    findings = _findings(lines, remediator) if lines else _Findings()
    records = _act(findings, remediator) if findings.nodes or findings.disagreeing else []
    statuses = Counter(r["status"] for r in records)
    summary = {
        "action": "processed",
        "log_events": len(batch.messages),
        "pull_failures": len(lines),
        "nodes": len(findings.nodes),
        "skipped_lines": dict(findings.skipped),
        "records": dict(statuses),
    }
    if findings.skipped:
        logger.warning("pull-failure lines left out", skipped=dict(findings.skipped), log_stream=batch.log_stream)
    logger.info("pull-failure payload processed", **summary)
    return summary
