"""Rollouts in waves (rollouts.py): their records, the announcement of a change of trust, the halt
and the next pass that a node's result queues, and the manual resume and rollback.

The sweep moves a rollout forward (logic/sweep.py); a result moves it too (record_result calls
on_result): a FAILED or TIMED_OUT result with the rollout's bundle halts it - a conditional write,
so the halt is logged, counted (the RolloutHalted alarm) and announced once - and a SUCCEEDED one
queues the rollout's next sweep pass (at most one pending pass per rollout: claim_next_pass), so a
wave is followed by the next one a bake time later, not a sweep re-check later. No Lambda sleeps.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

from eks_ca_remediator import telemetry
from eks_ca_remediator.bundle import CaBundle, canonical_bundle
from eks_ca_remediator.errors import InvalidRequest, NotificationFailed
from eks_ca_remediator.logic.plans import build_plan
from eks_ca_remediator.logic.remediation import Remediator, iso
from eks_ca_remediator.models import ClusterRef, Status, Target, Trigger
from eks_ca_remediator.rollouts import (
    Rollout,
    RolloutStatus,
    control_event,
    halts,
    trust_change,
    trust_changed,
)
from eks_ca_remediator.sweeps import SweepJob

logger = Logger(child=True)

# A node's result queues the rollout's next pass this much later (results of one wave gather).
KICK_SECONDS = 10
ROLLING = (RolloutStatus.ROLLING.value,)


def _cas(bundle: CaBundle) -> tuple[tuple[str, str, str], ...]:
    return tuple((c.subject, c.sha256, c.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")) for c in bundle.certificates)


def _invoke(cluster: str, action: str, account: str | None = None) -> str:
    """The command that resumes or rolls back a rollout."""
    return f"sam remote invoke RemediateFunction --event '{control_event(cluster, action, account)}'"


def notify(remediator: Remediator, subject: str, lines: list[str]) -> None:
    """Tell the deployment's SNS topic (AlarmTopicArn), when it has one. A refusal is logged and
    counted (NotificationsFailed), not raised: the state it tells of is already recorded, and a
    retried event would not say it again (the writes before it are conditional: said once)."""
    if remediator.notifier is None:
        return
    try:
        remediator.notifier.publish(f"eks-ca-remediator: {subject}", "\n".join(lines))
    except NotificationFailed as exc:
        logger.error("the SNS message was not delivered; the log line above says the same", error=str(exc))
        telemetry.count(telemetry.NOTIFICATIONS_FAILED)


def good_item(remediator: Remediator, cluster: str) -> dict[str, Any] | None:
    return remediator.records.good_bundle(remediator.cluster(cluster))


def rollout_for_sweep(remediator: Remediator, job: SweepJob, bundle: CaBundle, now: float) -> Rollout | None:
    """The rollout the sweep of `job` drives, created (and announced) on the first pass that sees
    the bundle; None when the bundle is the cluster's good one (no waves: the sweep brings drifted
    nodes to it at once). A rollout of another bundle that is HALTED holds the cluster: returned
    as it is, so the pass sends nothing until a manual resume or rollback."""
    records, cluster = remediator.records, remediator.cluster(job.cluster)
    good = records.good_bundle(cluster)
    if good is not None and good["fingerprint"] == bundle.fingerprint:
        return None
    items = records.rollouts(cluster)
    mine = next((i for i in items if i["fingerprint"] == bundle.fingerprint), None)
    if mine is None:
        halted = [i for i in items if i.get("rollout_status") == RolloutStatus.HALTED.value]
        if halted:
            return Rollout.from_item(halted[0])
        mine = _start(remediator, job, bundle, good, items, now)
    rollout = Rollout.from_item(mine)
    if rollout.status is RolloutStatus.COMPLETE:
        set_good(remediator, cluster.name, bundle, now)  # the source went back to a bundle that completed
        return None
    if rollout.status is RolloutStatus.SUPERSEDED:  # the source went back to this bundle: from wave 1
        fields = {"rollout_status": RolloutStatus.ROLLING.value, "wave": 0, "wave_done_at": None}
        updated = records.update_rollout(cluster, bundle.fingerprint, fields, (RolloutStatus.SUPERSEDED.value,))
        rollout = Rollout.from_item(updated or records.rollout(cluster, bundle.fingerprint) or mine)
    return rollout


def _start(
    remediator: Remediator,
    job: SweepJob,
    bundle: CaBundle,
    good: dict[str, Any] | None,
    others: list[dict[str, Any]],
    now: float,
) -> dict[str, Any]:
    records, cluster = remediator.records, remediator.cluster(job.cluster)
    created, item = records.start_rollout(
        cluster,
        {
            "fingerprint": bundle.fingerprint,
            "rollout_status": RolloutStatus.ROLLING.value,
            "origin": job.origin,
            "started_at": job.started_at,
            "wave": 0,
            "previous_good": good["fingerprint"] if good else None,
            "created_at_iso": iso(now),
            "expires_at": int(now + remediator.settings.record_ttl_days * 86400),
        },
    )
    if not created:
        return item
    for other in others:  # a newer bundle supersedes a rollout still in progress
        if other.get("rollout_status") == RolloutStatus.ROLLING.value:
            records.update_rollout(
                cluster,
                other["fingerprint"],
                {"rollout_status": RolloutStatus.SUPERSEDED.value, "superseded_by": bundle.fingerprint},
                ROLLING,
            )
            logger.warning("rollout superseded by a newer bundle", cluster=cluster.key, old=other["fingerprint"])
    announce(remediator, cluster.key, bundle, good)
    return item


def announce(remediator: Remediator, cluster: str, bundle: CaBundle, good: dict[str, Any] | None) -> list[str]:
    """One log line and metric naming every CA the cluster's trust gains or loses, before the first
    wave (each CA: subject, SHA-256, not-after; the cluster it goes to). Returns the lines."""
    old = None
    if good is not None:
        at = datetime.fromtimestamp(remediator.clock(), UTC)
        old = _cas(canonical_bundle(good["pem"], now=at))
    change = trust_change(old, _cas(bundle))
    if change.empty:
        return []
    lines = [f"cluster {cluster}: {line}" for line in change.lines()]
    logger.warning(
        "CA trust changes: rolling out in waves",
        cluster=cluster,
        fingerprint=bundle.fingerprint,
        previous_good=good["fingerprint"] if good else None,
        changes=lines,
    )
    telemetry.count(telemetry.TRUST_CHANGED, len(change.added) + len(change.removed))
    waves = remediator.settings.rollout_waves
    notify(
        remediator,
        f"CA trust of cluster {cluster} changes: {len(change.added)} added, {len(change.removed)} removed",
        [
            f"The CA bundle {bundle.fingerprint} rolls out to cluster {cluster} in waves ({waves}, "
            f"bake {remediator.settings.rollout_bake_seconds} s), replacing "
            + (f"the good bundle {good['fingerprint']}." if good else "nothing (the cluster's first bundle)."),
            "",
            *lines,
            "",
            "Watch: eks-ca-remediator status",
        ],
    )
    return lines


def set_good(remediator: Remediator, cluster: str, bundle: CaBundle, now: float) -> None:
    """`bundle` becomes the cluster's good bundle (its rollout completed): the sweep brings drifted
    nodes to it at once, and the other triggers send it."""
    remediator.records.set_good_bundle(
        remediator.cluster(cluster),
        {
            "fingerprint": bundle.fingerprint,
            "pem": bundle.pem,
            "ca_not_after": min(c.not_after for c in bundle.certificates).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "completed_at": iso(now),
        },
    )


def complete(remediator: Remediator, rollout: Rollout, bundle: CaBundle, now: float) -> None:
    """Every node holds the bundle: it becomes the cluster's good bundle."""
    done = remediator.records.update_rollout(
        remediator.cluster(rollout.cluster),
        rollout.fingerprint,
        {"rollout_status": RolloutStatus.COMPLETE.value, "completed_at": iso(now)},
        ROLLING,
    )
    if done is None:
        return
    set_good(remediator, rollout.cluster, bundle, now)
    telemetry.count(telemetry.ROLLOUT_COMPLETED)
    logger.info("rollout complete: the cluster's good bundle", cluster=rollout.cluster, fingerprint=bundle.fingerprint)


