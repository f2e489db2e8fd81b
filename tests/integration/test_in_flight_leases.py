"""The per-cluster in-flight limit holds under concurrent triggers (leases on the cluster's slots)."""

from __future__ import annotations

from eks_ca_remediator.adapters.records import RecordStore
from eks_ca_remediator.models import ClusterRef
from eks_ca_remediator.safety import grant_leases, live_leases, live_seconds
from on_command_status import handler as on_command_status
from remediate import handler as remediate

from tests.fakes.world import LambdaContext, World, node_output

NOW = 1_000_000.0


class RacingStore(RecordStore):
    """A RecordStore whose first read of the leases lets another dispatch run to completion
    before this one writes: the interleaving two concurrent Lambda invocations can have."""

    def __init__(self, table, meanwhile) -> None:
        super().__init__(table)
        self._meanwhile = meanwhile

    def leases(self, cluster):
        read = super().leases(cluster)
        if self._meanwhile is not None:
            meanwhile, self._meanwhile = self._meanwhile, None
            meanwhile()
        return read


def test_two_concurrent_dispatches_cannot_both_take_the_last_slots(world):
    store = RecordStore(world.table)
    first = [f"i-{n:017x}" for n in range(4)]
    second = [f"i-{n:017x}" for n in range(10, 14)]
    taken: dict[str, list[str]] = {}

    def other_invocation() -> None:
        taken["first"] = store.take_leases(ClusterRef("prod-a"), first, limit=5, now=NOW, until=NOW + 600)

    racing = RacingStore(world.table, other_invocation)
    taken["second"] = racing.take_leases(ClusterRef("prod-a"), second, limit=5, now=NOW, until=NOW + 600)
    assert taken["first"] == first
    assert taken["second"] == second[:1]  # it read 0 in flight, lost the write, read 4, took 1
    leases, _ = store.leases(ClusterRef("prod-a"))
    assert sorted(leases) == sorted(first + second[:1])


def test_a_lease_ends_with_the_result_and_with_an_attempt_that_ends_without_a_command():
    with World.create(MAX_IN_FLIGHT_PER_CLUSTER="2", SAFETY_RECHECK_SECONDS="30") as world:
        nodes = world.add_nodes(3, cluster="prod-a")
        send, gone = world.ssm.send_command, []

        def node_gone_before_the_send(**kwargs):
            if not gone:  # Online at the check, gone at the send: FAILED, and no command
                gone.append(kwargs["InstanceIds"][0])
                world.ssm.deregister(gone[0])
            return send(**kwargs)

        world.ssm.send_command = node_gone_before_the_send
        remediate({"cluster": "prod-a"}, LambdaContext())
        records = world.remediator.records
        assert [a["pk"] for a in world.all_attempts() if a["status"] == "FAILED"] == gone
        [[sent]] = world.ssm.sent_to()
        assert list(records.leases(ClusterRef("prod-a"))[0]) == [sent], "the failed node's slot is free again"
        [deferred] = set(nodes) - {sent, *gone}
        world.run_for(31)  # the deferred node's re-check finds the free slot
        assert world.ssm.sent_to() == [[sent], [deferred]]
        assert sorted(records.leases(ClusterRef("prod-a"))[0]) == sorted([sent, deferred])
        world.finish_all("Success", node_output())
        assert records.leases(ClusterRef("prod-a"))[0] == {}


def test_a_lease_whose_result_never_comes_expires_after_the_longest_an_attempt_can_live():
    with World.create(MAX_IN_FLIGHT_PER_CLUSTER="1", SAFETY_RECHECK_SECONDS="60") as world:
        [lost, waiting] = world.add_nodes(2, cluster="prod-a")
        remediate({"instance_id": lost}, LambdaContext())
        remediate({"instance_id": waiting}, LambdaContext())
        assert world.ssm.sent_to() == [[lost]]
        live = live_seconds(world.settings.agent_wait_deadline_seconds, world.settings.command_timeout_seconds)
        world.run_for(live - 120, step=60)  # the status event of `lost` never arrives
        assert world.ssm.sent_to() == [[lost]], "its slot stays taken while the attempt may still be live"
        world.run_for(240, step=60)
        assert world.ssm.sent_to() == [[lost], [waiting]], "then the lease expires and the other node goes"


def test_a_redelivered_status_event_does_not_free_a_slot_twice():
    with World.create(MAX_IN_FLIGHT_PER_CLUSTER="5") as world:
        nodes = world.add_nodes(2, cluster="prod-a")
        remediate({"cluster": "prod-a"}, LambdaContext())
        [(command_id, _), *_] = world.ssm.invocations
        event = world.ssm.finish(command_id, nodes[0], "Success", node_output())
        on_command_status(event, LambdaContext())
        on_command_status(event, LambdaContext())
        assert sorted(world.remediator.records.leases(ClusterRef("prod-a"))[0]) == [nodes[1]]


def test_grant_keeps_held_leases_and_fills_free_slots_in_order():
    live = live_leases({"i-a": NOW + 10, "i-b": NOW - 1, "i-c": NOW + 5}, NOW)
    assert live == {"i-a": NOW + 10, "i-c": NOW + 5}
    assert grant_leases(["i-c", "i-d", "i-e", "i-f"], live, limit=4) == (["i-c", "i-d", "i-e"], ["i-d", "i-e"])
    assert grant_leases(["i-d"], live, limit=2) == ([], [])
    assert grant_leases(["i-a", "i-a"], live, limit=2) == (["i-a", "i-a"], [])


def test_a_finishing_attempt_does_not_end_the_lease_of_the_next_attempt_on_its_node(monkeypatch):
    """The node's result lands while a new attempt on the node is being dispatched: the new attempt
    is sent, and the cluster's in-flight count still counts it."""
    with World.create(MAX_IN_FLIGHT_PER_CLUSTER="1", SAFETY_RECHECK_SECONDS="30") as world:
        node, other = world.add_nodes(2, cluster="prod-a")
        remediate({"instance_id": node, "reason": "first"}, LambdaContext())
        [(command_id, _)] = world.ssm.invocations
        result = world.ssm.finish(command_id, node, "Success", node_output())
        records = world.remediator.records
        claim = records.claim

        def result_lands_before_the_claim(*args, **kwargs):
            monkeypatch.setattr(records, "claim", claim)
            on_command_status(result, LambdaContext())
            return claim(*args, **kwargs)

        monkeypatch.setattr(records, "claim", result_lands_before_the_claim)
        remediate({"instance_id": node, "reason": "again", "force": True}, LambdaContext())
        assert world.ssm.sent_to() == [[node], [node]]
        assert sorted(records.leases(ClusterRef("prod-a"))[0]) == [node], "the new attempt holds the one slot"
        remediate({"instance_id": other, "reason": "another node"}, LambdaContext())
        assert world.ssm.sent_to() == [[node], [node]], "the limit of 1 holds: the other node waits"
        [waiting] = world.attempts(other)
        assert waiting["status"] == "PENDING_AGENT"
        assert "remediations in flight (the limit)" in waiting["waiting_for"]
