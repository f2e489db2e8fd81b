"""Fleet safety through the real handlers: in-flight limit, circuit breaker, idempotence."""

from __future__ import annotations

import pytest
from eks_ca_remediator.errors import InvalidRequest
from eks_ca_remediator.models import ClusterRef
from on_command_status import handler as on_command_status
from on_launch import handler as on_launch
from pull_failure import handler as pull_failure
from remediate import handler as remediate

from tests.fakes.cloudwatch_logs import fixture, for_node, payload
from tests.fakes.world import LambdaContext, World, node_output


def in_flight(world: World) -> int:
    return sum(1 for inv in world.ssm.invocations.values() if inv.status in ("Pending", "InProgress"))


def test_work_over_the_in_flight_limit_waits_and_is_sent_later_never_dropped():
    with World.create(MAX_IN_FLIGHT_PER_CLUSTER="10", SAFETY_RECHECK_SECONDS="30") as world:
        nodes = world.add_nodes(25, cluster="prod-a")
        remediate({"cluster": "prod-a"}, LambdaContext())
        assert [len(ids) for ids in world.ssm.sent_to()] == [10]
        waiting = [a for a in world.all_attempts() if a["status"] == "PENDING_AGENT"]
        assert len(waiting) == 15
        assert all("in flight (the limit)" in a["waiting_for"] for a in waiting)

        for _ in range(4):  # nodes finish, the waiting ones are sent on their next re-check
            assert in_flight(world) <= 10
            world.finish_all("Success", node_output())
            world.run_for(31)
        sent = [i for ids in world.ssm.sent_to() for i in ids]
        assert sorted(sent) == sorted(nodes), "every node sent exactly once"
        world.finish_all("Success", node_output())
        assert {a["status"] for a in world.all_attempts()} == {"SUCCEEDED"}


def test_percent_limit_takes_the_lower_of_count_and_percent_of_the_clusters_running_nodes():
    with World.create(
        MAX_IN_FLIGHT_PER_CLUSTER="100", MAX_IN_FLIGHT_PERCENT="20", SAFETY_RECHECK_SECONDS="30"
    ) as world:
        nodes = world.add_nodes(23, cluster="prod-a")
        remediate({"cluster": "prod-a"}, LambdaContext())
        assert [len(ids) for ids in world.ssm.sent_to()] == [5], "ceil(20 % of 23 running nodes) = 5 < 100"
        waiting = [a for a in world.all_attempts() if a["status"] == "PENDING_AGENT"]
        assert len(waiting) == 18
        assert all("5 remediations in flight (the limit)" in a["waiting_for"] for a in waiting)
        assert world.remediator.records.breaker(ClusterRef("prod-a"))["running_nodes"] == 23, "counted once, kept"
        for _ in range(6):
            assert in_flight(world) <= 5
            world.finish_all("Success", node_output())
            world.run_for(31)
        assert sorted(i for ids in world.ssm.sent_to() for i in ids) == sorted(nodes)


def test_cooldown_skips_automatic_and_unforced_triggers_after_a_result_and_force_bypasses_it():
    with World.create(INSTANCE_COOLDOWN_SECONDS="300") as world:
        [node, failing] = world.add_nodes(2, cluster="prod-a")
        on_launch(world.launch_event(node), LambdaContext())
        world.finish_all("Success", node_output())
        fail_launch(world, failing)
        world.clock.advance(120)

        for instance in (node, failing):  # EC2 says running again (stop/start): within the cooldown
            on_launch(world.launch_event(instance), LambdaContext())
        manual = remediate({"instance_id": node}, LambdaContext())["records"][0]
        assert len(world.ssm.commands) == 2, "nothing sent within the cooldown"
        skipped = [a for a in world.all_attempts() if a["status"] == "SKIPPED"]
        assert len(skipped) == 3
        assert all(a["reason"].startswith("cooldown") for a in skipped), [a["reason"] for a in skipped]
        assert manual["status"] == "SKIPPED"

        forced = remediate({"instance_id": node, "force": True, "reason": "OPS-7"}, LambdaContext())
        assert forced["records"][0]["status"] == "SENT", "force bypasses the cooldown"
        world.finish_all("Success", node_output())

        world.clock.advance(301)
        on_launch(world.launch_event(failing), LambdaContext())
        assert world.ssm.sent_to()[-1] == [failing], "after the cooldown the node is remediated again"


def test_cooldown_skips_a_pull_failure_in_a_new_window_right_after_a_result():
    with World.create(INSTANCE_COOLDOWN_SECONDS="600", PULL_FAILURE_COOLDOWN_SECONDS="60") as world:
        [node] = world.add_nodes(cluster="prod-a")
        on_launch(world.launch_event(node), LambdaContext())
        world.finish_all("Success", node_output())
        world.clock.advance(61)  # a new pull-failure window, still within the node's cooldown
        case = fixture("kubelet structured PullImage, new Go wording, CloudWatch agent stream named by instance id")
        host = world.ec2.describe_instances(InstanceIds=[node])["Reservations"][0]["Instances"][0]["PrivateDnsName"]
        event = payload([for_node(case["message"], node, host)], for_node(case["log_stream"], node, host))
        pull_failure(event, LambdaContext())
        assert len(world.ssm.commands) == 1
        [skipped] = [a for a in world.attempts(node) if a["trigger"] == "pull-failure"]
        assert (skipped["status"], skipped["reason"].split(":")[0]) == ("SKIPPED", "cooldown")


