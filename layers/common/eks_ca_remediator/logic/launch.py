"""OnLaunch: an EC2 instance reached `running`; remediate it if it is a node of an enrolled cluster."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from eks_ca_remediator.decisions import Disagreement, node_cluster
from eks_ca_remediator.errors import InstanceNotFound
from eks_ca_remediator.logic.plans import build_plan
from eks_ca_remediator.logic.remediation import Remediator
from eks_ca_remediator.models import InstanceStateChange, Target, Trigger

logger = Logger(child=True)


def on_launch(event: InstanceStateChange, remediator: Remediator) -> dict[str, Any]:
    instance_id = event.detail.instance_id
    if event.detail.state != "running":
        return {"action": "ignored", "reason": f"state {event.detail.state}", "instance_id": instance_id}
    try:
        instance = remediator.ec2.instance(instance_id)
    except InstanceNotFound:
        logger.warning("launched instance not found in EC2", instance_id=instance_id)
        return {"action": "ignored", "reason": "instance not found", "instance_id": instance_id}
    cluster = node_cluster(instance.tags, remediator.settings.enrolled_clusters)
    if isinstance(cluster, Disagreement):
        plan = build_plan(
            remediator.settings,
            Trigger.LAUNCH,
            remediator.clock(),
            cluster=remediator.cluster(cluster.cluster),
            records=remediator.records,
        )
        skipped = remediator.skip_disagreeing([(instance_id, cluster)], plan, event.id, event.time.timestamp())
        return {"action": "skipped", "reason": cluster.reason, "records": skipped}
    if cluster is None:
        logger.info("not a node of an enrolled cluster", instance_id=instance_id)
        return {
            "action": "ignored",
            "reason": "not a node of an enrolled cluster",
            "instance_id": instance_id,
        }
    plan = build_plan(
        remediator.settings,
        Trigger.LAUNCH,
        remediator.clock(),
        cluster=remediator.cluster(cluster),
        records=remediator.records,
    )
    records = remediator.start(
        [Target(instance_id=instance_id, cluster=cluster)],
        plan,
        trigger_key=event.id,
        created_at=event.time.timestamp(),
        instances={instance_id: instance},  # Windows / EKS Auto Mode: recorded, never sent to
    )
    return {"action": "remediating", "records": records}
