"""Rotation sweep: its messages and its pure decisions (no I/O, no clock reads).

A sweep brings every running node of one enrolled cluster to the cluster's current CA bundle.
It is a `SweepJob` on the sweep queue; each pass re-reads the node list and every node's
attempt history, so a pass that runs out of time or hits the in-flight limit simply queues the
same job again. The sweep id is derived from (origin, cluster, fingerprint): the attempts a
sweep creates have deterministic keys, so a redelivered or continued job never sends twice to
a node, and a CA that changes mid-sweep starts a new sweep id for the new bundle.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from eks_ca_remediator.errors import InvalidRequest
from eks_ca_remediator.models import AccountId, ClusterName, ClusterRef, NodeKind, Status, Trigger
from eks_ca_remediator.safety import COOLDOWN_AFTER, cooling_down
from eks_ca_remediator.sources import BundleSource, SourceChange, SourceKind, clusters_using

FINGERPRINT_RE = r"^([0-9a-f]{64})?$"
# Secrets Manager events after which GetSecretValue (AWSCURRENT, what a sweep reads) may return a
# new value, as CloudTrail records them (https://docs.aws.amazon.com/secretsmanager/latest/userguide/cloudtrail_log_entries.html):
# - PutSecretValue / UpdateSecret: a direct write; it becomes AWSCURRENT unless the call names
#   other stages (a rotation's createSecret step writes with VersionStages [AWSPENDING]:
#   https://docs.aws.amazon.com/secretsmanager/latest/userguide/rotate-secrets_lambda-functions.html);
# - UpdateSecretVersionStage moving AWSCURRENT (the rotation's finishSecret step: VersionStage
#   AWSCURRENT, MoveToVersionId the new version) - where a rotation completes;
# - RotationSucceeded, the service event ("AWS Service Event via CloudTrail") once a rotation
#   started by RotateSecret completes (secret in additionalEventData.SecretId);
# - RestoreSecret: a deleted secret is back.
# RotateSecret itself only STARTS an asynchronous rotation: AWSCURRENT has not moved yet.
SECRET_CHANGES = frozenset(
    {"PutSecretValue", "UpdateSecret", "UpdateSecretVersionStage", "RotationSucceeded", "RestoreSecret"}
)
SECRET_EVENT_TYPES = frozenset({"AWS API Call via CloudTrail", "AWS Service Event via CloudTrail"})
CURRENT = "AWSCURRENT"
# A Secrets Manager event that leaves AWSCURRENT where it was: nothing to sweep.
NO_CHANGE = SourceChange(SourceKind.SECRETS_MANAGER, "")


def changed_secret(detail: Mapping[str, Any]) -> str:
    """The secret whose AWSCURRENT value this CloudTrail record may have changed, or ""."""
    name = detail.get("eventName")
    request = detail.get("requestParameters") or {}
    if detail.get("errorCode") or name not in SECRET_CHANGES:
        return ""  # a failed call changed nothing
    if name == "UpdateSecretVersionStage" and (
        request.get("versionStage") != CURRENT or not request.get("moveToVersionId")
    ):
        return ""  # another label moved (AWSPENDING, AWSPREVIOUS, custom), or AWSCURRENT was only removed
    if name == "PutSecretValue" and CURRENT not in (request.get("versionStages") or [CURRENT]):
        return ""  # e.g. a rotation's AWSPENDING version: not what GetSecretValue returns yet
    if name == "RotationSucceeded":
        return str((detail.get("additionalEventData") or {}).get("SecretId") or request.get("secretId") or "")
    return str(request.get("secretId") or "")


class SweepJob(BaseModel):
    """One cluster's sweep (sweep-queue message body): the cluster `cluster` of `account` (central
    mode: a member account's, swept through its member role; None: the deployment's own)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    origin: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
    cluster: ClusterName
    started_at: float  # created_at of this sweep's attempts
    fingerprint: Annotated[str, StringConstraints(pattern=FINGERPRINT_RE)] = ""  # "" before the first pass
    passes: Annotated[int, Field(ge=0)] = 0
    account: AccountId | None = None

    @property
    def sweep_id(self) -> str:
        # (the deployment's own clusters keep the id they had before member accounts were swept)
        cluster = ClusterRef(self.cluster, self.account).key
        return hashlib.sha256(f"{self.origin}|{cluster}|{self.fingerprint}".encode()).hexdigest()[:24]


