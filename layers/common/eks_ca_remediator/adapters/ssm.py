"""SSM Run Command: agent status, SendCommand, command invocation output."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from eks_ca_remediator.decisions import chunks
from eks_ca_remediator.errors import AgentNotRegistered, AttemptNotFound, InvocationUnreadable, SendDenied
from eks_ca_remediator.models import INSTANCE_ID_RE


@dataclass(frozen=True)
class Invocation:
    status: str
    status_details: str
    stdout: str
    stderr: str
    # The step's Output as ListCommandInvocations (Details) reports it, read only when a Success
    # left no stdout: where SSM puts its own words for a step it skipped (decisions.skipped_step).
    step_output: str = ""


# The PlatformName SSM reports for Bottlerocket nodes: the agent (in the control container) reads
# NAME= of /etc/bottlerocket-release, the host's os-release (aws/amazon-ssm-agent,
# agent/platform/platform_unix.go; bottlerocket-core-kit packages/release: NAME=Bottlerocket).
BOTTLEROCKET = "Bottlerocket"


# Held send-role clients are renewed when their credentials have less than this left (a Lambda
# invocation lasts at most 15 minutes).
CREDENTIALS_MARGIN_SECONDS = 900 + 300


class SendRoles:
    """SSM clients acting as each enrolled cluster's send role, the one role allowed to send our
    document to that cluster's nodes (template.yaml and member-account.yaml, SendRole<cluster>: one
    role cannot hold every cluster's statements within IAM's quotas). The role's ARN is the
    parameter `<path><cluster>`; a client is kept until shortly before its credentials expire."""

    def __init__(
        self,
        ssm_client: Any,
        sts_client: Any,
        path: str,
        assume: Callable[[Any, str], tuple[Any, float]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from eks_ca_remediator.adapters import clients

        self._ssm = ssm_client
        self._sts = sts_client
        self.path = path
        self._assume = assume or clients.assumed_ssm
        self._clock = clock
        self._held: dict[str, tuple[Any, float]] = {}

    def client(self, cluster: str) -> Any:
        held = self._held.get(cluster)
        if held is not None and held[1] - self._clock() >= CREDENTIALS_MARGIN_SECONDS:
            return held[0]
        name = self.path + cluster
        try:
            arn = self._ssm.get_parameter(Name=name)["Parameter"]["Value"]
            client, expires_at = self._assume(self._sts, arn)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "ClientError")
            raise SendDenied(f"cannot act as the send role of cluster {cluster!r} ({name}): {code}") from exc
        self._held[cluster] = (client, expires_at)
        return client

    def enrolled(self, cluster: str) -> bool:
        """Whether this account's stack enrolls `cluster` (it wrote the cluster's send-role parameter:
        in a member account, the member stack's own EnrolledClusters)."""
        if cluster in self._held:
            return True
        try:
            self._ssm.get_parameter(Name=self.path + cluster)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ParameterNotFound":
                return False
            raise
        return True


