"""Nodes our Linux document is never run on, told apart from what EC2 and SSM say of them."""

from __future__ import annotations

import pytest
from eks_ca_remediator.adapters.ec2 import _instance
from eks_ca_remediator.decisions import NoAgent, agent_wait_decision, node_not_remediable, outcome_of
from eks_ca_remediator.models import NodeKind, Status
from eks_ca_remediator.safety import breaker_effect

from tests.fakes.run_command import SKIPPED_ON_WINDOWS


def kind_of(raw: dict) -> NodeKind | None:
    node = _instance({"InstanceId": "i-0123456789abcdef0", "State": {"Name": "running"}, **raw})
    found = node_not_remediable(node.platform, node.platform_details, node.operator_managed, node.operator_principal)
    return found.kind if found else None


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ({"Platform": "windows", "PlatformDetails": "Windows"}, NodeKind.WINDOWS),
        ({"PlatformDetails": "Windows with SQL Server Standard"}, NodeKind.WINDOWS),  # Platform absent
        ({"Operator": {"Managed": True, "Principal": "eks.amazonaws.com"}}, NodeKind.EKS_AUTO_MODE),
        ({"Operator": {"Managed": True, "Principal": "scaler.lambda.amazonaws.com"}}, None),  # not EKS's
        ({"Operator": {"Managed": False}, "PlatformDetails": "Linux/UNIX"}, None),
        ({}, None),  # a Linux instance: DescribeInstances has no Platform
    ],
)
def test_what_describe_instances_says_decides_the_kind(raw, kind):
    assert kind_of(raw) == kind


def test_the_windows_reason_tells_the_user_what_to_do():
    reason = node_not_remediable("windows", "Windows", False, "").reason
    assert "Cert:\\LocalMachine\\Root" in reason
    assert "no containerd restart" in reason
    assert "containerd 2.3" in reason


def test_the_auto_mode_reason_points_to_the_node_class():
    assert "spec.certificateBundles" in node_not_remediable("", "", True, "eks.amazonaws.com").reason


def test_an_agent_that_never_comes_online_is_not_a_failure_and_names_the_likely_causes():
    decision = agent_wait_decision(None, "running", 1000.0, deadline=1000.0, recheck_seconds=15)
    assert isinstance(decision, NoAgent)
    assert "AmazonSSMManagedInstanceCore" in decision.reason
    assert "SSM endpoints" in decision.reason


def test_a_step_ssm_skipped_is_recorded_in_ssm_words_and_never_moves_the_breaker():
    outcome = outcome_of("Success", "Success", SKIPPED_ON_WINDOWS, dry_run=False)
    assert outcome.status is Status.NOT_REMEDIABLE
    assert outcome.node_kind is NodeKind.STEP_SKIPPED
    assert outcome.reason == f"SSM skipped our step: {SKIPPED_ON_WINDOWS}"
    assert breaker_effect(outcome.status) is None
    # today's behaviour for a Success with nothing of ours and no words of SSM's stays FAILED
    assert outcome_of("Success", "Success", "", dry_run=False).status is Status.FAILED
