"""Events, requests and records, parsed at the edge with pydantic."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

INSTANCE_ID_RE = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
CLUSTER_NAME_RE = re.compile(r"^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$")
REGISTRY_HOST_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?$")
COMMAND_ID_RE = re.compile(r"^[0-9a-f-]{36}$")

InstanceId = Annotated[str, StringConstraints(pattern=INSTANCE_ID_RE.pattern)]
ClusterName = Annotated[str, StringConstraints(pattern=CLUSTER_NAME_RE.pattern)]
CommandId = Annotated[str, StringConstraints(pattern=COMMAND_ID_RE.pattern)]
AccountId = Annotated[str, StringConstraints(pattern=r"^\d{12}$")]
RegionName = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")]


class Strategy(StrEnum):
    AUTO = "auto"
    RESTART = "restart"
    HOSTS_TOML = "hosts-toml"


class Trigger(StrEnum):
    LAUNCH = "launch"
    MANUAL = "manual"
    PULL_FAILURE = "pull-failure"
    SWEEP = "sweep"


class NodeKind(StrEnum):
    """Nodes our Linux document is never run on (recorded NOT_REMEDIABLE with `node_kind`; README:
    node kinds). A skipped step is a command SSM accepted but whose Linux step it did not run."""

    WINDOWS = "windows"
    EKS_AUTO_MODE = "eks-auto-mode"
    NO_SSM_AGENT = "no-ssm-agent"
    STEP_SKIPPED = "step-skipped"


class Status(StrEnum):
    PENDING_AGENT = "PENDING_AGENT"
    SENT = "SENT"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    SKIPPED = "SKIPPED"
    DRY_RUN = "DRY_RUN"
    NOT_REMEDIABLE = "NOT_REMEDIABLE"  # a pull failure our CA cannot fix (expired, wrong host, 401, ...)

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT, Status.SKIPPED, Status.DRY_RUN, Status.NOT_REMEDIABLE}
)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


# ---------------------------------------------------------------- EventBridge events


class _EventBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    id: str
    account: AccountId
    region: RegionName
    time: datetime


class _InstanceStateDetail(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    instance_id: InstanceId = Field(alias="instance-id")
    state: str


class InstanceStateChange(_EventBase):
    """`EC2 Instance State-change Notification` from source aws.ec2."""

    source: Literal["aws.ec2"]
    detail_type: Literal["EC2 Instance State-change Notification"] = Field(alias="detail-type")
    detail: _InstanceStateDetail


class _CommandInvocationDetail(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    command_id: CommandId = Field(alias="command-id")
    instance_id: InstanceId = Field(alias="instance-id")
    status: Annotated[str, StringConstraints(max_length=64)]
    document_name: Annotated[str, StringConstraints(max_length=128)] = Field(alias="document-name")


class CommandInvocationStatusChange(_EventBase):
    """`EC2 Command Invocation Status-change Notification` from source aws.ssm."""

    source: Literal["aws.ssm"]
    detail_type: Literal["EC2 Command Invocation Status-change Notification"] = Field(alias="detail-type")
    detail: _CommandInvocationDetail


class ScheduledEvent(_EventBase):
    """`Scheduled Event` from source aws.events (an EventBridge schedule rule)."""

    source: Literal["aws.events"]
    detail_type: Literal["Scheduled Event"] = Field(alias="detail-type")


# A member account's pull-failure lines, put on the central bus by member-account.yaml's forwarder.
MEMBER_PULL_FAILURES_SOURCE = "eks-ca-remediator.member"
MEMBER_PULL_FAILURES_DETAIL_TYPE = "eks-ca-remediator pull failures"


class _ForwardedLogEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    message: str


class _ForwardedLogs(BaseModel):
    """The forwarder's detail: one log stream's matching events. Whatever else it holds (an
    `owner` or `account` field, say) is ignored: the account is the envelope's."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    log_group: Annotated[str, StringConstraints(min_length=1, max_length=512)] = Field(alias="logGroup")
    log_stream: Annotated[str, StringConstraints(max_length=512)] = Field(alias="logStream")
    log_events: Annotated[list[_ForwardedLogEvent], Field(max_length=10_000)] = Field(alias="logEvents")


class MemberPullFailures(_EventBase):
    """`eks-ca-remediator pull failures` from a member account (central bus). EventBridge sets
    `account` to the account that put the event; the detail cannot change it."""

    source: Literal["eks-ca-remediator.member"]
    detail_type: Literal["eks-ca-remediator pull failures"] = Field(alias="detail-type")
    detail: _ForwardedLogs


# ---------------------------------------------------------------- manual invoke


class ManualRequest(_Strict):
    """Manual invoke: exactly one of instance_id or cluster."""

    instance_id: InstanceId | None = None
    cluster: ClusterName | None = None
    strategy: Strategy | None = None
    dry_run: bool | None = None
    reason: Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] = ""
    # Remediate even while the cluster's circuit breaker is open (automatic triggers are paused).
    force: bool = False
    # Close the cluster's circuit breaker (and reset its failure count) instead of remediating.
    reset_breaker: bool = False
    # A halted rollout of the cluster's new CA bundle (rollouts.py): resume it, or roll the nodes it
    # changed back to the cluster's good bundle.
    rollout: Literal["resume", "rollback"] | None = None
    # Optional: the deployment the caller means; another account or region is refused (edge.py).
    account: AccountId | None = None
    region: RegionName | None = None

    @model_validator(mode="after")
    def _exactly_one_target(self) -> ManualRequest:
        if (self.instance_id is None) == (self.cluster is None):
            raise ValueError("give exactly one of 'instance_id' or 'cluster'")
        if self.reset_breaker and self.cluster is None:
            raise ValueError("'reset_breaker' closes a cluster's circuit breaker: give 'cluster'")
        if self.rollout and self.cluster is None:
            raise ValueError("'rollout' resumes or rolls back a cluster's halted rollout: give 'cluster'")
        return self


