"""What to send: the document parameters for a trigger, from settings, overrides and the bundle."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from eks_ca_remediator import telemetry
from eks_ca_remediator.adapters.ca_sources import read_source
from eks_ca_remediator.adapters.records import RecordStore
from eks_ca_remediator.bundle import CaBundle, canonical_bundle
from eks_ca_remediator.errors import BundleError
from eks_ca_remediator.models import ClusterRef, Plan, Strategy, Trigger
from eks_ca_remediator.rollouts import Rollout, bundle_choice
from eks_ca_remediator.settings import Settings

logger = Logger(child=True)


def current_bundle(settings: Settings, cluster: str, now: float) -> CaBundle:
    """The cluster's CA bundle: its sources merged, validated and canonical (sources cached briefly).

    Each source is validated on its own first, so that an error names the source at fault.
    """
    at = datetime.fromtimestamp(now, UTC)
    parts = []
    for source in settings.sources_for(cluster):
        text = read_source(source, now=now, max_age=settings.bundle_cache_seconds, inline_pem=settings.ca_bundle_inline)
        try:
            parts.append(canonical_bundle(text, now=at).pem)
        except BundleError as exc:
            raise BundleError(f"CA bundle source {source.uri}: {exc}") from exc
    return canonical_bundle(*parts, now=at)


def good_bundle(records: RecordStore, cluster: ClusterRef, now: float) -> CaBundle | None:
    """The cluster's good bundle (the one whose rollout completed last), if it has one."""
    item = records.good_bundle(cluster)
    if item is None:
        return None
    return canonical_bundle(item["pem"], now=datetime.fromtimestamp(now, UTC))


def bundle_for_trigger(
    settings: Settings, records: RecordStore, cluster: ClusterRef, now: float, force: bool
) -> CaBundle:
    """What a launch, pull-failure or manual trigger sends (rollouts.bundle_choice): the current
    bundle, or the good one while the current one's rollout (in that account's cluster) has not
    completed."""
    current = current_bundle(settings, cluster.name, now)
    good = records.good_bundle(cluster)
    item = (
        records.rollout(cluster, current.fingerprint) if good and good["fingerprint"] != current.fingerprint else None
    )
    rollout = Rollout.from_item(item) if item else None
    if bundle_choice(current.fingerprint, good["fingerprint"] if good else None, rollout, force) == "current":
        return current
    logger.info(
        "sending the cluster's good bundle: the current one's rollout has not completed",
        cluster=cluster.key,
        good=good["fingerprint"] if good else None,
        current=current.fingerprint,
    )
    return canonical_bundle(good["pem"], now=datetime.fromtimestamp(now, UTC)) if good else current


def expiry_warnings(bundle: CaBundle, cluster: str, now: float, days: int) -> tuple[str, ...]:
    """Warn (log + metric) about CAs of the bundle that expire within `days`; returns the warnings."""
    soon = bundle.expiring_within(datetime.fromtimestamp(now, UTC), days)
    if not soon:
        return ()
    warnings = tuple(f"CA {c.subject} ({c.sha256[:16]}) expires {c.not_after:%Y-%m-%d}" for c in soon)
    logger.warning("CA bundle has certificates expiring soon", cluster=cluster, within_days=days, warnings=warnings)
    with single_metric(name="CaExpiringSoon", unit=MetricUnit.Count, value=len(soon)) as metric:
        metric.add_dimension(name="cluster", value=cluster)
    telemetry.count(telemetry.CA_EXPIRING_SOON, len(soon))  # service dimension only: the alarm's metric
    return warnings


def build_plan(
    settings: Settings,
    trigger: Trigger,
    now: float,
    *,
    cluster: str | ClusterRef,
    strategy: Strategy | None = None,
    dry_run: bool | None = None,
    registry_hosts: tuple[str, ...] | None = None,
    reason: str = "",
    records: RecordStore | None = None,
    force: bool = False,
    bundle: CaBundle | None = None,
) -> Plan:
    """The plan of a trigger. With `records` (launch, pull-failure, manual), the bundle is the one
    bundle_for_trigger chooses for `cluster` (then a ClusterRef: whose good bundle and rollout);
    without, the cluster's current bundle (the sweep); or `bundle`."""
    ref = cluster if isinstance(cluster, ClusterRef) else None
    cluster = cluster.name if isinstance(cluster, ClusterRef) else cluster
    if bundle is None and records is not None and trigger is not Trigger.SWEEP:
        if ref is None:
            raise TypeError("build_plan with records: give the cluster as a ClusterRef (whose good bundle)")
        bundle = bundle_for_trigger(settings, records, ref, now, force)
    bundle = bundle or current_bundle(settings, cluster, now)
    return Plan(
        cluster=cluster,
        trigger=trigger,
        strategy=strategy or settings.default_strategy,
        # a deployment-level dry run cannot be switched off per request
        dry_run=settings.dry_run or bool(dry_run),
        registry_hosts=registry_hosts if registry_hosts is not None else settings.registry_hosts,
        canary_image=settings.canary_image,
        bundle_b64=bundle.b64,
        fingerprint=bundle.fingerprint,
        ca_warnings=expiry_warnings(bundle, cluster, now, settings.ca_expiry_warning_days),
        ca_not_after=min(c.not_after for c in bundle.certificates).strftime("%Y-%m-%dT%H:%M:%SZ"),
        reason=reason,
        force=force,
    )


def plan_for_attempt(
    settings: Settings, attempt: dict[str, Any], now: float, records: RecordStore | None = None
) -> Plan:
    """The plan of an attempt that waited for its agent: same choices, the bundle as it is now
    (an attempt created to send the cluster's good bundle - a rollback - sends it still)."""
    ref = ClusterRef.of_record(attempt)
    good = records.good_bundle(ref) if records is not None else None
    keep_good = good is not None and good["fingerprint"] == attempt.get("fingerprint")
    return build_plan(
        settings,
        Trigger(attempt["trigger"]),
        now,
        cluster=ref,
        strategy=Strategy(attempt["strategy"]),
        dry_run=bool(attempt.get("dry_run")),
        registry_hosts=tuple(attempt.get("registry_hosts") or ()),
        reason=attempt.get("reason", ""),
        records=records,
        force=bool(attempt.get("force")),
        bundle=canonical_bundle(good["pem"], now=datetime.fromtimestamp(now, UTC)) if keep_good and good else None,
    )
