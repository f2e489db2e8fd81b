"""Deployment configuration, parsed once from the Lambda environment into a typed model."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from eks_ca_remediator.errors import ConfigurationError
from eks_ca_remediator.models import CLUSTER_NAME_RE, REGISTRY_HOST_RE, Strategy
from eks_ca_remediator.rollouts import DEFAULT_WAVES, WaveStep, parse_waves
from eks_ca_remediator.sources import BundleSource, normalize_inline_pem, parse_source_map

IMAGE_RE = re.compile(
    r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)+"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
)
# arn:<partition>:ssm:<region>:<account>:document/<name>
DOCUMENT_ARN_RE = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):ssm:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):document/(?P<name>[A-Za-z0-9._-]{3,128})$"
)
ROLE_NAME_RE = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,64}$")


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseModel):
    """Everything a function needs to know about its deployment."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    records_table: Annotated[str, Field(min_length=3, alias="RECORDS_TABLE")]
    document_name: Annotated[str, Field(min_length=3, alias="DOCUMENT_NAME")]
    enrolled_clusters: Annotated[tuple[str, ...], Field(min_length=1, alias="ENROLLED_CLUSTERS")]
    # The default CA bundle source when CA_BUNDLE_SOURCES has no "*" entry (sources.py).
    ca_bundle_parameter: Annotated[str, Field(default="", alias="CA_BUNDLE_PARAMETER")]
    ca_bundle_sources: Annotated[str, Field(default="", alias="CA_BUNDLE_SOURCES")]
    ca_bundle_inline: Annotated[str, Field(default="", alias="CA_BUNDLE_INLINE")]
    ca_expiry_warning_days: Annotated[int, Field(default=30, ge=0, le=3650, alias="CA_EXPIRY_WARNING_DAYS")]
    sweep_queue_url: Annotated[str, Field(default="", alias="SWEEP_QUEUE_URL")]
    sweep_recheck_seconds: Annotated[int, Field(default=300, ge=1, le=900, alias="SWEEP_RECHECK_SECONDS")]
    # Rollouts of a new bundle (rollouts.py): cumulative waves, and the bake time between them.
    rollout_waves: Annotated[str, Field(default=DEFAULT_WAVES, max_length=64, alias="ROLLOUT_WAVES")]
    rollout_bake_seconds: Annotated[int, Field(default=60, ge=0, le=86400, alias="ROLLOUT_BAKE_SECONDS")]
    # The topic the alarms notify (AlarmTopicArn): also told in words of a change of trust and a
    # rollout's halt (adapters/notify.py). Empty: log lines and metrics only.
    alarm_topic_arn: Annotated[
        str,
        Field(
            default="",
            pattern=r"^$|^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$",
            alias="ALARM_TOPIC_ARN",
        ),
    ]
    _bundle_sources: dict[str, tuple[BundleSource, ...]] = PrivateAttr(default_factory=dict)
    agent_wait_queue_url: Annotated[str, Field(default="", alias="AGENT_WAIT_QUEUE_URL")]
    default_strategy: Annotated[Strategy, Field(default=Strategy.AUTO, alias="DEFAULT_STRATEGY")]
    registry_hosts: Annotated[tuple[str, ...], Field(default=(), alias="REGISTRY_HOSTS")]
    canary_image: Annotated[str, Field(default="", alias="CANARY_IMAGE")]
    dry_run: Annotated[bool, Field(default=False, alias="DRY_RUN")]
    agent_wait_deadline_seconds: Annotated[
        int, Field(default=900, ge=60, le=86400, alias="AGENT_WAIT_DEADLINE_SECONDS")
    ]
    agent_recheck_seconds: Annotated[int, Field(default=15, ge=1, le=900, alias="AGENT_RECHECK_SECONDS")]
    command_timeout_seconds: Annotated[int, Field(default=600, ge=30, le=3600, alias="COMMAND_TIMEOUT_SECONDS")]
    record_ttl_days: Annotated[int, Field(default=90, ge=1, le=3650, alias="RECORD_TTL_DAYS")]
    bundle_cache_seconds: Annotated[int, Field(default=300, ge=0, le=3600, alias="BUNDLE_CACHE_SECONDS")]
    # Pull-failure trigger: at most one remediation per node per window of this many seconds.
    pull_failure_cooldown_seconds: Annotated[
        int, Field(default=900, ge=60, le=86400, alias="PULL_FAILURE_COOLDOWN_SECONDS")
    ]
    # Fleet safety (safety.py): per-cluster in-flight limit and circuit breaker.
    # (at most 10,000: the leases of a cluster live in one DynamoDB item, 400 KB at most)
    max_in_flight_per_cluster: Annotated[int, Field(default=500, ge=1, le=10000, alias="MAX_IN_FLIGHT_PER_CLUSTER")]
    # 0 = off; else the limit is also at most this percent of the cluster's running nodes.
    max_in_flight_percent: Annotated[int, Field(default=0, ge=0, le=100, alias="MAX_IN_FLIGHT_PERCENT")]
    breaker_failure_threshold: Annotated[int, Field(default=5, ge=1, le=1000, alias="BREAKER_FAILURE_THRESHOLD")]
    breaker_open_seconds: Annotated[int, Field(default=3600, ge=60, le=604800, alias="BREAKER_OPEN_SECONDS")]
    # After a SUCCEEDED/FAILED/TIMED_OUT result, unforced attempts skip the node this long (0 = off).
    instance_cooldown_seconds: Annotated[int, Field(default=300, ge=0, le=86400, alias="INSTANCE_COOLDOWN_SECONDS")]
    safety_recheck_seconds: Annotated[int, Field(default=60, ge=1, le=900, alias="SAFETY_RECHECK_SECONDS")]
    document_step: str = "remediateCa"
    # Central mode (docs/scale.md): the role assumed in member accounts to act on their nodes, and
    # the ARN of our document there (it is shared with them). Empty role = single account.
    member_role_name: Annotated[str, Field(default="", alias="MEMBER_ROLE_NAME")]
    document_arn: Annotated[str, Field(default="", alias="DOCUMENT_ARN")]
    # Where the stack keeps its long settings and its clusters' send-role ARNs (template.yaml).
    settings_path: Annotated[str, Field(default="", alias="SETTINGS_PATH")]
    # The deployment's region (Lambda sets AWS_REGION): part of a cluster's identity (models.ClusterRef).
    region: Annotated[str, Field(default="", alias="AWS_REGION")]

    _split_lists = field_validator("enrolled_clusters", "registry_hosts", mode="before")(_split)

    @field_validator("enrolled_clusters")
    @classmethod
    def _cluster_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if not CLUSTER_NAME_RE.fullmatch(name)]
        if bad:
            raise ValueError(f"not EKS cluster names: {bad}")
        return value

    @field_validator("registry_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [host for host in value if not REGISTRY_HOST_RE.fullmatch(host)]
        if bad:
            raise ValueError(f"not registry host[:port] values: {bad}")
        return value

    @field_validator("rollout_waves")
    @classmethod
    def _waves(cls, value: str) -> str:
        parse_waves(value)
        return value

    @property
    def wave_steps(self) -> tuple[WaveStep, ...]:
        return parse_waves(self.rollout_waves)

    @field_validator("canary_image")
    @classmethod
    def _image(cls, value: str) -> str:
        if value and not IMAGE_RE.fullmatch(value):
            raise ValueError(f"not an image reference: {value!r}")
        return value

    @field_validator("ca_bundle_inline")
    @classmethod
    def _inline(cls, value: str) -> str:
        return normalize_inline_pem(value)

    @model_validator(mode="after")
    def _central(self) -> Settings:
        if self.member_role_name and not ROLE_NAME_RE.fullmatch(self.member_role_name):
            raise ValueError(f"MEMBER_ROLE_NAME: not an IAM role name: {self.member_role_name[:80]!r}")
        if self.document_arn:
            match = DOCUMENT_ARN_RE.fullmatch(self.document_arn)
            if match is None:
                raise ValueError(
                    "DOCUMENT_ARN: not an SSM document ARN (arn:aws:ssm:<region>:<account>:document/<name>)"
                )
            if match["name"] != self.document_name:
                raise ValueError(
                    f"DOCUMENT_ARN names document {match['name']!r}, not DOCUMENT_NAME {self.document_name!r}"
                )
        elif self.member_role_name:
            raise ValueError(
                "MEMBER_ROLE_NAME is set (central mode) but DOCUMENT_ARN is not: member accounts run it by ARN"
            )
        return self

    @property
    def central(self) -> bool:
        """Central mode: events of member accounts are accepted and acted on through their role."""
        return bool(self.member_role_name)

    @property
    def home_account(self) -> str:
        """The deployment's own account in central mode (from DOCUMENT_ARN), else ""."""
        match = DOCUMENT_ARN_RE.fullmatch(self.document_arn)
        return match["account"] if match else ""

    def member_role_arn(self, account: str) -> str:
        match = DOCUMENT_ARN_RE.fullmatch(self.document_arn)
        if not self.central or match is None:
            raise ConfigurationError(f"account {account}: this deployment is not central (MEMBER_ROLE_NAME is empty)")
        return f"arn:{match['partition']}:iam::{account}:role/{self.member_role_name}"

    @property
    def send_roles_path(self) -> str:
        """Where this stack's parameters hold each enrolled cluster's send-role ARN (<path><cluster>);
        "" without SETTINGS_PATH (tests, local runs: the functions' own client sends)."""
        return f"{self.settings_path.rstrip('/')}/send-roles/" if self.settings_path else ""

    @property
    def member_send_roles_path(self) -> str:
        """The same in a member account (member-account.yaml, named after its role)."""
        return f"/{self.member_role_name}/send-roles/"

    def is_member(self, account: str | None) -> bool:
        """Whether `account` is a member account this central deployment acts in (not its own)."""
        return self.central and account is not None and account != self.home_account

    @model_validator(mode="after")
    def _sources(self) -> Settings:
        try:
            self._bundle_sources = parse_source_map(
                self.ca_bundle_sources, self.enrolled_clusters, self.ca_bundle_parameter, self.ca_bundle_inline
            )
        except ValueError as exc:
            raise ValueError(f"CA_BUNDLE_SOURCES: {exc}") from exc
        return self

    def sources_for(self, cluster: str) -> tuple[BundleSource, ...]:
        """The CA bundle sources of an enrolled cluster (merged into one bundle)."""
        try:
            return self._bundle_sources[cluster]
        except KeyError:
            raise ConfigurationError(f"cluster {cluster!r} is not enrolled: it has no CA bundle sources") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        try:
            return cls.model_validate(dict(environ))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
            raise ConfigurationError(f"invalid configuration: {problems}") from exc


# Settings that may be long live in SSM parameters the stack creates, one per variable, under
# SETTINGS_PATH (<path><VARIABLE>): Lambda limits a function's whole environment to 4 KB
# (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html), which a CA bundle or
# a long cluster list would exceed. An absent parameter is an empty value (SSM holds no empty
# strings); a variable set in the environment wins (tests, local runs).
SETTINGS_PATH = "SETTINGS_PATH"
STORED_SETTINGS = ("ENROLLED_CLUSTERS", "CA_BUNDLE_SOURCES", "CA_BUNDLE_INLINE")


def stored_settings(path: str, ssm: Any) -> dict[str, str]:
    """The STORED_SETTINGS under `path` (GetParametersByPath, one page for three parameters)."""
    found: dict[str, str] = {}
    for page in ssm.get_paginator("get_parameters_by_path").paginate(Path=path.rstrip("/"), Recursive=False):
        for parameter in page["Parameters"]:
            name = parameter["Name"].rsplit("/", 1)[-1]
            if name in STORED_SETTINGS:
                found[name] = parameter["Value"]
    return found


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this Lambda environment, parsed on first use (tests call cache_clear)."""
    environ = dict(os.environ)
    path = environ.get(SETTINGS_PATH, "")
    if path:
        from botocore.exceptions import ClientError

        from eks_ca_remediator.adapters import clients

        try:
            environ = stored_settings(path, clients.client("ssm")) | {k: v for k, v in environ.items() if v}
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise ConfigurationError(f"cannot read the settings under {path}: {error.get('Code')}") from exc
    return Settings.from_env(environ)
