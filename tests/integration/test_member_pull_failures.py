"""Central mode: a member account's kubelet/containerd lines reach the central PullFailure
function through member-account.yaml's forwarder and the central bus (docs/scale.md).

The forwarder is its inline code from the rendered member template; what it puts on the bus is
delivered as EventBridge delivers it: `account` is the account that put the event (PutEvents'
request has no account field), `region` the region it was put in. The central function then
acts in that account through its member role (moto's multi-account STS, tests/integration/
test_central_mode.py), and the IAM contract judges every call against template.yaml and
member-account.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eks_ca_remediator.errors import InvalidRequest
from moto.events.models import EventPattern
from pull_failure import handler

from tests.fakes import iam_contract
from tests.fakes.cloudwatch_logs import fixture, for_node, payload
from tests.fakes.forwarder import StubEvents, delivered, load
from tests.fakes.iam_contract import load as load_template
from tests.fakes.world import ACCOUNT, REGION, STACK, LambdaContext, World
from tests.integration.test_central_mode import CENTRAL, MEMBER, ROLE, add_member_node, central_world

ROOT = Path(__file__).resolve().parents[2]
BUS = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{STACK}-nodes"
AWS_FILTER = "Container Insights dataplane record (Fluent Bit systemd input + aws filter)"
JOURNALD = "Fluent Bit journald record as read (systemd input, no rename), regional hostname"
KUBELET = "kubelet structured PullImage, new Go wording, CloudWatch agent stream named by instance id"
CONTAINERD = "containerd PullImage failed, new Go wording"


def private_dns(ec2: Any, instance_id: str) -> str:
    [reservation] = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservation["Instances"][0]["PrivateDnsName"]


def line(name: str, ec2: Any, instance_id: str) -> str:
    return for_node(fixture(name)["message"], instance_id, private_dns(ec2, instance_id))


def forwarded(monkeypatch: Any, messages: list[str], stream: str, account: str = MEMBER, region: str = REGION):
    """The member forwarder run on a subscription payload of these lines; the events EventBridge
    delivers for what it put on the central bus."""
    events = StubEvents()
    load(events, BUS, monkeypatch).handler(payload(messages, stream), None)
    assert events.entries
    return [delivered(entry, account, region) for entry in events.entries]


def test_a_burst_in_a_member_account_remediates_its_node_once_through_its_role(monkeypatch):
    with central_world() as (world, member):
        node = add_member_node(world, member)
        [ours] = world.add_nodes(cluster="prod-a")  # the central account's node, named by one line
        burst = [line(AWS_FILTER, member.ec2, node)] * 3 + [line(JOURNALD, member.ec2, node)] * 2
        elsewhere = line(AWS_FILTER, world.ec2, ours)

        results = [
            handler(event, LambdaContext())
            for event in forwarded(monkeypatch, [*burst, elsewhere], "fluent-bit-journald")
        ]
        # the same node's own stream (named by its instance id): found the same way, deduplicated
        stream = for_node(fixture(KUBELET)["log_stream"], node, "")
        kubelet = [for_node(fixture(n)["message"], node, "") for n in (KUBELET, CONTAINERD)] * 4
        results += [handler(event, LambdaContext()) for event in forwarded(monkeypatch, kubelet, stream)]

        assert [r["pull_failures"] for r in results] == [6, 8]
        assert results[0]["skipped_lines"] == {"node not found in EC2": 1}  # looked up in the member's EC2
        assert member.ssm.sent_to() == [[node]]
        assert world.ssm.commands == []
        assert world.attempts(ours) == []
        [attempt] = world.attempts(node)
        assert (attempt["status"], attempt["trigger"], attempt["account"]) == ("SENT", "pull-failure", MEMBER)
        assert member.ssm.commands[0]["DocumentName"] == world.settings.document_arn
        assert member.assumed == [f"arn:aws:iam::{MEMBER}:role/{ROLE}"]


def test_the_detail_cannot_name_another_account(monkeypatch):
    with central_world() as (world, member):
        node = add_member_node(world, member)
        [event] = forwarded(monkeypatch, [line(AWS_FILTER, member.ec2, node)], "fluent-bit-journald")
        event["detail"] |= {"owner": "222222222222", "account": "222222222222", "region": "eu-west-1"}

        assert handler(event, LambdaContext())["nodes"] == 1

        assert member.assumed == [f"arn:aws:iam::{MEMBER}:role/{ROLE}"]
        [attempt] = world.attempts(node)
        assert attempt["account"] == MEMBER


def test_an_event_of_another_region_is_refused(monkeypatch):
    with central_world() as (world, member):
        node = add_member_node(world, member)
        [event] = forwarded(monkeypatch, [line(AWS_FILTER, member.ec2, node)], "n", region="eu-west-1")
        with pytest.raises(InvalidRequest, match="comes from account '111111111111' region 'eu-west-1', not this"):
            handler(event, LambdaContext())
        assert member.assumed == []
        assert world.all_attempts() == []


def test_a_member_event_that_does_not_parse_is_raised_for_the_dead_letter_queue(monkeypatch):
    with central_world() as (world, member):
        [event] = forwarded(monkeypatch, [line(AWS_FILTER, member.ec2, add_member_node(world, member))], "n")
        del event["detail"]["logEvents"]
        with pytest.raises(InvalidRequest, match="member pull failures event: detail.logEvents: Field required"):
            handler(event, LambdaContext())
        assert member.assumed == []


def test_outside_central_mode_a_member_event_is_refused(monkeypatch):
    with World.create() as world:
        [node] = world.add_nodes()
        [event] = forwarded(monkeypatch, [line(AWS_FILTER, world.ec2, node)], "n")
        with pytest.raises(InvalidRequest, match="not this deployment's"):
            handler(event, LambdaContext())
        assert world.ssm.commands == []


def test_the_calls_are_judged_against_both_templates(monkeypatch):
    iam_contract.exercised.clear()
    with central_world() as (world, member):
        node = add_member_node(world, member)
        for event in forwarded(monkeypatch, [line(AWS_FILTER, member.ec2, node)], "fluent-bit-journald"):
            handler(event, LambdaContext())
        assert member.ssm.sent_to() == [[node]]
    assert ("PullFailureFunction", "template.yaml:PullFailureFunctionRole") in iam_contract.exercised
    assert ("PullFailureFunction", "member-account.yaml:MemberRole") in iam_contract.exercised
    assert ("PullFailureFunction", "member-account.yaml:SendRoleproda") in iam_contract.exercised


def test_the_central_rule_takes_member_events_only_and_retries_then_dead_letters(monkeypatch):
    """The rule's pattern, as EventBridge matches it (moto's event-pattern matcher): a member
    account's event, not one the central account put itself (its logs have their own
    subscription), nor another detail-type or source."""
    rule = load_template(iam_contract.HOME_TEMPLATE)["Resources"]["CentralPullFailuresRule"]
    assert rule["Condition"] == "IsCentral"
    [target] = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["PullFailureFunction", "Arn"]}
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400}
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}}
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["account"] == [{"anything-but": {"Ref": "AWS::AccountId"}}]
    rule_pattern = EventPattern.load(json.dumps({**pattern, "account": [{"anything-but": ACCOUNT}]}))

    with World.create(**CENTRAL) as world:
        [node] = world.add_nodes()
        [event] = forwarded(monkeypatch, [line(AWS_FILTER, world.ec2, node)], "n")
    assert rule_pattern.matches_event({**event, "account": MEMBER})
    assert not rule_pattern.matches_event({**event, "account": ACCOUNT})  # the central account's own
    assert not rule_pattern.matches_event({**event, "account": MEMBER, "source": "aws.ec2"})
    assert not rule_pattern.matches_event({**event, "account": MEMBER, "detail-type": "EC2 Instance State-change"})


def test_member_pull_failure_sample_event():
    """events/pull-failure-member.json (for `sam local invoke PullFailureFunction`), its node's
    hostname swapped for a member node's."""
    sample = (ROOT / "events/pull-failure-member.json").read_text()
    with central_world() as (world, member):
        node = add_member_node(world, member)
        event = json.loads(for_node(sample, node, private_dns(member.ec2, node)))
        assert event["account"] == MEMBER
        assert handler(event, LambdaContext())["nodes"] == 1
        assert member.ssm.sent_to() == [[node]]
        [attempt] = world.attempts(node)
        assert attempt["account"] == MEMBER
