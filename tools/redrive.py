"""Replay the dead-letter queue into the functions after an outage: `make redrive STACK=<name>`.

Three kinds of message land in the stack's DeadLetterQueue, and each is replayed where it came from:

- an EventBridge event a rule could not deliver (body: the event; message attributes RULE_ARN,
  TARGET_ARN, ERROR_CODE, ERROR_MESSAGE - https://docs.aws.amazon.com/eventbridge/latest/userguide/rule-dlq.html):
  invoked again on its TARGET_ARN function;
- a Lambda OnFailure destination record of an asynchronous invocation that failed all its retries
  (body: {"requestContext": {"functionArn": ..., "condition": ...}, "requestPayload": <the event>, ...}
  - https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html): its
  requestPayload invoked again on that function;
- an agent-wait or sweep-job message SQS moved here after maxReceiveCount (body: the message):
  sent back to its queue.

SQS StartMessageMoveTask cannot do this: it redrives only dead-letter queues whose sources are
SQS queues, not Lambda or EventBridge
(https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_StartMessageMoveTask.html),
and one shared queue needs a destination per message. So each message is classified, its payload
validated with the product's own models, replayed (a synchronous invoke, so a failure is seen),
and deleted only when the replay succeeded. The functions are idempotent (attempt keys derive from
the event id; re-checks and status results are conditional writes), so a message replayed twice -
or a run interrupted between the replay and the delete - changes nothing the first did not.

A message that is not JSON, has no known shape, fails its model, names a function that is not this
stack's, or comes from another account or region is reported and left in the queue: never dropped,
never replayed to a function, never sent to a node.

    python tools/redrive.py --stack eks-ca-remediator [--region us-east-1] [--dry-run] [--max 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from eks_ca_remediator.edge import describe
from eks_ca_remediator.models import (
    AgentWaitMessage,
    CommandInvocationStatusChange,
    InstanceStateChange,
    MemberPullFailures,
    ScheduledEvent,
)
from eks_ca_remediator.sweeps import SweepJob, SweepTrigger
from pydantic import BaseModel, ValidationError

# What each function of the stack accepts when replayed (its handler parses the same way).
FUNCTION_EVENTS: dict[str, type[BaseModel] | None] = {
    "OnLaunchFunction": InstanceStateChange,
    "OnCommandStatusFunction": CommandInvocationStatusChange,
    "SweepFunction": SweepTrigger,
    "ReconcileFunction": ScheduledEvent,
    "PullFailureFunction": None,
}
QUEUE_MESSAGES: dict[str, type[BaseModel]] = {"AgentWaitQueue": AgentWaitMessage, "SweepQueue": SweepJob}
RECEIVE_VISIBILITY_SECONDS = 1200  # a received message stays hidden while its function runs
REPLAY_SECONDS = 960  # the longest a replay can take: the invoke's read timeout (910 s) and a margin


@dataclass(frozen=True)
class Stack:
    """Where replayed messages go: the stack's functions and queues, by logical id."""

    account: str
    region: str
    functions: dict[str, str]  # logical id -> function name
    queues: dict[str, str]  # logical id -> queue URL
    central: bool = False  # member accounts' EC2/SSM events are ours too (OrganizationId set)


@dataclass(frozen=True)
class Replay:
    kind: str  # eventbridge | lambda-destination | agent-wait | sweep-job
    target: str  # logical id of a function or queue
    payload: dict[str, Any]


@dataclass(frozen=True)
class Refusal:
    reason: str


def _function_of_arn(arn: str, stack: Stack) -> tuple[str | None, str]:
    """(logical id of our function named by this Lambda ARN, or None; why not)."""
    parts = arn.split(":")
    if len(parts) < 7 or parts[2] != "lambda" or parts[5] != "function":
        return None, f"not a Lambda function ARN: {arn[:120]!r}"
    if (parts[4], parts[3]) != (stack.account, stack.region):
        return None, f"function of account {parts[4][:20]!r} region {parts[3][:20]!r}, not this stack's"
    for logical, name in stack.functions.items():
        if parts[6] == name:
            return logical, ""
    return None, f"function {parts[6][:80]!r} is not one of this stack's"


