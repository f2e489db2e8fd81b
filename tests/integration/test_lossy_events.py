"""A fault run a user would believe: 240 nodes across three triggers, with a lossy EventBridge.

EventBridge delivers AWS service events on a best-effort basis
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-service-event-delivery-level.html) and retries a
failing target for up to 24 h (https://docs.aws.amazon.com/eventbridge/latest/userguide/rule-dlq.html).
Here the fake AWS drops 20 % of the SSM status events, duplicates another 20 %, delivers 10 % hours
late and the rest after a random delay (so out of order), and throttles a share of every
GetCommandInvocation - the status handler's and the reconciler's. Nodes run their command for a
random time and report success, a failure result line, Failed, TimedOut, or vanish mid-command.

After the reconciler's passes every attempt is final and matches what its node reported, no lease
or node claim is left, and the in-flight limit held at every SendCommand. The hours-late events
then change nothing.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError
from eks_ca_remediator import wiring
from eks_ca_remediator.errors import AttemptNotFound, InvocationUnreadable
from eks_ca_remediator.logic.plans import current_bundle
from eks_ca_remediator.logic.rollout import set_good
from eks_ca_remediator.logic.sweep import Sweeper
from eks_ca_remediator.models import ClusterRef
from eks_ca_remediator.sweeps import SweepJob
from on_command_status import handler as on_command_status
from on_launch import handler as on_launch
from remediate import handler as remediate
from sweep import handler as sweep

from tests.fakes.world import SWEEP_QUEUE_URL, FakeQueue, LambdaContext, World, node_output

LIMIT = 25
TRIGGERS = {"prod-a": ("launch", 100), "prod-b": ("manual", 80), "prod-c": ("sweep", 60)}
STEP = 10.0
RECONCILE_EVERY = 300.0

# what a node does with its command -> what its record must say (status, text in the reason)
BEHAVIOURS = {
    "success": ("SUCCEEDED", ""),
    "failure-line": ("FAILED", "verify failed: registry.example.internal:443 x509"),
    "failed": ("FAILED", "update-ca-trust exited 1"),
    "timed-out": ("TIMED_OUT", "SSM status TimedOut"),
    "vanished": ("FAILED", "instance is terminated: no status event arrived"),
}


KINDS = ["success"] * 14 + ["failure-line"] * 3 + ["failed"] * 2 + ["timed-out"]


def behaviour_of(n: int) -> str:
    return "vanished" if n % 50 == 7 else KINDS[n % len(KINDS)]


@dataclass
class LossyBus:
    """EventBridge between the fake SSM and OnCommandStatus, with the faults of this run."""

    rng: random.Random
    queue: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    seq: itertools.count = field(default_factory=itertools.count)
    counts: Counter[str] = field(default_factory=Counter)

    def emit(self, now: float, event: dict[str, Any]) -> None:
        self.counts["emitted"] += 1
        roll = self.rng.random()
        if roll < 0.2:
            self.counts["dropped"] += 1
            return
        if roll < 0.4:
            self.counts["duplicated"] += 1
            self._put(now + self.rng.uniform(0, 30), event)
            self._put(now + self.rng.uniform(0, 900), event)
        elif roll < 0.5:
            self.counts["late"] += 1
            self._put(now + self.rng.uniform(3, 6) * 3600, event)
        else:
            self._put(now + self.rng.uniform(0, 60), event)

    def _put(self, at: float, event: dict[str, Any]) -> None:
        heapq.heappush(self.queue, (at, next(self.seq), event))

    def deliver_due(self, now: float) -> None:
        while self.queue and self.queue[0][0] <= now:
            _, _, event = heapq.heappop(self.queue)
            try:
                result = on_command_status(event, LambdaContext())
            except (ClientError, AttemptNotFound, InvocationUnreadable):  # throttled: EventBridge retries it later
                self.counts["retried"] += 1
                self._put(now + 60, event)
                continue
            self.counts[f"handled-{result['action']}"] += 1


@dataclass
class Fleet:
    """The nodes: each runs its command for a random time, then reports per its behaviour."""

    world: World
    bus: LossyBus
    rng: random.Random
    cluster_of: dict[str, str] = field(default_factory=dict)
    kind_of: dict[str, str] = field(default_factory=dict)
    actions: list[tuple[float, int, str, str, str]] = field(default_factory=list)
    seq: itertools.count = field(default_factory=itertools.count)
    peak_running: Counter[str] = field(default_factory=Counter)
    peak_leases: Counter[str] = field(default_factory=Counter)

    def watch_sends(self) -> None:
        ssm, real_send = self.world.ssm, self.world.ssm.send_command

        def send_command(**kwargs: Any) -> dict[str, Any]:
            response = real_send(**kwargs)
            now = self.world.clock()
            command_id = response["Command"]["CommandId"]
            for node in kwargs["InstanceIds"]:
                heapq.heappush(self.actions, (now + self.rng.uniform(1, 20), next(self.seq), "start", command_id, node))
                heapq.heappush(self.actions, (now + self.rng.uniform(30, 240), next(self.seq), "end", command_id, node))
            self.check_limit()
            return response

        ssm.send_command = send_command

    def check_limit(self) -> None:
        """At this SendCommand: nodes running our command, and leases held, per cluster."""
        running: Counter[str] = Counter()
        for (_, node), inv in self.world.ssm.invocations.items():
            if inv.status in ("Pending", "InProgress") and node not in self.world.ssm.removed:
                running[self.cluster_of[node]] += 1
        for cluster in TRIGGERS:
            self.peak_running[cluster] = max(self.peak_running[cluster], running[cluster])
            leases = len(self.world.remediator.records.leases(ClusterRef(cluster))[0])
            self.peak_leases[cluster] = max(self.peak_leases[cluster], leases)

    def act_due(self, now: float) -> None:
        ssm = self.world.ssm
        while self.actions and self.actions[0][0] <= now:
            _, _, what, command_id, node = heapq.heappop(self.actions)
            kind = self.kind_of[node]
            if what == "start":
                if ssm.invocations[(command_id, node)].status == "Pending":
                    self.bus.emit(now, ssm.progress(command_id, node))
                continue
            if kind == "vanished":  # terminated mid-command: SSM never reports a final status
                self.world.ec2.terminate_instances(InstanceIds=[node])
                ssm.deregister(node)
                continue
            status, stdout = {
                "success": ("Success", node_output("success")),
                "failure-line": ("Success", node_output("failure", reason=BEHAVIOURS["failure-line"][1])),
                "failed": ("Failed", node_output("failure", reason=BEHAVIOURS["failed"][1])),
                "timed-out": ("TimedOut", ""),
            }[kind]
            self.bus.emit(now, ssm.finish(command_id, node, status, stdout))


def test_lossy_status_events_end_in_true_final_records_without_leaked_leases():
    rng = random.Random(2026)
    with World.create(
        ENROLLED_CLUSTERS="prod-a,prod-b,prod-c",
        MAX_IN_FLIGHT_PER_CLUSTER=str(LIMIT),
        BREAKER_FAILURE_THRESHOLD="1000",
        SAFETY_RECHECK_SECONDS="180",
        COMMAND_TIMEOUT_SECONDS="120",
        SWEEP_QUEUE_URL=SWEEP_QUEUE_URL,
    ) as world:
        bus = LossyBus(random.Random(rng.random()))
        fleet = Fleet(world, bus, random.Random(rng.random()))
        fleet.watch_sends()
        world.ssm.throttle_share["GetCommandInvocation"] = 0.25
        world.ssm.rng = random.Random(rng.random())
        sweep_queue = FakeQueue(world.clock, url=SWEEP_QUEUE_URL)
        original_sweeper, wiring.sweeper = wiring.sweeper, lambda: Sweeper(world.remediator, sweep_queue)
        try:
            index = 0
            for cluster, (trigger, count) in TRIGGERS.items():
                nodes = world.add_nodes(count, cluster=cluster, agent_online_after=None)
                for node in nodes:
                    fleet.cluster_of[node], fleet.kind_of[node] = cluster, behaviour_of(index)
                    online_after = rng.uniform(0, 90) if trigger == "launch" else 0
                    world.ssm.register(node, online_at=world.clock() + online_after)
                    index += 1
                if trigger == "launch":
                    for node in nodes:
                        on_launch(world.launch_event(node), LambdaContext())
                elif trigger == "manual":
                    for node in nodes:
                        remediate({"instance_id": node, "reason": "fault run"}, LambdaContext())
                else:
                    # the sweep brings drifted nodes to the cluster's good bundle (its rollout
                    # completed before): at once, as rollouts in waves are test_rollouts.py's subject
                    bundle = current_bundle(world.settings, cluster, world.clock())
                    set_good(world.remediator, cluster, bundle, world.clock())
                    job = SweepJob(origin="fault-run", cluster=cluster, started_at=world.clock())
                    sweep_queue.schedule(job, 0)

            passes, repaired, last_reconcile = 0, Counter(), world.clock()
            start = world.clock()

            def all_final() -> bool:
                return not fleet.actions and all(
                    a["status"] not in ("PENDING_AGENT", "SENT", "IN_PROGRESS") for a in world.all_attempts()
                )

            while world.clock() - start < 12 * 3600:
                world.clock.advance(STEP)
                now = world.clock()
                fleet.act_due(now)
                bus.deliver_due(now)
                world.run_agent_wait()
                for record in sweep_queue.due():
                    sweep({"Records": [record]}, LambdaContext())
                if now - last_reconcile >= RECONCILE_EVERY:
                    last_reconcile = now
                    result = world.reconcile()
                    passes += 1
                    repaired.update({k: v for k, v in result.items() if k.startswith("to_") or k == "throttled"})
                    if all_final() and len(world.all_attempts()) == len(fleet.kind_of):
                        break
            settled_after = world.clock() - start
            final = {(a["pk"], a["sk"]): a for a in world.all_attempts()}

            # the hours-late (and any other undelivered) events now arrive
            late_pending = len(bus.queue)
            world.clock.advance(7 * 3600)
            bus.deliver_due(world.clock())
            while bus.queue:  # throttled ones retry
                world.clock.advance(60)
                bus.deliver_due(world.clock())
            after_late = {(a["pk"], a["sk"]): a for a in world.all_attempts()}
        finally:
            wiring.sweeper = original_sweeper

        statuses = Counter(a["status"] for a in final.values())
        closed_by = Counter(a.get("closed_by", "-") for a in final.values())
        leases = {c: world.remediator.records.leases(ClusterRef(c))[0] for c in TRIGGERS}
        claims = [
            i["pk"] for i in world.table.scan()["Items"] if i["sk"] == "HEAD" and i.get("active_attempt") is not None
        ]
        commands = Counter(node for ids in world.ssm.sent_to() for node in ids)
        throttled = world.ssm.throttled.get("GetCommandInvocation", 0)
        calls = world.ssm.calls.get("GetCommandInvocation", 0)
        summary = (
            f"{len(fleet.kind_of)} nodes ({', '.join(f'{c}: {t} x{n}' for c, (t, n) in TRIGGERS.items())}), "
            f"{len(final)} attempts, {sum(commands.values())} node commands; status events {bus.counts['emitted']}: "
            f"dropped {bus.counts['dropped']}, duplicated {bus.counts['duplicated']}, hours late {bus.counts['late']} "
            f"({late_pending} still undelivered when settled), InProgress after the final status "
            f"{bus.counts['handled-stale']}, handler retries after throttling "
            f"{bus.counts['retried']}; GetCommandInvocation throttled {throttled}/{calls}; reconciler passes "
            f"{passes} repaired {dict(repaired)}; settled after {settled_after / 60:.0f} min simulated; "
            f"peak nodes running per cluster {dict(fleet.peak_running)}, peak leases {dict(fleet.peak_leases)} "
            f"(limit {LIMIT}); statuses {dict(statuses)}; closed by {dict(closed_by)}; "
            f"leases left {sum(len(v) for v in leases.values())}, claims left {len(claims)}"
        )
        print(summary)

        # the faults really happened
        assert bus.counts["dropped"] >= 50, summary
        assert bus.counts["duplicated"] >= 50, summary
        assert bus.counts["late"] >= 20, summary
        assert bus.counts["handled-stale"] >= 5, summary  # out of order
        assert throttled >= 20, summary
        assert repaired["throttled"] >= 1, summary
        assert sum(v for k, v in repaired.items() if k.startswith("to_")) >= 50, summary
        # every node: one attempt, sent once, final and matching what the node reported
        assert len(final) == len(fleet.kind_of), summary
        assert set(commands.values()) == {1}, summary
        wrong = []
        for (node, _), attempt in final.items():
            kind = fleet.kind_of[node]
            status, reason = BEHAVIOURS[kind]
            ok = attempt["status"] == status and reason in attempt.get("reason", "")
            if kind in ("failure-line", "failed", "success"):
                printed = "success" if kind == "success" else "failure"
                ok = ok and (attempt.get("node_result") or {}).get("result") == printed
            if not ok:
                wrong.append((node, kind, attempt["status"], attempt.get("reason"), attempt.get("closed_by")))
        assert not wrong, f"{len(wrong)} records do not match their node, e.g. {wrong[:3]}; {summary}"
        # nothing held, the limit held at every send
        assert not any(leases.values()), summary
        assert not claims, summary
        assert max(fleet.peak_running.values()) <= LIMIT, summary
        assert max(fleet.peak_leases.values()) <= LIMIT, summary
        assert min(fleet.peak_leases.values()) == LIMIT, f"the limit was reached in every cluster; {summary}"
        # the late events changed nothing
        assert late_pending >= 20, summary
        assert after_late == final, summary
