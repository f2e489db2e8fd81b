"""Pure decisions: no I/O, no clock reads. Everything here is a function of its arguments."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pydantic import ValidationError

from eks_ca_remediator.models import CLUSTER_NAME_RE, NodeKind, NodeResult, Status
from eks_ca_remediator.provisioners import NAME_IN_KEY_PREFIXES, NAME_TAG_KEYS

T = TypeVar("T")

SEND_COMMAND_MAX_TARGETS = 50
# The node tags that name a cluster, from the one list of how provisioners tag nodes.
CLUSTER_TAG_KEYS = NAME_TAG_KEYS  # the value names the cluster
CLUSTER_TAG_PREFIXES = NAME_IN_KEY_PREFIXES  # the key ends in the cluster name; allowed values
TAIL_CHARS = 2000


def chunks[T](items: Sequence[T], size: int = SEND_COMMAND_MAX_TARGETS) -> Iterator[list[T]]:
    """Split items into lists of at most `size` (SendCommand takes at most 50 instance ids)."""
    if size < 1:
        raise ValueError("chunk size must be positive")
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def cluster_claims(tags: Mapping[str, str]) -> dict[str, list[str]]:
    """Every cluster name the instance's tags claim, with the tags that claim it (`key=value`).

    A name that is not a valid EKS cluster name is ignored: it never reaches IAM or SSM."""
    claims: dict[str, list[str]] = {}
    for key, value in tags.items():
        name = None
        if key in CLUSTER_TAG_KEYS:
            name = value
        else:
            for prefix, values in CLUSTER_TAG_PREFIXES.items():
                if key.startswith(prefix) and value in values:
                    name = key.removeprefix(prefix)
        if name and CLUSTER_NAME_RE.fullmatch(name):
            claims.setdefault(name, []).append(f"{key}={value}")
    return claims


def cluster_names_from_tags(tags: Mapping[str, str]) -> set[str]:
    """Every (valid) cluster name the instance's tags claim."""
    return set(cluster_claims(tags))


@dataclass(frozen=True)
class Disagreement:
    """The node's tags name more than one cluster, one of them enrolled: it is not remediated."""

    cluster: str  # the (first) enrolled one: the record is kept under it
    reason: str


def node_cluster(tags: Mapping[str, str], enrolled: Iterable[str]) -> str | Disagreement | None:
    """The enrolled cluster this instance is a node of; a Disagreement when its tags name several
    clusters (one of them enrolled); None when it is not a node of an enrolled cluster."""
    claims = cluster_claims(tags)
    ours = sorted(set(claims) & set(enrolled))
    if not ours:
        return None
    if len(claims) == 1:
        return ours[0]
    named = "; ".join(f"{name} ({', '.join(sorted(by))})" for name, by in sorted(claims.items()))
    return Disagreement(ours[0], f"node tags name different clusters: {named}; not remediated")


def enrolled_cluster(tags: Mapping[str, str], enrolled: Iterable[str]) -> str | None:
    """The enrolled cluster this instance is a node of, or None (not ours, or tags that disagree)."""
    cluster = node_cluster(tags, enrolled)
    return cluster if isinstance(cluster, str) else None


# ---------------------------------------------------------------- nodes our document never runs on

