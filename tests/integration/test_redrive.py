"""Replaying the dead-letter queue (tools/redrive.py) on moto SQS, into the real handlers.

Every kind of message that lands in the queue goes back to the function or queue it came from, a
replayed message is idempotent, and a malformed or foreign message is reported and left there -
never dropped, never sent to a node.
"""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from on_command_status import handler as on_command_status
from on_launch import handler as on_launch
from reconcile import handler as reconcile
from redrive import Stack, classify, redrive
from sweep import handler as sweep

from tests.fakes.world import ACCOUNT, REGION, ROOT, LambdaContext, World, node_output

HANDLERS = {
    "OnLaunchFunction": on_launch,
    "OnCommandStatusFunction": on_command_status,
    "SweepFunction": sweep,
    "ReconcileFunction": reconcile,
}


def name(logical: str) -> str:
    return f"eks-ca-remediator-{logical}-1A2B3C4D"


def arn(logical: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:lambda:{REGION}:{account}:function:{name(logical)}"


class FakeLambda:
    """lambda:Invoke (RequestResponse) of this stack's functions, running their real handlers."""

    def __init__(self) -> None:
        self.invoked: list[tuple[str, dict[str, Any]]] = []

    def invoke(self, FunctionName: str, InvocationType: str, Payload: bytes) -> dict[str, Any]:  # noqa: N803
        assert InvocationType == "RequestResponse"
        logical = next(k for k in HANDLERS if name(k) == FunctionName)
        event = json.loads(Payload)
        self.invoked.append((logical, event))
        try:
            result = HANDLERS[logical](event, LambdaContext())
        except Exception as exc:  # noqa: BLE001 - Lambda reports any handler error as FunctionError
            body = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
            return {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": io.BytesIO(json.dumps(body).encode())}
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(result, default=str).encode())}


class Harness:
    def __init__(self, world: World) -> None:
        self.world = world
        self.sqs = boto3.client("sqs", region_name=REGION)
        self.dlq = self.sqs.create_queue(QueueName="dlq")["QueueUrl"]
        self.agent_wait = self.sqs.create_queue(QueueName="agent-wait")["QueueUrl"]
        self.sweep_jobs = self.sqs.create_queue(QueueName="sweep")["QueueUrl"]
        self.stack = Stack(
            account=ACCOUNT,
            region=REGION,
            functions={k: name(k) for k in (*HANDLERS, "PullFailureFunction")},
            queues={"AgentWaitQueue": self.agent_wait, "SweepQueue": self.sweep_jobs},
        )
        self.lam = FakeLambda()

    def dead_letter(self, body: Any, **attributes: str) -> None:
        text = body if isinstance(body, str) else json.dumps(body)
        attrs = {k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()}
        self.sqs.send_message(QueueUrl=self.dlq, MessageBody=text, MessageAttributes=attrs)

    def eventbridge_dead_letter(self, event: dict[str, Any], target: str) -> None:
        """As EventBridge writes an undeliverable event: the event, and attributes naming the target."""
        self.dead_letter(
            event,
            RULE_ARN=f"arn:aws:events:{REGION}:{ACCOUNT}:rule/eks-ca-remediator-{target}Rule",
            TARGET_ARN=arn(target),
            ERROR_CODE="SDK_CLIENT_ERROR",
            ERROR_MESSAGE="Rate exceeded",
        )

    def destination_record(self, event: dict[str, Any], target: str, account: str = ACCOUNT) -> dict[str, Any]:
        """As Lambda's OnFailure destination writes a failed asynchronous invocation."""
        return {
            "version": "1.0",
            "timestamp": "2026-11-26T10:00:00.000Z",
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": arn(target, account) + ":$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 3,
            },
            "requestPayload": event,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorMessage": "Rate exceeded", "errorType": "ClientError"},
        }

    def run(self, dry_run: bool = False):
        return redrive(self.sqs, self.lam, self.dlq, self.stack, dry_run=dry_run, say=lambda _: None)

    def bodies(self, url: str) -> list[str]:
        out = []
        while batch := self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60).get(
            "Messages", []
        ):
            out += [m["Body"] for m in batch]
        return out


@pytest.fixture
def harness(world):
    return Harness(world)