def _validated(target: str, payload: Any, kind: str, stack: Stack) -> Replay | Refusal:
    model = FUNCTION_EVENTS.get(target, QUEUE_MESSAGES.get(target))
    if target not in FUNCTION_EVENTS and target not in QUEUE_MESSAGES:
        return Refusal(f"{target} is not replayed by this tool")
    if not isinstance(payload, dict):
        return Refusal(f"{kind} for {target}: payload is {type(payload).__name__}, not a JSON object")
    if model is None:  # PullFailureFunction: a CloudWatch Logs subscription payload, or a member's event
        if "detail-type" in payload:
            model = MemberPullFailures
        elif set(payload) != {"awslogs"} or not isinstance(payload["awslogs"], dict):
            return Refusal(f"{kind} for {target}: not a CloudWatch Logs subscription payload")
        else:
            return Replay(kind, target, payload)
    try:
        parsed = model.model_validate(payload)
    except ValidationError as exc:
        return Refusal(f"{kind} for {target}: {describe(exc)}")
    account, region = getattr(parsed, "account", None), getattr(parsed, "region", None)
    if region is not None and region != stack.region:
        return Refusal(f"{kind} for {target}: event of region {region!r}, not this stack's {stack.region}")
    if account is not None and account != stack.account and not stack.central:
        return Refusal(f"{kind} for {target}: event of account {account!r}, not this stack's")
    return Replay(kind, target, payload)


def classify(body: str, attributes: dict[str, str], stack: Stack) -> Replay | Refusal:
    """Where a dead-letter message goes (validated), or why it stays where it is."""
    try:
        payload = json.loads(body)
    except ValueError:
        return Refusal("body is not JSON")
    if not isinstance(payload, dict):
        return Refusal(f"body is a JSON {type(payload).__name__}, not an object")
    if "requestContext" in payload and "requestPayload" in payload:
        context = payload["requestContext"]
        arn = context.get("functionArn", "") if isinstance(context, dict) else ""
        target, why = _function_of_arn(str(arn), stack)
        if target is None:
            return Refusal(f"Lambda destination record: {why}")
        return _validated(target, payload["requestPayload"], "lambda-destination", stack)
    if "detail-type" in payload and "source" in payload:
        arn = attributes.get("TARGET_ARN", "")
        if not arn:
            return Refusal("EventBridge event without a TARGET_ARN attribute: its function is unknown")
        target, why = _function_of_arn(arn, stack)
        if target is None:
            return Refusal(f"EventBridge event: {why}")
        return _validated(target, payload, "eventbridge", stack)
    if {"instance_id", "attempt_sk", "deadline"} <= set(payload):
        return _validated("AgentWaitQueue", payload, "agent-wait", stack)
    if {"origin", "cluster", "started_at"} <= set(payload):
        return _validated("SweepQueue", payload, "sweep-job", stack)
    return Refusal("not an EventBridge event, a Lambda destination record or one of our queue messages")


@dataclass
class Report:
    counts: Counter[str] = field(default_factory=Counter)
    lines: list[str] = field(default_factory=list)

    def add(self, outcome: str, message_id: str, text: str) -> None:
        self.counts[outcome] += 1
        self.lines.append(f"{outcome:<9} {message_id}  {text}")


def _attributes(message: dict[str, Any]) -> dict[str, str]:
    return {k: v.get("StringValue", "") for k, v in (message.get("MessageAttributes") or {}).items()}


@dataclass
class Held:
    """A received message: its newest receipt handle and when its visibility ends (run's clock)."""

    message: dict[str, Any]
    hidden_until: float


def redrive(
    sqs: Any,
    lambda_client: Any,
    dlq_url: str,
    stack: Stack,
    dry_run: bool = False,
    limit: int = 10_000,
    say: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
) -> Report:
    """Replay every message of the dead-letter queue once; returns what became of each.

    A replay that fails, or whose invoke raises (a timeout, a throttled or refused call), is
    reported and its message left in the queue; the run goes on with the others. A receipt handle is
    used only while its message is still hidden: before each replay, the batch's messages still to
    be handled have their visibility extended when what is left of it would not cover the replay
    (REPLAY_SECONDS) - a batch of ten slow replays outlasts one visibility timeout - so no delete
    uses a stale handle."""
    report, held, left = Report(), {}, []
    while len(held) < limit:
        batch = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=RECEIVE_VISIBILITY_SECONDS,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            break
        received = clock()
        fresh = [m for m in batch if m["MessageId"] not in held]
        for message in batch:  # (one seen before came back: keep its newest handle)
            held[message["MessageId"]] = Held(message, received + RECEIVE_VISIBILITY_SECONDS)
        for n, message in enumerate(fresh):
            if not dry_run:
                _keep_hidden(sqs, dlq_url, [held[m["MessageId"]] for m in fresh[n:]], clock)
            outcome = _one(sqs, lambda_client, dlq_url, stack, held[message["MessageId"]], dry_run, report)
            if outcome != "replayed":
                left.append(message["MessageId"])
        say(f"... {len(held)} messages seen")
    _release(sqs, dlq_url, [held[m] for m in left], clock)
    return report


