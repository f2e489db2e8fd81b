"""Faults: for each, nothing is lost (a record, or an error that Lambda retries and then
dead-letters), no command is sent twice, and the final record is right.

Throttling is shown twice: through the fake Run Command (the handler raises, the redelivered
event sends once), and on a real botocore client with the product's retry configuration, where
ThrottlingException responses injected below botocore's retry loop are retried with backoff.
"""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from eks_ca_remediator.adapters.clients import RETRY_CONFIG
from eks_ca_remediator.adapters.ssm import RunCommand
from on_command_status import handler as on_command_status
from on_launch import handler as on_launch
from remediate import handler as remediate

from tests.fakes.run_command import client_error
from tests.fakes.world import DOCUMENT, LambdaContext, node_output


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: object):
        yield self._body


def throttled_ssm_client(operation: str, throttles: int, success_body: dict) -> tuple[object, list[str]]:
    """A real SSM client (the product's retry config) whose first `throttles` calls of `operation`
    get HTTP 400 ThrottlingException; later calls get `success_body`. Returns (client, attempts)."""
    client = boto3.client("ssm", region_name="us-east-1", config=RETRY_CONFIG)
    attempts: list[str] = []

    def respond(request, **_: object) -> AWSResponse:
        attempts.append(operation)
        if len(attempts) <= throttles:
            status, body = 400, {"__type": "ThrottlingException", "message": "Rate exceeded"}
        else:
            status, body = 200, success_body
        raw = json.dumps(body).encode()
        return AWSResponse(request.url, status, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(raw))

    client.meta.events.register(f"before-send.ssm.{operation}", respond)
    return client, attempts


def test_botocore_retries_throttled_describe_instance_information_with_backoff():
    body = {"InstanceInformationList": [{"InstanceId": "i-0123456789abcdef0", "PingStatus": "Online"}]}
    client, attempts = throttled_ssm_client("DescribeInstanceInformation", 2, body)
    pings = RunCommand(client, DOCUMENT, "remediateCa").ping_status(["i-0123456789abcdef0"])
    assert pings == {"i-0123456789abcdef0": "Online"}
    assert len(attempts) == 3, "two throttled attempts retried by botocore, then the answer"


def test_botocore_retries_throttled_send_command_and_sends_once():
    client, attempts = throttled_ssm_client("SendCommand", 2, {"Command": {"CommandId": "c" * 36}})
    command_id = RunCommand(client, DOCUMENT, "remediateCa").send(
        ["i-0123456789abcdef0"], {"DryRun": ["true"]}, "batch x", 600, cluster="prod-a"
    )
    assert command_id == "c" * 36
    assert len(attempts) == 3  # throttled requests were refused by SSM: no command was created by them


def test_throttling_past_retries_raises_and_the_redelivered_event_sends_once(world):
    [node] = world.add_nodes()
    event = world.launch_event(node)
    world.ssm.throttle["SendCommand"] = 1
    with pytest.raises(ClientError, match="ThrottlingException"):
        on_launch(event, LambdaContext())
    on_launch(event, LambdaContext())  # Lambda's retry of the same event
    assert world.ssm.sent_to() == [[node]]
    [record] = world.attempts(node)
    assert record["status"] == "SENT"


def test_throttled_describe_instance_information_raises_then_redelivery_sends_once(world):
    [node] = world.add_nodes()
    event = world.launch_event(node)
    world.ssm.throttle["DescribeInstanceInformation"] = 1
    with pytest.raises(ClientError, match="ThrottlingException"):
        on_launch(event, LambdaContext())
    assert world.ssm.commands == []
    on_launch(event, LambdaContext())
    assert world.ssm.sent_to() == [[node]]


def test_dynamodb_throttled_while_recording_the_send_recovers_without_a_second_command(world, monkeypatch):
    [node] = world.add_nodes()
    event = world.launch_event(node)
    table = world.remediator.records._table
    real_update = table.update_item
    state = {"failed": False}

    def flaky_update(**kwargs):
        names = kwargs.get("ExpressionAttributeNames", {})
        if "command_id" in names.values() and not state["failed"]:
            state["failed"] = True
            raise client_error("ProvisionedThroughputExceededException", "throttled", "UpdateItem")
        return real_update(**kwargs)

    monkeypatch.setattr(table, "update_item", flaky_update)
    with pytest.raises(ClientError, match="ProvisionedThroughputExceededException"):
        on_launch(event, LambdaContext())
    assert len(world.ssm.commands) == 1  # sent, not recorded
    world.clock.advance(5)
    on_launch(event, LambdaContext())  # the retry finds the command by its comment
    assert len(world.ssm.commands) == 1
    [record] = world.attempts(node)
    assert record["status"] == "SENT"
    assert record["command_id"] == world.ssm.commands[0]["CommandId"]


def test_conditional_check_race_two_triggers_one_node_one_command(world):
    [node] = world.add_nodes()
    on_launch(world.launch_event(node), LambdaContext())
    remediate({"instance_id": node}, LambdaContext())  # a second trigger while the first is in flight
    assert world.ssm.sent_to() == [[node]]
    statuses = sorted(a["status"] for a in world.attempts(node))
    assert statuses == ["SENT", "SKIPPED"]


def test_iam_refusal_for_one_node_of_a_batch_fails_that_node_and_sends_the_others(world, monkeypatch):
    nodes = world.add_nodes(3, cluster="prod-a")
    denied = nodes[1]
    real_send = world.ssm.send_command

    def send(**kwargs):
        if denied in kwargs["InstanceIds"]:
            raise client_error("AccessDeniedException", "not authorized to perform ssm:SendCommand", "SendCommand")
        return real_send(**kwargs)

    monkeypatch.setattr(world.ssm, "send_command", send)
    remediate({"cluster": "prod-a"}, LambdaContext())
    sent = sorted(i for ids in world.ssm.sent_to() for i in ids)
    assert sent == sorted(n for n in nodes if n != denied)
    [record] = world.attempts(denied)
    assert record["status"] == "FAILED"
    assert "IAM denied SendCommand" in record["reason"]


def test_node_terminated_mid_command_is_failed_with_that_reason_and_the_node_released(world):
    [node] = world.add_nodes()
    on_launch(world.launch_event(node), LambdaContext())
    [command] = world.ssm.commands
    world.ec2.terminate_instances(InstanceIds=[node])
    world.ssm.deregister(node)
    event = world.ssm.finish(command["CommandId"], node, "Failed", "", details="Terminated")
    on_command_status(event, LambdaContext())
    on_command_status(event, LambdaContext())  # duplicate
    [record] = world.attempts(node)
    assert record["status"] == "FAILED"
    assert "Terminated" in record["reason"]
    assert world.remediator.records.claim(node, "ATTEMPT#other", world.clock(), 60).won, "claim released"


def test_out_of_order_in_progress_after_success_keeps_succeeded(world):
    [node] = world.add_nodes()
    on_launch(world.launch_event(node), LambdaContext())
    [command] = world.ssm.commands
    success = world.ssm.finish(command["CommandId"], node, "Success", node_output())
    late = dict(success, detail=dict(success["detail"], status="InProgress"))
    on_command_status(success, LambdaContext())
    assert on_command_status(late, LambdaContext())["action"] == "stale"
    [record] = world.attempts(node)
    assert record["status"] == "SUCCEEDED"