def test_every_kind_of_dead_letter_is_replayed_to_where_it_came_from(harness):
    w = harness.world
    launched, finished = w.add_nodes(2)
    # the launch event EventBridge could not deliver
    harness.eventbridge_dead_letter(w.launch_event(launched), "OnLaunchFunction")
    # a status event whose OnCommandStatus invocation failed all retries (OnFailure destination)
    on_launch(w.launch_event(finished), LambdaContext())
    [command] = w.ssm.commands
    status_event = w.ssm.finish(command["CommandId"], finished, "Success", node_output())
    harness.dead_letter(harness.destination_record(status_event, "OnCommandStatusFunction"))
    # the reconciler's schedule event, dead-lettered by its rule
    schedule = json.loads((ROOT / "events" / "reconcile-scheduled.json").read_text())
    harness.eventbridge_dead_letter(schedule, "ReconcileFunction")
    # an agent-wait message and a sweep job that SQS moved here after maxReceiveCount
    wait = {
        "instance_id": "i-0123456789abcdef0",
        "attempt_sk": "ATTEMPT#2026-11-26T10:15:41.000000Z#launch#e1",
        "cluster": "prod-a",
        "deadline": 1795688141.0,
        "checks": 3,
    }
    job = {"origin": "5f1a9ac2", "cluster": "prod-a", "started_at": 1795687000.0, "fingerprint": "", "passes": 2}
    harness.dead_letter(wait)
    harness.dead_letter(job)

    report = harness.run()
    assert report.counts == {"replayed": 5}, report.lines
    assert sorted(k for k, _ in harness.lam.invoked) == [
        "OnCommandStatusFunction",
        "OnLaunchFunction",
        "ReconcileFunction",
    ]
    assert w.ssm.sent_to() == [[finished], [launched]], "the replayed launch event sent its node once"
    statuses = {a["pk"]: a["status"] for a in w.all_attempts()}
    assert statuses == {finished: "SUCCEEDED", launched: "SENT"}
    assert [json.loads(b) for b in harness.bodies(harness.agent_wait)] == [wait]
    assert [json.loads(b) for b in harness.bodies(harness.sweep_jobs)] == [job]
    assert harness.bodies(harness.dlq) == [], "replayed messages leave the dead-letter queue"


def test_a_message_replayed_twice_changes_nothing_the_first_did_not(harness):
    w = harness.world
    [node] = w.add_nodes()
    event = w.launch_event(node)
    harness.eventbridge_dead_letter(event, "OnLaunchFunction")
    harness.eventbridge_dead_letter(event, "OnLaunchFunction")  # EventBridge dead-lettered it twice
    on_launch(event, LambdaContext())  # ... and one delivery did get through
    assert harness.run().counts == {"replayed": 2}
    assert w.ssm.sent_to() == [[node]]
    assert [a["status"] for a in w.attempts(node)] == ["SENT"]