def fail_launch(world: World, node: str) -> None:
    on_launch(world.launch_event(node), LambdaContext())
    world.finish_all("Failed", node_output("failure", restarted=False, reason="containerd did not come back"))


def test_circuit_breaker_opens_after_k_failures_pauses_automatic_triggers_and_force_still_works():
    env = {"BREAKER_FAILURE_THRESHOLD": "3", "BREAKER_OPEN_SECONDS": "600", "SAFETY_RECHECK_SECONDS": "60"}
    with World.create(**env) as world:
        for node in world.add_nodes(3, cluster="prod-a"):
            fail_launch(world, node)
        breaker = world.remediator.records.breaker(ClusterRef("prod-a"))
        assert breaker["failures"] == 3
        assert breaker["open_until"] > world.clock()
        other_cluster = world.remediator.records.breaker(ClusterRef("prod-b"))
        assert other_cluster is None, "the breaker is per cluster"

        [late] = world.add_nodes(cluster="prod-a")
        on_launch(world.launch_event(late), LambdaContext())
        [attempt] = world.attempts(late)
        assert attempt["status"] == "PENDING_AGENT", "paused, recorded, not dropped"
        assert "circuit breaker of cluster prod-a is open" in attempt["waiting_for"]
        assert late not in [i for ids in world.ssm.sent_to() for i in ids]

        [manual] = world.add_nodes(cluster="prod-a")
        with pytest.raises(InvalidRequest, match="circuit breaker of cluster prod-a is open"):
            remediate({"instance_id": manual}, LambdaContext())
        forced = remediate({"instance_id": manual, "force": True, "reason": "OPS-9"}, LambdaContext())
        assert forced["records"][0]["status"] == "SENT"

        world.run_for(600)  # the breaker closes by itself; the paused launch is sent on a re-check
        assert late in [i for ids in world.ssm.sent_to() for i in ids]


def test_a_success_closes_the_breaker_and_a_manual_reset_closes_it_at_once():
    with World.create(BREAKER_FAILURE_THRESHOLD="2", BREAKER_OPEN_SECONDS="3600") as world:
        for node in world.add_nodes(2, cluster="prod-a"):
            fail_launch(world, node)
        assert world.remediator.records.breaker(ClusterRef("prod-a"))["open_until"] > world.clock()
        result = remediate({"cluster": "prod-a", "reset_breaker": True, "reason": "fixed the AMI"}, LambdaContext())
        assert result["breaker"]["reset"] is True
        assert world.remediator.records.breaker(ClusterRef("prod-a"))["open_until"] == 0
        [node] = world.add_nodes(cluster="prod-a")
        on_launch(world.launch_event(node), LambdaContext())
        world.finish_all("Success", node_output())
        assert world.remediator.records.breaker(ClusterRef("prod-a"))["failures"] == 0


def test_duplicate_failed_status_events_count_once_and_terminated_nodes_do_not_count():
    with World.create(BREAKER_FAILURE_THRESHOLD="2") as world:
        [node, gone] = world.add_nodes(2, cluster="prod-a")
        on_launch(world.launch_event(node), LambdaContext())
        [command] = world.ssm.commands
        event = world.ssm.finish(command["CommandId"], node, "Failed", node_output("failure", reason="x"))
        for _ in range(3):  # EventBridge redelivery
            on_command_status(event, LambdaContext())
        assert world.remediator.records.breaker(ClusterRef("prod-a"))["failures"] == 1

        on_launch(world.launch_event(gone), LambdaContext())
        second = world.ssm.commands[-1]["CommandId"]
        on_command_status(world.ssm.finish(second, gone, "Failed", "", details="Terminated"), LambdaContext())
        [record] = world.attempts(gone)
        assert record["status"] == "FAILED"
        assert "Terminated" in record["reason"]
        assert world.remediator.records.breaker(ClusterRef("prod-a"))["failures"] == 1, (
            "a terminated node is not a failure"
        )


def test_every_trigger_is_idempotent_under_redelivery(world):
    [node] = world.add_nodes(cluster="prod-a")
    event = world.launch_event(node)
    for _ in range(3):
        on_launch(event, LambdaContext())
    context = LambdaContext()
    [other] = world.add_nodes(cluster="prod-a")
    for _ in range(3):  # Lambda retries an invoke with the same request id
        remediate({"instance_id": other}, context)
    assert sorted(map(tuple, world.ssm.sent_to())) == sorted([(node,), (other,)])
    assert len(world.attempts(node)) == 1
    assert len(world.attempts(other)) == 1
