"""Pure decisions: enrolment by tags, agent wait, status mapping, node result parsing."""

from __future__ import annotations

import json

import pytest
from eks_ca_remediator.decisions import (
    NO_AGENT_REASON,
    Disagreement,
    GiveUp,
    NoAgent,
    SendNow,
    WaitAgain,
    agent_wait_decision,
    chunks,
    cluster_names_from_tags,
    enrolled_cluster,
    node_cluster,
    outcome_of,
    parse_node_result,
    record_status_for,
    tail,
)
from eks_ca_remediator.models import Status


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"eks:cluster-name": "prod-a"}, "prod-a"),
        ({"eks:eks-cluster-name": "prod-a", "karpenter.sh/nodepool": "default"}, "prod-a"),
        ({"karpenter.sh/managed-by": "prod-a"}, "prod-a"),
        ({"sigs.k8s.io/cluster-api-provider-aws/cluster/prod-a": "owned"}, "prod-a"),
        ({"sigs.k8s.io/cluster-api-provider-aws/cluster/prod-a": "shared"}, None),
        # the key EKS puts on the cluster security group: no evidence nodes carry it
        ({"aws:eks:cluster-name": "prod-a"}, None),
        ({"kubernetes.io/cluster/prod-a": "owned"}, "prod-a"),
        ({"kubernetes.io/cluster/prod-a": "shared"}, "prod-a"),
        ({"alpha.eksctl.io/cluster-name": "prod-a"}, "prod-a"),
        ({"kubernetes.io/cluster/prod-a": "something-else"}, None),
        ({"eks:cluster-name": "staging"}, None),
        ({"Name": "prod-a"}, None),
        ({}, None),
    ],
)
def test_enrolled_cluster_from_the_tags_eks_karpenter_and_node_groups_set(tags, expected):
    assert enrolled_cluster(tags, ["prod-a", "prod-b"]) == expected


def test_cluster_names_collects_every_claim():
    tags = {"eks:cluster-name": "a", "kubernetes.io/cluster/b": "owned"}
    assert cluster_names_from_tags(tags) == {"a", "b"}


def test_tags_naming_two_clusters_disagree_and_the_reason_names_both():
    tags = {"eks:cluster-name": "prod-a", "kubernetes.io/cluster/prod-b": "owned"}
    decision = node_cluster(tags, ["prod-a"])
    assert isinstance(decision, Disagreement)
    assert decision.cluster == "prod-a"
    assert "prod-a (eks:cluster-name=prod-a)" in decision.reason
    assert "prod-b (kubernetes.io/cluster/prod-b=owned)" in decision.reason
    assert enrolled_cluster(tags, ["prod-a"]) is None  # never remediated
    # neither enrolled: not ours, nothing to record
    assert node_cluster(tags, ["other"]) is None


def test_tags_that_agree_are_one_claim():
    tags = {"eks:eks-cluster-name": "prod-a", "kubernetes.io/cluster/prod-a": "owned"}
    assert node_cluster(tags, ["prod-a"]) == "prod-a"


@pytest.mark.parametrize(
    "tags",
    [
        {"eks:cluster-name": "prod-a;reboot"},
        {"eks:cluster-name": "-prod"},
        {"eks:cluster-name": "a" * 101},
        {"eks:cluster-name": "prod-a\n"},
        {"kubernetes.io/cluster/prod a": "owned"},
        {"kubernetes.io/cluster/": "owned"},
        {"eks:cluster-name": ""},
    ],
)
def test_a_tag_value_that_is_not_a_cluster_name_is_ignored(tags):
    assert cluster_names_from_tags(tags) == set()
    assert node_cluster(tags, ["prod-a", *cluster_names_from_tags(tags)]) is None


def test_an_invalid_name_next_to_a_valid_one_is_no_disagreement():
    tags = {"eks:cluster-name": "prod-a", "kubernetes.io/cluster/prod a": "owned"}
    assert node_cluster(tags, ["prod-a"]) == "prod-a"