class SweepTrigger(BaseModel):
    """An EventBridge event that starts sweeps: the schedule, or a change to a bundle source."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    id: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
    source: Annotated[str, StringConstraints(max_length=64)]
    detail_type: Annotated[str, StringConstraints(max_length=128)] = Field(alias="detail-type")
    time: datetime
    resources: list[str] = Field(default_factory=list)
    detail: dict[str, Any] = Field(default_factory=dict)


def source_change(trigger: SweepTrigger) -> SourceChange | None:
    """The source a change event is about; None for the schedule (every cluster is swept)."""
    detail = trigger.detail
    match (trigger.source, trigger.detail_type):
        case ("aws.events", "Scheduled Event"):
            return None
        case ("aws.ssm", "Parameter Store Change"):
            arn = trigger.resources[0] if trigger.resources else ""
            return SourceChange(SourceKind.SSM, str(detail.get("name", "")), arn)
        case ("aws.s3", "Object Created"):
            bucket = str(detail.get("bucket", {}).get("name", ""))
            return SourceChange(SourceKind.S3, f"{bucket}/{detail.get('object', {}).get('key', '')}")
        case ("aws.secretsmanager", event_type) if event_type in SECRET_EVENT_TYPES:
            secret = changed_secret(detail)
            return SourceChange(SourceKind.SECRETS_MANAGER, secret) if secret else NO_CHANGE
    raise InvalidRequest(f"sweep trigger: unsupported event {trigger.source} / {trigger.detail_type}")


def clusters_to_sweep(trigger: SweepTrigger, sources: Mapping[str, tuple[BundleSource, ...]]) -> list[str]:
    """Every enrolled cluster for the schedule; for a change event, the clusters reading that source."""
    change = source_change(trigger)
    if change is None:
        return sorted(sources)
    if change is NO_CHANGE:
        return []
    found = clusters_using(sources, change)
    if change.kind is SourceKind.S3 and not found:  # EventBridge may carry the key URL-encoded
        found = clusters_using(sources, SourceChange(SourceKind.S3, unquote_plus(change.name)))
    return found


# ---------------------------------------------------------------- per-node decision


class NodeState(StrEnum):
    CURRENT = "current"  # latest SUCCEEDED attempt carries the current fingerprint
    DRIFTED = "drifted"  # latest SUCCEEDED carries another fingerprint, or there is none
    IN_FLIGHT = "in_flight"  # a live attempt is sending the current bundle (or this sweep's attempt)
    IN_FLIGHT_STALE = "in_flight_stale"  # a live attempt is sending another bundle: re-check later
    DONE = "done"  # this sweep already tried the node and that attempt is over, without success
    COOLING = "cooldown"  # drifted, but its last result is within the instance cooldown: a later pass
    NOT_REMEDIABLE = "not_remediable"  # Windows or EKS Auto Mode: our document is never sent to it
    NO_AGENT = "no_ssm_agent"  # its agent never came Online: started again only once it is Online


# The node kinds a sweep leaves alone (what a later pass would find again); a node whose agent never
# came Online is left alone until its agent is Online (Sweeper.run asks SSM).
NEVER_SENT = frozenset({NodeKind.WINDOWS.value, NodeKind.EKS_AUTO_MODE.value, NodeKind.STEP_SKIPPED.value})


def _epoch(iso_time: str) -> float:
    return datetime.fromisoformat(iso_time).timestamp()


def node_state(
    history: Sequence[Mapping[str, Any]],
    fingerprint: str,
    sweep_id: str,
    now: float,
    live_seconds: float,
    cooldown_seconds: int = 0,
) -> NodeState:
    """Where one node stands against the current bundle. `history`: its attempts, newest first.

    An attempt that is not terminal and was updated within `live_seconds` is live (in flight);
    an older one was abandoned (a lost status event) and no longer blocks the node. A drifted
    node whose last result is within `cooldown_seconds` waits for a later pass (safety.py).
    """
    live = _live(history, now, live_seconds)
    succeeded = _last_success(history)
    if any(a.get("trigger") == Trigger.SWEEP.value and a.get("trigger_key") == sweep_id for a in history):
        if live:
            return NodeState.IN_FLIGHT
        current = succeeded is not None and succeeded.get("fingerprint") == fingerprint
        return NodeState.CURRENT if current else NodeState.DONE
    if live:
        same = all(a.get("fingerprint") == fingerprint for a in live)
        return NodeState.IN_FLIGHT if same else NodeState.IN_FLIGHT_STALE
    newest = history[0] if history else {}
    if newest.get("status") == Status.NOT_REMEDIABLE.value and newest.get("node_kind") in NEVER_SENT:
        return NodeState.NOT_REMEDIABLE
    if newest.get("status") == Status.NOT_REMEDIABLE.value and newest.get("node_kind") == NodeKind.NO_SSM_AGENT:
        return NodeState.NO_AGENT
    if succeeded is not None and succeeded.get("fingerprint") == fingerprint:
        return NodeState.CURRENT
    last_result = _last_result_epoch(history)
    return NodeState.COOLING if cooling_down(last_result, now, cooldown_seconds) else NodeState.DRIFTED


def _live(history: Sequence[Mapping[str, Any]], now: float, live_seconds: float) -> list[Mapping[str, Any]]:
    """The attempts in flight: not terminal, and updated within `live_seconds`."""
    return [
        a
        for a in history
        if not Status(a["status"]).terminal and now - _epoch(a.get("updated_at", "1970-01-01T00:00:00Z")) < live_seconds
    ]


def _last_success(history: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The success recorded last: what the node's trust store holds now (whatever the attempts' order)."""
    return max(
        (a for a in history if a["status"] == Status.SUCCEEDED.value),
        key=lambda a: a.get("updated_at", ""),
        default=None,
    )


