"""Every sample in events/ goes through its handler (ids swapped for the moto world's own)."""

from __future__ import annotations

import json
from pathlib import Path

from agent_wait import handler as agent_wait
from on_command_status import handler as on_command_status
from on_launch import handler as on_launch
from remediate import handler as remediate

from tests.fakes.world import DOCUMENT, LambdaContext, node_output

EVENTS = Path(__file__).resolve().parents[2] / "events"
SAMPLE_ID = "i-0a1b2c3d4e5f60789"


def load(name: str, instance_id: str) -> dict:
    return json.loads((EVENTS / name).read_text().replace(SAMPLE_ID, instance_id))


def test_ec2_instance_running_sample(world):
    [node] = world.add_nodes()
    result = on_launch(load("ec2-instance-running.json", node), LambdaContext())
    assert result["action"] == "remediating"
    assert world.ssm.sent_to() == [[node]]


def test_ssm_command_invocation_sample(world):
    [node] = world.add_nodes()
    on_launch(world.launch_event(node), LambdaContext())
    command_id = world.ssm.commands[0]["CommandId"]
    world.ssm.finish(command_id, node, "Success", node_output())
    event = load("ssm-command-invocation-success.json", node)
    assert event["detail"]["document-name"] == DOCUMENT
    event["detail"]["command-id"] = command_id
    result = on_command_status(event, LambdaContext())
    assert result["record"]["status"] == "SUCCEEDED"


def test_manual_instance_sample(world):
    [node] = world.add_nodes()
    result = remediate(load("manual-instance.json", node), LambdaContext())
    assert result["records"][0]["status"] == "SENT"


def test_manual_cluster_sample(world):
    world.add_nodes(3, cluster="prod-a")
    result = remediate(load("manual-cluster.json", SAMPLE_ID), LambdaContext())
    assert result["count"] == 3
    assert world.ssm.commands[0]["Parameters"]["DryRun"] == ["true"]


def test_agent_wait_sample(world):
    [node] = world.add_nodes(agent_online_after=30)
    on_launch(world.launch_event(node), LambdaContext())
    [attempt] = world.attempts(node)
    event = load("agent-wait-sqs.json", node)
    body = json.loads(event["Records"][0]["body"])
    body.update(attempt_sk=attempt["sk"], deadline=float(attempt["agent_wait_deadline"]))
    event["Records"][0]["body"] = json.dumps(body)
    world.clock.advance(30)
    assert agent_wait(event, LambdaContext()) == {"batchItemFailures": []}
    assert world.ssm.sent_to() == [[node]]


def test_agent_wait_reports_unreadable_messages_as_batch_failures(world):
    event = load("agent-wait-sqs.json", SAMPLE_ID)
    event["Records"][0]["body"] = "{not json"
    result = agent_wait(event, LambdaContext())
    assert result == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