def claim_next_pass(remediator: Remediator, job: SweepJob, delay: int) -> bool:
    """Queue the rollout's next sweep pass in `delay` s unless one is already due by then."""
    now = remediator.clock()
    claimed = remediator.records.claim_next_pass(remediator.cluster(job.cluster), job.fingerprint, now, now + delay)
    if claimed and remediator.sweep_queue is not None:
        remediator.sweep_queue.schedule(job.model_copy(update={"passes": 0}), delay)
    return claimed


# ---------------------------------------------------------------- results


def on_result(
    record: dict[str, Any], status: Status, remediator: Remediator, not_the_nodes_fault: frozenset[str]
) -> None:
    """A final result of a node sent a rollout's bundle: halt the rollout, or queue its next pass."""
    fingerprint = record.get("fingerprint")
    if not record.get("cluster") or not fingerprint or record.get("dry_run"):
        return
    cluster = ClusterRef.of_record(record)  # the rollout of that account's cluster
    item = remediator.records.rollout(cluster, fingerprint)
    if item is None or item.get("rollout_status") != RolloutStatus.ROLLING.value:
        return
    if halts(status.value, record.get("ssm_status_details"), not_the_nodes_fault):
        _halt(remediator, Rollout.from_item(item), record)
        return
    if status is Status.SUCCEEDED and item.get("origin"):
        job = SweepJob(
            origin=item["origin"],
            cluster=cluster.name,
            account=cluster.account,
            started_at=float(item["started_at"]),
            fingerprint=fingerprint,
        )
        claim_next_pass(remediator, job, KICK_SECONDS)