def _last_result_epoch(history: Sequence[Mapping[str, Any]]) -> float | None:
    """When the node's last result that starts a cooldown (safety.COOLDOWN_AFTER) was recorded."""
    return max(
        (_epoch(a["updated_at"]) for a in history if Status(a["status"]) in COOLDOWN_AFTER and a.get("updated_at")),
        default=None,
    )


@dataclass(frozen=True)
class SweepPlan:
    to_start: list[str]  # drifted nodes to remediate now, within the in-flight limit
    deferred: int  # drifted nodes left for a later pass (in-flight limit reached)
    counts: dict[str, int]

    @property
    def needs_another_pass(self) -> bool:
        """Nodes wait on others: deferred by the limit, or in flight with another bundle."""
        waiting = (NodeState.IN_FLIGHT_STALE, NodeState.COOLING)
        return self.deferred > 0 or any(self.counts.get(state.value, 0) > 0 for state in waiting)


def plan_sweep(states: Mapping[str, NodeState], budget: int) -> SweepPlan:
    """Start drifted nodes (in instance-id order), as many as the cluster's in-flight limit has
    room for (`budget`, from the Remediator's gate); the rest wait for a later pass."""
    counts = Counter(state.value for state in states.values())
    drifted = sorted(i for i, s in states.items() if s is NodeState.DRIFTED)
    budget = max(0, budget)
    return SweepPlan(to_start=drifted[:budget], deferred=max(0, len(drifted) - budget), counts=dict(counts))
