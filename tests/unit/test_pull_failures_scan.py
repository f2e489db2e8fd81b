"""parse_lines shares work within a payload; these show it returns what classifying each line alone does."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from eks_ca_remediator import pull_failures
from eks_ca_remediator.pull_failures import NodeRef, _raw_node, parse_line, parse_lines

ROOT = Path(__file__).resolve().parents[2]
CASES = json.loads((ROOT / "tests/fixtures/pull_failure_lines.json").read_text())
STREAMS = sorted({case["log_stream"] for case in CASES}) + ["fluent-bit-journald", "i-0123456789abcdef0-stream"]


def one_by_one(messages: list[str], log_stream: str) -> list:
    return [line for message in messages if (line := parse_line(message, log_stream)) is not None]


@pytest.mark.parametrize(
    "text", [*pull_failures._RAW_NODE_KEYS, "nstance", "\\/", "\\u"], ids=lambda text: text.strip('"')
)
def test_nothing_parse_lines_looks_for_can_straddle_the_start_of_the_pull_context(text):
    # parse_lines scans a JSON record only up to its pull context and reads the rest from what it learnt
    # about that text; this holds because no key (nor "nstance", nor an escape) can begin before a
    # marker and end inside it.
    for cut in range(1, len(text)):
        tail = text[cut:]
        for marker in pull_failures._CONTEXT_MARKERS:
            assert not marker.startswith(tail), (text, marker)
            assert not tail.startswith(marker), (text, marker)


def variants(message: str, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.15:
        return message.replace("/", "\\/")
    if roll < 0.25:
        return message.replace("e", "\\u0065", 1)
    if roll < 0.4:
        return message.replace("10:00:01", f"10:{rng.randrange(60):02d}:{rng.randrange(60):02d}")
    if roll < 0.55:
        return message.replace("ip-10-0-1-23", f"ip-10-0-{rng.randrange(3)}-{rng.randrange(3)}")
    if roll < 0.6:
        return message.replace("i-0a1b2c3d4e5f60789", "i-0123456789abcdef0")
    if roll < 0.65:
        return message[: rng.randrange(len(message) + 1)]
    if roll < 0.7:
        return "failed to resolve reference: i/o timeout " + message[rng.randrange(len(message)) :]
    return message


def test_a_flood_reads_as_every_line_alone():
    rng = random.Random(20261126)
    pool = [case["message"] for case in CASES] + [
        "unrelated",
        'httpReadSeeker: failed open: failed to resolve reference "r.example/a:1": i/o timeout',
        '{"log": "failed to resolve reference \\"r.example/a:1\\": denied: no", "host": "ip-10-0-0-1.ec2.internal"}',
        '{"msg": "\\u0050ullImage \\"r.example/a:1\\" x509: certificate signed by unknown authority", '
        '"host": "ip-10-0-0-1.ec2.internal"}',
    ]
    for _ in range(300):
        messages = [variants(rng.choice(pool), rng) for _ in range(rng.randrange(1, 30))]
        messages += [rng.choice(messages) for _ in range(rng.randrange(10))]
        rng.shuffle(messages)
        stream = rng.choice(STREAMS)
        assert parse_lines(messages, stream) == one_by_one(messages, stream)


def test_repeated_lines_share_one_result_and_each_node_keeps_its_own():
    case = next(c for c in CASES if c["message"].startswith("{") and (c["expect"] or {}).get("hostname"))
    other = case["message"].replace(case["expect"]["hostname"], "ip-10-9-9-9.ec2.internal")
    found = parse_lines([case["message"], other, case["message"], other], case["log_stream"])
    assert [line.node for line in found] == [
        NodeRef(hostname=case["expect"]["hostname"]),
        NodeRef(hostname="ip-10-9-9-9.ec2.internal"),
    ] * 2
    assert found[0] is found[2]
    assert found == one_by_one([case["message"], other] * 2, case["log_stream"])
    assert parse_lines([case["message"]], case["log_stream"])[0] is not found[0]  # nothing kept across payloads


def test_raw_node_reads_only_ascii_names_of_at_most_128_characters():
    assert _raw_node('{"hostname": "ip-10-0-1-23.ec2.internal", "log": "x"}') == NodeRef(
        hostname="ip-10-0-1-23.ec2.internal"
    )
    assert _raw_node('{"hostname": "ip-\u0661\u0660-0-1-23.ec2.internal"}') is None  # Arabic-Indic digits
    long = "ip-10-0-1-23.us" + "-west" * 22 + "-2.compute.internal"
    assert len(long) > 128
    assert _raw_node(f'{{"hostname": "{long}"}}') is None
    assert _raw_node('{"instance_id": "i-0123456789abcdef0", "hostname": "ip-10-0-1-23.ec2.internal"}') == NodeRef(
        instance_id="i-0123456789abcdef0"
    )
    assert _raw_node('{"instance_id": "ip-10-0-1-23.ec2.internal"}') is None


def test_raw_node_takes_the_leftmost_host_field_and_skips_one_inside_an_escaped_string():
    inner = '{"log": "relayed {\\"host\\": \\"ip-10-9-9-9.ec2.internal\\"}", "host": "ip-10-0-1-23.ec2.internal"}'
    assert _raw_node(inner) == NodeRef(hostname="ip-10-0-1-23.ec2.internal")
    both = '{"host": "not-a-node", "nodeName": "ip-10-0-0-7.ec2.internal", "hostname": "ip-10-0-0-8.ec2.internal"}'
    assert _raw_node(both) == NodeRef(hostname="ip-10-0-0-7.ec2.internal")
    line = both[:-1] + ', "log": "PullImage \\"r.example/a:1\\": x509: certificate signed by unknown authority"}'
    assert parse_line(line, "fluent-bit").node == NodeRef(hostname="ip-10-0-0-7.ec2.internal")
    escaped = line.replace("r.example/a", "r.example\\/a")  # decoded first: the same node
    assert parse_line(escaped, "fluent-bit").node == NodeRef(hostname="ip-10-0-0-7.ec2.internal")
