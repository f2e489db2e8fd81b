"""AgentWait: SQS messages (with a delay) re-check nodes whose SSM agent was not Online yet."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from eks_ca_remediator.logic.remediation import Remediator
from eks_ca_remediator.models import AgentWaitMessage


def on_agent_wait(messages: Sequence[AgentWaitMessage], remediator_for: Callable[[str | None], Remediator]) -> None:
    """Re-check the messages, each account's nodes with that account's Remediator (central mode)."""
    by_account: dict[str | None, list[AgentWaitMessage]] = {}
    for message in messages:
        by_account.setdefault(message.account, []).append(message)
    for account, group in by_account.items():
        remediator_for(account).recheck(group)
