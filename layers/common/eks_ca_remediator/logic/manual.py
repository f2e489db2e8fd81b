"""Remediate (manual invoke): one instance, or every running node of an enrolled cluster."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from eks_ca_remediator.decisions import Disagreement, node_cluster
from eks_ca_remediator.errors import InstanceNotFound, InvalidRequest
from eks_ca_remediator.logic import rollout
from eks_ca_remediator.logic.plans import build_plan
from eks_ca_remediator.logic.remediation import Remediator
from eks_ca_remediator.models import ManualRequest, Target, Trigger
from eks_ca_remediator.safety import Breaker

logger = Logger(child=True)


Skipped = list[tuple[str, Disagreement]]


def _targets(request: ManualRequest, remediator: Remediator) -> tuple[list[Target], Skipped]:
    """The nodes to remediate, and those whose tags name more than one cluster (recorded SKIPPED)."""
    enrolled = remediator.settings.enrolled_clusters
    if request.cluster is not None:
        if request.cluster not in enrolled:
            raise InvalidRequest(f"cluster {request.cluster!r} is not enrolled (enrolled: {', '.join(enrolled)})")
        nodes, disagreeing = remediator.cluster_nodes(request.cluster)
        if not nodes and not disagreeing:
            raise InvalidRequest(f"cluster {request.cluster!r} has no running nodes")
        return [Target(instance_id=i, cluster=request.cluster) for i in nodes], disagreeing
    assert request.instance_id is not None
    try:
        instance = remediator.ec2.instance(request.instance_id)
    except InstanceNotFound as exc:
        raise InvalidRequest(str(exc)) from exc
    if instance.state != "running":
        raise InvalidRequest(f"instance {request.instance_id} is {instance.state}, not running")
    cluster = node_cluster(instance.tags, enrolled)
    if isinstance(cluster, Disagreement):
        return [], [(request.instance_id, cluster)]
    if cluster is None:
        raise InvalidRequest(f"instance {request.instance_id} is not a node of an enrolled cluster")
    return [Target(instance_id=request.instance_id, cluster=cluster)], []


def reset_breaker(cluster: str, request: ManualRequest, remediator: Remediator) -> dict[str, Any]:
    if cluster not in remediator.settings.enrolled_clusters:
        raise InvalidRequest(f"cluster {cluster!r} is not enrolled")
    ref = remediator.cluster(cluster)
    item = remediator.records.breaker_reset(ref, remediator.clock(), request.reason or "manual reset")
    logger.warning("circuit breaker reset by a manual invoke", cluster=cluster, reason=item.get("reset_reason"))
    return {"breaker": Breaker.from_item(ref.key, item).__dict__ | {"reset": True}, "records": [], "count": 0}


def _account(remediator: Remediator) -> str:
    """A member account's cluster is named with its account in a manual invoke."""
    return f', "account": "{remediator.account}"' if remediator.account else ""


def remediate(request: ManualRequest, request_id: str, remediator: Remediator) -> dict[str, Any]:
    if request.reset_breaker and request.cluster is not None:
        return reset_breaker(request.cluster, request, remediator)
    if request.rollout == "resume" and request.cluster is not None:
        return rollout.resume(remediator, request.cluster, request_id, request.reason)
    if request.rollout == "rollback" and request.cluster is not None:
        return rollout.rollback(remediator, request.cluster, request_id, request.reason)
    targets, disagreeing = _targets(request, remediator)
    now = remediator.clock()
    cluster = targets[0].cluster if targets else disagreeing[0][1].cluster
    if not targets:  # the one node asked for (or every node of the cluster) names two clusters
        plan = build_plan(remediator.settings, Trigger.MANUAL, now, cluster=cluster, reason=request.reason or "")
        records = remediator.skip_disagreeing(disagreeing, plan, request_id, now)
        return {"records": records, "count": len(records)}
    breaker = remediator.open_breaker(cluster, now)
    if breaker is not None and not request.force:
        raise InvalidRequest(
            f'{breaker.why()}; nothing sent. Pass "force": true to remediate anyway, or '
            f'{{"cluster": "{cluster}", "reset_breaker": true{_account(remediator)}}} to close it'
        )
    plan = build_plan(
        remediator.settings,
        Trigger.MANUAL,
        now,
        cluster=remediator.cluster(cluster),  # every target is a node of the one cluster asked for
        strategy=request.strategy,
        dry_run=request.dry_run,
        reason=request.reason or "manual invoke",
        records=remediator.records,
        force=request.force,
    )
    records = remediator.start(targets, plan, trigger_key=request_id, created_at=now)
    records += remediator.skip_disagreeing(disagreeing, plan, request_id, now)
    return {"records": records, "count": len(records)}