HOSTILE = {
    "not JSON": ("{not json", {}),
    "a JSON list": ("[1, 2]", {}),
    "unknown shape": (json.dumps({"hello": "world"}), {}),
    "EventBridge event without its target": (None, {}),
    "event for a function not ours": (None, {"TARGET_ARN": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:other"}),
    "event from another account": ("foreign", {"TARGET_ARN": arn("OnLaunchFunction")}),
    "destination record of another account's function": ("record-foreign", {}),
    "malformed agent-wait message": (
        json.dumps({"instance_id": "i-0123456789abcdef0; reboot", "attempt_sk": "x", "deadline": 1, "cluster": "a"}),
        {},
    ),
    "launch event with a hostile instance id": ("hostile", {"TARGET_ARN": arn("OnLaunchFunction")}),
}


def test_malformed_and_foreign_messages_are_reported_and_left_in_the_queue(harness):
    w = harness.world
    [node] = w.add_nodes()
    launch = w.launch_event(node)
    for body, attributes in HOSTILE.values():
        if body is None:
            body = json.dumps(launch)
        elif body == "foreign":
            body = json.dumps(launch | {"account": "999999999999"})
        elif body == "record-foreign":
            body = json.dumps(harness.destination_record(launch, "OnLaunchFunction", account="999999999999"))
        elif body == "hostile":
            body = json.dumps(launch | {"detail": {"instance-id": "i-0123$(reboot)", "state": "running"}})
        harness.dead_letter(body, **attributes)
    report = harness.run()
    assert report.counts == {"left": len(HOSTILE)}, report.lines
    assert harness.lam.invoked == [], "nothing was replayed to a function"
    assert w.ssm.commands == [], "nothing was sent to a node"
    assert w.all_attempts() == []
    assert len(harness.bodies(harness.dlq)) == len(HOSTILE), "every one is still in the dead-letter queue"


def test_a_replay_that_fails_again_is_left_in_the_queue(harness):
    w = harness.world
    [node] = w.add_nodes()
    stray = w.launch_event(node) | {
        "source": "aws.ssm",
        "detail-type": "EC2 Command Invocation Status-change Notification",
        "detail": {
            "command-id": str(uuid.uuid4()),
            "instance-id": node,
            "status": "Success",
            "document-name": "eks-ca-remediator-RemediateCa",
        },
    }
    harness.eventbridge_dead_letter(stray, "OnCommandStatusFunction")  # no attempt records this command
    report = harness.run()
    assert report.counts == {"failed": 1}
    assert "AttemptNotFound" in report.lines[0]
    assert len(harness.bodies(harness.dlq)) == 1


def test_a_dry_run_replays_and_deletes_nothing(harness):
    w = harness.world
    [node] = w.add_nodes()
    harness.eventbridge_dead_letter(w.launch_event(node), "OnLaunchFunction")
    report = harness.run(dry_run=True)
    assert report.counts == {"would": 1}
    assert "eventbridge -> OnLaunchFunction" in report.lines[0]
    assert harness.lam.invoked == []
    assert w.ssm.commands == []
    assert len(harness.bodies(harness.dlq)) == 1


def test_a_pull_failure_destination_record_goes_back_to_the_pull_failure_function():
    stack = Stack(ACCOUNT, REGION, {"PullFailureFunction": name("PullFailureFunction")}, {})
    record = Harness.destination_record(None, {"awslogs": {"data": "H4sIAAAA"}}, "PullFailureFunction")  # type: ignore[arg-type]
    decision = classify(json.dumps(record), {}, stack)
    assert (decision.kind, decision.target) == ("lambda-destination", "PullFailureFunction")
    assert decision.payload == {"awslogs": {"data": "H4sIAAAA"}}


def test_a_member_pull_failure_event_goes_back_to_the_pull_failure_function_of_a_central_stack():
    """CentralPullFailuresRule's dead letters: a member account's event, replayed where it came
    from when the stack is central and the event of its region; another region stays."""
    stack = Stack(ACCOUNT, REGION, {"PullFailureFunction": name("PullFailureFunction")}, {}, central=True)
    event = json.loads((ROOT / "events/pull-failure-member.json").read_text())
    attributes = {"TARGET_ARN": arn("PullFailureFunction")}
    decision = classify(json.dumps(event), attributes, stack)
    assert (decision.kind, decision.target, decision.payload) == ("eventbridge", "PullFailureFunction", event)
    elsewhere = classify(json.dumps({**event, "region": "eu-west-1"}), attributes, stack)
    assert "event of region 'eu-west-1'" in elsewhere.reason
    broken = classify(json.dumps({**event, "detail": {}}), attributes, stack)
    assert "detail.logGroup" in broken.reason


def test_the_stack_s_functions_and_queues_are_found_by_their_logical_ids():
    from redrive import stack_targets

    dlq = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/eks-ca-remediator-DeadLetterQueue-X"
    resources = [
        ("DeadLetterQueue", dlq),
        ("AgentWaitQueue", "https://sqs/agent"),
        ("SweepQueue", "https://sqs/sweep"),
        ("OnLaunchFunction", name("OnLaunchFunction")),
        ("ReconcileFunction", name("ReconcileFunction")),
        ("RemediateFunction", name("RemediateFunction")),  # synchronous: nothing of it is dead-lettered
        ("RecordsTable", "remediation-records"),
    ]

    class Paginator:
        def paginate(self, StackName: str):  # noqa: N803
            assert StackName == "eks-ca-remediator"
            yield {"StackResourceSummaries": [{"LogicalResourceId": k, "PhysicalResourceId": v} for k, v in resources]}

    class CloudFormation:
        def get_paginator(self, operation: str) -> Paginator:
            assert operation == "list_stack_resources"
            return Paginator()

    stack, url = stack_targets(CloudFormation(), "eks-ca-remediator", REGION)
    assert url == dlq
    assert stack == Stack(
        account=ACCOUNT,
        region=REGION,
        functions={"OnLaunchFunction": name("OnLaunchFunction"), "ReconcileFunction": name("ReconcileFunction")},
        queues={"AgentWaitQueue": "https://sqs/agent", "SweepQueue": "https://sqs/sweep"},
    )


class SlowSqs:
    """moto SQS on a simulated clock: a receipt handle is good until its visibility timeout has
    passed on that clock. After that, as SQS does, DeleteMessage with it succeeds but deletes
    nothing, and ChangeMessageVisibility fails (MessageNotInflight)."""

    def __init__(self, sqs) -> None:
        self.sqs, self.now = sqs, 0.0
        self.until: dict[str, float] = {}
        self.deleted: list[str] = []

    def receive_message(self, **kwargs):
        answer = self.sqs.receive_message(**{**kwargs, "VisibilityTimeout": 43200})  # the simulated clock decides
        for message in answer.get("Messages", []):
            self.until[message["ReceiptHandle"]] = self.now + kwargs["VisibilityTimeout"]
        return answer

    def _live(self, handle: str) -> bool:
        return self.until.get(handle, -1.0) > self.now

    def change_message_visibility(self, QueueUrl, ReceiptHandle, VisibilityTimeout):  # noqa: N803
        if not self._live(ReceiptHandle):
            raise ClientError({"Error": {"Code": "MessageNotInflight"}}, "ChangeMessageVisibility")
        self.until[ReceiptHandle] = self.now + VisibilityTimeout
        return {}

    def delete_message(self, QueueUrl, ReceiptHandle):  # noqa: N803
        if self._live(ReceiptHandle):
            self.deleted.append(ReceiptHandle)
            self.sqs.delete_message(QueueUrl=QueueUrl, ReceiptHandle=ReceiptHandle)
        return {}

    def send_message(self, **kwargs):
        return self.sqs.send_message(**kwargs)


def test_a_batch_of_slow_replays_deletes_every_message_it_replayed(harness):
    """Ten messages received at once, each replay taking 400 s: more than one visibility timeout."""
    schedule = json.loads((ROOT / "events" / "reconcile-scheduled.json").read_text())
    for _ in range(10):
        harness.eventbridge_dead_letter(schedule, "ReconcileFunction")
    sqs = SlowSqs(harness.sqs)

    class SlowLambda:
        def invoke(self, **kwargs):
            sqs.now += 400
            return {"StatusCode": 200, "Payload": io.BytesIO(b"{}")}

    report = redrive(sqs, SlowLambda(), harness.dlq, harness.stack, say=lambda _: None, clock=lambda: sqs.now)
    assert report.counts == {"replayed": 10}, report.lines
    assert len(sqs.deleted) == 10, "every replayed message left the queue: no stale receipt handle"


def test_an_invoke_that_raises_is_reported_and_the_other_messages_are_replayed(harness):
    w = harness.world
    first, second = w.add_nodes(2)
    harness.eventbridge_dead_letter(w.launch_event(first), "OnLaunchFunction")
    harness.eventbridge_dead_letter(w.launch_event(second), "OnLaunchFunction")
    invoke, calls = harness.lam.invoke, []

    def times_out_once(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise ReadTimeoutError(endpoint_url="https://lambda.us-east-1.amazonaws.com")
        return invoke(**kwargs)

    harness.lam.invoke = times_out_once
    report = harness.run()
    assert report.counts == {"failed": 1, "replayed": 1}, report.lines
    [failed] = [line for line in report.lines if line.startswith("failed")]
    assert "ReadTimeoutError" in failed
    assert "left in the queue" in failed
    assert len(harness.bodies(harness.dlq)) == 1, "the failed one stays in the dead-letter queue"