# DescribeInstances `Operator.Principal` of the EC2 managed instances EKS Auto Mode launches (botocore
# ec2 model, OperatorResponse: "If managed is true, then the principal is returned").
EKS_AUTO_MODE_OPERATOR = "eks.amazonaws.com"
WINDOWS_REASON = (
    "Windows node: our document's only step runs on Linux (SSM would skip it), so nothing is sent. "
    "containerd on Windows verifies a registry through the Windows certificate store on every pull "
    "(Go crypto/x509 on Windows asks the OS), so import the CA into Cert:\\LocalMachine\\Root (userdata "
    "or a later script): no containerd restart is needed. A hosts.toml `ca` does not help before "
    "containerd 2.3 (it builds an empty pool on Windows). README: node kinds"
)
AUTO_MODE_REASON = (
    "EKS Auto Mode node (EC2 managed instance, operator eks.amazonaws.com): Auto Mode refuses SSM "
    "access, so nothing is sent. Put the CA in the NodeClass's spec.certificateBundles; nodes it "
    "launches then trust it. README: node kinds"
)
NO_AGENT_REASON = (
    "SSM agent not Online before the agent-wait deadline (last seen: {seen}); nothing was sent. "
    "Likely causes: the node's instance profile lacks AmazonSSMManagedInstanceCore, or the node has "
    "no route to the SSM endpoints (ssm, ssmmessages, ec2messages: VPC endpoints or a NAT). Fix "
    "that, then invoke manually; a sweep retries once the agent is Online. README: node kinds"
)
# amazon-ssm-agent (agent/framework/runpluginutil/runpluginutil.go, getStepExecutionOperation) skips a
# schema 2.2 step whose precondition is unmet with this message, as the step's Output; the step's
# status is Skipped, its exit code 0, and the invocation ends Success.
STEP_SKIPPED_PREFIX = "Step execution skipped due to"


@dataclass(frozen=True)
class NotRemediable:
    kind: NodeKind
    reason: str


def node_not_remediable(
    platform: str, platform_details: str, operator_managed: bool, operator_principal: str
) -> NotRemediable | None:
    """Whether the instance is a node our Linux document must never be sent to, from what
    DescribeInstances says of it: Windows (`Platform` windows, or `PlatformDetails` naming Windows)
    or an EKS Auto Mode node (`Operator` managed by eks.amazonaws.com). None: send as usual."""
    if platform.lower() == "windows" or platform_details.lower().startswith("windows"):
        return NotRemediable(NodeKind.WINDOWS, WINDOWS_REASON)
    if operator_managed and operator_principal == EKS_AUTO_MODE_OPERATOR:
        return NotRemediable(NodeKind.EKS_AUTO_MODE, AUTO_MODE_REASON)
    return None


def skipped_step(output: str) -> str | None:
    """SSM's own words when it skipped our step (e.g. its precondition platformType Linux on a
    Windows node), else None."""
    for line in output.splitlines():
        if line.strip().startswith(STEP_SKIPPED_PREFIX):
            return line.strip()
    return None


@dataclass(frozen=True)
class SendNow:
    pass


@dataclass(frozen=True)
class WaitAgain:
    delay_seconds: int


@dataclass(frozen=True)
class GiveUp:
    reason: str


@dataclass(frozen=True)
class NoAgent:
    """The agent never came Online by the deadline: not a failure of the remediation (NOT_REMEDIABLE)."""

    reason: str


AgentDecision = SendNow | WaitAgain | GiveUp | NoAgent


# Agents of new EKS nodes typically come Online 20-60 s after `running`: re-check densely there
# (Online -> SendCommand within DENSE_RECHECK_SECONDS), sparsely before and after it.
DENSE_WINDOW_SECONDS = (20, 60)
DENSE_RECHECK_SECONDS = 5
SPARSE_RECHECK_CAP_SECONDS = 60


