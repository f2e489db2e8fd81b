"""AgentWait: SQS messages (with a delay) re-check nodes whose SSM agent was not Online yet."""

from __future__ import annotations

from collections.abc import Sequence

from eks_ca_remediator.logic.remediation import Remediator
from eks_ca_remediator.models import AgentWaitMessage


def on_agent_wait(messages: Sequence[AgentWaitMessage], remediator: Remediator) -> None:
    remediator.recheck(messages)
