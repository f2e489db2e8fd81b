"""Nothing is lost, read from template.yaml: every function logs to its own group with retention,
every asynchronously invoked function dead-letters, every rule and schedule has a retry policy and
a dead-letter queue, and the reconciler runs on its schedule over the sparse open-attempts index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from language_extensions import expand
from ssm_document import load_template

ROOT = Path(__file__).resolve().parents[2]
# Fn::ForEach loops expanded as CloudFormation would for two enrolled clusters.
RESOURCES: dict[str, Any] = expand(
    load_template((ROOT / "template.yaml").read_text())["Resources"], {"EnrolledClusters": ["prod-a", "prod-b"]}
)
FUNCTIONS = {n: r["Properties"] for n, r in RESOURCES.items() if r["Type"] == "AWS::Serverless::Function"}
DLQ = {"GetAtt": "DeadLetterQueue.Arn"}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_function_logs_to_its_own_group_with_retention(name):
    group = FUNCTIONS[name]["LoggingConfig"]["LogGroup"]["Ref"]
    assert RESOURCES[group]["Type"] == "AWS::Logs::LogGroup"
    assert RESOURCES[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_rule_or_schedule_target_retries_then_dead_letters_and_so_does_the_function(name):
    events = FUNCTIONS[name].get("Events", {})
    async_events = [e for e in events.values() if e["Type"] in ("EventBridgeRule", "Schedule")]
    for event in async_events:
        assert event["Properties"]["RetryPolicy"]["MaximumRetryAttempts"] == 185
        assert event["Properties"]["DeadLetterConfig"] == {"Arn": DLQ}
    if async_events:
        on_failure = FUNCTIONS[name]["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
        assert on_failure == {"Type": "SQS", "Destination": DLQ}


def test_the_reconciler_runs_on_its_schedule_over_the_open_attempts_index():
    reconcile = FUNCTIONS["ReconcileFunction"]
    assert reconcile["Events"]["Scheduled"]["Properties"]["Schedule"] == {"Ref": "ReconcileSchedule"}
    indexes = {i["IndexName"]: i for i in RESOURCES["RecordsTable"]["Properties"]["GlobalSecondaryIndexes"]}
    keys = {k["KeyType"]: k["AttributeName"] for k in indexes["open-attempts"]["KeySchema"]}
    assert keys == {"HASH": "open_attempt", "RANGE": "reconcile_at"}
    from eks_ca_remediator.adapters.records import OPEN_INDEX, OPEN_MARK, RECONCILE_AT

    assert (OPEN_INDEX, OPEN_MARK, RECONCILE_AT) == ("open-attempts", "open_attempt", "reconcile_at")


def _dashboard() -> dict[str, Any]:
    import json

    body = RESOURCES["Dashboard"]["Properties"]["DashboardBody"]
    text = body["Sub"] if isinstance(body, dict) else body
    return json.loads(text)


def test_the_dashboard_charts_only_metrics_the_product_emits_and_shows_every_alarm():
    from eks_ca_remediator import telemetry

    emitted = {v for k, v in vars(telemetry).items() if k.isupper() and isinstance(v, str)}
    charted = {
        m[1]
        for w in _dashboard()["widgets"]
        if w["type"] == "metric"
        for m in w["properties"]["metrics"]
        if len(m) > 1 and m[0] == "EksCaRemediator"
    }
    assert charted <= emitted, charted - emitted
    # the metrics a user asked to see: rollouts (issue "Safe CA changes") and nodes left out
    assert {"TrustChanged", "RolloutHalted", "NotificationsFailed", "NodesWithoutSsmAgent"} <= charted
    # and the member accounts central mode could not reach (issue "Org scale")
    assert {"SweepAccountsUnreachable", "SweepAccountListingFailed", "ReconcileAccountsUnreachable"} <= charted
    alarms = {n for n, r in RESOURCES.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    [panel] = [w for w in _dashboard()["widgets"] if w["type"] == "alarm"]
    assert {a.removeprefix("${").removesuffix(".Arn}") for a in panel["properties"]["alarms"]} == alarms


@pytest.mark.parametrize("template", ["template.yaml", "member-account.yaml"])
def test_every_rule_target_of_either_template_retries_then_dead_letters(template):
    """The rules written as AWS::Events::Rule (central intake, member forwarding), the member
    pull-failure rule among them: every target retries for 24 hours, then dead-letters."""
    resources = expand(
        load_template((ROOT / template).read_text())["Resources"],
        {"EnrolledClusters": ["prod-a"], "PullFailureSourceLogGroups": ["/eks/prod-a"]},
    )
    rules = {n: r["Properties"] for n, r in resources.items() if r["Type"] == "AWS::Events::Rule"}
    assert rules
    for name, rule in rules.items():
        for target in rule["Targets"]:
            assert target["RetryPolicy"] == {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400}, name
            assert target["DeadLetterConfig"]["Arn"] in (DLQ, {"GetAtt": "ForwardDeadLetterQueue.Arn"}), name
    if template == "template.yaml":
        assert "CentralPullFailuresRule" in rules
