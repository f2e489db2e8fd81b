"""Launch -> (agent wait) -> SendCommand -> status event -> record, through the real handlers."""

from __future__ import annotations

import base64
import hashlib

import pytest
from on_launch import handler as on_launch

from tests.fakes.world import DOCUMENT, LambdaContext, node_output


def test_running_enrolled_node_gets_exactly_one_command_and_a_sent_record(world):
    [node] = world.add_nodes(cluster="prod-a")

    on_launch(world.launch_event(node), LambdaContext())

    assert len(world.ssm.commands) == 1
    command = world.ssm.commands[0]
    assert command["DocumentName"] == DOCUMENT
    assert command["InstanceIds"] == [node]
    assert command["Parameters"]["Strategy"] == ["auto"]
    assert command["Parameters"]["DryRun"] == ["false"]
    assert command["Parameters"]["RegistryHosts"] == ["registry.example.internal:443"]
    sent_pem = base64.b64decode(command["Parameters"]["CaBundle"][0])
    assert b"BEGIN CERTIFICATE" in sent_pem
    [record] = world.attempts(node)
    assert record["status"] == "SENT"
    assert record["command_id"] == command["CommandId"]
    assert record["cluster"] == "prod-a"
    assert record["trigger"] == "launch"
    assert record["fingerprint"] == hashlib.sha256(sent_pem).hexdigest()


def test_status_event_records_success_with_the_node_result(world):
    [node] = world.add_nodes()
    on_launch(world.launch_event(node), LambdaContext())

    [result] = world.finish_all("Success", node_output("success", restarted=True))

    assert result["action"] == "recorded"
    [record] = world.attempts(node)
    assert record["status"] == "SUCCEEDED"
    assert record["restarted"] is True
    assert record["node_result"]["verification"] == {"registry.example.internal:443": "ok"}
    assert record["node_result"]["containerd_after"]["pid"] == 1904
    assert "restarted containerd" in record["stdout_tail"]
    assert record["completed_at"]


def test_failed_node_output_is_recorded_failed_with_the_reason(world):
    [node] = world.add_nodes()
    on_launch(world.launch_event(node), LambdaContext())

    world.finish_all("Failed", node_output("failure", restarted=False, reason="certificate 1 is not a CA"))

    [record] = world.attempts(node)
    assert record["status"] == "FAILED"
    assert record["reason"] == "certificate 1 is not a CA"


def test_success_status_with_a_failure_result_line_is_failed(world):
    [node] = world.add_nodes()
    on_launch(world.launch_event(node), LambdaContext())

    world.finish_all("Success", node_output("failure", reason="canary pull failed"))

    [record] = world.attempts(node)
    assert record["status"] == "FAILED"
    assert record["reason"] == "canary pull failed"


def test_unparsable_output_is_recorded_not_lost(world):
    [node] = world.add_nodes()
    on_launch(world.launch_event(node), LambdaContext())

    world.finish_all("Success", "bash: line 3: syntax error\n")

    [record] = world.attempts(node)
    assert record["status"] == "FAILED"
    assert record["reason"] == "node output has no parsable result line"
    assert "syntax error" in record["stdout_tail"]


def test_agent_online_after_40s_is_sent_within_one_recheck_interval(world):
    [node] = world.add_nodes(agent_online_after=40)

    on_launch(world.launch_event(node), LambdaContext())
    assert world.ssm.commands == []
    [record] = world.attempts(node)
    assert record["status"] == "PENDING_AGENT"

    world.run_for(40 + world.settings.agent_recheck_seconds)

    assert world.ssm.sent_to() == [[node]]
    sent_at = world.ssm.commands[0]["at"]
    online_at = world.ssm.agents[node]
    assert 0 <= sent_at - online_at <= world.settings.agent_recheck_seconds
    [record] = world.attempts(node)
    assert record["status"] == "SENT"


