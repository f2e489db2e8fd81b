"""What to send: the document parameters for a trigger, from settings, overrides and the bundle."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from eks_ca_remediator.adapters.bundle_source import fetch_parameter_pem
from eks_ca_remediator.bundle import CaBundle, canonical_bundle
from eks_ca_remediator.models import Plan, Strategy, Trigger
from eks_ca_remediator.settings import Settings


def current_bundle(settings: Settings, now: float) -> CaBundle:
    """The configured CA bundle, validated and canonical (cached by the source for a short time)."""
    pem = fetch_parameter_pem(settings.ca_bundle_parameter, settings.bundle_cache_seconds)
    return canonical_bundle(pem, now=datetime.fromtimestamp(now, UTC))


def build_plan(
    settings: Settings,
    trigger: Trigger,
    now: float,
    *,
    strategy: Strategy | None = None,
    dry_run: bool | None = None,
    registry_hosts: tuple[str, ...] | None = None,
    reason: str = "",
) -> Plan:
    bundle = current_bundle(settings, now)
    return Plan(
        trigger=trigger,
        strategy=strategy or settings.default_strategy,
        # a deployment-level dry run cannot be switched off per request
        dry_run=settings.dry_run or bool(dry_run),
        registry_hosts=registry_hosts if registry_hosts is not None else settings.registry_hosts,
        canary_image=settings.canary_image,
        bundle_b64=bundle.b64,
        fingerprint=bundle.fingerprint,
        reason=reason,
    )


def plan_for_attempt(settings: Settings, attempt: dict[str, Any], now: float) -> Plan:
    """The plan of an attempt that waited for its agent: same choices, the bundle as it is now."""
    return build_plan(
        settings,
        Trigger(attempt["trigger"]),
        now,
        strategy=Strategy(attempt["strategy"]),
        dry_run=bool(attempt.get("dry_run")),
        registry_hosts=tuple(attempt.get("registry_hosts") or ()),
        reason=attempt.get("reason", ""),
    )