# ---------------------------------------------------------------- agent wait queue


class AgentWaitMessage(_Strict):
    """A node whose SSM agent was not Online yet; re-checked after a queue delay."""

    instance_id: InstanceId
    attempt_sk: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    cluster: ClusterName
    deadline: float
    checks: int = 0
    # Central mode: the member account of the node (absent: the deployment's own).
    account: AccountId | None = None


# ---------------------------------------------------------------- node result


class NodeResult(BaseModel):
    """The final JSON line printed by the node script."""

    model_config = ConfigDict(frozen=True, extra="allow")

    result: Literal["success", "failure", "dry-run"]
    reason: str = ""
    os_family: str = "unknown"  # al2, al2023, ubuntu, debian, bottlerocket
    strategy_requested: str = ""
    strategy_used: str = ""
    restarted: bool = False
    containerd_before: dict[str, Any] | None = None
    containerd_after: dict[str, Any] | None = None
    bundle_changed: bool = False
    hosts_toml: dict[str, Any] = Field(default_factory=dict)
    verification: dict[str, str] = Field(default_factory=dict)
    # Which verification ran: a pull through CRI (crictl), a pull inside containerd's daemon
    # (containerd 2.x ctr, Transfer service), TLS against the trust store only, Bottlerocket's
    # settings read back through its API, or none. Older scripts did not report it: "".
    verification_level: Literal["cri-pull", "daemon-pull", "tls-only", "settings-readback", "none", ""] = ""
    # ok | failed: ... | unavailable: ... (no honest daemon-side pull on that node) | skipped |
    # tls-proven: ... (the registry refused the pull after containerd verified its certificate)
    canary: str = "skipped"
    containerd_version: str = ""
    registry_config_path: str = ""
    warnings: list[str] = Field(default_factory=list)
    fingerprint: str = ""
    dry_run: bool = False
    actions: list[str] = Field(default_factory=list)


ACCOUNT_RE = re.compile(r"^\d{12}$")


@dataclass(frozen=True)
class ClusterRef:
    """A cluster's identity: (account, region, name). Where cluster state lives (circuit breaker,
    in-flight leases, rollouts, good bundle, the by-cluster index, sweeps, status) it is keyed by
    `key`: the bare name for the deployment's own account (account None: what every record written
    before central sweeps holds, read as it is), `<account>/<name>` for a member account's cluster.
    The region is the deployment's: one records table per region, and the edge refuses events of
    another region, so two regions' `prod` never share an item."""

    name: str
    account: str | None = None  # None: the deployment's own account
    region: str = ""

    def __post_init__(self) -> None:
        if not CLUSTER_NAME_RE.fullmatch(self.name):
            raise ValueError(f"not an EKS cluster name: {self.name[:100]!r}")
        if self.account is not None and not ACCOUNT_RE.fullmatch(self.account):
            raise ValueError(f"not an AWS account id: {self.account[:24]!r}")

    @property
    def key(self) -> str:
        return self.name if self.account is None else f"{self.account}/{self.name}"

    @classmethod
    def of_key(cls, key: str, region: str = "") -> ClusterRef:
        """The cluster a key names (`name` or `<account>/<name>`); a clear error for anything else."""
        account, _, name = key.rpartition("/")
        try:
            return cls(name, account or None, region)
        except ValueError as exc:
            raise ValueError(f"cluster {key[:120]!r}: give a cluster name or <account>/<name> ({exc})") from exc

    @classmethod
    def of_record(cls, item: Mapping[str, Any]) -> ClusterRef:
        """The cluster of an attempt item: its account (absent: the deployment's own) and name
        (`cluster_name`; a record written before it existed holds the bare name in `cluster`)."""
        name = item.get("cluster_name") or str(item["cluster"]).rpartition("/")[2]
        return cls(name, item.get("account") or None, item.get("region") or "")


class Target(BaseModel):
    """An enrolled node about to be remediated."""

    model_config = ConfigDict(frozen=True)

    instance_id: InstanceId
    cluster: ClusterName


class Plan(BaseModel):
    """What is sent to a node: the document parameters plus why."""

    model_config = ConfigDict(frozen=True)

    cluster: ClusterName  # the bundle is the cluster's own: a plan is sent to that cluster's nodes only
    trigger: Trigger
    strategy: Strategy
    dry_run: bool
    registry_hosts: tuple[str, ...]
    canary_image: str
    bundle_b64: str
    fingerprint: str
    ca_warnings: tuple[str, ...] = ()  # CAs of the bundle that expire soon (recorded on the attempt)
    ca_not_after: str = ""  # when the bundle's first CA expires (ISO 8601, UTC; recorded on the attempt)
    reason: str = ""
    force: bool = False  # manual invoke with "force": sent even while the cluster's circuit breaker is open

    def document_parameters(self) -> dict[str, list[str]]:
        return {
            "CaBundle": [self.bundle_b64],
            "Strategy": [self.strategy.value],
            "RegistryHosts": [",".join(self.registry_hosts)],
            "CanaryImage": [self.canary_image],
            "DryRun": ["true" if self.dry_run else "false"],
        }
