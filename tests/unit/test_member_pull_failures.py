"""member-account.yaml's pull-failure forwarder (docs/scale.md): its inline code, run from the
rendered template, puts a subscription payload's lines on the central bus as EventBridge takes
them; its role may put events on the central bus only; its subscriptions are the central stack's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eks_ca_remediator.models import MEMBER_PULL_FAILURES_DETAIL_TYPE, MEMBER_PULL_FAILURES_SOURCE
from eks_ca_remediator.pull_failures import FILTER_PATTERN, decode_subscription
from language_extensions import render

from tests.fakes import iam_contract
from tests.fakes.cloudwatch_logs import payload
from tests.fakes.forwarder import LOG_GROUP, MEMBER_TEMPLATE, StubEvents, forwarder_code, load, member_template

ROOT = Path(__file__).resolve().parents[2]
MEMBER, CENTRAL, REGION = "111111111111", "123456789012", "us-east-1"
BUS = f"arn:aws:events:{REGION}:{CENTRAL}:event-bus/eks-ca-remediator-nodes"
ZIPFILE_LIMIT = 4096  # characters of inline code we allow ourselves (StackSets: no artifact bucket)
PUT_EVENTS_ENTRY = 256 * 1024  # https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-putevent-size.html
LINE = (
    'E1126 10:00:00.000000    1234 remote_image.go:180] "PullImage from image service failed" '
    'image="registry.example.internal/team/app:1.4.2" err="failed to pull and unpack image: '
    "failed to resolve reference: failed to do request: Head "
    '\\"https://registry.example.internal/v2/team/app/manifests/1.4.2\\": '
    'tls: failed to verify certificate: x509: certificate signed by unknown authority"'
)
STREAM = "i-0a1b2c3d4e5f60789-kubelet"


def entry_size(entry: dict) -> int:
    """PutEvents' entry size: Source, DetailType, Detail (and Resources), UTF-8 bytes."""
    return sum(len(entry.get(k, "").encode()) for k in ("Source", "DetailType", "Detail")) + sum(
        len(r.encode()) for r in entry.get("Resources", [])
    )


def iam_judge(role: str = "PullFailureForwarderRole"):
    """Each PutEvents request judged as IAM would, against the forwarder's role as the member
    stack deploys it (tests/fakes/iam_contract.py)."""
    parameters = {
        "EnrolledClusters": ["prod-a"],
        "PullFailureSourceLogGroups": [LOG_GROUP],
        "CentralEventBusArn": BUS,
        "CentralAccountId": CENTRAL,
        "CentralDocumentArn": f"arn:aws:ssm:{REGION}:{CENTRAL}:document/eks-ca-remediator-RemediateCa",
    }
    names = iam_contract.Names(
        {},
        {
            ("PullFailureForwarderLogGroup", "Arn"): f"arn:aws:logs:{REGION}:{MEMBER}:log-group:/aws/lambda/fwd:*",
            ("ForwardDeadLetterQueue", "Arn"): f"arn:aws:sqs:{REGION}:{MEMBER}:forward-dlq",
        },
    )
    rendered = iam_contract.Rendered(
        iam_contract.load(MEMBER_TEMPLATE), parameters, MEMBER, REGION, names, "member", "member-account.yaml"
    )
    statements = rendered.statements(role)

    def judge(params: dict) -> None:
        call = iam_contract.Call("events:PutEvents", params, REGION, MEMBER)
        refused = iam_contract.allowed(statements, call)
        assert not refused, f"{role} is not allowed events:PutEvents on {refused}"

    return judge


def test_the_inline_code_fits_a_zipfile():
    assert len(forwarder_code()) <= ZIPFILE_LIMIT


def test_a_subscription_payload_goes_to_the_central_bus_as_one_entry(monkeypatch):
    events = StubEvents(judge=iam_judge())
    forwarder = load(events, BUS, monkeypatch)
    sample = json.loads((ROOT / "events/pull_failure.json").read_text())
    expected = decode_subscription(sample)

    result = forwarder.handler(sample, None)

    [entry] = events.entries
    assert len(events.requests) == 1
    assert (entry["EventBusName"], entry["Source"], entry["DetailType"]) == (
        BUS,
        MEMBER_PULL_FAILURES_SOURCE,
        MEMBER_PULL_FAILURES_DETAIL_TYPE,
    )
    assert not {"account", "Account"} & set(entry)  # EventBridge sets it, not the forwarder
    detail = json.loads(entry["Detail"])
    assert (detail["logGroup"], detail["logStream"]) == (expected.log_group, expected.log_stream)
    assert tuple(e["message"] for e in detail["logEvents"]) == expected.messages
    assert result == {"forwarded": len(expected.messages), "entries": 1}


def test_a_large_payload_is_chunked_below_the_entry_limit_in_order(monkeypatch):
    events = StubEvents(judge=iam_judge())
    forwarder = load(events, BUS, monkeypatch)
    lines = [f"{LINE} #{i} " + "é" * 300 for i in range(3000)]  # ~2.7 MB once escaped
    huge = "x509: certificate signed by unknown authority " + "y" * 300_000  # one line over the limit

    result = forwarder.handler(payload([*lines, huge], STREAM), None)

    assert len(events.requests) > 5
    assert all(len(request) == 1 for request in events.requests)  # and each request is one entry
    assert max(entry_size(e) for e in events.entries) < PUT_EVENTS_ENTRY
    forwarded = [e["message"] for entry in events.entries for e in json.loads(entry["Detail"])["logEvents"]]
    assert forwarded[:-1] == lines
    assert forwarded[-1] == huge[: forwarder.LINE]
    assert all(json.loads(e["Detail"])["logStream"] == STREAM for e in events.entries)
    assert result == {"forwarded": 3001, "entries": len(events.requests)}


