"""Pull-failure lines: attribution, classification and the subscription filter, from real-shaped fixtures."""

from __future__ import annotations

import base64
import gzip
import json
import re
from pathlib import Path

import pytest
from eks_ca_remediator.errors import InvalidRequest
from eks_ca_remediator.models import Strategy
from eks_ca_remediator.pull_failures import (
    FILTER_PATTERN,
    NodeFailures,
    NodeRef,
    decode_subscription,
    is_ecr,
    json_record,
    node_of,
    parse_line,
    parse_lines,
    registry_hosts,
    registry_of,
    strategy_for,
    window_start,
)
from ssm_document import load_template

ROOT = Path(__file__).resolve().parents[2]
CASES = json.loads((ROOT / "tests/fixtures/pull_failure_lines.json").read_text())


def filter_matches(pattern: str, line: str) -> bool:
    """CloudWatch Logs term matching for the `?"a" ?"b"` form: any quoted phrase, case-sensitive."""
    terms = re.findall(r'\?"([^"]+)"', pattern)
    assert terms, f"not an OR of quoted terms: {pattern}"
    return any(term in line for term in terms)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_fixture_line(case):
    line = parse_line(case["message"], case["log_stream"])
    expect = case["expect"]
    if expect is None:
        assert line is None
        return
    assert line is not None
    failure = line.failure
    assert failure.kind == expect["kind"]
    assert failure.registry == expect["registry"]
    assert failure.image == expect["image"]
    assert failure.remediable is (expect["kind"] == "unknown-authority")
    assert failure.reason
    if "failing_host" in expect:
        assert failure.failing_host == expect["failing_host"]
    assert line.node is not None
    assert line.node.instance_id == expect.get("instance_id", "")
    assert line.node.hostname == expect.get("hostname", "")


TLS_KINDS = ("unknown-authority", "certificate-expired", "hostname-mismatch")


@pytest.mark.parametrize("case", [c for c in CASES if c["expect"] and c["expect"]["kind"] in TLS_KINDS])
def test_subscription_filter_passes_every_tls_pull_failure(case):
    assert filter_matches(FILTER_PATTERN, case["message"])


@pytest.mark.parametrize("case", [c for c in CASES if c["message"].startswith("{") and c["expect"]], ids=str)
def test_json_records_with_escaped_slashes_or_unicode_read_the_same(case):
    fast = parse_line(case["message"], case["log_stream"])
    escaped = case["message"].replace("/", "\\/").replace("&", "\\u0026")
    assert "\\/" in escaped
    assert parse_line(escaped, case["log_stream"]) == fast


def test_one_payload_classifies_a_flood_once_per_failure_and_keeps_every_line():
    case = CASES[0]
    lines = [case["message"].replace("10:00:01.123456", f"10:00:{i:02d}.000001") for i in range(50)]
    found = parse_lines([*lines, "unrelated"], case["log_stream"])
    assert len(found) == 50
    assert {line.failure for line in found} == {parse_line(case["message"], case["log_stream"]).failure}


def test_repeated_texts_keep_each_line_its_own_node():
    case = next(c for c in CASES if c["message"].startswith("{") and (c["expect"] or {}).get("hostname"))
    other = case["message"].replace(case["expect"]["hostname"], "ip-10-9-9-9.ec2.internal")
    found = parse_lines([case["message"], other, case["message"], other], case["log_stream"])
    assert [line.node for line in found] == [
        NodeRef(hostname=case["expect"]["hostname"]),
        NodeRef(hostname="ip-10-9-9-9.ec2.internal"),
    ] * 2
    assert len({line.failure for line in found}) == 1


def test_a_truncated_json_record_is_read_as_a_plain_line():
    case = next(c for c in CASES if c["name"].startswith("Container Insights dataplane record without"))
    truncated = case["message"][:-2]
    assert json_record(truncated) is None
    line = parse_line(truncated, case["log_stream"])
    assert line is not None
    assert line.failure.kind == "unknown-authority"
    assert line.node == NodeRef(hostname="ip-10-0-1-23.ec2.internal")  # from the log stream name
    assert parse_line(truncated, "fluent-bit").node is None  # the record's hostname field is not read


