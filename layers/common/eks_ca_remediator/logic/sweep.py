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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from eks_ca_remediator import telemetry
from eks_ca_remediator.adapters.queue import DelayQueue
from eks_ca_remediator.decisions import chunks
from eks_ca_remediator.logic.plans import build_plan
from eks_ca_remediator.logic.remediation import Remediator
from eks_ca_remediator.models import Target, Trigger
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
    remediator: Remediator
    queue: DelayQueue

    def begin(self, trigger: SweepTrigger) -> dict[str, Any]:
        """Queue one sweep job per affected enrolled cluster."""
        settings = self.remediator.settings
        clusters = clusters_to_sweep(trigger, {c: settings.sources_for(c) for c in settings.enrolled_clusters})
        for cluster in clusters:
            self.queue.schedule(SweepJob(origin=trigger.id, cluster=cluster, started_at=trigger.time.timestamp()), 0)
        logger.info("sweeps queued", trigger=trigger.detail_type, clusters=clusters)
        return {"action": "sweeping" if clusters else "ignored", "clusters": clusters}

    def run(self, job: SweepJob, remaining_ms: Callable[[], int]) -> dict[str, Any]:
        """One pass of a cluster's sweep; queues its continuation when work is left."""
        r = self.remediator
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

    def _pause(self, job: SweepJob, breaker: Breaker, now: float) -> dict[str, Any]:
        """The cluster's breaker is open: create no attempts (they would all fire when it closes
        and churn the agent-wait queue meanwhile); run this pass again when it closes."""
        telemetry.count(telemetry.CIRCUIT_BREAKER_OPEN)
        reason = f"{breaker.why()}: sweep paused until it closes"
        logger.warning("circuit breaker open: sweep paused", cluster=job.cluster, reason=reason)
        summary = {"cluster": job.cluster, "action": "paused", "reason": reason}
        if job.passes + 1 >= MAX_PASSES:
            logger.warning("sweep gave up waiting on the circuit breaker; the next scheduled sweep continues")
            return summary | {"action": "gave-up"}
        delay = max(1, math.ceil(breaker.open_until - now))
        return self._continue(job.model_copy(update={"passes": job.passes + 1}), min(delay, 900), summary)

    def _continue(self, job: SweepJob, delay: int, summary: dict[str, Any]) -> dict[str, Any]:
        self.queue.schedule(job, delay)
        logger.info("sweep continues in a new invocation", delay_seconds=delay, passes=job.passes, **summary)
        return summary | {"continue_in": delay}


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