class RunCommand:
    def __init__(
        self, ssm_client: Any, document_name: str, step_name: str, send_roles: SendRoles | None = None
    ) -> None:
        self._ssm = ssm_client
        self.document_name = document_name
        self.step_name = step_name
        # SendCommand goes through the cluster's send role; without one (tests of this adapter,
        # local runs) through ssm_client.
        self.send_roles = send_roles
        self._platforms: dict[str, str] = {}

    def enrolled(self, cluster: str) -> bool:
        """Whether this account's stack enrolls `cluster` (always, without send roles: tests)."""
        return self.send_roles is None or self.send_roles.enrolled(cluster)

    def platform_name(self, instance_id: str) -> str:
        """PlatformName SSM reported for the instance at its last ping_status ("" if never seen)."""
        return self._platforms.get(instance_id, "")

    def ping_status(self, instance_ids: Sequence[str]) -> dict[str, str]:
        """PingStatus per instance id; unregistered instances are absent. Also notes each
        instance's PlatformName (platform_name)."""
        statuses: dict[str, str] = {}
        for batch in chunks(list(dict.fromkeys(instance_ids)), 50):
            kwargs: dict[str, Any] = {"Filters": [{"Key": "InstanceIds", "Values": batch}], "MaxResults": 50}
            while True:
                page = self._ssm.describe_instance_information(**kwargs)
                for info in page.get("InstanceInformationList", []):
                    statuses[info["InstanceId"]] = info.get("PingStatus", "Unknown")
                    self._platforms[info["InstanceId"]] = info.get("PlatformName", "")
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
        return statuses

    def send(
        self,
        instance_ids: Sequence[str],
        parameters: dict[str, list[str]],
        comment: str,
        timeout_seconds: int,
        cluster: str,
    ) -> str:
        """Send our document to at most 50 instances of `cluster`; returns the CommandId.

        Our own input is checked here, before AWS sees it. Raises AgentNotRegistered when SSM
        rejects an instance id (agent gone or not yet registered), SendDenied when IAM refuses
        (or the cluster's send role cannot be assumed).
        """
        ids = list(instance_ids)
        if not 1 <= len(ids) <= 50:
            raise ValueError(f"SendCommand takes 1..50 instance ids, got {len(ids)}")
        bad = [i for i in ids if not INSTANCE_ID_RE.fullmatch(i)]
        if bad:
            raise ValueError(f"not instance ids: {bad}")
        sender = self.send_roles.client(cluster) if self.send_roles is not None else self._ssm
        try:
            response = sender.send_command(
                InstanceIds=ids,
                DocumentName=self.document_name,
                DocumentVersion="$DEFAULT",
                Parameters=parameters,
                Comment=comment[:100],
                TimeoutSeconds=max(30, timeout_seconds),
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "InvalidInstanceId":
                raise AgentNotRegistered(f"SSM rejected instance ids {ids}: {exc}") from exc
            if exc.response["Error"]["Code"] in ("AccessDeniedException", "AccessDenied"):
                raise SendDenied(f"IAM denied SendCommand to {ids}: {exc}") from exc
            raise
        return response["Command"]["CommandId"]

    def commands_with_comment(self, instance_id: str, comment: str) -> list[str]:
        """Command ids of our document sent to instance_id with exactly this comment (send recovery)."""
        kwargs: dict[str, Any] = {
            "InstanceId": instance_id,
            "Filters": [{"key": "DocumentName", "value": self.document_name}],
        }
        found: list[str] = []
        while True:
            page = self._ssm.list_commands(**kwargs)
            found += [c["CommandId"] for c in page.get("Commands", []) if c.get("Comment") == comment[:100]]
            if not page.get("NextToken"):
                return found
            kwargs["NextToken"] = page["NextToken"]

    def invocation(self, command_id: str, instance_id: str) -> Invocation:
        """The invocation of our step on the instance. GetCommandInvocation's errors (botocore's SSM
        model; API reference, GetCommandInvocation "Errors"), each a domain error:
        InvocationDoesNotExist, InvalidCommandId -> AttemptNotFound (SSM does not know it);
        InvalidInstanceId -> AgentNotRegistered (the node is gone, its agent not running or not
        registered, or we may not access it); InternalServerError, InvalidPluginName, throttling,
        AccessDenied and anything else -> InvocationUnreadable (the result is unknown for now)."""
        try:
            raw = self._ssm.get_command_invocation(
                CommandId=command_id, InstanceId=instance_id, PluginName=self.step_name
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "ClientError"))
            if code in ("InvocationDoesNotExist", "InvalidCommandId"):
                raise AttemptNotFound(f"SSM has no invocation {command_id} on {instance_id}") from exc
            if code == "InvalidInstanceId":
                raise AgentNotRegistered(f"SSM rejects instance {instance_id} (InvalidInstanceId)") from exc
            message = str(error.get("Message", ""))[:200]
            raise InvocationUnreadable(f"GetCommandInvocation failed: {code}: {message}", code) from exc
        stdout = raw.get("StandardOutputContent", "")
        step_output = ""
        if raw.get("Status") == "Success" and not stdout:
            step_output = self._step_output(command_id, instance_id)
        return Invocation(
            status=raw.get("Status", ""),
            status_details=raw.get("StatusDetails", ""),
            stdout=stdout,
            stderr=raw.get("StandardErrorContent", ""),
            step_output=step_output,
        )

    def _step_output(self, command_id: str, instance_id: str) -> str:
        """Our step's Output in ListCommandInvocations (Details=True). A step the agent skipped
        (unmet precondition) writes no stdout: the agent sets the step's Output to why
        (amazon-ssm-agent runpluginutil.RunPlugins, skipStep)."""
        page = self._ssm.list_command_invocations(CommandId=command_id, InstanceId=instance_id, Details=True)
        for invocation in page.get("CommandInvocations", []):
            for plugin in invocation.get("CommandPlugins", []):
                if plugin.get("Name") == self.step_name:
                    return str(plugin.get("Output") or "")
        return ""
