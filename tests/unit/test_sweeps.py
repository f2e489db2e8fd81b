"""Sweep decisions and source matching (pure)."""

from __future__ import annotations

import pytest
from eks_ca_remediator.sources import SourceChange, SourceKind, clusters_using, parse_source
from eks_ca_remediator.sweeps import NodeState, SweepJob, node_state, plan_sweep

NOW = 1_800_000_000.0
FP, OLD = "a" * 64, "b" * 64


def attempt(
    status: str, fingerprint: str, updated: str = "2027-01-15T08:00:00Z", key: str = "k", trigger: str = "launch"
):
    return {"status": status, "fingerprint": fingerprint, "updated_at": updated, "trigger_key": key, "trigger": trigger}


@pytest.mark.parametrize(
    ("history", "state"),
    [
        ([], NodeState.DRIFTED),
        ([attempt("SUCCEEDED", OLD)], NodeState.DRIFTED),
        ([attempt("FAILED", FP), attempt("SUCCEEDED", FP, "2027-01-15T07:00:00Z")], NodeState.CURRENT),
        # the success recorded last wins, whatever the order of the attempts
        ([attempt("SUCCEEDED", FP, "2027-01-15T07:00:00Z"), attempt("SUCCEEDED", OLD)], NodeState.DRIFTED),
        ([attempt("SENT", FP)], NodeState.IN_FLIGHT),
        ([attempt("PENDING_AGENT", OLD)], NodeState.IN_FLIGHT_STALE),
        ([attempt("SENT", OLD, "2027-01-14T00:00:00Z")], NodeState.DRIFTED),  # abandoned long ago
        ([attempt("FAILED", FP, key="sweep-1", trigger="sweep")], NodeState.DONE),
        ([attempt("SENT", FP, key="sweep-1", trigger="sweep")], NodeState.IN_FLIGHT),
    ],
)
def test_node_state(history, state):
    assert node_state(history, FP, "sweep-1", NOW, live_seconds=3600) is state


def test_plan_sweep_respects_the_in_flight_limit_in_instance_order():
    states = {f"i-{n:08x}": NodeState.DRIFTED for n in range(10)} | {"i-ffffffff": NodeState.IN_FLIGHT_STALE}
    plan = plan_sweep(states, budget=3)  # the Remediator's in-flight gate leaves room for 3
    assert plan.to_start == ["i-00000000", "i-00000001", "i-00000002"]
    assert plan.deferred == 7
    assert plan.needs_another_pass
    assert not plan_sweep({"i-00000001": NodeState.CURRENT}, 4).needs_another_pass


def test_sweep_id_is_deterministic_per_origin_cluster_and_bundle():
    job = SweepJob(origin="evt-1", cluster="prod-a", started_at=NOW, fingerprint=FP)
    assert (
        job.sweep_id
        == SweepJob(origin="evt-1", cluster="prod-a", started_at=NOW + 5, fingerprint=FP, passes=3).sweep_id
    )
    assert job.sweep_id != job.model_copy(update={"fingerprint": OLD}).sweep_id
    assert job.sweep_id != job.model_copy(update={"cluster": "prod-b"}).sweep_id


def test_change_events_match_sources_by_name_or_arn():
    secret_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:pki/eks-ca-AbCdEf"
    sources = {
        "a": (parse_source("ssm:/pki/bundle"), parse_source("s3://pki-bundles/eks/ca.pem")),
        "b": (parse_source(f"secretsmanager:{secret_arn}"),),
        "c": (parse_source("ssm:arn:aws:ssm:us-east-1:123456789012:parameter/pki/bundle"),),
    }
    assert clusters_using(sources, SourceChange(SourceKind.SSM, "/pki/bundle")) == ["a", "c"]
    assert clusters_using(sources, SourceChange(SourceKind.S3, "pki-bundles/eks/ca.pem")) == ["a"]
    assert clusters_using(sources, SourceChange(SourceKind.SECRETS_MANAGER, "pki/eks-ca")) == ["b"]
    assert clusters_using(sources, SourceChange(SourceKind.SECRETS_MANAGER, secret_arn)) == ["b"]
    assert clusters_using(sources, SourceChange(SourceKind.SSM, "/other")) == []
