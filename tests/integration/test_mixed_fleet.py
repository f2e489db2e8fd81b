"""One cluster of every node kind (README: node kinds), driven through launch, a sweep and a manual
cluster invoke with the real handlers: Linux and Bottlerocket nodes are remediated; Windows and EKS
Auto Mode nodes are recorded NOT_REMEDIABLE at once and never sent to; nodes whose SSM agent never
comes Online are NOT_REMEDIABLE after the agent-wait deadline; nothing of it opens the breaker."""

from __future__ import annotations

from collections import Counter

from eks_ca_remediator import status
from eks_ca_remediator.models import ClusterRef
from on_command_status import handler as on_command_status
from on_launch import handler as on_launch
from pull_failure import handler as pull_failure
from remediate import handler as remediate

from tests.fakes.cloudwatch_logs import payload
from tests.fakes.run_command import SKIPPED_ON_WINDOWS
from tests.fakes.world import LambdaContext, World, node_output
from tests.integration.test_metrics import emitted
from tests.integration.test_pull_failure_flow import KUBELET, node_lines
from tests.integration.test_sweep import harness

FLEET = {  # kind of node -> (how many, how its provisioner tags it, what EC2 and SSM say of it)
    "linux managed node group": (3, "eks", "linux"),
    "karpenter": (3, "karpenter", "linux"),
    "bottlerocket": (2, "karpenter", "bottlerocket"),
    "windows": (6, "eks", "windows"),
    "eks auto mode": (3, "karpenter", "auto-mode"),
    "no ssm agent": (3, "eks", "no-agent"),
}
REMEDIATED = ("linux managed node group", "karpenter", "bottlerocket")


def sends(world: World, nodes: list[str]) -> int:
    return sum(1 for ids in world.ssm.sent_to() for i in ids if i in nodes)


def newest(world: World, node: str) -> dict:
    return max(world.attempts(node), key=lambda a: a["sk"])


def wait_past_the_agent_deadline(world: World) -> None:
    world.run_for(world.settings.agent_wait_deadline_seconds + 60, step=5)


def test_a_mixed_fleet_through_launch_sweep_and_manual_invoke():
    with harness() as h:
        world = h.world
        nodes = {kind: world.add_nodes(n, tag_style=tags, kind=kind_) for kind, (n, tags, kind_) in FLEET.items()}

        # ---- launch: every node of the cluster reaches `running`
        for members in nodes.values():
            for node in members:
                on_launch(world.launch_event(node), LambdaContext())
        for kind in ("windows", "eks auto mode"):  # at once: no agent wait, nothing sent
            for node in nodes[kind]:
                [record] = world.attempts(node)
                assert record["status"] == "NOT_REMEDIABLE"
                assert "open_attempt" not in record  # final: the reconciler leaves it alone
        assert {newest(world, n)["node_kind"] for n in nodes["windows"]} == {"windows"}
        assert {newest(world, n)["node_kind"] for n in nodes["eks auto mode"]} == {"eks-auto-mode"}
        assert {newest(world, n)["status"] for n in nodes["no ssm agent"]} == {"PENDING_AGENT"}
        world.finish_all("Success", node_output())
        wait_past_the_agent_deadline(world)
        for node in nodes["no ssm agent"]:
            record = newest(world, node)
            assert record["status"] == "NOT_REMEDIABLE"
            assert record["node_kind"] == "no-ssm-agent"
            assert "AmazonSSMManagedInstanceCore" in record["reason"]
            assert "open_attempt" not in record

        # ---- a scheduled sweep: the remediated nodes are current, the others left alone
        attempts_before = len(world.all_attempts())
        h.trigger()
        [pass_a] = [p for p in h.drain() if p["cluster"] == "prod-a"]
        assert pass_a["action"] == "complete"
        assert pass_a["started"] == 0
        assert pass_a["states"] == {"current": 8, "not_remediable": 9, "no_ssm_agent": 3}
        assert len(world.all_attempts()) == attempts_before  # not even a record per pass

        # ---- a manual cluster invoke, after the nodes' cooldown
        world.clock.advance(world.settings.instance_cooldown_seconds + 1)
        remediate({"cluster": "prod-a"}, LambdaContext())
        world.finish_all("Success", node_output())
        wait_past_the_agent_deadline(world)

        sent = {kind: sends(world, members) for kind, members in nodes.items()}
        assert sent == {
            "linux managed node group": 6,  # launch + manual invoke, 3 nodes each
            "karpenter": 6,
            "bottlerocket": 4,
            "windows": 0,
            "eks auto mode": 0,
            "no ssm agent": 0,
        }
        final = {kind: Counter(newest(world, n)["status"] for n in members) for kind, members in nodes.items()}
        for kind in REMEDIATED:
            assert final[kind] == {"SUCCEEDED": FLEET[kind][0]}
        for kind in ("windows", "eks auto mode", "no ssm agent"):
            assert final[kind] == {"NOT_REMEDIABLE": FLEET[kind][0]}
        assert not any(a["status"] == "FAILED" for a in world.all_attempts())

        breaker = world.remediator.records.breaker(ClusterRef("prod-a")) or {}
        assert int(breaker.get("failures", 0)) == 0
        assert float(breaker.get("open_until", 0)) <= world.clock()

        # ---- status: each kind apart, none of them failed
        summary = status.summarize(ClusterRef("prod-a"), world.all_attempts(), breaker, {}, world.clock())
        assert summary.nodes == 20
        assert summary.states["current"] == 8
        assert summary.states["failed"] == 0
        assert summary.states["skipped"] == 12
        assert summary.kinds == {"windows": 6, "eks-auto-mode": 3, "no-ssm-agent": 3, "step-skipped": 0}
        text = status.render_clusters([summary])
        kinds_table = text.strip().split("\n\n")[-1].splitlines()
        assert [h.strip() for h in kinds_table[0].split("  ") if h.strip()] == [
            "CLUSTER",
            "WINDOWS",
            "AUTO MODE",
            "NO SSM AGENT",
            "STEP SKIPPED",
        ]
        assert kinds_table[1].split() == ["prod-a", "6", "3", "3", "0"]
        assert max(map(len, text.splitlines())) <= 80


