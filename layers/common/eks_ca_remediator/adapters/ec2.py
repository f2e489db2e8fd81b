"""EC2 reads: the instance's tags and state, and the running nodes of a cluster."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from eks_ca_remediator.decisions import CLUSTER_TAG_KEYS, CLUSTER_TAG_PREFIX, chunks
from eks_ca_remediator.errors import InstanceNotFound


@dataclass(frozen=True)
class Instance:
    instance_id: str
    state: str
    tags: dict[str, str] = field(default_factory=dict)
    private_dns_name: str = ""


def _instance(raw: dict[str, Any]) -> Instance:
    return Instance(
        instance_id=raw["InstanceId"],
        state=raw["State"]["Name"],
        tags={t["Key"]: t["Value"] for t in raw.get("Tags", [])},
        private_dns_name=raw.get("PrivateDnsName", ""),
    )


class Ec2Reader:
    def __init__(self, ec2_client: Any) -> None:
        self._ec2 = ec2_client

    def _describe(self, **kwargs: Any) -> list[Instance]:
        found = []
        for page in self._ec2.get_paginator("describe_instances").paginate(**kwargs):
            for reservation in page["Reservations"]:
                found.extend(_instance(raw) for raw in reservation["Instances"])
        return found

    def instances(self, instance_ids: Sequence[str]) -> dict[str, Instance]:
        """Instances by id; ids EC2 does not know are absent from the result (never an error)."""
        found: dict[str, Instance] = {}
        for batch in chunks(list(dict.fromkeys(instance_ids)), 200):
            try:
                found.update((i.instance_id, i) for i in self._describe(InstanceIds=batch))
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "InvalidInstanceID.NotFound":
                    raise
                for instance_id in batch:  # one unknown id fails the whole call: ask one by one
                    try:
                        found.update((i.instance_id, i) for i in self._describe(InstanceIds=[instance_id]))
                    except ClientError as inner:
                        if inner.response["Error"]["Code"] != "InvalidInstanceID.NotFound":
                            raise
        return found

    def instance(self, instance_id: str) -> Instance:
        found = self.instances([instance_id]).get(instance_id)
        if found is None:
            raise InstanceNotFound(f"EC2 has no instance {instance_id} in this account and region")
        return found

    def running_cluster_nodes(self, cluster: str) -> list[Instance]:
        """Running instances carrying any of the tags EKS, node groups and Karpenter put on nodes."""
        running = {"Name": "instance-state-name", "Values": ["running"]}
        filters: Iterable[list[dict[str, Any]]] = [
            *([{"Name": f"tag:{key}", "Values": [cluster]}, running] for key in CLUSTER_TAG_KEYS),
            [{"Name": "tag-key", "Values": [f"{CLUSTER_TAG_PREFIX}{cluster}"]}, running],
        ]
        nodes: dict[str, Instance] = {}
        for flt in filters:
            nodes.update((i.instance_id, i) for i in self._describe(Filters=flt))
        return sorted(nodes.values(), key=lambda i: i.instance_id)
