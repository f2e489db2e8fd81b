"""EC2 reads: the instance's tags and state, and the running nodes of a cluster."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from eks_ca_remediator.decisions import CLUSTER_TAG_KEYS, CLUSTER_TAG_PREFIXES, chunks
from eks_ca_remediator.errors import InstanceNotFound


@dataclass(frozen=True)
class Instance:
    instance_id: str
    state: str
    tags: dict[str, str] = field(default_factory=dict)
    private_dns_name: str = ""
    # DescribeInstances (botocore ec2 model, shape Instance): `Platform` is "windows" for Windows
    # instances and absent otherwise; `PlatformDetails` the AMI billing platform ("Windows",
    # "Linux/UNIX", ...); `Operator` (OperatorResponse: Managed, Principal) the service provider
    # that manages the instance - eks.amazonaws.com for EKS Auto Mode nodes.
    platform: str = ""
    platform_details: str = ""
    operator_managed: bool = False
    operator_principal: str = ""


def _instance(raw: dict[str, Any]) -> Instance:
    operator = raw.get("Operator") or {}
    return Instance(
        instance_id=raw["InstanceId"],
        state=raw["State"]["Name"],
        tags={t["Key"]: t["Value"] for t in raw.get("Tags", [])},
        private_dns_name=raw.get("PrivateDnsName", ""),
        platform=raw.get("Platform", ""),
        platform_details=raw.get("PlatformDetails", ""),
        operator_managed=bool(operator.get("Managed", False)),
        operator_principal=operator.get("Principal", ""),
    )


DESCRIBE_BATCH = 200  # instance ids, or values of one filter, per DescribeInstances call
CACHE_LIMIT = 20_000


class Ec2Reader:
    def __init__(
        self, ec2_client: Any, cache_seconds: float = 300, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ec2 = ec2_client
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, Any]] = {}  # (expiry, an Instance, a list of them, or None)

    def _describe(self, **kwargs: Any) -> list[Instance]:
        found = []
        for page in self._ec2.get_paginator("describe_instances").paginate(**kwargs):
            for reservation in page["Reservations"]:
                found.extend(_instance(raw) for raw in reservation["Instances"])
        return found

    def instances(self, instance_ids: Sequence[str]) -> dict[str, Instance]:
        """Instances by id; ids EC2 does not know are absent from the result (never an error)."""
        found: dict[str, Instance] = {}
        for batch in chunks(list(dict.fromkeys(instance_ids)), DESCRIBE_BATCH):
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

    def states(self, instance_ids: Sequence[str]) -> dict[str, str]:
        """EC2 state of each instance EC2 still lists (filter instance-id, DESCRIBE_BATCH ids per
        call: unknown ids are simply absent, no error)."""
        found: dict[str, str] = {}
        for batch in chunks(list(dict.fromkeys(instance_ids)), DESCRIBE_BATCH):
            found.update(
                (i.instance_id, i.state) for i in self._describe(Filters=[{"Name": "instance-id", "Values": batch}])
            )
        return found

    def cached_instances(self, instance_ids: Sequence[str]) -> dict[str, Instance]:
        """`instances()`, remembered for cache_seconds in this warm Lambda (log floods repeat nodes)."""
        return self._cached("id:", instance_ids, self.instances)

    def by_private_dns_name(self, hostnames: Sequence[str]) -> dict[str, list[Instance]]:
        """EVERY instance under each private DNS name: up to 200 names per DescribeInstances call
        (filter private-dns-name), remembered for cache_seconds in this warm Lambda - unknown names
        too. A name is unique only within a VPC: VPCs with overlapping CIDRs in one account and
        region (each cluster's VPC on eksctl's default 192.168.0.0/16, say) give instances the
        same ip-<a>-<b>-<c>-<d> name, so one name may be several instances, none to be dropped."""
        return self._cached("dns:", hostnames, self._describe_by_dns_name)

    def _describe_by_dns_name(self, hostnames: Sequence[str]) -> dict[str, list[Instance]]:
        found: dict[str, list[Instance]] = {}
        for batch in chunks(list(hostnames), DESCRIBE_BATCH):
            for instance in self._describe(Filters=[{"Name": "private-dns-name", "Values": batch}]):
                found.setdefault(instance.private_dns_name, []).append(instance)
        return found

    def _cached[V](
        self, kind: str, keys: Sequence[str], fetch: Callable[[Sequence[str]], dict[str, V]]
    ) -> dict[str, V]:
        now = self._clock()
        wanted = list(dict.fromkeys(keys))
        known = {k: hit for k in wanted if (hit := self._cache.get(kind + k)) is not None and hit[0] > now}
        missing = [k for k in wanted if k not in known]
        if missing:
            if len(self._cache) > CACHE_LIMIT:
                self._cache.clear()
            found = fetch(missing)
            for key in missing:
                known[key] = self._cache[kind + key] = (now + self._cache_seconds, found.get(key))
        return {k: instance for k, (_, instance) in known.items() if instance is not None}

    def instance(self, instance_id: str) -> Instance:
        found = self.instances([instance_id]).get(instance_id)
        if found is None:
            raise InstanceNotFound(f"EC2 has no instance {instance_id} in this account and region")
        return found

    def running_cluster_nodes(self, cluster: str) -> list[Instance]:
        """Running instances carrying any of the tags provisioners put on nodes (provisioners.py)."""
        running = {"Name": "instance-state-name", "Values": ["running"]}
        filters: Iterable[list[dict[str, Any]]] = [
            *([{"Name": f"tag:{key}", "Values": [cluster]}, running] for key in CLUSTER_TAG_KEYS),
            *(
                [{"Name": f"tag:{prefix}{cluster}", "Values": list(values)}, running]
                for prefix, values in CLUSTER_TAG_PREFIXES.items()
            ),
        ]
        nodes: dict[str, Instance] = {}
        for flt in filters:
            nodes.update((i.instance_id, i) for i in self._describe(Filters=flt))
        return sorted(nodes.values(), key=lambda i: i.instance_id)
