"""A fleet's worth of records, as the functions write them, for the status command's tests.

prod-a: 300 nodes, prod-b: 60 nodes (breaker open). Every node has a launch attempt that succeeded
with the old bundle; then a sweep sent the new bundle, and each node is left in a known state.
`EXPECTED` is what the status command must count.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError
from eks_ca_remediator.adapters.records import OPEN, OPEN_MARK, RECONCILE_AT, RecordStore, attempt_sk
from eks_ca_remediator.models import ClusterRef

NOW = 1_796_212_800.0  # 2026-12-02T12:00:00Z
OLD_FP = hashlib.sha256(b"old bundle").hexdigest()
NEW_FP = hashlib.sha256(b"new bundle").hexdigest()
CA_NOT_AFTER = "2027-06-30T23:59:59Z"
SWEEP_ID = "sweep-7f3c2a"
STACK = "eks-ca-remediator-prod"
TABLE = "eks-ca-remediator-prod-RecordsTable-1X2Y3Z"

# states of prod-a's 300 nodes, in order of instance number
PROD_A = [("current", 240), ("drifted", 20), ("in_flight", 10), ("failed", 12), ("waiting", 8), ("skipped", 10)]
EXPECTED = {
    "prod-a": {"current": 240, "drifted": 20, "in_flight": 10, "failed": 12, "waiting": 8, "skipped": 10},
    "prod-b": {"current": 60, "drifted": 0, "in_flight": 0, "failed": 0, "waiting": 0, "skipped": 0},
}
OLD_FAILURES = 4  # prod-a failures from three days ago (outside --since 24h)
STDERR_TAIL = (
    "remediate-ca: os=al2023 containerd=2.0.5 strategy=auto\n"
    "remediate-ca: trust store updated (update-ca-trust)\n"
    "remediate-ca: containerd restarted (pid 812 -> 1904)\n"
    "remediate-ca: verify registry.example.internal:443 via daemon-pull: x509: certificate signed by unknown authority\n"
)


def iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def instance(cluster: str, n: int) -> str:
    return f"i-0{'a' if cluster == 'prod-a' else 'b'}{n:015x}"


def _attempt(cluster: str, node: str, created: float, trigger: str, key: str, fp: str, status: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        "pk": node,
        "sk": attempt_sk(iso(created), trigger, key),
        "instance_id": node,
        "cluster": cluster,
        "trigger": trigger,
        "trigger_key": key,
        "strategy": "auto",
        "dry_run": False,
        "registry_hosts": ["registry.example.internal:443"],
        "canary_image": "",
        "fingerprint": fp,
        "ca_warnings": [],
        "ca_not_after": CA_NOT_AFTER,
        "remediator_version": "0.1.0",
        "force": False,
        "reason": "",
        "status": status,
        "created_at": iso(created),
        "updated_at": iso(created + 40),
        "agent_wait_deadline": created + 900,
        "expires_at": int(created + 90 * 86400),
        OPEN_MARK: OPEN,
        RECONCILE_AT: created + 960,
    }
    if status in ("SUCCEEDED", "FAILED", "TIMED_OUT"):
        ok = status == "SUCCEEDED"
        result = {
            "result": "success" if ok else "failure",
            "reason": "" if ok else "verification failed: registry.example.internal:443: x509",
            "os_family": "al2023",
            "strategy_requested": "auto",
            "strategy_used": "restart",
            "restarted": True,
            "verification_level": "daemon-pull",
            "fingerprint": fp,
        }
        item |= {
            "command_id": hashlib.md5(item["sk"].encode()).hexdigest()[:8] + "-1111-2222-3333-444455556666",
            "ssm_status": "Success" if ok else "Failed",
            "reason": "" if ok else "verification failed: registry.example.internal:443: x509",
            "node_result": result,
            "restarted": True,
            "verification_level": "daemon-pull",
            # what a node's log tail looks like: a few KB per attempt (the records are not tiny)
            "stdout_tail": json.dumps(result) + "\n",
            "stderr_tail": STDERR_TAIL * (1 if ok else 6),
            "completed_at": iso(created + 40),
        }
    return item


def seed(table: Any) -> RecordStore:
    store = RecordStore(table)
    launch, sweep = NOW - 20 * 86400, NOW - 2 * 3600
    states = [s for s, count in PROD_A for _ in range(count)]
    for cluster, node_states in (("prod-a", states), ("prod-b", ["current"] * 60)):
        for n, state in enumerate(node_states):
            node = instance(cluster, n)
            store.create_attempt(_attempt(cluster, node, launch + n, "launch", f"evt-{n}", OLD_FP, "SUCCEEDED"))
            if state == "drifted":
                continue  # the sweep has not reached it
            status = {
                "current": "SUCCEEDED",
                "in_flight": "SENT",
                "failed": "FAILED" if n % 2 else "TIMED_OUT",
                "waiting": "PENDING_AGENT",
                "skipped": "SKIPPED",
            }[state]
            item = _attempt(cluster, node, sweep + n, "sweep", SWEEP_ID, NEW_FP, status)
            if state == "skipped":
                item["reason"] = "cooldown: last result 120 s ago"
            store.create_attempt(item)
    for k in range(OLD_FAILURES):  # older failures of nodes that are current now
        node = instance("prod-a", k)
        store.create_attempt(_attempt("prod-a", node, NOW - 3 * 86400 + k, "pull-failure", f"pf-{k}", NEW_FP, "FAILED"))
    store.breaker_failure(ClusterRef("prod-a"), NOW - 3600, threshold=5, open_seconds=3600)
    for _ in range(5):
        store.breaker_failure(ClusterRef("prod-b"), NOW - 600, threshold=5, open_seconds=3600)
    store.take_leases(
        ClusterRef("prod-a"), [instance("prod-a", n) for n in range(260, 270)], 500, NOW - 600, NOW + 3000
    )
    return store


def describe_stacks(name: str, clusters: str = "prod-a,prod-b") -> dict[str, Any]:
    """DescribeStacks as CloudFormation answers it for the deployed stack (moto's CloudFormation
    needs openapi-spec-validator, which the dev requirements do not carry); an unknown name gets
    CloudFormation's ValidationError."""
    if name != STACK:
        raise ClientError(
            {"Error": {"Code": "ValidationError", "Message": f"Stack with id {name} does not exist"}}, "DescribeStacks"
        )
    return {
        "Stacks": [
            {
                "StackName": STACK,
                "StackStatus": "UPDATE_COMPLETE",
                "Parameters": [
                    {"ParameterKey": "EnrolledClusters", "ParameterValue": clusters},
                    {"ParameterKey": "MaxInFlightPerCluster", "ParameterValue": "500"},
                ],
                "Outputs": [
                    {"OutputKey": "RecordsTableName", "OutputValue": TABLE},
                    {"OutputKey": "Version", "OutputValue": "0.1.0"},
                ],
            }
        ]
    }


def seed_big(table: Any, cluster: str = "prod-c", nodes: int = 3000) -> None:
    """A cluster of thousands of nodes, each with one finished sweep attempt (batch writes)."""
    with table.batch_writer() as batch:
        for n in range(nodes):
            item = _attempt(cluster, f"i-0c{n:015x}", NOW - 3600 + n / 10, "sweep", SWEEP_ID, NEW_FP, "SUCCEEDED")
            del item[OPEN_MARK], item[RECONCILE_AT]
            batch.put_item(Item=json.loads(json.dumps(item), parse_float=Decimal))