def test_chunks_of_fifty():
    assert [len(c) for c in chunks(list(range(120)))] == [50, 50, 20]
    assert list(chunks([])) == []
    with pytest.raises(ValueError, match="positive"):
        list(chunks([1], 0))


@pytest.mark.parametrize(
    ("ping", "state", "now", "expected"),
    [
        ("Online", "running", 100.0, SendNow()),
        ("ConnectionLost", "running", 100.0, WaitAgain(15)),
        (None, "running", 100.0, WaitAgain(15)),
        (None, "running", 995.5, WaitAgain(5)),  # never waits past the deadline
        (None, "running", 1000.0, NoAgent(NO_AGENT_REASON.format(seen="not registered"))),
        ("Online", "terminated", 100.0, GiveUp("instance is terminated while waiting for its SSM agent")),
        ("Online", "pending", 100.0, SendNow()),
    ],
)
def test_agent_wait_decision(ping, state, now, expected):
    assert agent_wait_decision(ping, state, now, deadline=1000.0, recheck_seconds=15) == expected


def test_agent_wait_delay_never_exceeds_the_sqs_maximum():
    decision = agent_wait_decision(None, "running", 0.0, deadline=86400.0, recheck_seconds=5000)
    assert decision == WaitAgain(900)


@pytest.mark.parametrize(
    ("ssm", "status"),
    [
        ("Pending", Status.IN_PROGRESS),
        ("InProgress", Status.IN_PROGRESS),
        ("Success", Status.SUCCEEDED),
        ("Failed", Status.FAILED),
        ("TimedOut", Status.TIMED_OUT),
        ("Cancelled", Status.FAILED),
        ("DeliveryTimedOut", Status.TIMED_OUT),
        ("Undeliverable", Status.FAILED),
    ],
)
def test_ssm_status_mapping(ssm, status):
    assert record_status_for(ssm) is status


def test_unknown_ssm_status_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="unknown SSM invocation status 'Exploded'"):
        record_status_for("Exploded")


def test_parse_node_result_takes_the_last_json_line():
    stdout = 'noise\n{"result": "failure"}\n' + json.dumps({"result": "success", "restarted": True}) + "\n"
    result = parse_node_result(stdout)
    assert result is not None
    assert result.result == "success"
    assert result.restarted is True


@pytest.mark.parametrize("stdout", ["", "plain text\n", '{"result": "maybe"}\n', "{not json\n"])
def test_parse_node_result_refuses_what_is_not_a_result(stdout):
    assert parse_node_result(stdout) is None


def test_outcomes():
    ok = '{"result": "success", "restarted": false}\n'
    assert outcome_of("Success", "Success", ok, dry_run=False).status is Status.SUCCEEDED
    assert outcome_of("Success", "Success", ok, dry_run=True).status is Status.DRY_RUN
    failed = outcome_of("Failed", "Failed", '{"result": "failure", "reason": "unknown OS"}\n', False)
    assert (failed.status, failed.reason) == (Status.FAILED, "unknown OS")
    lost = outcome_of("TimedOut", "DeliveryTimedOut", "", False)
    assert lost.status is Status.TIMED_OUT
    assert "DeliveryTimedOut" in lost.reason


def test_tail_keeps_the_end():
    assert tail("a" * 10 + "END", limit=3) == "END"
    assert tail("short") == "short"


@pytest.mark.parametrize(
    ("count", "percent", "nodes", "limit"),
    [
        (500, 0, 1000, 500),  # percent off: the count alone
        (500, 10, 1000, 100),  # 10 % of 1,000 nodes
        (50, 10, 1000, 50),  # the count is lower
        (500, 20, 23, 5),  # rounded up
        (500, 1, 3, 1),  # never below one node
        (500, 10, None, 500),  # no node count known: the count alone
    ],
)
def test_in_flight_limit_is_the_lower_of_count_and_percent(count, percent, nodes, limit):
    from eks_ca_remediator.safety import in_flight_limit

    assert in_flight_limit(count, percent, nodes) == limit