def test_agent_never_online_is_not_remediable_with_the_likely_causes_after_the_deadline(world):
    [node] = world.add_nodes(agent_online_after=None)

    on_launch(world.launch_event(node), LambdaContext())
    world.run_for(world.settings.agent_wait_deadline_seconds + 30, step=5)

    assert world.ssm.commands == []
    [record] = world.attempts(node)
    assert record["status"] == "NOT_REMEDIABLE"  # not a failure of the remediation (README: node kinds)
    assert record["node_kind"] == "no-ssm-agent"
    assert "SSM agent not Online before the agent-wait deadline" in record["reason"]
    assert "AmazonSSMManagedInstanceCore" in record["reason"]
    assert world.queue.pending == []
    # checks are bounded: one per re-check interval, not a busy loop
    assert world.queue.sent <= world.settings.agent_wait_deadline_seconds // world.settings.agent_recheck_seconds + 2


def test_unregistered_agent_waits_then_sends_when_it_registers(world):
    [node] = world.add_nodes(register_agent=False)
    on_launch(world.launch_event(node), LambdaContext())
    assert world.ssm.commands == []

    world.run_for(20)
    world.ssm.register(node)
    world.run_for(world.settings.agent_recheck_seconds)

    assert world.ssm.sent_to() == [[node]]


def test_node_terminated_while_waiting_is_failed_with_that_reason(world):
    [node] = world.add_nodes(agent_online_after=None)
    on_launch(world.launch_event(node), LambdaContext())

    world.ec2.terminate_instances(InstanceIds=[node])
    world.run_for(world.settings.agent_recheck_seconds + 1)

    [record] = world.attempts(node)
    assert record["status"] == "FAILED"
    assert "while waiting for its SSM agent" in record["reason"]
    assert world.ssm.commands == []


def test_same_launch_event_delivered_three_times_sends_one_command(world):
    [node] = world.add_nodes()
    event = world.launch_event(node, event_id="5b2c4c39-2f2a-4c3a-9d8e-000000000001")

    for _ in range(3):
        on_launch(event, LambdaContext())

    assert len(world.ssm.commands) == 1
    assert len(world.attempts(node)) == 1


def test_redelivered_launch_while_waiting_for_agent_still_sends_once(world):
    [node] = world.add_nodes(agent_online_after=30)
    event = world.launch_event(node)
    on_launch(event, LambdaContext())
    on_launch(event, LambdaContext())  # two wait messages are now queued for one attempt

    world.run_for(60)

    assert len(world.ssm.commands) == 1


def test_two_launch_events_for_one_node_send_once_while_in_flight(world):
    [node] = world.add_nodes()
    on_launch(world.launch_event(node), LambdaContext())
    on_launch(world.launch_event(node), LambdaContext())  # a different event id: a second trigger

    assert len(world.ssm.commands) == 1
    statuses = sorted(r["status"] for r in world.attempts(node))
    assert statuses == ["SENT", "SKIPPED"]
    skipped = next(r for r in world.attempts(node) if r["status"] == "SKIPPED")
    assert "in flight" in skipped["reason"]


@pytest.mark.parametrize("tag_style", ["eks", "karpenter", "self-managed"])
def test_every_node_tag_style_is_recognised(world, tag_style):
    [node] = world.add_nodes(cluster="prod-b", tag_style=tag_style)
    on_launch(world.launch_event(node), LambdaContext())
    assert world.ssm.sent_to() == [[node]]
    assert world.attempts(node)[0]["cluster"] == "prod-b"


def test_non_cluster_instance_gets_no_command_and_no_record(world):
    [bastion] = world.add_nodes(tag_style="none")
    [other] = world.add_nodes(cluster="not-enrolled")

    for instance in (bastion, other):
        result = on_launch(world.launch_event(instance), LambdaContext())
        assert result["action"] == "ignored"

    assert world.ssm.commands == []
    assert world.all_attempts() == []


def test_a_not_running_state_is_ignored(world):
    [node] = world.add_nodes()
    result = on_launch(world.launch_event(node, state="stopping"), LambdaContext())
    assert result["action"] == "ignored"
    assert world.ssm.commands == []


