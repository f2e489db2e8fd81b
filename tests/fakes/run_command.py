"""A small fake of SSM Run Command, for what moto cannot tell the truth about.

moto has no managed-instance list (describe_instance_information is unimplemented), accepts any
SendCommand and reports every invocation as Success. This fake models what our product depends
on, with the API's own shapes and error codes:

- agents that come Online at a given time of a controllable clock (or never);
- IAM: SendCommand refused (AccessDeniedException) unless the template's policy allows every
  instance, judged by tests/fakes/iam.py with the instance's tags;
- SendCommand validation as AWS does it: 1..50 instance ids of the right pattern, our document
  only, parameters checked against the document's allowedPattern/allowedValues/maxChars
  (read from template.yaml), InvalidInstanceId for an unregistered agent, Throttling on demand;
- invocations that go Pending -> InProgress -> Success/Failed/TimedOut/... when the test says,
  with the node's stdout/stderr, and the EventBridge status event SSM would emit;
- Windows nodes (`register(..., platform_type="Windows")`): the agent skips our step, whose
  precondition is platformType Linux, with its own words as the step's Output (amazon-ssm-agent
  agent/framework/runpluginutil/runpluginutil.go: getStepExecutionOperation, and RunPlugins'
  skipStep case - status Skipped, code 0, no stdout); the invocation ends Success;
- ListCommandInvocations with Details: each invocation's step (CommandPlugins) and its Output;
- a command SSM no longer knows (`forget`), and throttling of any operation either for the next
  n calls (`throttle`) or for a share of all calls (`throttle_share`, seeded: reproducible);
- GetCommandInvocation answering one command with any of its documented errors (`fail_invocation`:
  botocore's SSM model lists InternalServerError, InvalidCommandId, InvalidInstanceId,
  InvalidPluginName, InvocationDoesNotExist) or AccessDeniedException / ThrottlingException, for
  the next n calls or for good.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from ssm_document import document_content

from tests.fakes import iam_contract

ROOT = Path(__file__).resolve().parents[2]
STEP = "remediateCa"
INSTANCE_ID = re.compile(r"^(i-(\w{8}|\w{17}))|(mi-\w{17})$")


# Messages as the API reference words GetCommandInvocation's errors (and two every API can return).
GET_INVOCATION_ERRORS = {
    "InternalServerError": "An error occurred on the server side.",
    "InvalidCommandId": "The specified command ID isn't valid.",
    "InvalidInstanceId": "SSM Agent isn't registered with the SSM endpoint.",
    "InvalidPluginName": "The plugin name isn't valid.",
    "InvocationDoesNotExist": "The command ID and managed node ID you specified didn't match any invocations.",
    "AccessDeniedException": "User is not authorized to perform: ssm:GetCommandInvocation",
    "ThrottlingException": "Rate exceeded",
}


def client_error(code: str, message: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


@dataclass
class Invocation:
    command_id: str
    instance_id: str
    status: str = "Pending"
    status_details: str = "Pending"
    stdout: str = ""
    stderr: str = ""
    step_output: str = ""  # CommandPlugins[].Output (the agent's words for a skipped step)


# What amazon-ssm-agent writes for a step whose platformType precondition the node does not meet
# (the format of getStepExecutionOperation's skip message, with our step's precondition).
SKIPPED_ON_WINDOWS = (
    "Step execution skipped due to unsatisfied preconditions: "
    "'\"StringEquals\": [platformType, Linux]'. Step name: " + STEP
)


@dataclass
class FakeClock:
    """Simulated time; starts at the real time so that real certificates are valid."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeRunCommand:
    clock: Callable[[], float]
    document_name: str
    account: str = "123456789012"
    region: str = "us-east-1"
    agents: dict[str, float | None] = field(default_factory=dict)
    commands: list[dict[str, Any]] = field(default_factory=list)
    invocations: dict[tuple[str, str], Invocation] = field(default_factory=dict)
    throttle: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    # PlatformName per instance as DescribeInstanceInformation reports it (default: Amazon Linux;
    # Bottlerocket nodes report "Bottlerocket": the agent reads NAME= of /etc/bottlerocket-release,
    # aws/amazon-ssm-agent agent/platform/platform_unix.go).
    platforms: dict[str, str] = field(default_factory=dict)
    # PlatformType per instance (DescribeInstanceInformation: Windows | Linux | MacOS; default Linux)
    platform_types: dict[str, str] = field(default_factory=dict)
    # IAM's verdict on a send to these instance ids (tests/fakes/iam.py); None: everything allowed.
    authorize: Callable[[list[str]], bool] | None = None
    # The role whose credentials reach this Run Command (a member account's role, central mode);
    # None: the calling function's own. Every call is recorded for the IAM contract (iam_contract.py).
    role_arn: str | None = None
    throttle_share: dict[str, float] = field(default_factory=dict)
    throttled: dict[str, int] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(13))
    # command id -> [error code, calls left (None: every call)] of GetCommandInvocation
    invocation_errors: dict[str, list[Any]] = field(default_factory=dict)
    # (command id, instance id) -> time before which GetCommandInvocation still shows it running,
    # without output, although its status event has gone out (`finish(..., output_after=...)`)
    output_at: dict[tuple[str, str], float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.parameters = document_content((ROOT / "template.yaml").read_text())["parameters"]

    # ------------------------------------------------------------ test controls

    def register(
        self,
        instance_id: str,
        online_at: float | None = None,
        platform: str = "Amazon Linux",
        platform_type: str = "Linux",
    ) -> None:
        """The agent registers now; it is Online from `online_at` (default: now), or never (None)."""
        self.agents[instance_id] = self.clock() if online_at is None else online_at
        self.platforms[instance_id] = platform
        self.platform_types[instance_id] = platform_type

    def register_never_online(self, instance_id: str) -> None:
        self.agents[instance_id] = None

    def deregister(self, instance_id: str) -> None:
        """The node is gone (terminated): its agent is no longer registered."""
        self.removed.add(instance_id)

    def forget(self, command_id: str) -> None:
        """SSM no longer knows the command (its history expired): GetCommandInvocation fails."""
        for key in [k for k in self.invocations if k[0] == command_id]:
            del self.invocations[key]

    def acting_as(self, authorize: Callable[[list[str]], bool], role_arn: str | None = None) -> ActingAs:
        """This Run Command as seen through a role whose IAM verdict is `authorize` (an assumed
        send role: tests/fakes/iam.py SendRoleFakes); its SendCommand is recorded for the IAM
        contract as made by `role_arn` (the assumed role), not by the caller's own role."""
        return ActingAs(self, authorize, role_arn)

    def fail_invocation(self, command_id: str, code: str, times: int | None = None) -> None:
        """GetCommandInvocation of this command answers `code` for the next `times` calls (None: always)."""
        self.invocation_errors[command_id] = [code, times]

    def sent_to(self) -> list[list[str]]:
        return [c["InstanceIds"] for c in self.commands]

    def finish(
        self,
        command_id: str,
        instance_id: str,
        status: str,
        stdout: str = "",
        stderr: str = "",
        details: str | None = None,
        output_after: float | None = None,
    ) -> dict[str, Any]:
        """The node finished: set the invocation's outcome; returns SSM's status event. With
        `output_after` (seconds), GetCommandInvocation still answers InProgress without output
        until then: the status event came before SSM had the node's output. On a Windows node the
        agent skips our Linux step whatever the test asks: Success, no stdout."""
        if output_after is not None:
            self.output_at[(command_id, instance_id)] = self.clock() + output_after
        inv = self.invocations[(command_id, instance_id)]
        if self.platform_types.get(instance_id) == "Windows":
            status, details, stdout, stderr = "Success", "Success", "", ""
            inv.step_output = SKIPPED_ON_WINDOWS
        else:
            inv.step_output = (stdout + stderr)[:2500]
        inv.status, inv.status_details = status, details or status
        inv.stdout, inv.stderr = stdout[:24000], stderr[:8000]
        return self.status_event(command_id, instance_id)

    def progress(self, command_id: str, instance_id: str) -> dict[str, Any]:
        inv = self.invocations[(command_id, instance_id)]
        inv.status = inv.status_details = "InProgress"
        return self.status_event(command_id, instance_id)

    def status_event(self, command_id: str, instance_id: str) -> dict[str, Any]:
        inv = self.invocations[(command_id, instance_id)]
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "EC2 Command Invocation Status-change Notification",
            "source": "aws.ssm",
            "account": self.account,
            "time": "2026-11-26T10:00:00Z",
            "region": self.region,
            "resources": [f"arn:aws:ec2:{self.region}:{self.account}:instance/{instance_id}"],
            "detail": {
                "command-id": command_id,
                "document-name": self.document_name,
                "instance-id": instance_id,
                "requested-date-time": "2026-11-26T10:00:00.000Z",
                "status": inv.status,
            },
        }

    # ------------------------------------------------------------ the API

    def _record(self, operation: str, refused: bool | None = None, **params: Any) -> None:
        """The call, for the IAM contract: judged like a botocore client's (this is not one)."""
        iam_contract.record_fake("ssm", operation, params, self.region, self.account, self.role_arn, refused)

    def _count(self, operation: str) -> None:
        self.calls[operation] = self.calls.get(operation, 0) + 1
        share = self.throttle_share.get(operation, 0.0)
        if self.throttle.get(operation, 0) > 0 or (share and self.rng.random() < share):
            if self.throttle.get(operation, 0) > 0:
                self.throttle[operation] -= 1
            self.throttled[operation] = self.throttled.get(operation, 0) + 1
            raise client_error("ThrottlingException", "Rate exceeded", operation)

    def describe_instance_information(
        self, Filters: list[dict[str, Any]], MaxResults: int = 50, NextToken: str | None = None
    ) -> dict[str, Any]:  # noqa: N803
        self._record("DescribeInstanceInformation", Filters=Filters)
        self._count("DescribeInstanceInformation")
        ids = next(f["Values"] for f in Filters if f["Key"] == "InstanceIds")
        if len(ids) > 50:
            raise client_error("InvalidFilterValue", "at most 50 instance ids", "DescribeInstanceInformation")
        now = self.clock()
        found = []
        for instance_id in ids:
            if instance_id not in self.agents or instance_id in self.removed:
                continue
            online_at = self.agents[instance_id]
            ping = "Online" if online_at is not None and online_at <= now else "ConnectionLost"
            found.append(
                {
                    "InstanceId": instance_id,
                    "PingStatus": ping,
                    "PlatformType": self.platform_types.get(instance_id, "Linux"),
                    "PlatformName": self.platforms.get(instance_id, "Amazon Linux"),
                }
            )
        return {"InstanceInformationList": found}

    def send_command(
        self,
        InstanceIds: list[str],
        DocumentName: str,
        Parameters: dict[str, list[str]],  # noqa: N803
        Comment: str = "",
        TimeoutSeconds: int = 3600,
        DocumentVersion: str = "$DEFAULT",
        **_: Any,
    ) -> dict[str, Any]:
        refused = self.authorize is not None and not self.authorize(list(InstanceIds))
        self._record("SendCommand", refused, InstanceIds=list(InstanceIds), DocumentName=DocumentName)
        self._count("SendCommand")
        op = "SendCommand"
        if refused:  # IAM comes first
            raise client_error("AccessDeniedException", "not authorized to perform: ssm:SendCommand", op)
        if not 1 <= len(InstanceIds) <= 50:
            raise client_error("ValidationException", "InstanceIds: 1..50 items", op)
        if any(not INSTANCE_ID.fullmatch(i) for i in InstanceIds):
            raise client_error("ValidationException", "InstanceIds: pattern", op)
        if DocumentName != self.document_name:
            raise client_error("InvalidDocument", f"document {DocumentName} does not exist", op)
        if len(Comment) > 100 or not 30 <= TimeoutSeconds <= 2592000:
            raise client_error("ValidationException", "Comment/TimeoutSeconds out of range", op)
        self._validate_parameters(Parameters)
        now = self.clock()
        for instance_id in InstanceIds:
            online_at = self.agents.get(instance_id, "missing")
            if online_at == "missing" or instance_id in self.removed:
                raise client_error("InvalidInstanceId", f"Instances [[{instance_id}]] not in a valid state", op)
        command_id = str(uuid.uuid4())
        self.commands.append(
            {
                "CommandId": command_id,
                "InstanceIds": list(InstanceIds),
                "Parameters": Parameters,
                "Comment": Comment,
                "DocumentName": DocumentName,
                "at": now,
            }
        )
        for instance_id in InstanceIds:
            self.invocations[(command_id, instance_id)] = Invocation(command_id, instance_id)
        return {"Command": {"CommandId": command_id, "Comment": Comment, "InstanceIds": list(InstanceIds)}}

    def _validate_parameters(self, given: dict[str, list[str]]) -> None:
        unknown = set(given) - set(self.parameters)
        if unknown:
            raise client_error("InvalidParameters", f"unknown parameters {sorted(unknown)}", "SendCommand")
        for name, spec in self.parameters.items():
            values = given.get(name)
            if values is None:
                if "default" not in spec:
                    raise client_error("InvalidParameters", f"{name} is required", "SendCommand")
                continue
            value = values[0]
            if "maxChars" in spec and len(value) > int(spec["maxChars"]):
                raise client_error("InvalidParameters", f"{name} longer than maxChars", "SendCommand")
            if "allowedValues" in spec and value not in spec["allowedValues"]:
                raise client_error("InvalidParameters", f"{name} not in allowedValues", "SendCommand")
            if "allowedPattern" in spec and not re.search(spec["allowedPattern"], value):
                raise client_error("InvalidParameters", f"{name} does not match allowedPattern", "SendCommand")

    def list_commands(
        self,
        InstanceId: str | None = None,
        Filters: list[dict[str, str]] | None = None,  # noqa: N803
        NextToken: str | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        self._record("ListCommands", InstanceId=InstanceId, Filters=Filters)
        self._count("ListCommands")
        doc = next((f["value"] for f in Filters or [] if f["key"] == "DocumentName"), None)
        found = [
            {"CommandId": c["CommandId"], "Comment": c["Comment"], "DocumentName": c["DocumentName"]}
            for c in self.commands
            if (InstanceId is None or InstanceId in c["InstanceIds"]) and (doc is None or c["DocumentName"] == doc)
        ]
        return {"Commands": found}

    def list_command_invocations(
        self,
        CommandId: str,
        InstanceId: str,
        Details: bool = False,  # noqa: N803
        **_: Any,
    ) -> dict[str, Any]:
        self._count("ListCommandInvocations")
        inv = self.invocations.get((CommandId, InstanceId))
        if inv is None:
            return {"CommandInvocations": []}
        found: dict[str, Any] = {"CommandId": CommandId, "InstanceId": InstanceId, "Status": inv.status}
        if Details:
            found["CommandPlugins"] = [{"Name": STEP, "Status": inv.status, "Output": inv.step_output}]
        return {"CommandInvocations": [found]}

    def get_command_invocation(
        self,
        CommandId: str,
        InstanceId: str,
        PluginName: str | None = None,  # noqa: N803
    ) -> dict[str, Any]:
        self._record("GetCommandInvocation", CommandId=CommandId, InstanceId=InstanceId)
        self._count("GetCommandInvocation")
        failing = self.invocation_errors.get(CommandId)
        if failing is not None and failing[1] != 0:
            if failing[1] is not None:
                failing[1] -= 1
            raise client_error(failing[0], GET_INVOCATION_ERRORS.get(failing[0], "error"), "GetCommandInvocation")
        inv = self.invocations.get((CommandId, InstanceId))
        if inv is None:
            raise client_error("InvocationDoesNotExist", "no such invocation", "GetCommandInvocation")
        if PluginName is not None and PluginName != STEP:
            raise client_error("InvalidPluginName", f"no step {PluginName}", "GetCommandInvocation")
        if self.clock() < self.output_at.get((CommandId, InstanceId), 0):
            inv = Invocation(CommandId, InstanceId, "InProgress", "InProgress")
        return {
            "CommandId": CommandId,
            "InstanceId": InstanceId,
            "PluginName": STEP,
            "Status": inv.status,
            "StatusDetails": inv.status_details,
            "StandardOutputContent": inv.stdout,
            "StandardErrorContent": inv.stderr,
        }


@dataclass
class ActingAs:
    """A FakeRunCommand called with another role's credentials: SendCommand is judged by that
    role's IAM; every other call and all state are the Run Command's."""

    run_command: FakeRunCommand
    authorize: Callable[[list[str]], bool]
    role_arn: str | None = None  # the role whose credentials send (the IAM contract judges it)

    def send_command(self, **kwargs: Any) -> dict[str, Any]:
        own = self.run_command.authorize, self.run_command.role_arn
        self.run_command.authorize = self.authorize
        self.run_command.role_arn = self.role_arn or own[1]
        try:
            return self.run_command.send_command(**kwargs)
        finally:
            self.run_command.authorize, self.run_command.role_arn = own

    def __getattr__(self, name: str) -> Any:
        return getattr(self.run_command, name)
