"""Start, dispatch and wait: the remediation flow shared by every trigger.

start()     one attempt record per target (conditional put: redelivery is a no-op), then
            nodes whose SSM agent is Online are dispatched, the others wait.
dispatch()  claim the node (HEAD item), mark the attempt with a send batch id, SendCommand in
            batches of 50, record the CommandId. A crash between SendCommand and the record is
            recovered on redelivery by finding the command through its comment (the batch id).
recheck()   a queued node whose agent may be Online by now: send, wait again, or give up.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from eks_ca_remediator import __version__, telemetry
from eks_ca_remediator.adapters.ec2 import Ec2Reader, Instance
from eks_ca_remediator.adapters.notify import Notifier
from eks_ca_remediator.adapters.queue import AgentWaitQueue, DelayQueue
from eks_ca_remediator.adapters.records import OPEN, OPEN_MARK, RECONCILE_AT, Claim, RecordStore, attempt_sk
from eks_ca_remediator.adapters.ssm import BOTTLEROCKET, RunCommand
from eks_ca_remediator.decisions import (
    Disagreement,
    GiveUp,
    NoAgent,
    NotRemediable,
    SendNow,
    agent_recheck_delay,
    agent_wait_decision,
    chunks,
    node_cluster,
    node_not_remediable,
)
from eks_ca_remediator.errors import AgentNotRegistered, ConfigurationError, SendDenied
from eks_ca_remediator.logic.plans import plan_for_attempt
from eks_ca_remediator.models import AgentWaitMessage, ClusterRef, NodeKind, Plan, Status, Strategy, Target
from eks_ca_remediator.reconcile import recheck_due, result_due
from eks_ca_remediator.safety import (
    Breaker,
    cooling_down,
    in_flight_budget,
    in_flight_limit,
    live_leases,
    live_seconds,
)
from eks_ca_remediator.settings import Settings

logger = Logger(child=True)

COMMENT_PREFIX = "eks-ca-remediator batch "
# A send marked on an attempt but with no CommandId recorded after this long is retried.
STALE_SEND_SECONDS = 120
WAITING = frozenset({Status.PENDING_AGENT})
# A cluster's running-node count (percent in-flight limit) older than this is counted again.
NODE_COUNT_MAX_AGE_SECONDS = 900


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _refusal(exc: AgentNotRegistered | SendDenied) -> str:
    if isinstance(exc, SendDenied):
        return (
            "IAM denied SendCommand: the node carries none of the tags naming an enrolled cluster "
            "that the send policy allows (README: node recognition)"
        )
    return "SSM agent not registered (InvalidInstanceId)"


@dataclass
class Remediator:
    settings: Settings
    records: RecordStore
    run_command: RunCommand
    ec2: Ec2Reader
    queue: AgentWaitQueue | None
    clock: Callable[[], float]
    # Central mode: the member account whose nodes this Remediator acts on (None: our own).
    account: str | None = None
    # The sweep queue: results of a rollout's nodes queue its next sweep pass (logic/rollout.py).
    sweep_queue: DelayQueue | None = None
    # The deployment's SNS topic (ALARM_TOPIC_ARN): a change of trust and a rollout's halt, in words.
    notifier: Notifier | None = None

    def cluster(self, name: str) -> ClusterRef:
        """The cluster `name` of this Remediator's account: the key of its state (models.ClusterRef)."""
        return ClusterRef(name, self.account, self.settings.region)

    # ------------------------------------------------------------------ start

    def start(
        self,
        targets: Sequence[Target],
        plan: Plan,
        trigger_key: str,
        created_at: float,
        instances: Mapping[str, Instance] | None = None,
    ) -> list[dict[str, Any]]:
        """Create (or find, on redelivery) one attempt per target and move each one forward.

        Windows and EKS Auto Mode nodes are recorded NOT_REMEDIABLE at once, never sent to: what
        EC2 says of each node is `instances` (the caller's read of this trigger) or read here."""
        foreign = sorted({t.cluster for t in targets} - {plan.cluster})
        if foreign:
            raise ValueError(f"a plan for cluster {plan.cluster} cannot be sent to nodes of {foreign}")
        targets, unremediable = self._not_remediable(targets, instances)
        notes = [
            note
            for target, why in unremediable
            for note in self.note([target], plan, trigger_key, created_at, Status.NOT_REMEDIABLE, why.reason, why.kind)
        ]
        if not targets:
            return notes
        attempts, fresh, new = self._create_attempts(targets, plan, trigger_key, created_at, self.clock())
        if fresh:
            self._move_forward(fresh, new, plan)
        return [self.records.get_attempt(a["pk"], a["sk"]) or a for a in attempts] + notes

    def _not_remediable(
        self, targets: Sequence[Target], instances: Mapping[str, Instance] | None
    ) -> tuple[list[Target], list[tuple[Target, NotRemediable]]]:
        """(the targets to remediate, those our document must never be sent to and why)."""
        known = instances if instances is not None else self.ec2.instances([t.instance_id for t in targets])
        keep: list[Target] = []
        never: list[tuple[Target, NotRemediable]] = []
        for target in targets:
            node = known.get(target.instance_id)
            why = node and node_not_remediable(
                node.platform, node.platform_details, node.operator_managed, node.operator_principal
            )
            if why:
                never.append((target, why))
                logger.info("not remediable: not sent", instance_id=target.instance_id, node_kind=why.kind.value)
            else:
                keep.append(target)
        return keep, never

    def _create_attempts(
        self, targets: Sequence[Target], plan: Plan, trigger_key: str, created_at: float, now: float
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[str]]:
        """Create (or find, on redelivery) one attempt per target. Returns them all, those to move
        forward (created now, or still waiting for an agent with no command sent), and the instance
        ids whose attempt this call created; the others are duplicate triggers."""
        attempts: list[dict[str, Any]] = []
        fresh: list[dict[str, Any]] = []
        new: set[str] = set()
        for target in targets:
            created, item = self.records.create_attempt(self._new_attempt(target, plan, trigger_key, created_at, now))
            attempts.append(item)
            if created:
                new.add(target.instance_id)
            if created or (Status(item["status"]) in WAITING and not item.get("command_id")):
                fresh.append(item)
            else:
                logger.info("duplicate trigger: attempt already exists", instance_id=item["pk"], status=item["status"])
                telemetry.count(telemetry.REMEDIATIONS_DEDUPLICATED)
        return attempts, fresh, new

    def _move_forward(self, fresh: list[dict[str, Any]], new: set[str], plan: Plan) -> None:
        """Send to the nodes whose SSM agent is Online (this call's attempts with `plan`, earlier ones
        with their own), queue the others to wait for their agent."""
        pings = self.run_command.ping_status([a["pk"] for a in fresh])
        online = [a for a in fresh if pings.get(a["pk"]) == "Online"]
        waiting = [a for a in fresh if pings.get(a["pk"]) != "Online"]
        self.dispatch([a for a in online if a["pk"] in new], plan)
        self._dispatch_with_own_plans([a for a in online if a["pk"] not in new])
        for attempt in waiting:
            self._wait(attempt, checks=0, delay=agent_recheck_delay(0, self.settings.agent_recheck_seconds))

    def note(
        self,
        targets: Sequence[Target],
        plan: Plan,
        trigger_key: str,
        created_at: float,
        status: Status,
        reason: str,
        node_kind: NodeKind | None = None,
    ) -> list[dict[str, Any]]:
        """Record an outcome reached without sending anything (e.g. NOT_REMEDIABLE), one item per
        target; the same conditional put as start(), so a repeated trigger records nothing twice."""
        now = self.clock()
        notes = []
        for target in targets:
            item = self._new_attempt(target, plan, trigger_key, created_at, now)
            item.update(status=status.value, reason=reason, completed_at=iso(now))
            if node_kind is not None:
                item["node_kind"] = node_kind.value
            created, stored = self.records.create_attempt(item)
            if created and node_kind is not None:
                telemetry.status_reached(status.value)
            notes.append(stored)
        return notes

    def _new_attempt(
        self, target: Target, plan: Plan, trigger_key: str, created_at: float, now: float
    ) -> dict[str, Any]:
        created = iso(created_at)
        deadline = now + self.settings.agent_wait_deadline_seconds
        cluster = self.cluster(target.cluster)
        return (
            {
                "pk": target.instance_id,
                "sk": attempt_sk(created, plan.trigger.value, trigger_key),
                "instance_id": target.instance_id,
                "cluster": cluster.key,  # the by-cluster index's key
                "cluster_name": cluster.name,
                "trigger": plan.trigger.value,
                "trigger_key": trigger_key,
                "strategy": plan.strategy.value,
                "dry_run": plan.dry_run,
                "registry_hosts": list(plan.registry_hosts),
                "canary_image": plan.canary_image,
                "fingerprint": plan.fingerprint,
                "ca_warnings": list(plan.ca_warnings),
                "ca_not_after": plan.ca_not_after,
                "remediator_version": __version__,
                "force": plan.force,
                "reason": plan.reason,
                "status": Status.PENDING_AGENT.value,
                "created_at": created,
                "updated_at": iso(now),
                "agent_wait_deadline": deadline,
                "expires_at": int(now + self.settings.record_ttl_days * 86400),
                OPEN_MARK: OPEN,  # in the open-attempts index until a final status is written
                RECONCILE_AT: recheck_due(deadline),
            }
            | ({"account": self.account} if self.account else {})
            | ({"region": cluster.region} if cluster.region else {})
        )

    # ------------------------------------------------------------------ agent wait

    def _wait(self, attempt: dict[str, Any], checks: int, delay: int) -> None:
        if self.queue is None:
            raise ConfigurationError("AGENT_WAIT_QUEUE_URL is not set: nodes cannot wait for their SSM agent")
        message = AgentWaitMessage(
            instance_id=attempt["pk"],
            attempt_sk=attempt["sk"],
            cluster=ClusterRef.of_record(attempt).name,
            deadline=float(attempt["agent_wait_deadline"]),
            checks=checks,
            account=self.account,
        )
        self.queue.schedule(message, delay)
        logger.info("waiting for SSM agent", instance_id=attempt["pk"], delay_seconds=delay, checks=checks)

    def recheck(self, messages: Sequence[AgentWaitMessage]) -> None:
        """Re-check queued nodes: send to those now Online, wait again, or give up past the deadline."""
        now = self.clock()
        live = []
        for message in messages:
            attempt = self.records.get_attempt(message.instance_id, message.attempt_sk)
            if attempt is None:
                raise ConfigurationError(f"agent-wait message for unknown attempt {message.attempt_sk}")
            if Status(attempt["status"]) in WAITING and not attempt.get("command_id"):
                live.append((message, attempt))
        if not live:
            return
        pings = self.run_command.ping_status([m.instance_id for m, _ in live])
        states = {i: inst.state for i, inst in self.ec2.instances([m.instance_id for m, _ in live]).items()}
        ready: list[dict[str, Any]] = []
        for message, attempt in live:
            state = states.get(message.instance_id, "terminated")
            decision = agent_wait_decision(
                pings.get(message.instance_id),
                state,
                now,
                message.deadline,
                self.settings.agent_recheck_seconds,
                waited=self._waited(message, now),
            )
            if isinstance(decision, SendNow):
                ready.append(attempt)
            elif isinstance(decision, NoAgent):  # not a failure of ours: no FAILED, no breaker count
                kind = NodeKind.NO_SSM_AGENT.value
                if self._finish(attempt, Status.NOT_REMEDIABLE, decision.reason, now, node_kind=kind):
                    telemetry.count(telemetry.NODES_WITHOUT_SSM_AGENT)
            elif isinstance(decision, GiveUp):
                self._finish(attempt, Status.FAILED, decision.reason, now)
            else:
                self._wait(attempt, checks=message.checks + 1, delay=decision.delay_seconds)
        self._dispatch_with_own_plans(ready)

    def _waited(self, message: AgentWaitMessage, now: float) -> float:
        """Seconds since the attempt started waiting (its deadline was set then)."""
        return max(0.0, now - (message.deadline - self.settings.agent_wait_deadline_seconds))

    @staticmethod
    def _plan_key(attempt: dict[str, Any]) -> str:
        return "|".join(
            str(attempt.get(k))
            for k in ("cluster", "trigger", "strategy", "dry_run", "registry_hosts", "canary_image", "fingerprint")
        )

    def _plan_of(self, attempt: dict[str, Any]) -> Plan:
        """Rebuild the plan of a waiting attempt, with the CA bundle as it is now."""
        return plan_for_attempt(self.settings, attempt, self.clock(), self.records)

    def _dispatch_with_own_plans(self, attempts: Sequence[dict[str, Any]]) -> None:
        """Send attempts an earlier trigger created with the plan each was created with (a later
        trigger mapping to the same attempt may carry other registry hosts or strategy)."""
        groups: dict[str, list[dict[str, Any]]] = {}
        for attempt in attempts:
            groups.setdefault(self._plan_key(attempt), []).append(attempt)
        for group in groups.values():
            self.dispatch(group, self._plan_of(group[0]))

    # ------------------------------------------------------------------ dispatch

    def dispatch(self, attempts: Sequence[dict[str, Any]], plan: Plan) -> None:
        """Send the document to every attempt's node that this attempt can claim.

        The node's claim comes before the cluster's lease: a lease is taken only by the attempt
        that holds the node, so the node's previous attempt, whose result may land meanwhile and
        end the node's lease (let_go, while it still holds the claim), never ends the lease this
        attempt counts on. An attempt that wins the claim but finds no free slot lets the claim
        go and waits."""
        if not attempts:
            return
        now = self.clock()
        attempts = self._not_paused(attempts, plan.cluster, now)
        hold = self.settings.command_timeout_seconds * 2 + 300
        claimed: list[dict[str, Any]] = []
        for attempt in attempts:
            claim = self.records.claim(attempt["pk"], attempt["sk"], now, hold, self._finished_before(attempt, now))
            if claim.won:
                claimed.append(attempt)
            else:
                self._finish(attempt, Status.SKIPPED, self._lost_claim(claim, now), now)
        batch_id = uuid.uuid4().hex[:16]
        leased = self._within_in_flight_limit(claimed, plan.cluster, now)
        to_send = [a for a in leased if self._mark_sending(a, batch_id, now)]
        for batch in chunks(to_send, 50):
            self._send_batch(batch, plan, batch_id)

    def open_breaker(self, cluster: str, now: float) -> Breaker | None:
        """The cluster's circuit breaker if it is open now (automatic triggers pause), else None."""
        ref = self.cluster(cluster)
        breaker = Breaker.from_item(ref.key, self.records.breaker(ref))
        return breaker if breaker.is_open(now) else None

    def in_flight_room(self, cluster: str, now: float) -> tuple[int, int]:
        """(how many more of the cluster's nodes may be sent to now, the cluster's in-flight limit)."""
        limit = self.in_flight_limit(cluster, now)
        leases, _ = self.records.leases(self.cluster(cluster))
        return in_flight_budget(len(live_leases(leases, now)), limit), limit

    def in_flight_limit(self, cluster: str, now: float) -> int:
        """MAX_IN_FLIGHT_PER_CLUSTER, or MAX_IN_FLIGHT_PERCENT of the cluster's running nodes if
        lower. That count is kept on the cluster's item (the one holding its breaker): every sweep
        pass writes it; past NODE_COUNT_MAX_AGE_SECONDS it is counted here again."""
        settings = self.settings
        running: int | None = None
        if settings.max_in_flight_percent:
            item = self.records.breaker(self.cluster(cluster)) or {}
            running = item.get("running_nodes")
            if running is None or now - float(item.get("nodes_counted_at", 0)) > NODE_COUNT_MAX_AGE_SECONDS:
                running = self.count_running_nodes(cluster, now)
        return in_flight_limit(settings.max_in_flight_per_cluster, settings.max_in_flight_percent, running)

    def running_nodes(self, cluster: str) -> list[str]:
        """Instance ids of the cluster's running nodes (EC2, by the tags nodes carry)."""
        return self.cluster_nodes(cluster)[0]

    def cluster_nodes(self, cluster: str) -> tuple[list[str], list[tuple[str, Disagreement]]]:
        """The cluster's running nodes: those that are its nodes, and those whose tags also name
        another cluster (never remediated; skip_disagreeing records them)."""
        nodes: list[str] = []
        disagreeing: list[tuple[str, Disagreement]] = []
        for node in self.ec2.running_cluster_nodes(cluster):
            found = node_cluster(node.tags, [cluster])
            if found == cluster:
                nodes.append(node.instance_id)
            elif isinstance(found, Disagreement):
                disagreeing.append((node.instance_id, found))
        return nodes, disagreeing

    def skip_disagreeing(
        self, nodes: Sequence[tuple[str, Disagreement]], plan: Plan, trigger_key: str, created_at: float
    ) -> list[dict[str, Any]]:
        """Record SKIPPED, with the reason naming each cluster, every node whose tags name more
        than one cluster: which one it belongs to is not ours to guess (one record per trigger)."""
        records = []
        for instance_id, disagreement in nodes:
            logger.warning("node tags name different clusters", instance_id=instance_id, reason=disagreement.reason)
            target = Target(instance_id=instance_id, cluster=disagreement.cluster)
            records += self.note([target], plan, trigger_key, created_at, Status.SKIPPED, disagreement.reason)
        return records

    def count_running_nodes(self, cluster: str, now: float, nodes: Sequence[str] | None = None) -> int:
        """Count (or take) the cluster's running nodes and keep the count for the percent limit."""
        count = len(self.running_nodes(cluster) if nodes is None else nodes)
        self.records.record_node_count(self.cluster(cluster), count, now)
        return count

    def _finished_before(self, attempt: dict[str, Any], now: float) -> float | None:
        """The node's last result must be older than this for the attempt to be sent (its
        cooldown, safety.py); None: no cooldown for this attempt (forced, or cooldown off)."""
        cooldown = self.settings.instance_cooldown_seconds
        return None if attempt.get("force") or not cooldown else now - cooldown

    def _lost_claim(self, claim: Claim, now: float) -> str:
        cooldown = self.settings.instance_cooldown_seconds
        if not claim.in_flight and cooling_down(claim.last_finished_at, now, cooldown):
            ago = now - (claim.last_finished_at or now)
            return f"cooldown: the node's last attempt finished {ago:.0f} s ago (cooldown {cooldown} s)"
        return f"another remediation is in flight ({claim.holder})"

    def _not_paused(self, attempts: Sequence[dict[str, Any]], cluster: str, now: float) -> list[dict[str, Any]]:
        """The attempts that may be sent while the cluster's circuit breaker is as it is: all when
        it is closed, only forced ones while it is open (the others wait, never dropped)."""
        breaker = self.open_breaker(cluster, now)
        if breaker is None:
            return list(attempts)
        paused = [a for a in attempts if not a.get("force")]
        if paused:
            telemetry.count(telemetry.CIRCUIT_BREAKER_OPEN)
            logger.warning("circuit breaker open: automatic remediations paused", cluster=cluster, nodes=len(paused))
        for attempt in paused:
            self._defer(attempt, f"{breaker.why()}: waiting until it closes", now)
        return [a for a in attempts if a.get("force")]

    def _within_in_flight_limit(
        self, claimed: Sequence[dict[str, Any]], cluster: str, now: float
    ) -> list[dict[str, Any]]:
        """The claimed attempts that get a lease on a slot of the cluster's in-flight limit; the
        others let their claim go and wait (re-queued), never dropped."""
        if not claimed:
            return []
        limit = self.in_flight_limit(cluster, now)
        until = now + live_seconds(self.settings.agent_wait_deadline_seconds, self.settings.command_timeout_seconds)
        leased = set(self.records.take_leases(self.cluster(cluster), [a["pk"] for a in claimed], limit, now, until))
        for attempt in claimed:
            if attempt["pk"] not in leased:
                self.records.release(attempt["pk"], attempt["sk"])
                self._defer(attempt, f"cluster {cluster} has {limit} remediations in flight (the limit): waiting", now)
        return [a for a in claimed if a["pk"] in leased]

    def _defer(self, attempt: dict[str, Any], reason: str, now: float) -> None:
        """Keep a node waiting for a safety limit: a fresh agent-wait deadline, re-checked later."""
        deadline = now + self.settings.agent_wait_deadline_seconds
        updated = self.records.update_attempt(
            attempt["pk"],
            attempt["sk"],
            {
                "waiting_for": reason,
                "agent_wait_deadline": deadline,
                RECONCILE_AT: recheck_due(deadline),
                "updated_at": iso(now),
            },
            only_if_status_in=WAITING,
        )
        if updated is not None:
            self._wait(updated, checks=0, delay=self.settings.safety_recheck_seconds)

    def _mark_sending(self, attempt: dict[str, Any], batch_id: str, now: float) -> bool:
        """Mark the attempt as being sent in batch_id; recover a send an earlier run did not record.

        The attempt in hand was read (or written) by this invocation; it is read again only when it
        shows an earlier send, whose progress matters. The compare-and-set below refuses the mark
        when anyone has marked or recorded a send since."""
        fresh = attempt
        if attempt.get("send_batch") or attempt.get("command_id"):
            fresh = self.records.get_attempt(attempt["pk"], attempt["sk"]) or attempt
        if fresh.get("command_id"):
            return False
        earlier = fresh.get("send_batch")
        if earlier:
            if self._recover_send(attempt, fresh, now):
                return False
            if now - float(fresh.get("send_started_at", 0)) < STALE_SEND_SECONDS:
                logger.info("another invocation is sending this attempt", instance_id=attempt["pk"])
                return False
        updated = self.records.update_attempt(
            attempt["pk"],
            attempt["sk"],
            {"send_batch": batch_id, "send_started_at": now, "updated_at": iso(now)},
            only_if_status_in=WAITING,
            # compare-and-set: of concurrent invocations that read the same send_batch, one wins
            only_if_unchanged={"send_batch": earlier or None, "command_id": None},
        )
        return updated is not None and updated.get("send_batch") == batch_id

    def _recover_send(self, attempt: dict[str, Any], fresh: dict[str, Any], now: float) -> str | None:
        """A send marked on the attempt (send_batch) whose CommandId was never recorded: look for
        the command by the batch's comment (ListCommands) and record it SENT; its CommandId, or
        None when no such command went out."""
        batch = fresh.get("send_batch")
        if not batch:
            return None
        found = self.run_command.commands_with_comment(attempt["pk"], COMMENT_PREFIX + batch)
        if not found:
            return None
        self._record_sent(attempt, found[0], batch, fresh, now)
        logger.warning("recovered a command sent but not recorded", instance_id=attempt["pk"], command_id=found[0])
        return found[0]

    def sent_unrecorded(self, attempt: dict[str, Any]) -> dict[str, Any] | None:
        """Before a waiting attempt is recorded as never sent (the reconciler): the attempt as
        recorded SENT when a command of its send did go out unrecorded, else None."""
        if not self._recover_send(attempt, attempt, self.clock()):
            return None
        return self.records.get_attempt(attempt["pk"], attempt["sk"])

    def _send_batch(self, batch: list[dict[str, Any]], plan: Plan, batch_id: str) -> None:
        # Bottlerocket nodes take the CA through their API (settings.pki): no containerd restart
        # or hosts.toml of ours applies there, so they are sent strategy auto, in a command of
        # their own.
        bottlerocket = [a for a in batch if self.run_command.platform_name(a["pk"]) == BOTTLEROCKET]
        if bottlerocket and plan.strategy is not Strategy.AUTO:
            linux = [a for a in batch if a not in bottlerocket]
            if linux:
                self._send_batch(linux, plan, batch_id)
            self._send_batch(bottlerocket, plan.model_copy(update={"strategy": Strategy.AUTO}), batch_id)
            return
        ids = [a["pk"] for a in batch]
        try:
            command_id = self.run_command.send(
                ids,
                plan.document_parameters(),
                COMMENT_PREFIX + batch_id,
                self.settings.command_timeout_seconds,
                cluster=plan.cluster,
            )
        except (AgentNotRegistered, SendDenied) as exc:
            if len(batch) == 1:
                self._finish(batch[0], Status.FAILED, _refusal(exc), self.clock())
                return
            for attempt in batch:  # find the node(s) SSM or IAM rejects; send the others alone
                self._send_batch([attempt], plan, batch_id)
            return
        except ClientError as exc:
            # Throttled past botocore's retries, or another AWS error: the send mark must not make
            # the redelivered trigger wait STALE_SEND_SECONDS ("another invocation is sending")
            # and return - that would strand the attempt. Age the mark; the retry first looks for
            # the command by its comment, then sends. Then raise: Lambda retries, then dead-letters.
            for attempt in batch:
                self.records.update_attempt(
                    attempt["pk"],
                    attempt["sk"],
                    {"send_started_at": 0, "send_error": exc.response["Error"]["Code"]},
                    only_if_status_in=WAITING,
                )
            raise
        now = self.clock()
        for attempt in batch:
            sent = {"fingerprint": plan.fingerprint, "strategy_sent": plan.strategy.value}
            platform = self.run_command.platform_name(attempt["pk"])
            self._record_sent(attempt, command_id, batch_id, sent | ({"platform": platform} if platform else {}), now)
            waiting_since = float(attempt["agent_wait_deadline"]) - self.settings.agent_wait_deadline_seconds
            telemetry.seconds(telemetry.AGENT_WAIT_SECONDS, now - waiting_since)
        telemetry.count(telemetry.REMEDIATIONS_SENT, len(ids))
        logger.info("command sent", command_id=command_id, instances=len(ids), batch_id=batch_id)

    def _record_sent(
        self, attempt: dict[str, Any], command_id: str, batch_id: str, sent: dict[str, Any], now: float
    ) -> None:
        fields = {
            **{k: sent[k] for k in ("strategy_sent", "platform") if k in sent},
            "status": Status.SENT.value,
            "command_id": command_id,
            "send_batch": batch_id,
            "fingerprint": sent.get("fingerprint", attempt.get("fingerprint", "")),
            "sent_at": iso(now),
            "updated_at": iso(now),
            # (a SENT record written late, by the send recovery, is overdue as early as the send)
            RECONCILE_AT: result_due(now, self.settings.command_timeout_seconds),
        }
        self.records.update_attempt(attempt["pk"], attempt["sk"], fields, only_if_status_in=WAITING)

    def let_go(self, attempt: dict[str, Any], finished_at: float | None = None) -> None:
        """The attempt is over: release its claim on the node (with `finished_at`, the node's
        cooldown starts then) and its lease on a slot of the cluster's in-flight limit.

        The lease is the node's, not the attempt's: it is ended only while this attempt still holds
        the node's claim, and before the claim is released. So a duplicate or late result (a
        redelivered status event, or the reconciler and the event racing) frees nothing that a
        later attempt on the node holds, and a result whose first handling died half-way is
        completed by its redelivery."""
        if self.records.holds(attempt["pk"], attempt["sk"]):
            self.records.end_lease(ClusterRef.of_record(attempt), attempt["pk"])
        self.records.release(attempt["pk"], attempt["sk"], finished_at=finished_at)

    def wait_again(self, attempt: dict[str, Any]) -> None:
        """Queue an agent-wait re-check of a waiting attempt now (the reconciler, when its own
        re-check was lost): the same message its trigger queued, with the attempt's deadline."""
        self._wait(attempt, checks=0, delay=0)

    def fail_unsent(self, attempt: dict[str, Any], reason: str, **fields: Any) -> bool:
        """Record a waiting attempt FAILED without a command; False when it was no longer waiting."""
        return self._finish(attempt, Status.FAILED, reason, self.clock(), **fields)

    def _finish(self, attempt: dict[str, Any], status: Status, reason: str, now: float, **extra: Any) -> bool:
        finished = self.records.update_attempt(
            attempt["pk"],
            attempt["sk"],
            {"status": status.value, "reason": reason, "completed_at": iso(now), "updated_at": iso(now), **extra},
            only_if_status_in=WAITING,
        )
        if finished is not None:
            telemetry.status_reached(status.value)
        if status is not Status.SKIPPED:  # (a SKIPPED attempt never held the node: another one may)
            self.let_go(attempt)
        logger.info(
            "attempt finished without a command",
            instance_id=attempt["pk"],
            status=status.value,
            reason=reason,
        )
        return finished is not None