def agent_recheck_delay(waited: float, recheck_seconds: int) -> int:
    """Seconds until the next agent re-check of a node that has waited `waited` seconds so far.

    Before the typical Online window: every `recheck_seconds`, but never past the window's start.
    Inside it: every DENSE_RECHECK_SECONDS (or `recheck_seconds` when smaller). After it: backoff,
    a quarter of the time waited so far, at least `recheck_seconds`, at most
    max(SPARSE_RECHECK_CAP_SECONDS, recheck_seconds). Always 1..900 (the SQS delay range).
    """
    start, end = DENSE_WINDOW_SECONDS
    if waited < start:
        delay = min(recheck_seconds, math.ceil(start - waited))
    elif waited < end:
        delay = min(recheck_seconds, DENSE_RECHECK_SECONDS)
    else:
        delay = max(recheck_seconds, min(SPARSE_RECHECK_CAP_SECONDS, int(waited // 4)))
    return max(1, min(delay, 900))


def agent_wait_decision(
    ping_status: str | None,
    instance_state: str | None,
    now: float,
    deadline: float,
    recheck_seconds: int,
    waited: float | None = None,
) -> AgentDecision:
    """Decide what to do with a node whose SSM agent we are waiting for.

    Online -> send now. Instance gone -> give up with that reason. Past the deadline -> give up.
    Otherwise wait again, never past the deadline (SQS delay max 900 s): for `waited` seconds so
    far, as agent_recheck_delay schedules; without it, one flat `recheck_seconds` interval.
    """
    if instance_state is not None and instance_state not in ("pending", "running"):
        return GiveUp(f"instance is {instance_state} while waiting for its SSM agent")
    if ping_status == "Online":
        return SendNow()
    remaining = deadline - now
    if remaining <= 0:
        return NoAgent(NO_AGENT_REASON.format(seen=ping_status or "not registered"))
    interval = recheck_seconds if waited is None else agent_recheck_delay(waited, recheck_seconds)
    return WaitAgain(delay_seconds=max(1, min(interval, int(remaining + 0.999), 900)))


# SSM invocation statuses (and status details) -> our record status.
_SSM_STATUS = {
    "Pending": Status.IN_PROGRESS,
    "InProgress": Status.IN_PROGRESS,
    "Delayed": Status.IN_PROGRESS,
    "Success": Status.SUCCEEDED,
    "Failed": Status.FAILED,
    "Cancelled": Status.FAILED,
    "Cancelling": Status.IN_PROGRESS,
    "TimedOut": Status.TIMED_OUT,
    "DeliveryTimedOut": Status.TIMED_OUT,
    "ExecutionTimedOut": Status.TIMED_OUT,
    "Undeliverable": Status.FAILED,
    "Terminated": Status.FAILED,
    "AccessDenied": Status.FAILED,
    "InvalidPlatform": Status.FAILED,
}


def record_status_for(ssm_status: str) -> Status:
    """Map an SSM invocation status (or status detail) to a record status."""
    try:
        return _SSM_STATUS[ssm_status]
    except KeyError:
        raise ValueError(f"unknown SSM invocation status {ssm_status!r}") from None


@dataclass(frozen=True)
class Outcome:
    status: Status
    reason: str
    result: NodeResult | None
    node_kind: NodeKind | None = None  # set when SSM did not run our script on the node


def parse_node_result(stdout: str) -> NodeResult | None:
    """The node script's final JSON line, or None when stdout has none that parses."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            return NodeResult.model_validate(json.loads(line))
        except (ValueError, ValidationError):
            return None
    return None


def outcome_of(ssm_status: str, status_details: str, stdout: str, dry_run: bool) -> Outcome:
    """Decide the final record status from SSM's verdict and the node's own JSON result."""
    status = record_status_for(status_details if status_details in _SSM_STATUS else ssm_status)
    result = parse_node_result(stdout)
    if result is None:
        skipped = skipped_step(stdout) if status is Status.SUCCEEDED else None
        if skipped:  # SSM did not run our script: nothing of ours failed (never a breaker failure)
            return Outcome(Status.NOT_REMEDIABLE, f"SSM skipped our step: {skipped}", None, NodeKind.STEP_SKIPPED)
        if status is Status.SUCCEEDED:
            return Outcome(Status.FAILED, "node output has no parsable result line", None)
        return Outcome(status, f"SSM status {status_details or ssm_status}; node output has no result line", None)
    if status is Status.SUCCEEDED and result.result == "failure":
        return Outcome(Status.FAILED, result.reason or "node reported failure", result)
    if status is Status.SUCCEEDED and (dry_run or result.result == "dry-run"):
        return Outcome(Status.DRY_RUN, "dry run: nothing was changed on the node", result)
    if status is Status.SUCCEEDED:
        return Outcome(status, "", result)
    return Outcome(status, result.reason or f"SSM status {status_details or ssm_status}", result)


def tail(text: str, limit: int = TAIL_CHARS) -> str:
    return text[-limit:] if len(text) > limit else text