def _one(
    sqs: Any,
    lambda_client: Any,
    dlq_url: str,
    stack: Stack,
    entry: Held,
    dry_run: bool,
    report: Report,
) -> str:
    """Classify and replay one message; what became of it (a Report outcome)."""
    message = entry.message
    decision = classify(message["Body"], _attributes(message), stack)
    if isinstance(decision, Refusal):
        report.add("left", message["MessageId"], decision.reason)
        return "left"
    where = f"{decision.kind} -> {decision.target}"
    if dry_run:
        report.add("would", message["MessageId"], where)
        return "would"
    try:
        error = _replay(sqs, lambda_client, stack, decision)
    except (ClientError, BotoCoreError) as exc:  # this replay failed; the others still run
        error = f"the replay raised {type(exc).__name__}: {str(exc)[:300]}"
    if error:
        report.add("failed", message["MessageId"], f"{where}: {error} (left in the queue)")
        return "failed"
    sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
    report.add("replayed", message["MessageId"], where)
    return "replayed"


def _keep_hidden(sqs: Any, dlq_url: str, entries: list[Held], clock: Callable[[], float]) -> None:
    """Before a replay: extend the visibility of the batch's messages still to be handled whose
    visibility would end during it (REPLAY_SECONDS), so none of their handles goes stale."""
    for entry in entries:
        if entry.hidden_until - clock() < REPLAY_SECONDS:
            sqs.change_message_visibility(
                QueueUrl=dlq_url,
                ReceiptHandle=entry.message["ReceiptHandle"],
                VisibilityTimeout=RECEIVE_VISIBILITY_SECONDS,
            )
            entry.hidden_until = clock() + RECEIVE_VISIBILITY_SECONDS


def _release(sqs: Any, dlq_url: str, entries: list[Held], clock: Callable[[], float]) -> None:
    """Make the messages left in the queue visible again at once, for the next look (console,
    another run); one whose visibility already ended is visible already: its handle is not used."""
    for entry in entries:
        if entry.hidden_until <= clock():
            continue
        sqs.change_message_visibility(
            QueueUrl=dlq_url, ReceiptHandle=entry.message["ReceiptHandle"], VisibilityTimeout=0
        )


def _replay(sqs: Any, lambda_client: Any, stack: Stack, replay: Replay) -> str:
    """Replay one message; '' when it succeeded, else what went wrong."""
    body = json.dumps(replay.payload)
    if replay.target in QUEUE_MESSAGES:
        sqs.send_message(QueueUrl=stack.queues[replay.target], MessageBody=body)
        return ""
    response = lambda_client.invoke(
        FunctionName=stack.functions[replay.target], InvocationType="RequestResponse", Payload=body.encode()
    )
    if response.get("FunctionError"):
        detail = response["Payload"].read().decode(errors="replace")[:300]
        return f"the function failed again: {detail}"
    return ""


# ------------------------------------------------------------------ command line


def stack_targets(cloudformation: Any, stack_name: str, region: str) -> tuple[Stack, str]:
    """The stack's functions and queues by logical id, and its dead-letter queue URL."""
    resources: dict[str, str] = {}
    for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack_name):
        for r in page["StackResourceSummaries"]:
            resources[r["LogicalResourceId"]] = r["PhysicalResourceId"]
    dlq_url = resources["DeadLetterQueue"]
    account = dlq_url.rstrip("/").split("/")[-2]
    stack = Stack(
        account=account,
        region=region,
        functions={k: v for k, v in resources.items() if k in FUNCTION_EVENTS},
        queues={k: v for k, v in resources.items() if k in QUEUE_MESSAGES},
        central="CentralEventBus" in resources,
    )
    return stack, dlq_url


def main(argv: list[str] | None = None) -> int:
    import boto3
    from botocore.config import Config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True, help="the deployed stack's name")
    parser.add_argument("--region", default=None)
    parser.add_argument("--dry-run", action="store_true", help="classify and report; replay and delete nothing")
    parser.add_argument("--max", type=int, default=10_000, help="messages to look at in this run")
    args = parser.parse_args(argv)
    session = boto3.Session(region_name=args.region)
    region = session.region_name
    stack, dlq_url = stack_targets(session.client("cloudformation"), args.stack, region)
    lambda_client = session.client("lambda", config=Config(read_timeout=910, retries={"mode": "adaptive"}))
    report = redrive(session.client("sqs"), lambda_client, dlq_url, stack, args.dry_run, args.max)
    print("\n".join(report.lines))
    print(", ".join(f"{k}: {v}" for k, v in sorted(report.counts.items())) or "the dead-letter queue is empty")
    return 1 if report.counts["failed"] or report.counts["left"] else 0


if __name__ == "__main__":
    sys.exit(main())
