"""Remediate (manual invoke): one instance, or every running node of an enrolled cluster."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from eks_ca_remediator.decisions import enrolled_cluster
from eks_ca_remediator.errors import InstanceNotFound, InvalidRequest
from eks_ca_remediator.logic.plans import build_plan
from eks_ca_remediator.logic.remediation import Remediator
from eks_ca_remediator.models import ManualRequest, Target, Trigger
from eks_ca_remediator.safety import Breaker

logger = Logger(child=True)


def _targets(request: ManualRequest, remediator: Remediator) -> list[Target]:
    enrolled = remediator.settings.enrolled_clusters
    if request.cluster is not None:
        if request.cluster not in enrolled:
            raise InvalidRequest(f"cluster {request.cluster!r} is not enrolled (enrolled: {', '.join(enrolled)})")
        nodes = remediator.ec2.running_cluster_nodes(request.cluster)
        targets = [
            Target(instance_id=n.instance_id, cluster=request.cluster)
            for n in nodes
            if enrolled_cluster(n.tags, [request.cluster]) == request.cluster
        ]
        if not targets:
            raise InvalidRequest(f"cluster {request.cluster!r} has no running nodes")
        return targets
    assert request.instance_id is not None
    try:
        instance = remediator.ec2.instance(request.instance_id)
    except InstanceNotFound as exc:
        raise InvalidRequest(str(exc)) from exc
    if instance.state != "running":
        raise InvalidRequest(f"instance {request.instance_id} is {instance.state}, not running")
    cluster = enrolled_cluster(instance.tags, enrolled)
    if cluster is None:
        raise InvalidRequest(f"instance {request.instance_id} is not a node of an enrolled cluster")
    return [Target(instance_id=request.instance_id, cluster=cluster)]


def reset_breaker(cluster: str, request: ManualRequest, remediator: Remediator) -> dict[str, Any]:
    if cluster not in remediator.settings.enrolled_clusters:
        raise InvalidRequest(f"cluster {cluster!r} is not enrolled")
    item = remediator.records.breaker_reset(cluster, remediator.clock(), request.reason or "manual reset")
    logger.warning("circuit breaker reset by a manual invoke", cluster=cluster, reason=item.get("reset_reason"))
    return {"breaker": Breaker.from_item(cluster, item).__dict__ | {"reset": True}, "records": [], "count": 0}


def remediate(request: ManualRequest, request_id: str, remediator: Remediator) -> dict[str, Any]:
    if request.reset_breaker and request.cluster is not None:
        return reset_breaker(request.cluster, request, remediator)
    targets = _targets(request, remediator)
    now = remediator.clock()
    breaker = Breaker.from_item(targets[0].cluster, remediator.records.breaker(targets[0].cluster))
    if breaker.is_open(now) and not request.force:
        raise InvalidRequest(
            f'{breaker.why()}; nothing sent. Pass "force": true to remediate anyway, or '
            f'{{"cluster": "{breaker.cluster}", "reset_breaker": true}} to close it'
        )
    plan = build_plan(
        remediator.settings,
        Trigger.MANUAL,
        now,
        cluster=targets[0].cluster,  # every target is a node of the one cluster asked for
        strategy=request.strategy,
        dry_run=request.dry_run,
        reason=request.reason or "manual invoke",
    )
    plan = plan.model_copy(update={"force": request.force})
    records = remediator.start(targets, plan, trigger_key=request_id, created_at=now)
    return {"records": records, "count": len(records)}
