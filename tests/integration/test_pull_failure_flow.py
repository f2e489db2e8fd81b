"""CloudWatch Logs pull-failure lines -> deduplicated, batched remediation, through the real handler."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from eks_ca_remediator.adapters.records import RecordStore
from eks_ca_remediator.errors import InvalidRequest
from eks_ca_remediator.pull_failures import decode_subscription
from pull_failure import handler

from tests.fakes.cloudwatch_logs import SAMPLE_INSTANCE, fixture, fixture_lines, for_node, payload
from tests.fakes.world import LambdaContext, World, node_output

ROOT = Path(__file__).resolve().parents[2]
KUBELET = "kubelet structured PullImage, new Go wording, CloudWatch agent stream named by instance id"
CONTAINERD_OLD = "containerd PullImage failed, old Go wording, registry with port"
INSIGHTS = "Container Insights dataplane record without the aws filter: hostname only"
JOURNALD = "Fluent Bit journald record as read (systemd input, no rename), regional hostname"
EXPIRED = "expired registry certificate"
ECR_LAYER = "ECR through a TLS-intercepting proxy: layer download redirected to S3"
SANDBOX_OLD = "older kubelet (dockershim) sandbox image: 'failed pulling image', Docker daemon wording"


class LockedTable:
    """DynamoDB applies each conditional write atomically; moto does not under threads. One lock
    around every table call gives moto DynamoDB's per-request atomicity, nothing more."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._table, name)

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return method(*args, **kwargs)

        return locked


def hostnames(world: World, instance_ids: list[str]) -> dict[str, str]:
    pages = world.ec2.get_paginator("describe_instances").paginate(InstanceIds=instance_ids)
    return {
        i["InstanceId"]: i["PrivateDnsName"] for page in pages for r in page["Reservations"] for i in r["Instances"]
    }


def hostname(world: World, instance_id: str) -> str:
    return hostnames(world, [instance_id])[instance_id]


def node_lines(world: World, instance_id: str, *names: str) -> tuple[list[str], str]:
    """The named fixture lines as `instance_id` logged them, and the stream of the first one."""
    host = hostname(world, instance_id)
    cases = [fixture(name) for name in names]
    return [for_node(c["message"], instance_id, host) for c in cases], for_node(
        cases[0]["log_stream"], instance_id, host
    )


def count_describe_calls(world: World) -> list[int]:
    calls = [0]

    def count(**_: Any) -> None:
        calls[0] += 1

    world.ec2.meta.events.register("before-call.ec2.DescribeInstances", count)
    return calls


def test_a_flood_from_one_node_across_ten_invocations_some_concurrent_sends_one_command(world):
    world.remediator.records = RecordStore(LockedTable(world.table))
    [node] = world.add_nodes(cluster="prod-a")
    mixed = [KUBELET, CONTAINERD_OLD]
    by_id, stream = node_lines(world, node, *mixed)
    by_host, host_stream = node_lines(world, node, INSIGHTS, JOURNALD)
    invocations = [
        payload((by_id * 50)[:100], stream) if i % 2 else payload((by_host * 50)[:100], host_stream) for i in range(10)
    ]

    start = threading.Barrier(6)

    def invoke_together(event: dict[str, Any]) -> dict[str, Any]:
        start.wait()
        return handler(event, LambdaContext())

    with ThreadPoolExecutor(max_workers=6) as pool:  # six concurrent invocations race for a fresh node
        results = list(pool.map(invoke_together, invocations[:6]))
    results += [handler(event, LambdaContext()) for event in invocations[6:]]

    assert sum(r["pull_failures"] for r in results) == 1000
    assert world.ssm.sent_to() == [[node]]
    [attempt] = world.attempts(node)
    assert attempt["status"] == "SENT"
    assert attempt["trigger"] == "pull-failure"
    # whichever invocation created the attempt: hostname-attributed lines name one registry, the others two
    assert attempt["registry_hosts"] in (
        ["registry.example.internal"],
        ["registry.example.internal", "registry.example.internal:5000"],
    )
    params = world.ssm.commands[0]["Parameters"]
    assert params["RegistryHosts"] == [",".join(attempt["registry_hosts"])]
    assert "x509 unknown authority" in attempt["reason"]


def test_500_nodes_in_one_window_go_out_in_ten_send_command_calls():
    with World.create(MAX_IN_FLIGHT_PER_CLUSTER="1000") as world:  # the per-cluster limit is not under test
        _five_hundred_nodes(world)


