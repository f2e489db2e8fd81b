"""Open attempts written as dispatch leaves them after a send (SENT, its command id, in the
open-attempts index), for tests and benchmarks of the reconciler that need many of them fast."""

from __future__ import annotations

from typing import Any

from eks_ca_remediator.adapters.records import OPEN, OPEN_MARK, RECONCILE_AT
from eks_ca_remediator.logic.remediation import iso


def sent_attempt(
    node: str, key: str, command_id: str, sent_at: float, reconcile_at: int, account: str | None = None
) -> dict[str, Any]:
    """A manual attempt on `node` (cluster prod-a) sent at `sent_at`, overdue from `reconcile_at`."""
    return {
        "pk": node,
        "sk": f"ATTEMPT#{iso(sent_at)}#manual#{key}",
        "instance_id": node,
        "cluster": "prod-a",
        "trigger": "manual",
        "status": "SENT",
        "command_id": command_id,
        "created_at": iso(sent_at),
        "sent_at": iso(sent_at),
        "dry_run": False,
        OPEN_MARK: OPEN,
        RECONCILE_AT: reconcile_at,
    } | ({"account": account} if account else {})
