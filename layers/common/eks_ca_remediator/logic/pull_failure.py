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
from eks_ca_remediator.decisions import enrolled_cluster
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


def _resolve(lines: list[PullFailureLine], remediator: Remediator) -> dict[NodeRef, Instance]:
    """Instances of the lines' nodes: batched, cached EC2 lookups by instance id and by DNS name."""
    refs = {line.node for line in lines if line.node is not None}
    by_id = remediator.ec2.cached_instances(sorted(r.instance_id for r in refs if r.instance_id))
    by_name = remediator.ec2.by_private_dns_name(sorted(r.hostname for r in refs if r.hostname))
    found = {ref: by_id.get(ref.instance_id) or by_name.get(ref.hostname) for ref in refs}
    return {ref: instance for ref, instance in found.items() if instance is not None}


def _findings(lines: list[PullFailureLine], remediator: Remediator) -> _Findings:
    findings = _Findings()
    instances = _resolve(lines, remediator)
    enrolled = remediator.settings.enrolled_clusters
    for line in lines:
        instance = instances.get(line.node) if line.node is not None else None
        if instance is None:
            findings.skipped["no node" if line.node is None else "node not found in EC2"] += 1
            continue
        cluster = enrolled_cluster(instance.tags, enrolled)
        if cluster is None:
            findings.skipped["not an enrolled cluster's node"] += 1
            continue
        if instance.state not in LIVE_STATES:
            findings.skipped[f"instance {instance.state}"] += 1
            continue
        findings.clusters[instance.instance_id] = cluster
        findings.nodes.setdefault(instance.instance_id, NodeFailures()).add(line.failure)
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
            plans[cluster] = build_plan(settings, Trigger.PULL_FAILURE, now, cluster=cluster)
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
            records += remediator.start(todo, plan, trigger_key=key, created_at=window)
            _handled.add(todo, key, window)
    for (cluster, key, reason), (failure, targets) in notes.items():
        if todo := _handled.unhandled(targets, key, window):
            registry = (failure.registry,) if failure.registry else ()
            plan = plans[cluster].model_copy(update={"registry_hosts": registry})
            records += remediator.note(todo, plan, key, window, Status.NOT_REMEDIABLE, reason)
            _handled.add(todo, key, window)
    return records


def on_pull_failures(batch: LogBatch, remediator: Remediator) -> dict[str, Any]:
    """Classify the payload's lines and remediate (or record) the enrolled nodes they name."""
    if batch.message_type == "CONTROL_MESSAGE":
        return {"action": "ignored", "reason": "CONTROL_MESSAGE"}
    lines = parse_lines(batch.messages, batch.log_stream)
    findings = _findings(lines, remediator) if lines else _Findings()
    records = _act(findings, remediator) if findings.nodes else []
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