def test_node_fields_name_only_ascii_names_of_at_most_128_characters():
    def node(text: str) -> NodeRef | None:
        return node_of(json_record(text), "fluent-bit")

    assert node('{"hostname": "ip-10-0-1-23.ec2.internal", "log": "x"}') == NodeRef(
        hostname="ip-10-0-1-23.ec2.internal"
    )
    assert node('{"hostname": "ip-\u0661\u0660-0-1-23.ec2.internal"}') is None  # Arabic-Indic digits
    long = "ip-10-0-1-23.us" + "-west" * 22 + "-2.compute.internal"
    assert len(long) > 128
    assert node(f'{{"hostname": "{long}"}}') is None
    assert node('{"instance_id": "i-0123456789abcdef0", "hostname": "ip-10-0-1-23.ec2.internal"}') == NodeRef(
        instance_id="i-0123456789abcdef0"
    )
    assert node('{"hostname": "ip-10-0-1-23.ec2.internal", "instance_id": "i-0123456789abcdef0"}') == NodeRef(
        instance_id="i-0123456789abcdef0"
    )
    assert node('{"instance_id": "ip-10-0-1-23.ec2.internal"}') is None
    assert node_of(json_record('{"instance_id": "ip-10-0-1-23.ec2.internal"}'), "ip-10-0-0-5.ec2.internal-x") == (
        NodeRef(hostname="ip-10-0-0-5.ec2.internal")
    )


def test_the_leftmost_host_field_naming_a_node_wins_and_one_inside_a_string_is_text():
    inner = '{"log": "relayed {\\"host\\": \\"ip-10-9-9-9.ec2.internal\\"}", "host": "ip-10-0-1-23.ec2.internal"}'
    assert node_of(json_record(inner), "fluent-bit") == NodeRef(hostname="ip-10-0-1-23.ec2.internal")
    both = '{"host": "not-a-node", "nodeName": "ip-10-0-0-7.ec2.internal", "hostname": "ip-10-0-0-8.ec2.internal"}'
    assert node_of(json_record(both), "fluent-bit") == NodeRef(hostname="ip-10-0-0-7.ec2.internal")
    line = both[:-1] + ', "log": "PullImage \\"r.example/a:1\\": x509: certificate signed by unknown authority"}'
    assert parse_line(line, "fluent-bit").node == NodeRef(hostname="ip-10-0-0-7.ec2.internal")
    escaped = line.replace("r.example/a", "r.example\\/a")
    assert parse_line(escaped, "fluent-bit") == parse_line(line, "fluent-bit")


def test_filter_pattern_matches_both_go_wordings():
    old = "failed to do request: Head: x509: certificate signed by unknown authority"
    new = "failed to do request: Head: tls: failed to verify certificate: x509: certificate signed by unknown authority"
    assert filter_matches(FILTER_PATTERN, old)
    assert filter_matches(FILTER_PATTERN, new)
    assert not filter_matches(FILTER_PATTERN, 'msg="PullImage \\"registry.example.internal/app:1\\" returns image"')


def test_template_uses_the_filter_pattern():
    template = load_template((ROOT / "template.yaml").read_text())
    resources = [r for r in template["Resources"].values() if isinstance(r, dict)]  # (not Fn::ForEach loops)
    filters = [r for r in resources if r["Type"] == "AWS::Logs::SubscriptionFilter"]
    assert filters
    assert all(f["Properties"]["FilterPattern"] == FILTER_PATTERN for f in filters)


def test_registry_of_follows_the_docker_rule():
    assert registry_of("registry.example.internal:5000/team/app:1") == "registry.example.internal:5000"
    assert registry_of("localhost/app") == "localhost"
    assert registry_of("library/nginx:1.27") == "docker.io"
    assert registry_of("nginx") == "docker.io"


