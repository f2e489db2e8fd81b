"""Sweep: bring every running node of an enrolled cluster to the cluster's current CA bundle.

begin()  a trigger (the schedule, or a change to a bundle source) queues one SweepJob per
         affected cluster: each cluster's sweep runs in its own invocation.
run()    one pass of a job: fetch the cluster's bundle, list its running nodes, read each node's
         attempt history, and remediate the drifted ones through Remediator.start (batches of
         50) within the cluster's in-flight limit. The same job is queued again when the pass
         runs short of time (at once) or nodes wait on the in-flight limit or on a command that
         sends an older bundle (after SWEEP_RECHECK_SECONDS). Each pass recomputes everything
         from the records, so no node is skipped; attempt keys are per (sweep id, node), so a
         repeated pass or a redelivered message sends nothing twice. While the cluster's circuit
         breaker is open (Remediator.open_breaker, the gate every dispatch goes through) a pass
         creates no attempts and queues itself for when the breaker closes.

Central mode (docs/scale.md): begin() queues a job per enrolled cluster in the deployment's own
account and in every ACTIVE account of the organisation (AWS Organizations ListAccounts, read at
every trigger) whose member role can be assumed; run() sweeps a member's cluster through that role
(wiring.remediator(account)), with that (account, cluster)'s breaker, in-flight limit and rollout
(models.ClusterRef), unless the member stack does not enroll the cluster. An account whose role
cannot be assumed is skipped, logged and counted (SweepAccountsUnreachable); when ListAccounts
fails, only the deployment's own account is swept, and that is logged and counted
(SweepAccountListingFailed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger

from eks_ca_remediator import telemetry
from eks_ca_remediator.adapters.queue import DelayQueue
from eks_ca_remediator.bundle import CaBundle
from eks_ca_remediator.decisions import chunks
from eks_ca_remediator.errors import AccountListingFailed, ConfigurationError, MemberAccessDenied
from eks_ca_remediator.logic.plans import build_plan, current_bundle
from eks_ca_remediator.logic.remediation import Remediator
from eks_ca_remediator.logic.rollout import claim_next_pass, complete, rollout_for_sweep
from eks_ca_remediator.models import Plan, Target, Trigger
from eks_ca_remediator.rollouts import Rollout, RolloutStatus, wave_move, wave_targets
from eks_ca_remediator.safety import Breaker, live_seconds
from eks_ca_remediator.sweeps import (
    NodeState,
    SweepJob,
    SweepTrigger,
    clusters_to_sweep,
    node_state,
    plan_sweep,
)

logger = Logger(child=True)

# Stop reading or sending and queue the rest when less than this much invocation time is left.
TIME_MARGIN_MS = 60_000
# Passes of one sweep that wait on in-flight nodes; then the next scheduled sweep takes over.
MAX_PASSES = 48
HISTORY_CHECK_EVERY = 100


@dataclass
class Sweeper:
    remediator: Remediator  # the deployment's own account's
    queue: DelayQueue
    # Central mode: a member account's Remediator (wiring.remediator: MemberAccessDenied when its
    # role cannot be assumed), and the organisation's ACTIVE accounts (read at every trigger).
    remediator_for: Callable[[str | None], Remediator] | None = None
    accounts: Callable[[], list[str]] | None = None

    def begin(self, trigger: SweepTrigger) -> dict[str, Any]:
        """Queue one sweep job per affected enrolled cluster, in every account swept."""
        settings = self.remediator.settings
        clusters = clusters_to_sweep(trigger, {c: settings.sources_for(c) for c in settings.enrolled_clusters})
        reach = self._accounts() if clusters else AccountsReached()
        for account in reach.swept:
            for cluster in clusters:
                job = SweepJob(origin=trigger.id, cluster=cluster, account=account, started_at=trigger.time.timestamp())
                self.queue.schedule(job, 0)
        summary = {"action": "sweeping" if clusters else "ignored", "clusters": clusters} | reach.summary()
        logger.info("sweeps queued", trigger=trigger.detail_type, **summary)
        return summary

    def _accounts(self) -> AccountsReached:
        """The accounts a trigger's sweeps go to: ours, and (central mode) every ACTIVE account of
        the organisation whose member role can be assumed; the others reported, never fatal."""
        settings, reach = self.remediator.settings, AccountsReached()
        if not settings.central or self.accounts is None or self.remediator_for is None:
            return reach
        try:
            listed = self.accounts()
        except AccountListingFailed as exc:
            reach.listing_error = str(exc)
            telemetry.count(telemetry.SWEEP_ACCOUNT_LISTING_FAILED)
            logger.error("cannot list the organisation's accounts: only this account is swept", error=str(exc))
            return reach
        for account in (a for a in listed if settings.is_member(a)):
            try:
                self.remediator_for(account)  # assumes its member role (kept for the jobs' passes)
            except MemberAccessDenied as exc:
                reach.unreachable.append(account)
                logger.error("member account unreachable: not swept", account=account, error=str(exc))
                continue
            reach.swept.append(account)
        if reach.unreachable:
            telemetry.count(telemetry.SWEEP_ACCOUNTS_UNREACHABLE, len(reach.unreachable))
        return reach

    def _remediator(self, account: str | None) -> Remediator:
        if account is None:
            return self.remediator
        if self.remediator_for is None:
            raise ConfigurationError(f"sweep job of account {account}: this deployment sweeps no member accounts")
        return self.remediator_for(account)

    def run(self, job: SweepJob, remaining_ms: Callable[[], int]) -> dict[str, Any]:
        """One pass of a cluster's sweep; queues its continuation when work is left."""
        r = self._remediator(job.account)
        if r.account is not None and not r.run_command.enrolled(job.cluster):
            logger.info(
                "the member stack does not enroll the cluster: not swept", account=r.account, cluster=job.cluster
            )
            return {"cluster": job.cluster, "account": r.account, "action": "not-enrolled"}
        now = r.clock()
        breaker = r.open_breaker(job.cluster, now)  # the same gate as every other trigger's dispatch
        if breaker is not None:
            return self._pause(job, breaker, now)
        plan = build_plan(r.settings, Trigger.SWEEP, now, cluster=job.cluster, reason=f"rotation sweep {job.origin}")
        if job.fingerprint != plan.fingerprint:
            if job.fingerprint:
                logger.warning(
                    "CA bundle changed mid-sweep: sweeping again for the new bundle",
                    cluster=job.cluster,
                    old=job.fingerprint,
                    new=plan.fingerprint,
                )
            started_at = now if job.fingerprint else job.started_at
            job = job.model_copy(update={"fingerprint": plan.fingerprint, "started_at": started_at, "passes": 0})
        summary: dict[str, Any] = {"cluster": job.cluster, "sweep_id": job.sweep_id, "fingerprint": job.fingerprint}
        summary |= {"account": job.account} if job.account else {}
        bundle = current_bundle(r.settings, job.cluster, now)  # (the plan's, from the source cache)
        rollout = rollout_for_sweep(r, job, bundle, now) if bundle.fingerprint == job.fingerprint else None
        if rollout is not None and rollout.status is RolloutStatus.HALTED:
            return self._held(rollout, summary)

        nodes, disagreeing = r.cluster_nodes(job.cluster)
        if disagreeing:
            summary["skipped"] = len(r.skip_disagreeing(disagreeing, plan, job.sweep_id, job.started_at))
        if r.settings.max_in_flight_percent:
            r.count_running_nodes(job.cluster, now, nodes)  # the percent limit's count, for free
        live = live_seconds(r.settings.agent_wait_deadline_seconds, r.settings.command_timeout_seconds)
        states: dict[str, NodeState] = {}
        for index, instance_id in enumerate(nodes):
            if index % HISTORY_CHECK_EVERY == 0 and remaining_ms() < TIME_MARGIN_MS:
                return self._continue(job, 0, summary | {"action": "continued", "nodes": len(nodes), "read": index})
            history = r.records.history(instance_id)
            cooldown = r.settings.instance_cooldown_seconds
            states[instance_id] = node_state(history, job.fingerprint, job.sweep_id, now, live, cooldown)
        _agents_back(r, states)
        room, limit = r.in_flight_room(job.cluster, now)  # the one in-flight limit, every trigger's
        if rollout is not None:
            return self._roll(r, job, rollout, bundle, plan, states, room, summary | {"limit": limit}, remaining_ms)
        todo = plan_sweep(states, room)
        summary |= {"nodes": len(nodes), "states": todo.counts, "limit": limit, "deferred": todo.deferred, "started": 0}

        for batch in chunks(todo.to_start, 50):
            if remaining_ms() < TIME_MARGIN_MS:
                return self._continue(job, 0, summary | {"action": "continued"})
            r.start([Target(instance_id=i, cluster=job.cluster) for i in batch], plan, job.sweep_id, job.started_at)
            summary["started"] += len(batch)

        if not todo.needs_another_pass:
            logger.info("sweep pass complete", **summary)
            return summary | {"action": "complete"}
        if job.passes + 1 >= MAX_PASSES:
            logger.warning("sweep gave up waiting on in-flight nodes; the next scheduled sweep continues", **summary)
            return summary | {"action": "gave-up"}
        next_job = job.model_copy(update={"passes": job.passes + 1})
        return self._continue(next_job, r.settings.sweep_recheck_seconds, summary | {"action": "waiting"})

    def _held(self, rollout: Rollout, summary: dict[str, Any]) -> dict[str, Any]:
        """A halted rollout holds the cluster: nothing is sent until a manual resume or rollback."""
        logger.warning(
            "rollout halted: the sweep sends nothing until it is resumed or rolled back",
            cluster=rollout.cluster,
            halted_fingerprint=rollout.fingerprint,
            node=rollout.halted_node,
            reason=rollout.halted_reason,
        )
        return summary | {
            "action": "halted",
            "halted_fingerprint": rollout.fingerprint,
            "wave": (rollout.halted_wave or 0) + 1,
            "node": rollout.halted_node,
            "reason": rollout.halted_reason,
        }

    def _roll(
        self,
        r: Remediator,
        job: SweepJob,
        rollout: Rollout,
        bundle: CaBundle,
        plan: Plan,
        states: dict[str, NodeState],
        room: int,
        summary: dict[str, Any],
        remaining_ms: Callable[[], int],
    ) -> dict[str, Any]:
        """One pass of a rollout in waves (rollouts.wave_move): send the current wave's nodes within
        the in-flight limit, wait for their results, bake, or complete. Nodes this sweep tried
        without success are out of the wave counts (a later sweep tries them again), and so are the
        nodes our document is never sent to (NOT_REMEDIABLE: Windows, Auto Mode, no SSM agent)."""
        now = r.clock()
        counts = plan_sweep(states, 0).counts
        left_out = (NodeState.DONE, NodeState.NOT_REMEDIABLE, NodeState.NO_AGENT)  # not in the wave counts
        total = len(states) - sum(counts.get(state.value, 0) for state in left_out)
        targets = wave_targets(r.settings.wave_steps, total)
        done, in_flight = counts.get(NodeState.CURRENT.value, 0), counts.get(NodeState.IN_FLIGHT.value, 0)
        move = wave_move(rollout, targets, done, in_flight, now, r.settings.rollout_bake_seconds)
        summary |= {"states": counts, "nodes": len(states), "wave": move.wave + 1, "waves": len(targets)}
        summary |= {"done": done, "started": 0, "deferred": 0}
        if move.kind == "complete":
            complete(r, rollout, bundle, now)
            logger.info("rollout pass: complete", **summary)
            return summary | {"action": "complete"}
        fields = {"wave": move.wave, "wave_done_at": move.wave_done_at, "origin": job.origin}
        fields |= {"started_at": job.started_at, "wave_target": targets[move.wave], "nodes_total": total}
        fields |= {"nodes_done": done, "last_pass_at": now}
        cluster = r.cluster(job.cluster)
        if r.records.update_rollout(cluster, rollout.fingerprint, fields, (RolloutStatus.ROLLING.value,)) is None:
            return self._held(Rollout.from_item(r.records.rollout(cluster, rollout.fingerprint) or {}), summary)
        if move.kind == "bake":
            claim_next_pass(r, job, min(move.delay, 900))
            return summary | {"action": "baking", "continue_in": min(move.delay, 900)}
        drifted = sorted(i for i, s in states.items() if s is NodeState.DRIFTED)
        to_start = drifted[: min(move.send, max(0, room))]
        summary["deferred"] = min(move.send, len(drifted)) - len(to_start)
        for batch in chunks(to_start, 50):
            if remaining_ms() < TIME_MARGIN_MS:
                return self._continue(job, 0, summary | {"action": "continued"})
            r.start([Target(instance_id=i, cluster=job.cluster) for i in batch], plan, job.sweep_id, job.started_at)
            summary["started"] += len(batch)
        claim_next_pass(r, job, r.settings.sweep_recheck_seconds)  # results queue it sooner
        logger.info("rollout pass", **summary)
        return summary | {"action": "waiting", "continue_in": r.settings.sweep_recheck_seconds}

    def _pause(self, job: SweepJob, breaker: Breaker, now: float) -> dict[str, Any]:
        """The cluster's breaker is open: create no attempts (they would all fire when it closes
        and churn the agent-wait queue meanwhile); run this pass again when it closes."""
        telemetry.count(telemetry.CIRCUIT_BREAKER_OPEN)
        reason = f"{breaker.why()}: sweep paused until it closes"
        logger.warning("circuit breaker open: sweep paused", cluster=job.cluster, account=job.account, reason=reason)
        summary = {"cluster": job.cluster, "action": "paused", "reason": reason}
        summary |= {"account": job.account} if job.account else {}
        if job.passes + 1 >= MAX_PASSES:
            logger.warning("sweep gave up waiting on the circuit breaker; the next scheduled sweep continues")
            return summary | {"action": "gave-up"}
        delay = max(1, math.ceil(breaker.open_until - now))
        return self._continue(job.model_copy(update={"passes": job.passes + 1}), min(delay, 900), summary)

    def _continue(self, job: SweepJob, delay: int, summary: dict[str, Any]) -> dict[str, Any]:
        self.queue.schedule(job, delay)
        logger.info("sweep continues in a new invocation", delay_seconds=delay, passes=job.passes, **summary)
        return summary | {"continue_in": delay}


