"""boto3 client factories, created on first use (never at import) and cached per warm Lambda.

Tests swap a client by calling `<factory>.cache_clear()` under moto, or by passing their own
client to the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from eks_ca_remediator.errors import MemberAccessDenied

# SSM has no published TPS: adaptive retries back off on ThrottlingException for us.
RETRY_CONFIG = Config(retries={"max_attempts": 8, "mode": "adaptive"}, connect_timeout=5, read_timeout=20)


@cache
def client(service: str) -> Any:
    return boto3.client(service, config=RETRY_CONFIG)


@cache
def resource(service: str) -> Any:
    return boto3.resource(service, config=RETRY_CONFIG)


ROLE_SESSION_NAME = "eks-ca-remediator"
ROLE_SESSION_SECONDS = 3600


@dataclass(frozen=True)
class MemberSession:
    """Clients acting in a member account through its role, and when their credentials expire."""

    account: str
    ec2: Any
    ssm: Any
    expires_at: float  # epoch seconds
    sts: Any = None  # assumes the member's send roles (member-account.yaml SendRole<cluster>)


def assume_member(role_arn: str, account: str) -> MemberSession:
    """AssumeRole into a member account's role; clients for what the remediation does there."""
    try:
        credentials = client("sts").assume_role(
            RoleArn=role_arn, RoleSessionName=ROLE_SESSION_NAME, DurationSeconds=ROLE_SESSION_SECONDS
        )["Credentials"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        raise MemberAccessDenied(f"cannot assume {role_arn} in account {account}: {code}") from exc
    session = boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    return MemberSession(
        account=account,
        ec2=session.client("ec2", config=RETRY_CONFIG),
        ssm=session.client("ssm", config=RETRY_CONFIG),
        expires_at=credentials["Expiration"].timestamp(),
        sts=session.client("sts", config=RETRY_CONFIG),
    )


def assumed_ssm(sts: Any, role_arn: str) -> tuple[Any, float]:
    """An SSM client acting as `role_arn` (assumed with the `sts` client's credentials), and when its
    credentials expire (epoch seconds). ClientErrors propagate."""
    credentials = sts.assume_role(
        RoleArn=role_arn, RoleSessionName=ROLE_SESSION_NAME, DurationSeconds=ROLE_SESSION_SECONDS
    )["Credentials"]
    session = boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    return session.client("ssm", config=RETRY_CONFIG), credentials["Expiration"].timestamp()


def reset() -> None:
    """Forget every cached client (used by tests between moto contexts)."""
    client.cache_clear()
    resource.cache_clear()