def test_ecr_hosts():
    assert is_ecr("111122223333.dkr.ecr.us-east-1.amazonaws.com")
    assert is_ecr("111122223333.dkr.ecr-fips.us-gov-west-1.amazonaws.com")
    assert is_ecr("prod-us-east-1-starport-layer-bucket.s3.us-east-1.amazonaws.com")
    assert not is_ecr("registry.example.internal")
    assert not is_ecr("ecr.example.internal")


def test_ecr_chooses_the_trust_store_path_and_says_why():
    hosts = ("111122223333.dkr.ecr.us-east-1.amazonaws.com",)
    strategy, why = strategy_for(Strategy.HOSTS_TOML, hosts)
    assert strategy is Strategy.AUTO
    assert "hosts.toml cannot cover" in why
    assert strategy_for(Strategy.RESTART, hosts)[0] is Strategy.RESTART
    assert strategy_for(Strategy.AUTO, hosts)[0] is Strategy.AUTO
    assert strategy_for(Strategy.HOSTS_TOML, ("registry.example.internal",))[0] is Strategy.HOSTS_TOML


def test_node_failures_keep_the_failing_registry_and_the_redirected_ecr_layer_host():
    by_name = {c["name"]: c for c in CASES}
    failures = NodeFailures()
    for name in (
        "ECR through a TLS-intercepting proxy: layer download redirected to S3",
        "containerd PullImage failed, new Go wording",
        "expired registry certificate",
    ):
        line = parse_line(by_name[name]["message"], by_name[name]["log_stream"])
        assert line is not None
        failures.add(line.failure)
    assert failures.remediable
    assert registry_hosts(failures) == (
        "111122223333.dkr.ecr.us-east-1.amazonaws.com",
        "prod-us-east-1-starport-layer-bucket.s3.us-east-1.amazonaws.com",
        "registry.example.internal",
    )
    assert list(failures.not_remediable) == [("certificate-expired", "registry.example.internal")]


def test_window_start_is_aligned():
    assert window_start(1_800_000_123.4, 900) == 1_800_000_000.0 - (1_800_000_000 % 900)
    assert window_start(0.0, 900) == 0.0


def payload(body: object) -> dict:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return {"awslogs": {"data": base64.b64encode(gzip.compress(raw)).decode()}}


def test_decode_data_and_control_messages():
    batch = decode_subscription(
        payload(
            {
                "messageType": "DATA_MESSAGE",
                "owner": "123456789012",
                "logGroup": "/aws/containerinsights/prod-a/dataplane",
                "logStream": "ip-10-0-1-23.ec2.internal-dataplane.systemd.kubelet.service",
                "subscriptionFilters": ["x509"],
                "logEvents": [{"id": "1", "timestamp": 1, "message": "a"}, {"id": "2", "timestamp": 2, "message": 3}],
            }
        )
    )
    assert batch.message_type == "DATA_MESSAGE"
    assert batch.messages == ("a",)
    control = decode_subscription(payload({"messageType": "CONTROL_MESSAGE", "logEvents": []}))
    assert control.message_type == "CONTROL_MESSAGE"


@pytest.mark.parametrize(
    ("event", "says"),
    [
        ({"awslogs": {"data": "!!!! not base64 !!!!"}}, "awslogs.data"),
        ({"awslogs": {"data": base64.b64encode(b"plain text, not gzip").decode()}}, "gzip"),
        ({"awslogs": {"data": payload({"messageType": "DATA_MESSAGE"})["awslogs"]["data"][:40]}}, "gzip"),
        (payload(b"{not json"), "does not decode"),
        (payload(b'{"messageType": "\xff\xfe"}'), "does not decode: not UTF-8 text"),
        (payload([1, 2]), "not an object"),
        (payload({"messageType": "SURPRISE"}), "messageType"),
        (payload({"messageType": "DATA_MESSAGE", "logEvents": "x"}), "logEvents"),
        ({"awslogs": {}}, "awslogs.data"),
        ({"Records": []}, "awslogs"),
        ("text", "awslogs"),
    ],
)
def test_undecodable_payloads_raise_a_readable_error(event, says):
    with pytest.raises(InvalidRequest, match=re.escape(says)):
        decode_subscription(event)
