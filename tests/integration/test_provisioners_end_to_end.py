"""Every provisioner's nodes (provisioners.py, the one list) remediated end to end, by every trigger.

The fake Run Command refuses a send IAM would refuse: template.yaml's statements in the home
account, member-account.yaml's in a member account, evaluated with the node's tags
(tests/fakes/iam.py). So each test proves recognition, the EC2 queries and IAM agree for that
provisioner's tags: the node is sent the document and its attempt ends SUCCEEDED.
In a member account the product acts on launches and manual invokes (docs/scale.md: the
pull-failure trigger and the sweep stay in the deployment's own account).
"""

from __future__ import annotations

import pytest
from eks_ca_remediator.provisioners import PROVISIONERS, Provisioner
from on_launch import handler as launch
from pull_failure import handler as pull_failure
from remediate import handler as remediate

from tests.fakes.cloudwatch_logs import fixture, for_node, payload
from tests.fakes.world import LambdaContext, World, node_output
from tests.integration.test_central_mode import MEMBER, REGION, central_world, member_launch
from tests.integration.test_pull_failure_flow import JOURNALD, hostnames
from tests.integration.test_sweep import harness

KEYS = [p.key for p in PROVISIONERS]
CLUSTER = "prod-b"


def by_key(key: str) -> Provisioner:
    return next(p for p in PROVISIONERS if p.key == key)


def finished(world: World, nodes: list[str], ssm=None) -> None:
    """Every sent node's invocation succeeds; each node's attempt is SUCCEEDED."""
    from on_command_status import handler as status

    ssm = ssm or world.ssm
    sent = {i for ids in ssm.sent_to() for i in ids}
    assert sent == set(nodes)
    for (command_id, instance_id), inv in list(ssm.invocations.items()):
        if inv.status == "Pending":
            status(ssm.finish(command_id, instance_id, "Success", node_output()), LambdaContext())
    for node in nodes:
        assert [a["status"] for a in world.attempts(node)] == ["SUCCEEDED"], node


@pytest.mark.parametrize("key", KEYS)
def test_launch(world, key):
    [node] = world.add_nodes(cluster=CLUSTER, tag_style=key)
    result = launch(world.launch_event(node), LambdaContext())
    assert result["action"] == "remediating"
    finished(world, [node])
    assert world.attempts(node)[0]["cluster"] == CLUSTER


@pytest.mark.parametrize("key", KEYS)
def test_manual_instance_and_cluster(world, key):
    nodes = world.add_nodes(3, cluster=CLUSTER, tag_style=key)
    other = world.add_nodes(cluster="staging", tag_style=key)  # not enrolled: never a target
    assert remediate({"instance_id": nodes[0]}, LambdaContext())["count"] == 1
    finished(world, nodes[:1])
    world.clock.advance(world.settings.instance_cooldown_seconds + 1)
    result = remediate({"cluster": CLUSTER}, LambdaContext())
    assert sorted(r["pk"] for r in result["records"]) == sorted(nodes)
    assert not set(other) & {i for ids in world.ssm.sent_to() for i in ids}


@pytest.mark.parametrize("key", KEYS)
def test_sweep(key):
    with harness() as h:
        w = h.world
        nodes = w.add_nodes(4, cluster=CLUSTER, tag_style=key)
        h.trigger()
        runs = h.drain()
        assert [r for r in runs if r.get("cluster") == CLUSTER][0]["nodes"] == 4
        finished(w, nodes)


@pytest.mark.parametrize("key", KEYS)
def test_pull_failure(world, key):
    nodes = world.add_nodes(2, cluster=CLUSTER, tag_style=key)
    template = fixture(JOURNALD)["message"]
    lines = [for_node(template, node, host) for node, host in hostnames(world, nodes).items()]
    result = pull_failure(payload(lines, "fluent-bit-journald", log_group="/eks/prod-b/journald"), LambdaContext())
    assert result["nodes"] == 2
    finished(world, nodes)


@pytest.mark.parametrize("key", KEYS)
def test_member_account_launch_and_manual(key):
    with central_world() as (world, member):
        tags = by_key(key).tags_for("prod-a")
        ids = []
        for _ in range(2):
            response = member.ec2.run_instances(
                ImageId="ami-12345678",
                MinCount=1,
                MaxCount=1,
                TagSpecifications=[
                    {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
                ],
            )
            ids.append(response["Instances"][0]["InstanceId"])
            member.ssm.register(ids[-1], online_at=world.clock())
        launched, manual = ids
        assert launch(member_launch(world, launched), LambdaContext())["action"] == "remediating"
        request = {"instance_id": manual, "account": MEMBER, "region": REGION}
        assert remediate(request, LambdaContext())["count"] == 1
        finished(world, ids, member.ssm)
        assert world.ssm.commands == []
        assert {world.attempts(i)[0]["account"] for i in ids} == {MEMBER}


@pytest.mark.parametrize("key", ["eks", "karpenter", "capa"])
def test_iam_refuses_what_the_policy_does_not_allow(world, key):
    """The fake's IAM is live (a refusal reaches the product): recorded FAILED with IAM's reason."""
    world.send_roles.refuse_everything()  # the send role of the node's cluster refuses it
    [node] = world.add_nodes(cluster=CLUSTER, tag_style=key)
    launch(world.launch_event(node), LambdaContext())
    [attempt] = world.attempts(node)
    assert attempt["status"] == "FAILED"
    assert "IAM denied SendCommand" in attempt["reason"]


TWO_CLUSTERS = {"eks:cluster-name": "prod-a", "kubernetes.io/cluster/prod-b": "owned"}


def assert_skipped_naming_both(world: World, node: str) -> None:
    [attempt] = world.attempts(node)
    assert attempt["status"] == "SKIPPED"
    assert "prod-a (eks:cluster-name=prod-a)" in attempt["reason"]
    assert "prod-b (kubernetes.io/cluster/prod-b=owned)" in attempt["reason"]
    assert node not in {i for ids in world.ssm.sent_to() for i in ids}


def test_tags_naming_two_clusters_are_recorded_skipped_by_every_trigger():
    with harness() as h:
        world = h.world
        launched, manual, logged, swept = (world.add_nodes(tags=TWO_CLUSTERS)[0] for _ in range(4))
        assert launch(world.launch_event(launched), LambdaContext())["action"] == "skipped"
        assert_skipped_naming_both(world, launched)

        assert remediate({"instance_id": manual}, LambdaContext())["count"] == 1
        assert_skipped_naming_both(world, manual)

        line = for_node(fixture(JOURNALD)["message"], logged, hostnames(world, [logged])[logged])
        result = pull_failure(payload([line], "fluent-bit-journald"), LambdaContext())
        assert result["skipped_lines"] == {"node tags name different clusters": 1}
        assert_skipped_naming_both(world, logged)

        h.trigger()
        h.drain()
        for node in (launched, manual, logged, swept):  # the sweep records each once (per sweep)
            assert [a["status"] for a in world.attempts(node)].count("SKIPPED") >= 1
        assert world.ssm.commands == []


@pytest.mark.parametrize("value", ["prod-a;reboot", "prod-a prod-b", "-prod-a", "prod-a\n"])
def test_a_tag_value_that_is_not_a_cluster_name_is_ignored(world, value):
    [node] = world.add_nodes(tags={"eks:cluster-name": value})
    result = launch(world.launch_event(node), LambdaContext())
    assert result["action"] == "ignored"
    assert world.attempts(node) == []
    assert world.ssm.calls.get("SendCommand", 0) == 0
