"""Builds the Remediator from the deployment settings and cached boto3 clients (on first use)."""

from __future__ import annotations

import time
from functools import lru_cache

from eks_ca_remediator.adapters import ca_sources, clients
from eks_ca_remediator.adapters.ec2 import Ec2Reader
from eks_ca_remediator.adapters.queue import AgentWaitQueue, DelayQueue
from eks_ca_remediator.adapters.records import RecordStore
from eks_ca_remediator.adapters.ssm import RunCommand
from eks_ca_remediator.errors import ConfigurationError
from eks_ca_remediator.logic.remediation import Remediator
from eks_ca_remediator.logic.sweep import Sweeper
from eks_ca_remediator.settings import get_settings


@lru_cache(maxsize=1)
def remediator() -> Remediator:
    settings = get_settings()
    return Remediator(
        settings=settings,
        records=RecordStore(clients.resource("dynamodb").Table(settings.records_table)),
        run_command=RunCommand(clients.client("ssm"), settings.document_name, settings.document_step),
        ec2=Ec2Reader(clients.client("ec2")),
        queue=AgentWaitQueue(clients.client("sqs"), settings.agent_wait_queue_url)
        if settings.agent_wait_queue_url
        else None,
        clock=time.time,
    )


@lru_cache(maxsize=1)
def sweeper() -> Sweeper:
    url = get_settings().sweep_queue_url
    if not url:
        raise ConfigurationError("SWEEP_QUEUE_URL is not set: sweeps cannot queue their clusters")
    return Sweeper(remediator=remediator(), queue=DelayQueue(clients.client("sqs"), url))


def reset() -> None:
    """Forget settings, clients, cached CA bundle sources and the remediator (tests)."""
    sweeper.cache_clear()
    ca_sources.clear_cache()
    remediator.cache_clear()
    get_settings.cache_clear()
    clients.reset()