def _five_hundred_nodes(world: World) -> None:
    nodes = world.add_nodes(500, cluster="prod-b", tag_style="karpenter")
    template = fixture(JOURNALD)
    lines = [for_node(template["message"], node, host) for node, host in hostnames(world, nodes).items()]
    describe_calls = count_describe_calls(world)

    result = handler(payload(lines * 2, "fluent-bit-journald", log_group="/eks/prod-b/journald"), LambdaContext())

    assert result["nodes"] == 500
    assert len(world.ssm.commands) == 10
    assert all(len(ids) <= 50 for ids in world.ssm.sent_to())
    assert sorted(i for ids in world.ssm.sent_to() for i in ids) == sorted(nodes)
    assert describe_calls[0] == 3  # 500 hostnames, 200 per call

    handler(payload(lines, "fluent-bit-journald", log_group="/eks/prod-b/journald"), LambdaContext())
    assert len(world.ssm.commands) == 10  # same window: deduplicated
    assert describe_calls[0] == 3  # hostnames cached in the warm Lambda


def test_expired_certificate_is_recorded_not_remediable_and_sends_nothing(world):
    [node] = world.add_nodes()
    lines, stream = node_lines(world, node, EXPIRED)

    result = handler(payload(lines * 30, stream), LambdaContext())
    handler(payload(lines, stream), LambdaContext())

    assert world.ssm.commands == []
    assert result["records"] == {"NOT_REMEDIABLE": 1}
    [record] = world.attempts(node)
    assert record["status"] == "NOT_REMEDIABLE"
    assert "certificate-expired" in record["reason"]
    assert "expired" in record["reason"]
    assert "registry.example.internal/team/app:1.4.2" in record["reason"]
    assert record["registry_hosts"] == ["registry.example.internal"]
    assert not record.get("command_id")


def test_a_node_with_both_kinds_gets_a_command_and_a_not_remediable_record(world):
    [node] = world.add_nodes()
    lines, stream = node_lines(world, node, KUBELET, EXPIRED)

    handler(payload(lines, stream), LambdaContext())

    assert world.ssm.sent_to() == [[node]]
    assert sorted(r["status"] for r in world.attempts(node)) == ["NOT_REMEDIABLE", "SENT"]


ECR_HOSTS = (
    "111122223333.dkr.ecr.us-east-1.amazonaws.com,prod-us-east-1-starport-layer-bucket.s3.us-east-1.amazonaws.com"
)


@pytest.mark.parametrize(
    ("line", "strategy", "hosts", "why"),
    [
        (ECR_LAYER, "auto", ECR_HOSTS, "hosts.toml cannot cover"),  # ECR needs the trust store + restart path
        (CONTAINERD_OLD, "hosts-toml", "registry.example.internal:5000", "x509 unknown authority"),
        (SANDBOX_OLD, "hosts-toml", "registry.example.internal", "x509 unknown authority"),
    ],
)
def test_strategy_and_registry_hosts_follow_the_failing_registry(line, strategy, hosts, why):
    with World.create(DEFAULT_STRATEGY="hosts-toml") as world:
        [node] = world.add_nodes()
        lines, stream = node_lines(world, node, line)

        handler(payload(lines, stream), LambdaContext())

        [command] = world.ssm.commands
        assert command["Parameters"]["Strategy"] == [strategy]
        assert command["Parameters"]["RegistryHosts"] == [hosts]
        [attempt] = world.attempts(node)
        assert attempt["strategy"] == strategy
        assert attempt["registry_hosts"] == hosts.split(",")
        assert why in attempt["reason"]


def test_next_window_while_in_flight_is_skipped_then_sent_once_finished(world):
    [node] = world.add_nodes()
    lines, stream = node_lines(world, node, KUBELET)
    cooldown = world.settings.pull_failure_cooldown_seconds

    handler(payload(lines, stream), LambdaContext())
    world.clock.advance(cooldown)
    handler(payload(lines, stream), LambdaContext())
    assert len(world.ssm.commands) == 1
    assert sorted(a["status"] for a in world.attempts(node)) == ["SENT", "SKIPPED"]

    world.finish_all("Success", node_output())
    world.clock.advance(cooldown)
    handler(payload(lines, stream), LambdaContext())
    assert len(world.ssm.commands) == 2


def test_lines_from_nodes_outside_enrolled_clusters_are_ignored(world):
    [stranger] = world.add_nodes(cluster="someone-else")
    [bastion] = world.add_nodes(tag_style="none")
    for node in (stranger, bastion):
        lines, stream = node_lines(world, node, KUBELET, EXPIRED)
        result = handler(payload(lines, stream), LambdaContext())
        assert result["skipped_lines"] == {"not an enrolled cluster's node": 2}
    assert world.ssm.commands == []
    assert world.all_attempts() == []