def _halt(remediator: Remediator, rollout: Rollout, record: dict[str, Any]) -> None:
    node = record["pk"]
    reason = str(record.get("reason") or record.get("status"))
    committed = trust_changed(record)
    halted = remediator.records.update_rollout(
        ClusterRef.of_record(record),
        rollout.fingerprint,
        {
            "rollout_status": RolloutStatus.HALTED.value,
            "halted_wave": rollout.wave,
            "halted_node": node,
            "halted_reason": reason,
            "halted_committed": committed,
            "halted_at": iso(remediator.clock()),
        },
        ROLLING,
    )
    if halted is None:
        return  # another result halted it first: said once
    telemetry.count(telemetry.ROLLOUT_HALTED)
    logger.error(
        "rollout halted: the new CA bundle failed on a node; nothing more is sent with it",
        cluster=rollout.cluster,
        account=record.get("account"),  # (a member account's cluster: name it in the invoke too)
        fingerprint=rollout.fingerprint,
        wave=rollout.wave + 1,
        instance_id=node,
        reason=reason,
        trust_changed=committed,
        resume=control_event(rollout.cluster, "resume", record.get("account")),
        rollback=control_event(rollout.cluster, "rollback", record.get("account")),
    )
    notify(
        remediator,
        f"rollout halted in cluster {rollout.cluster} (wave {rollout.wave + 1})",
        [
            f"The rollout of CA bundle {rollout.fingerprint} to cluster {rollout.cluster} halted in wave "
            f"{rollout.wave + 1}: nothing more is sent with it.",
            f"Node: {node}",
            f"Reason: {reason}",
            "That node's trust changed: " + ("yes" if committed else "no (the bundle was rejected before commit)"),
            "",
            "Once the cause is fixed, resume:",
            f"  {_invoke(rollout.cluster, 'resume', record.get('account'))}",
            "Or roll the nodes it changed back to the good bundle:",
            f"  {_invoke(rollout.cluster, 'rollback', record.get('account'))}",
        ],
    )