def test_a_refused_entry_raises_so_lambda_retries_then_dead_letters(monkeypatch):
    forwarder = load(StubEvents(failing=1), BUS, monkeypatch)
    with pytest.raises(RuntimeError, match="PutEvents refused the entry.*InternalFailure"):
        forwarder.handler(payload([LINE], STREAM), None)


def test_a_control_message_puts_nothing(monkeypatch):
    events = StubEvents()
    forwarder = load(events, BUS, monkeypatch)
    assert forwarder.handler(payload([], "", message_type="CONTROL_MESSAGE"), None)["forwarded"] == 0
    assert events.requests == []


def test_a_put_on_another_bus_is_refused_by_the_forwarder_role():
    judge = iam_judge()
    other = f"arn:aws:events:{REGION}:{CENTRAL}:event-bus/default"
    with pytest.raises(AssertionError, match="not allowed events:PutEvents"):
        judge({"Entries": [{"EventBusName": other, "Source": "s", "DetailType": "d", "Detail": "{}"}]})
    with pytest.raises(AssertionError, match="not allowed events:PutEvents"):
        judge({"Entries": [{"Source": "s", "DetailType": "d", "Detail": "{}"}]})  # its own default bus


def test_the_forwarder_role_grants_put_events_on_the_central_bus_and_nothing_else_of_eventbridge():
    role = member_template()["Resources"]["PullFailureForwarderRole"]["Properties"]
    [policy] = role["Policies"]
    statements = policy["PolicyDocument"]["Statement"]
    by_sid = {s["Sid"]: (s["Action"], s["Resource"]) for s in statements}
    assert by_sid == {
        "PutEventsOnTheCentralBus": ("events:PutEvents", {"Ref": "CentralEventBusArn"}),
        "WriteOwnLogs": (
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            {"Fn::GetAtt": ["PullFailureForwarderLogGroup", "Arn"]},
        ),
        "DeadLetters": ("sqs:SendMessage", {"Fn::GetAtt": ["ForwardDeadLetterQueue", "Arn"]}),
    }
    assert "ManagedPolicyArns" not in role
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}


def test_each_log_group_gets_the_central_filter_and_a_permission_for_it_alone():
    groups = [LOG_GROUP, "/eks/prod-b/kubelet"]
    resources = member_template(groups)["Resources"]
    filters = {k: r for k, r in resources.items() if r["Type"] == "AWS::Logs::SubscriptionFilter"}
    permissions = {k: r for k, r in resources.items() if r["Type"] == "AWS::Lambda::Permission"}
    assert sorted(f["Properties"]["LogGroupName"] for f in filters.values()) == sorted(groups)
    for subscription in filters.values():
        group = subscription["Properties"]["LogGroupName"]
        assert subscription["Properties"]["FilterPattern"] == FILTER_PATTERN
        assert subscription["Properties"]["DestinationArn"] == {"Fn::GetAtt": ["PullFailureForwarder", "Arn"]}
        permission = permissions[subscription["DependsOn"]]["Properties"]  # created before the filter
        assert (permission["Principal"], permission["SourceAccount"]) == (
            "logs.amazonaws.com",
            {"Ref": "AWS::AccountId"},
        )
        assert permission["SourceArn"] == {
            "Fn::Sub": f"arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:{group}:*"
        }
    invoke = resources["PullFailureForwarderInvokeConfig"]["Properties"]
    assert invoke["DestinationConfig"]["OnFailure"] == {
        "Destination": {"Fn::GetAtt": ["ForwardDeadLetterQueue", "Arn"]}
    }
    group = resources["PullFailureForwarderLogGroup"]["Properties"]
    assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    logging = resources["PullFailureForwarder"]["Properties"]["LoggingConfig"]
    assert logging["LogGroup"] == {"Ref": "PullFailureForwarderLogGroup"}


def test_no_log_groups_no_forwarder():
    """The default (no log groups): every forwarder resource is conditioned out."""
    parameters = {
        "EnrolledClusters": ["prod-a"],
        "CentralEventBusArn": BUS,
        "CentralAccountId": CENTRAL,
        "CentralDocumentArn": f"arn:aws:ssm:{REGION}:{CENTRAL}:document/d",
    }
    for given, deployed in (({}, False), ({"PullFailureSourceLogGroups": LOG_GROUP}, True)):
        rendered = iam_contract.Rendered(
            iam_contract.load(MEMBER_TEMPLATE), parameters | given, MEMBER, REGION, iam_contract.Names()
        )
        forwarding = [k for k in rendered.resources if k.startswith("PullFailure")]
        assert len(forwarding) == 6
        assert [k for k in forwarding if rendered.exists(k)] == (forwarding if deployed else [])


def test_a_rendered_member_template_loops_over_the_log_groups_given():
    """tools/language_extensions.py (StackSets take the template rendered) writes one filter and
    one permission per log group given, with the log group's name in place of `Ref LogGroup`."""
    rendered = render(MEMBER_TEMPLATE.read_text(), {"EnrolledClusters": ["a"], "PullFailureSourceLogGroups": ["/x/y"]})
    assert rendered["Resources"]["PullFailureSubscriptionxy"]["Properties"]["LogGroupName"] == "/x/y"
    assert rendered["Resources"]["PullFailureSubscriptionxy"]["DependsOn"] == "PullFailureForwarderPermissionxy"
