"""The EMF metrics a user charts and alarms on, as the real handlers print them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from agent_wait import handler as agent_wait
from on_launch import handler as on_launch

from tests.fakes.world import LambdaContext, node_output


def emitted(text: str) -> dict[str, list[float]]:
    """Metric name -> values, from the EMF documents in captured stdout."""
    found: dict[str, list[float]] = {}
    for line in text.splitlines():
        if not line.startswith("{") or "_aws" not in line:
            continue
        doc = json.loads(line)
        assert doc["service"] == "eks-ca-remediator"
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            assert directive["Dimensions"] == [["service"]]
            for metric in directive["Metrics"]:
                value = doc[metric["Name"]]
                found.setdefault(metric["Name"], []).extend(value if isinstance(value, list) else [value])
    return found


def test_launch_wait_send_succeed_emits_counts_and_durations(world, capsys):
    [node] = world.add_nodes(agent_online_after=35)
    event = world.launch_event(node)
    event["time"] = datetime.fromtimestamp(world.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    on_launch(event, LambdaContext())
    assert "RemediationsSent" not in emitted(capsys.readouterr().out)

    world.run_for(40)
    waited = emitted(capsys.readouterr().out)
    assert waited["RemediationsSent"] == [1]
    [wait_seconds] = waited["AgentWaitSeconds"]
    assert 35 <= wait_seconds <= 40

    world.clock.advance(12)
    world.finish_all(stdout=node_output())
    done = emitted(capsys.readouterr().out)
    assert done["RemediationsSucceeded"] == [1]
    [took] = done["TimeToSucceededSeconds"]
    assert 47 <= took <= 54


def test_failed_duplicate_and_deadline_outcomes_are_counted(world, capsys):
    [node, never] = world.add_nodes(2, agent_online_after=None)
    world.ssm.agents[node] = world.clock()  # Online now
    for instance_id in (node, never):
        event = world.launch_event(instance_id, event_id=f"evt-{instance_id}")
        on_launch(event, LambdaContext())
    on_launch(world.launch_event(node, event_id=f"evt-{node}"), LambdaContext())  # redelivered
    launched = emitted(capsys.readouterr().out)
    assert sum(launched["RemediationsSent"]) == 1
    assert sum(launched["RemediationsDeduplicated"]) == 1

    world.finish_all(status="Failed", stdout=node_output(result="failure", reason="openssl verify failed"))
    assert emitted(capsys.readouterr().out)["RemediationsFailed"] == [1]

    world.run_for(world.settings.agent_wait_deadline_seconds + 30, step=5)
    deadline = emitted(capsys.readouterr().out)
    assert "RemediationsFailed" not in deadline  # an agent that never came Online is no failure of ours
    assert sum(deadline["NodesWithoutSsmAgent"]) == 1
    assert sum(deadline["RemediationsNotRemediable"]) == 1


def test_a_failing_handler_still_publishes_what_it_counted(world, capsys):
    [node] = world.add_nodes(agent_online_after=5)
    on_launch(world.launch_event(node), LambdaContext())
    world.clock.advance(20)
    original = world.remediator.dispatch

    def count_then_fail(*args, **kwargs):
        from eks_ca_remediator import telemetry

        telemetry.count(telemetry.CIRCUIT_BREAKER_OPEN)
        raise RuntimeError("boom")

    world.remediator.dispatch = count_then_fail
    try:
        result = agent_wait({"Records": world.queue.due()}, LambdaContext())
    finally:
        world.remediator.dispatch = original
    assert len(result["batchItemFailures"]) == 1
    assert emitted(capsys.readouterr().out)["CircuitBreakerOpen"] == [1]