# ---------------------------------------------------------------- manual controls


def _halted(remediator: Remediator, cluster: str) -> dict[str, Any]:
    if cluster not in remediator.settings.enrolled_clusters:
        raise InvalidRequest(f"cluster {cluster!r} is not enrolled")
    rollouts = remediator.records.rollouts(remediator.cluster(cluster))
    halted = [i for i in rollouts if i.get("rollout_status") == RolloutStatus.HALTED.value]
    if not halted:
        raise InvalidRequest(f"cluster {cluster!r} has no halted rollout")
    return halted[0]


def resume(remediator: Remediator, cluster: str, request_id: str, reason: str) -> dict[str, Any]:
    """Resume a halted rollout (after its cause is fixed): it continues from the wave it halted in,
    the node that failed included, with a new sweep (a new attempt per node). When the source
    changed meanwhile, the halted rollout is superseded and the new bundle starts from wave 1."""
    item = _halted(remediator, cluster)
    now = remediator.clock()
    origin = f"resume-{request_id}"[:128]
    remediator.records.update_rollout(
        remediator.cluster(cluster),
        item["fingerprint"],
        {
            "rollout_status": RolloutStatus.ROLLING.value,
            "origin": origin,
            "started_at": now,
            "wave_done_at": None,
            "resumed_at": iso(now),
            "resume_reason": reason,
        },
        (RolloutStatus.HALTED.value,),
    )
    if remediator.sweep_queue is None:
        raise InvalidRequest("SWEEP_QUEUE_URL is not set: the rollout cannot be resumed from here")
    job = SweepJob(origin=origin, cluster=cluster, account=remediator.account, started_at=now)
    remediator.sweep_queue.schedule(job, 0)
    logger.warning("rollout resumed by a manual invoke", cluster=cluster, fingerprint=item["fingerprint"])
    resumed = {"rollout": "resumed", "cluster": cluster, "fingerprint": item["fingerprint"], "wave": item["wave"] + 1}
    return resumed | {"records": [], "count": 0}


def rollback(remediator: Remediator, cluster: str, request_id: str, reason: str) -> dict[str, Any]:
    """Re-send the cluster's good bundle to every node the halted bundle was sent to and changed
    (a node that rejected it before commit kept the good one). Forced: past the breaker and the
    cooldown, as an operator's fix must be. The rollout stays halted until resumed."""
    item = _halted(remediator, cluster)
    ref = remediator.cluster(cluster)
    good = remediator.records.good_bundle(ref)
    if good is None:
        raise InvalidRequest(f"cluster {cluster!r} has no good bundle yet (first rollout): nothing to roll back to")
    attempts = remediator.records.cluster_attempts(ref, "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z")
    affected = sorted({a["pk"] for a in attempts if a.get("fingerprint") == item["fingerprint"] and trust_changed(a)})
    now = remediator.clock()
    at = datetime.fromtimestamp(now, UTC)
    plan = build_plan(
        remediator.settings,
        Trigger.MANUAL,
        now,
        cluster=cluster,
        reason=reason or f"rollback of {item['fingerprint'][:16]}",
        force=True,
        bundle=canonical_bundle(good["pem"], now=at),
    )
    records = remediator.start([Target(instance_id=i, cluster=cluster) for i in affected], plan, request_id, now)
    remediator.records.update_rollout(
        ref,
        item["fingerprint"],
        {"rolled_back_at": iso(now), "rolled_back_nodes": len(affected)},
        (RolloutStatus.HALTED.value,),
    )
    logger.warning("rollback to the good bundle", cluster=cluster, nodes=len(affected), good=good["fingerprint"])
    return {"rollout": "rolled-back", "cluster": cluster, "records": records, "count": len(records)}