@dataclass
class AccountsReached:
    """The accounts a trigger's sweeps go to (None: the deployment's own), those skipped, and why
    the organisation's accounts could not be listed, if they could not."""

    swept: list[str | None] = field(default_factory=lambda: [None])
    unreachable: list[str] = field(default_factory=list)
    listing_error: str = ""

    def summary(self) -> dict[str, Any]:
        members = [a for a in self.swept if a is not None]
        found = {"member_accounts": members} if members else {}
        found |= {"accounts_unreachable": self.unreachable} if self.unreachable else {}
        return found | ({"account_listing_error": self.listing_error} if self.listing_error else {})


def _agents_back(r: Remediator, states: dict[str, NodeState]) -> None:
    """Nodes recorded without an SSM agent whose agent is Online now are drifted again (sent this
    pass); the others stay left alone, so a sweep never waits on them pass after pass."""
    silent = [i for i, s in states.items() if s is NodeState.NO_AGENT]
    if silent:
        pings = r.run_command.ping_status(silent)
        states.update({i: NodeState.DRIFTED for i in silent if pings.get(i) == "Online"})


def on_sweep(request: SweepTrigger | SweepJob, sweeper: Sweeper, remaining_ms: Callable[[], int]) -> dict[str, Any]:
    """A trigger queues the affected clusters' sweeps; a queued job runs one pass."""
    if isinstance(request, SweepJob):
        return sweeper.run(request, remaining_ms)
    return sweeper.begin(request)