def test_look_alikes_and_unknown_nodes_send_nothing(world):
    [node] = world.add_nodes()
    look_alikes = [c for c in fixture_lines() if c["expect"] is None]
    host = hostname(world, node)
    result = handler(
        payload([for_node(c["message"], node, host) for c in look_alikes], f"{node}/kubelet"), LambdaContext()
    )
    assert result["pull_failures"] == 0
    unknown = fixture(KUBELET)["message"]
    result = handler(payload([unknown], "i-0fffffffffffffff0/kubelet"), LambdaContext())
    assert result["skipped_lines"] == {"node not found in EC2": 1}
    assert world.ssm.commands == []
    assert world.all_attempts() == []


def test_control_message_is_skipped(world):
    result = handler(payload([], "CloudwatchLogs", message_type="CONTROL_MESSAGE"), LambdaContext())
    assert result == {"action": "ignored", "reason": "CONTROL_MESSAGE"}


@pytest.mark.parametrize(
    "event",
    [
        {"awslogs": {"data": "H4sIAAAAAAAA/////not-really"}},
        {"awslogs": {"data": "bm90IGd6aXAgYXQgYWxs"}},
        {"awslogs": {"data": "truncated"}},
        {"Records": [{"body": "an SQS event sent here by mistake"}]},
    ],
)
def test_garbage_payloads_log_an_error_raise_for_the_dead_letter_queue_and_send_nothing(world, event, caplog):
    with pytest.raises(InvalidRequest):
        handler(event, LambdaContext())
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "undecodable CloudWatch Logs payload: sent to the dead-letter queue after retries"
    ]
    assert world.ssm.commands == []
    assert world.all_attempts() == []


def test_truncated_real_payload_is_rejected(world):
    [node] = world.add_nodes()
    lines, stream = node_lines(world, node, KUBELET)
    event = payload(lines * 10, stream)
    event["awslogs"]["data"] = event["awslogs"]["data"][: len(event["awslogs"]["data"]) // 8 * 4]  # valid base64
    with pytest.raises(InvalidRequest, match="gzip"):
        handler(event, LambdaContext())
    assert world.ssm.commands == []


def test_sample_event_for_sam_local_invoke(world):
    [node] = world.add_nodes()
    event = json.loads((ROOT / "events/pull_failure.json").read_text())
    batch = decode_subscription(event)
    host = hostname(world, node)
    messages = [for_node(m, node, host) for m in batch.messages]
    result = handler(payload(messages, for_node(batch.log_stream, node, host), batch.log_group), LambdaContext())
    assert result["nodes"] == 1
    assert world.ssm.sent_to() == [[node]]
    assert SAMPLE_INSTANCE not in json.dumps(world.ssm.commands[0]["Parameters"])


def _node_in_own_vpc(world: World, cluster: str, ip: str) -> str:
    vpc = world.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = world.ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    [node] = world.add_nodes(cluster=cluster)
    world.ec2.terminate_instances(InstanceIds=[node])  # (add_nodes' own instance is not used)
    instance = world.ec2.run_instances(
        ImageId="ami-12345678",
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
        PrivateIpAddress=ip,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "eks:cluster-name", "Value": cluster}]}],
    )["Instances"][0]["InstanceId"]
    world.ssm.register(instance)
    return instance


def test_two_nodes_sharing_a_private_dns_name_are_both_remediated(world):
    """The 500-node test once saw 499: moto drew the same random private IP for two instances, so
    two nodes had one private DNS name and the lookup by name kept only the last. In AWS the same
    happens to nodes of VPCs with overlapping CIDRs in one account and region. Deterministic here:
    two VPCs on 10.0.0.0/16, one node each at 10.0.0.10 (ip-10-0-0-10.ec2.internal)."""
    first = _node_in_own_vpc(world, "prod-a", "10.0.0.10")
    second = _node_in_own_vpc(world, "prod-b", "10.0.0.10")
    names = hostnames(world, [first, second])
    assert names[first] == names[second]
    line = for_node(fixture(JOURNALD)["message"], first, names[first])

    result = handler(payload([line], "fluent-bit-journald", log_group="/eks/shared/journald"), LambdaContext())

    assert result["nodes"] == 2
    assert sorted(i for ids in world.ssm.sent_to() for i in ids) == sorted([first, second])
    assert [a["cluster"] for a in world.attempts(first)] == ["prod-a"]
    assert [a["cluster"] for a in world.attempts(second)] == ["prod-b"]
