"""Builds the Remediator from the deployment settings and cached boto3 clients (on first use).

In central mode (docs/scale.md) a member account's events get a Remediator of their own: the same
records table, queue and settings, with EC2 and SSM clients acting through the member account's
role and our document named by its ARN. Those are kept until shortly before their credentials
expire (a Lambda invocation lasts at most 15 minutes, so every use has them valid throughout).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from typing import TYPE_CHECKING

from eks_ca_remediator.adapters import ca_sources, clients, organizations
from eks_ca_remediator.adapters.ec2 import Ec2Reader
from eks_ca_remediator.adapters.notify import Notifier
from eks_ca_remediator.adapters.queue import AgentWaitQueue, DelayQueue
from eks_ca_remediator.adapters.records import RecordStore
from eks_ca_remediator.adapters.ssm import RunCommand, SendRoles
from eks_ca_remediator.errors import ConfigurationError
from eks_ca_remediator.logic.remediation import Remediator
from eks_ca_remediator.settings import get_settings

if TYPE_CHECKING:  # the sweep's logic is loaded by the function that sweeps, not by every handler
    from eks_ca_remediator.logic.sweep import Sweeper

# Member clients are renewed when their credentials have less than this left.
CREDENTIALS_MARGIN_SECONDS = 900 + 300
_members: dict[str, tuple[float, Remediator]] = {}


def remediator(account: str | None = None) -> Remediator:
    """The Remediator for nodes of `account` (None or the deployment's own: this account's)."""
    settings = get_settings()
    if not settings.is_member(account):
        return home_remediator()
    assert account is not None
    held = _members.get(account)
    if held is None or held[0] - time.time() < CREDENTIALS_MARGIN_SECONDS:
        member = member_session(settings.member_role_arn(account), account)
        acting_there = replace(  # our records, queue and clock; their EC2 and SSM
            home_remediator(),
            run_command=RunCommand(
                member.ssm,
                settings.document_arn,
                settings.document_step,
                SendRoles(member.ssm, member.sts, settings.member_send_roles_path),
            ),
            ec2=Ec2Reader(member.ec2),
            account=account,
        )
        held = _members[account] = (member.expires_at, acting_there)
    return held[1]


# How a member account's clients are obtained (tests swap it for one with their fakes).
member_session: Callable[[str, str], clients.MemberSession] = clients.assume_member


@lru_cache(maxsize=1)
def home_remediator() -> Remediator:
    settings = get_settings()
    return Remediator(
        settings=settings,
        records=RecordStore(clients.resource("dynamodb").Table(settings.records_table)),
        run_command=RunCommand(
            clients.client("ssm"),
            settings.document_name,
            settings.document_step,
            SendRoles(clients.client("ssm"), clients.client("sts"), settings.send_roles_path)
            if settings.send_roles_path
            else None,
        ),
        ec2=Ec2Reader(clients.client("ec2")),
        queue=AgentWaitQueue(clients.client("sqs"), settings.agent_wait_queue_url)
        if settings.agent_wait_queue_url
        else None,
        clock=time.time,
        sweep_queue=DelayQueue(clients.client("sqs"), settings.sweep_queue_url) if settings.sweep_queue_url else None,
        notifier=Notifier(clients.client("sns"), settings.alarm_topic_arn) if settings.alarm_topic_arn else None,
    )


@lru_cache(maxsize=1)
def sweeper() -> Sweeper:
    from eks_ca_remediator.logic.sweep import Sweeper

    settings = get_settings()
    if not settings.sweep_queue_url:
        raise ConfigurationError("SWEEP_QUEUE_URL is not set: sweeps cannot queue their clusters")
    return Sweeper(
        remediator=remediator(),
        queue=DelayQueue(clients.client("sqs"), settings.sweep_queue_url),
        # central mode: every member account of the organisation, listed at every trigger
        remediator_for=remediator if settings.central else None,
        accounts=member_accounts if settings.central else None,
    )


def member_accounts() -> list[str]:
    """The organisation's ACTIVE accounts (AWS Organizations ListAccounts, not cached: an account
    given the member stack is swept by the next trigger)."""
    return organizations.active_accounts(clients.client("organizations"))


def reset() -> None:
    """Forget settings, clients, cached CA bundle sources and the remediator (tests)."""
    sweeper.cache_clear()
    ca_sources.clear_cache()
    _members.clear()
    home_remediator.cache_clear()
    get_settings.cache_clear()
    clients.reset()
