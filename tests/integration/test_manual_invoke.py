"""Manual invoke (Remediate function): one instance or a whole cluster; bad input -> clear errors."""

from __future__ import annotations

import pytest
from eks_ca_remediator.errors import InvalidRequest
from eks_ca_remediator.models import ClusterRef
from remediate import handler as remediate

from tests.fakes.world import LambdaContext


def test_cluster_of_120_nodes_is_sent_in_3_batches_of_at_most_50(world):
    nodes = world.add_nodes(120, cluster="prod-a")
    world.add_nodes(7, cluster="prod-b")  # another cluster's nodes are not touched

    result = remediate({"cluster": "prod-a"}, LambdaContext())

    assert result["count"] == 120
    batches = world.ssm.sent_to()
    assert [len(b) for b in batches] == [50, 50, 20]
    assert sorted(i for b in batches for i in b) == sorted(nodes)
    assert world.ssm.calls["SendCommand"] == 3
    assert {r["status"] for r in result["records"]} == {"SENT"}
    assert {r["trigger"] for r in result["records"]} == {"manual"}


def test_single_instance_with_strategy_and_dry_run(world):
    [node] = world.add_nodes()

    result = remediate(
        {"instance_id": node, "strategy": "hosts-toml", "dry_run": True, "reason": "ticket OPS-42"}, LambdaContext()
    )

    [record] = result["records"]
    assert record["instance_id"] == node
    assert record["strategy"] == "hosts-toml"
    assert record["dry_run"] is True
    assert record["reason"] == "ticket OPS-42"
    params = world.ssm.commands[0]["Parameters"]
    assert params["Strategy"] == ["hosts-toml"]
    assert params["DryRun"] == ["true"]

    world.finish_all("Success", '{"result": "dry-run", "restarted": false, "actions": ["would restart"]}\n')
    [record] = world.attempts(node)
    assert record["status"] == "DRY_RUN"
    assert record["node_result"]["actions"] == ["would restart"]


def test_deployment_dry_run_cannot_be_switched_off_by_a_request():
    from tests.fakes.world import World

    with World.create(DRY_RUN="true") as world:
        [node] = world.add_nodes()
        remediate({"instance_id": node, "dry_run": False}, LambdaContext())
        assert world.ssm.commands[0]["Parameters"]["DryRun"] == ["true"]


def test_manual_instance_with_agent_not_online_waits_like_a_launch(world):
    [node] = world.add_nodes(agent_online_after=20)
    result = remediate({"instance_id": node}, LambdaContext())
    assert result["records"][0]["status"] == "PENDING_AGENT"
    world.run_for(40)
    assert world.ssm.sent_to() == [[node]]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({}, "give exactly one of 'instance_id' or 'cluster'"),
        ({"instance_id": "i-0123456789abcdef0", "cluster": "prod-a"}, "give exactly one"),
        ({"instance_id": "i-xyz"}, "instance_id: String should match pattern"),
        ({"instance_id": "i-0123456789abcdef0; reboot"}, "instance_id: String should match pattern"),
        ({"instance_id": 12345}, "instance_id: Input should be a valid string"),
        ({"cluster": "prod a"}, "cluster: String should match pattern"),
        ({"cluster": "prod-a", "strategy": "reboot"}, "strategy: Input should be 'auto', 'restart' or 'hosts-toml'"),
        ({"cluster": "prod-a", "dry_run": "maybe"}, "dry_run: Input should be a valid boolean"),
        ({"cluster": "prod-a", "colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"cluster": "prod-a", "reason": "x" * 201}, "reason: String should have at most 200 characters"),
        ({"cluster": "prod-a", "reason": "line\nbreak"}, "reason: String should match pattern"),
        (["i-0123456789abcdef0"], "expected a JSON object, got list"),
    ],
)
def test_bad_input_gets_a_clear_error_and_sends_nothing(world, event, message):
    with pytest.raises(InvalidRequest) as raised:
        remediate(event, LambdaContext())
    assert message in str(raised.value)
    assert world.ssm.commands == []
    assert world.all_attempts() == []


def test_unknown_cluster_is_refused(world):
    world.add_nodes(3, cluster="staging")
    with pytest.raises(InvalidRequest, match="cluster 'staging' is not enrolled"):
        remediate({"cluster": "staging"}, LambdaContext())
    assert world.ssm.commands == []


def test_instance_outside_enrolled_clusters_is_refused(world):
    [other] = world.add_nodes(cluster="staging")
    with pytest.raises(InvalidRequest, match="not a node of an enrolled cluster"):
        remediate({"instance_id": other}, LambdaContext())
    assert world.ssm.commands == []


def test_unknown_instance_is_refused(world):
    with pytest.raises(InvalidRequest, match="EC2 has no instance i-0123456789abcdef0"):
        remediate({"instance_id": "i-0123456789abcdef0"}, LambdaContext())


def test_stopped_instance_is_refused(world):
    [node] = world.add_nodes()
    world.ec2.stop_instances(InstanceIds=[node])
    with pytest.raises(InvalidRequest, match="is stopped, not running"):
        remediate({"instance_id": node}, LambdaContext())


def test_enrolled_cluster_without_running_nodes_is_refused(world):
    with pytest.raises(InvalidRequest, match="has no running nodes"):
        remediate({"cluster": "prod-b"}, LambdaContext())


def test_cluster_records_are_queryable_by_time_range(world):
    world.add_nodes(4, cluster="prod-a")
    remediate({"cluster": "prod-a"}, LambdaContext())
    items = world.remediator.records.cluster_attempts(ClusterRef("prod-a"), "2000-01-01", "2100-01-01")
    assert len(items) == 4
    assert world.remediator.records.cluster_attempts(ClusterRef("prod-a"), "2000-01-01", "2000-01-02") == []
    latest = world.remediator.records.latest(items[0]["instance_id"])
    assert latest["sk"] == items[0]["sk"]
