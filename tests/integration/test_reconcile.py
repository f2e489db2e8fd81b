"""The reconciler: an attempt whose status event never arrives still gets a final, true record.

EventBridge delivers AWS service events on a best-effort basis
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-service-event-delivery-level.html), and a rule's
target may be throttled or dead-lettered (rule-dlq.html). These tests drop the events and let the
real Reconcile handler ask the fake SSM for the truth.
"""

from __future__ import annotations

import pytest
from eks_ca_remediator import telemetry
from eks_ca_remediator.models import ClusterRef
from eks_ca_remediator.reconcile import EXECUTION_TIMEOUT_SECONDS, MAX_REQUEUES, result_due
from on_command_status import handler as on_command_status
from on_launch import handler as on_launch
from remediate import handler as remediate
from ssm_document import document_content

from tests.fakes.world import ROOT, LambdaContext, World, node_output

DUE = result_due(0, 600)  # seconds after the send (COMMAND_TIMEOUT_SECONDS default 600)


def sent_node(world: World, **kwargs) -> tuple[str, str]:
    [node] = world.add_nodes(**kwargs)
    on_launch(world.launch_event(node), LambdaContext())
    [command] = world.ssm.commands
    return node, command["CommandId"]


def lease_holders(world: World, cluster: str = "prod-a") -> list[str]:
    return sorted(world.remediator.records.leases(ClusterRef(cluster))[0])


def head(world: World, node: str) -> dict:
    return world.table.get_item(Key={"pk": node, "sk": "HEAD"})["Item"]


def test_execution_timeout_is_the_documents_own():
    [step] = document_content((ROOT / "template.yaml").read_text())["mainSteps"]
    assert int(step["inputs"]["timeoutSeconds"]) == EXECUTION_TIMEOUT_SECONDS


def test_a_dropped_success_event_is_recorded_from_ssm_with_the_nodes_result_line(world):
    node, command_id = sent_node(world)
    world.ssm.finish(command_id, node, "Success", node_output(restarted=True), stderr="restarting containerd")
    # ... and the status event never arrives
    world.clock.advance(DUE - 60)
    assert world.reconcile()["overdue"] == 0, "not overdue yet: left to its status event"
    assert world.attempts(node)[0]["status"] == "SENT"
    world.clock.advance(61)
    telemetry.drain()
    result = world.reconcile()
    assert (result["overdue"], result["repaired"], result["to_SUCCEEDED"]) == (1, 1, 1)
    [record] = world.attempts(node)
    assert record["status"] == "SUCCEEDED"
    assert record["closed_by"] == "reconciler"
    assert record["node_result"]["result"] == "success"
    assert record["restarted"] is True
    assert record["stderr_tail"] == "restarting containerd"
    assert "open_attempt" not in record, "a final attempt leaves the open-attempts index"
    assert lease_holders(world) == []
    assert "active_attempt" not in head(world, node)
    assert world.reconcile()["overdue"] == 0, "nothing left to reconcile"


def test_reconciled_repairs_are_counted_for_the_metric(world):
    node, command_id = sent_node(world)
    world.ssm.finish(command_id, node, "Failed", node_output("failure", reason="verify failed"))
    world.clock.advance(DUE + 1)
    from reconcile import handler, metrics

    captured: list[tuple[str, float]] = []
    real = metrics.add_metric
    metrics.add_metric = lambda name, unit, value: captured.append((name, value))  # type: ignore[method-assign]
    try:
        world.reconcile()
    finally:
        metrics.add_metric = real  # type: ignore[method-assign]
    assert handler is not None
    assert (telemetry.ATTEMPTS_RECONCILED, 1) in captured
    assert (telemetry.REMEDIATIONS_FAILED, 1) in captured
    [record] = world.attempts(node)
    assert (record["status"], record["reason"]) == ("FAILED", "verify failed")


def test_a_command_still_running_on_a_live_instance_is_left_alone(world):
    node, command_id = sent_node(world)
    world.ssm.progress(command_id, node)
    world.clock.advance(DUE + 1)
    result = world.reconcile()
    assert (result["overdue"], result["running"], result.get("repaired", 0)) == (1, 1, 0)
    [record] = world.attempts(node)
    assert record["status"] == "SENT"
    assert lease_holders(world) == [node], "its slot stays taken while it runs"
    world.ssm.finish(command_id, node, "Success", node_output())
    world.clock.advance(300)
    assert world.reconcile()["to_SUCCEEDED"] == 1
    assert world.attempts(node)[0]["status"] == "SUCCEEDED"


def test_a_command_ssm_no_longer_knows_is_timed_out_with_that_reason(world):
    node, command_id = sent_node(world)
    world.ssm.forget(command_id)
    world.clock.advance(DUE + 1)
    world.reconcile()
    [record] = world.attempts(node)
    assert record["status"] == "TIMED_OUT"
    assert f"no status event arrived for command {command_id}" in record["reason"]
    assert "SSM no longer knows it" in record["reason"]
    assert lease_holders(world) == []