def test_duplicate_and_out_of_order_status_events_keep_the_final_record(world):
    from on_command_status import handler as on_status

    [node] = world.add_nodes()
    on_launch(world.launch_event(node), LambdaContext())
    command_id = world.ssm.commands[0]["CommandId"]
    in_progress = world.ssm.progress(command_id, node)
    done = world.ssm.finish(command_id, node, "Success", node_output())

    assert on_status(done, LambdaContext())["action"] == "recorded"
    assert on_status(done, LambdaContext())["action"] == "duplicate"
    assert on_status(in_progress, LambdaContext())["action"] == "stale"

    [record] = world.attempts(node)
    assert record["status"] == "SUCCEEDED"


def test_after_success_a_new_trigger_can_send_again_once_the_cooldown_has_passed(world):
    [node] = world.add_nodes()
    on_launch(world.launch_event(node), LambdaContext())
    world.finish_all()
    world.clock.advance(world.settings.instance_cooldown_seconds + 1)
    on_launch(world.launch_event(node), LambdaContext())
    assert len(world.ssm.commands) == 2


@pytest.mark.parametrize(
    ("ssm_status", "details", "expected"),
    [
        ("TimedOut", "DeliveryTimedOut", "TIMED_OUT"),
        ("TimedOut", "ExecutionTimedOut", "TIMED_OUT"),
        ("Cancelled", "Cancelled", "FAILED"),
        ("Failed", "Undeliverable", "FAILED"),
        ("Failed", "Terminated", "FAILED"),
    ],
)
def test_terminal_ssm_statuses_map_to_record_statuses(world, ssm_status, details, expected):
    from on_command_status import handler as on_status

    [node] = world.add_nodes()
    on_launch(world.launch_event(node), LambdaContext())
    command_id = world.ssm.commands[0]["CommandId"]
    on_status(world.ssm.finish(command_id, node, ssm_status, "", details=details), LambdaContext())

    [record] = world.attempts(node)
    assert record["status"] == expected
    assert details in record["reason"]


def test_status_event_for_an_unrecorded_command_raises_so_it_is_retried_then_dead_lettered(world):
    from eks_ca_remediator.errors import AttemptNotFound
    from on_command_status import handler as on_status

    [node] = world.add_nodes()
    on_launch(world.launch_event(node), LambdaContext())
    event = world.ssm.finish(world.ssm.commands[0]["CommandId"], node, "Success", node_output())
    event["detail"]["command-id"] = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(AttemptNotFound, match="no attempt records command"):
        on_status(event, LambdaContext())


def test_crash_between_send_and_record_is_recovered_without_a_second_command(world, monkeypatch):
    [node] = world.add_nodes()
    event = world.launch_event(node)
    original = world.remediator._record_sent
    calls = {"n": 0}

    def dies_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise TimeoutError("Lambda timed out after SendCommand")
        return original(*args, **kwargs)

    monkeypatch.setattr(world.remediator, "_record_sent", dies_once)
    with pytest.raises(TimeoutError):
        on_launch(event, LambdaContext())
    assert len(world.ssm.commands) == 1

    on_launch(event, LambdaContext())  # Lambda's async retry delivers the same event again

    assert len(world.ssm.commands) == 1
    [record] = world.attempts(node)
    assert record["status"] == "SENT"
    assert record["command_id"] == world.ssm.commands[0]["CommandId"]


def test_invalid_instance_id_in_a_batch_fails_that_node_and_sends_the_others(world):
    from remediate import handler as remediate

    nodes = world.add_nodes(3)
    original = world.ssm.describe_instance_information

    def stale_ping(**kwargs):  # the agent deregisters between the ping and SendCommand
        response = original(**kwargs)
        world.ssm.deregister(nodes[1])
        return response

    world.ssm.describe_instance_information = stale_ping
    remediate({"cluster": "prod-a"}, LambdaContext())

    sent = sorted(i for batch in world.ssm.sent_to() for i in batch)
    assert sent == sorted([nodes[0], nodes[2]])
    statuses = {r["instance_id"]: r["status"] for n in nodes for r in world.attempts(n)}
    assert statuses[nodes[1]] == "FAILED"
    assert statuses[nodes[0]] == statuses[nodes[2]] == "SENT"