def test_windows_nodes_ec2_does_not_mark_are_skipped_by_ssm_and_never_open_the_breaker():
    """A Windows node whose EC2 record says nothing of Windows is sent the document; the agent skips
    the Linux step and the invocation is Success with no output of ours: six such nodes are six
    NOT_REMEDIABLE records in SSM's words (its step Output), and the breaker stays closed."""
    with World.create() as world:
        nodes = world.add_nodes(6)
        for node in nodes:  # the agent is a Windows one: PlatformType Windows
            world.ssm.register(node, platform="Microsoft Windows Server 2022 Datacenter", platform_type="Windows")
            on_launch(world.launch_event(node), LambdaContext())
        assert sends(world, nodes) == 6

        for (command_id, node), _ in list(world.ssm.invocations.items()):
            on_command_status(world.ssm.finish(command_id, node, "Success", node_output()), LambdaContext())

        for node in nodes:
            [record] = world.attempts(node)
            assert record["status"] == "NOT_REMEDIABLE"
            assert record["node_kind"] == "step-skipped"
            assert record["reason"] == f"SSM skipped our step: {SKIPPED_ON_WINDOWS}"
        breaker = world.remediator.records.breaker(ClusterRef("prod-a")) or {}
        assert int(breaker.get("failures", 0)) == 0
        assert float(breaker.get("open_until", 0)) <= world.clock()


def test_pull_failures_from_windows_and_auto_mode_nodes_are_recorded_never_sent():
    with World.create() as world:
        linux = world.add_nodes(1)
        windows = world.add_nodes(2, kind="windows")
        auto = world.add_nodes(2, tag_style="karpenter", kind="auto-mode")
        for node in linux + windows + auto:
            lines, stream = node_lines(world, node, KUBELET)
            pull_failure(payload(lines * 5, stream), LambdaContext())

        assert world.ssm.sent_to() == [linux]
        for node, kind in [*((n, "windows") for n in windows), *((n, "eks-auto-mode") for n in auto)]:
            [record] = world.attempts(node)
            assert record["status"] == "NOT_REMEDIABLE"
            assert record["node_kind"] == kind
            assert record["trigger"] == "pull-failure"


def test_a_node_without_an_ssm_agent_has_its_own_metric_and_is_not_a_failure(world, capsys):
    [node] = world.add_nodes(kind="no-agent")
    on_launch(world.launch_event(node), LambdaContext())
    capsys.readouterr()
    wait_past_the_agent_deadline(world)

    metrics = emitted(capsys.readouterr().out)
    assert metrics["NodesWithoutSsmAgent"] == [1]
    assert metrics["RemediationsNotRemediable"] == [1]
    assert "RemediationsFailed" not in metrics
    [record] = world.attempts(node)
    assert record["status"] == "NOT_REMEDIABLE"


def test_a_sweep_sends_to_a_node_without_an_agent_once_its_agent_is_online():
    with harness() as h:
        world = h.world
        [node] = world.add_nodes(kind="no-agent")
        on_launch(world.launch_event(node), LambdaContext())
        wait_past_the_agent_deadline(world)
        assert newest(world, node)["node_kind"] == "no-ssm-agent"

        h.trigger()
        h.drain()
        assert world.ssm.commands == []  # still no agent: left alone, no new wait
        assert len(world.attempts(node)) == 1

        world.ssm.register(node)  # the instance profile was fixed: the agent is Online
        h.trigger()
        h.drain()
        assert world.ssm.sent_to() == [[node]]