@pytest.mark.parametrize("ssm_knows", [True, False])
def test_an_instance_that_is_gone_is_failed_with_that_reason_and_does_not_trip_the_breaker(world, ssm_knows):
    node, command_id = sent_node(world)
    if not ssm_knows:
        world.ssm.forget(command_id)
    world.ec2.terminate_instances(InstanceIds=[node])
    world.clock.advance(DUE + 1)
    world.reconcile()
    [record] = world.attempts(node)
    assert record["status"] == "FAILED"
    assert record["reason"].startswith("instance is terminated: no status event arrived")
    assert ("Pending" in record["reason"]) == ssm_knows
    assert world.remediator.records.breaker(ClusterRef("prod-a")) is None, "a vanished node says nothing about the fix"
    assert lease_holders(world) == []


def test_the_status_event_landing_after_the_reconciler_changes_nothing_and_frees_no_new_lease(world):
    node, command_id = sent_node(world)
    late_event = world.ssm.finish(command_id, node, "Success", node_output())
    world.clock.advance(DUE + 1)
    world.reconcile()
    [first] = world.attempts(node)
    # a new attempt on the node takes the node's claim and a lease
    world.clock.advance(world.settings.instance_cooldown_seconds + 1)
    remediate({"instance_id": node, "reason": "again"}, LambdaContext())
    assert lease_holders(world) == [node]
    assert on_command_status(late_event, LambdaContext())["action"] == "duplicate"
    assert on_command_status(late_event, LambdaContext())["action"] == "duplicate"
    assert lease_holders(world) == [node], "the new attempt keeps its slot"
    assert head(world, node)["active_attempt"] != first["sk"]
    now_first = next(a for a in world.attempts(node) if a["sk"] == first["sk"])
    assert now_first == first, "the final record is never overwritten"


def test_the_reconciler_after_the_status_event_finds_nothing_to_do(world):
    node, command_id = sent_node(world)
    event = world.ssm.finish(command_id, node, "Success", node_output())
    world.clock.advance(DUE + 1)
    on_command_status(event, LambdaContext())
    [record] = world.attempts(node)
    assert record["closed_by"] == "status-event"
    assert world.reconcile()["overdue"] == 0
    assert world.attempts(node) == [record]


def test_reconciler_and_status_event_racing_on_one_attempt_record_it_once(world, monkeypatch):
    """The reconciler read the attempt open; the status event records it before the reconciler writes."""
    node, command_id = sent_node(world)
    event = world.ssm.finish(command_id, node, "Success", node_output())
    world.clock.advance(DUE + 1)
    records = world.remediator.records
    overdue = records.overdue

    def read_then_event_lands(now, limit):
        found = overdue(now, limit)
        on_command_status(event, LambdaContext())
        return found

    monkeypatch.setattr(records, "overdue", read_then_event_lands)
    result = world.reconcile()
    assert (result["overdue"], result["raced"], result.get("repaired", 0)) == (1, 1, 0)
    [record] = world.attempts(node)
    assert record["closed_by"] == "status-event"
    assert lease_holders(world) == []


def test_throttled_get_command_invocation_leaves_the_attempt_for_the_next_pass(world):
    node, command_id = sent_node(world)
    world.ssm.finish(command_id, node, "Success", node_output())
    world.clock.advance(DUE + 1)
    world.ssm.throttle["GetCommandInvocation"] = 1
    result = world.reconcile()
    assert (result["throttled"], result.get("repaired", 0)) == (1, 0)
    assert world.attempts(node)[0]["status"] == "SENT"
    world.clock.advance(300)
    assert world.reconcile()["to_SUCCEEDED"] == 1


def test_a_lost_agent_wait_recheck_is_queued_again_and_the_node_is_sent(world):
    [node] = world.add_nodes(agent_online_after=None)  # registered, not Online
    on_launch(world.launch_event(node), LambdaContext())
    world.queue.pending.clear()  # the re-check message was dead-lettered
    world.ssm.agents[node] = world.clock()  # the agent comes Online meanwhile
    deadline = float(world.attempts(node)[0]["agent_wait_deadline"])
    world.clock.now = deadline + 899
    assert world.reconcile()["overdue"] == 0
    world.clock.advance(2)
    assert world.reconcile()["to_PENDING_AGENT"] == 1
    world.run_agent_wait()
    assert world.ssm.sent_to() == [[node]]
    [record] = world.attempts(node)
    assert (record["status"], record["requeues"]) == ("SENT", 1)


def test_a_recheck_lost_every_time_ends_failed_without_a_command(world):
    [node] = world.add_nodes(agent_online_after=None)
    on_launch(world.launch_event(node), LambdaContext())
    for _ in range(MAX_REQUEUES + 1):
        world.queue.pending.clear()
        world.clock.advance(3600)
        world.reconcile()
    [record] = world.attempts(node)
    assert record["status"] == "FAILED"
    assert f"after {MAX_REQUEUES} re-queues" in record["reason"]
    assert world.ssm.commands == []
    assert world.reconcile()["overdue"] == 0


def test_a_malformed_schedule_event_is_refused(world):
    from eks_ca_remediator.errors import InvalidRequest
    from reconcile import handler

    with pytest.raises(InvalidRequest, match="reconciler schedule event"):
        handler({"source": "aws.events", "detail-type": "Something"}, LambdaContext())


def test_a_pass_short_of_time_leaves_the_rest_to_the_next_pass(world):
    from eks_ca_remediator import wiring
    from eks_ca_remediator.logic.reconcile import CHUNK, TIME_MARGIN_MS, reconcile

    nodes = world.add_nodes(CHUNK + 5)
    remediate({"cluster": "prod-a"}, LambdaContext())
    for (command_id, node), _ in list(world.ssm.invocations.items()):
        world.ssm.finish(command_id, node, "Success", node_output())
    world.clock.advance(DUE + 1)
    budget = iter([TIME_MARGIN_MS + 1, TIME_MARGIN_MS - 1])  # time for one chunk, then not
    result = reconcile(wiring.remediator, lambda: next(budget))
    assert (result["repaired"], result["deferred"]) == (CHUNK, 5)
    assert world.reconcile()["repaired"] == 5
    assert {a["status"] for a in world.all_attempts()} == {"SUCCEEDED"}
    assert len(world.all_attempts()) == len(nodes)


def test_only_open_attempts_are_in_the_open_index_and_a_deferred_one_stays_current():
    with World.create(MAX_IN_FLIGHT_PER_CLUSTER="1", SAFETY_RECHECK_SECONDS="60") as world:
        first, held = world.add_nodes(2)
        on_launch(world.launch_event(first), LambdaContext())
        remediate({"instance_id": first}, LambdaContext())  # the node is held: SKIPPED at once
        remediate({"instance_id": held}, LambdaContext())  # over the limit: waits
        by_status = {a["status"]: a for a in world.all_attempts()}
        assert set(by_status) == {"SENT", "SKIPPED", "PENDING_AGENT"}
        assert "open_attempt" not in by_status["SKIPPED"]
        assert by_status["SENT"]["open_attempt"] == by_status["PENDING_AGENT"]["open_attempt"] == "OPEN"
        before = by_status["PENDING_AGENT"]["reconcile_at"]
        world.run_for(61, step=61)  # re-checked, still over the limit: deferred with a new deadline
        [waiting] = [a for a in world.all_attempts() if a["status"] == "PENDING_AGENT"]
        assert waiting["reconcile_at"] > before, "a live re-check keeps it from looking lost"


def test_a_command_that_went_out_unrecorded_is_found_and_followed_not_recorded_as_never_sent(world, monkeypatch):
    """SendCommand went out, the invocation died before recording it, and its retries and agent-wait
    re-checks were lost: the reconciler finds the command (ListCommands, by the send's comment)."""
    from eks_ca_remediator.logic.remediation import Remediator

    [node] = world.add_nodes()
    monkeypatch.setattr(Remediator, "_record_sent", lambda *args: (_ for _ in ()).throw(TimeoutError("died")))
    with pytest.raises(TimeoutError):
        on_launch(world.launch_event(node), LambdaContext())
    monkeypatch.undo()
    [command] = world.ssm.commands
    [record] = world.attempts(node)
    assert (record["status"], record.get("command_id")) == ("PENDING_AGENT", None)
    for _ in range(MAX_REQUEUES + 1):  # every re-check the reconciler queues is lost too
        world.queue.pending.clear()
        world.clock.advance(3600)
        world.reconcile()
    [record] = world.attempts(node)
    assert (record["status"], record["command_id"]) == ("SENT", command["CommandId"])
    assert "nothing was sent" not in record.get("reason", "")
    assert world.ssm.sent_to() == [[node]], "found, not sent again"
    world.ssm.finish(command["CommandId"], node, "Success", node_output())
    world.clock.advance(DUE + 1)
    world.reconcile()
    [record] = world.attempts(node)
    assert (record["status"], record["closed_by"]) == ("SUCCEEDED", "reconciler")


def test_a_result_event_that_comes_before_ssm_has_the_output_waits_for_it(world):
    """The status event says Success, but GetCommandInvocation does not have the node's output
    yet: the attempt is not recorded FAILED "no parsable result line"; it waits, then gets it."""
    node, command_id = sent_node(world)
    event = world.ssm.finish(command_id, node, "Success", node_output(restarted=True), output_after=120)
    result = on_command_status(event, LambdaContext())
    assert result["action"] == "deferred"
    [record] = world.attempts(node)
    assert record["status"] == "SENT"
    assert lease_holders(world) == [node], "still in flight"
    world.clock.advance(400)  # the next reconciler passes after the output arrived
    world.reconcile()
    [record] = world.attempts(node)
    assert (record["status"], record["restarted"]) == ("SUCCEEDED", True)
    assert lease_holders(world) == []
