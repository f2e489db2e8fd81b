"""Benchmark: a pull-failure burst - 20,000 matching lines from 500 nodes - through the real handler.

moto (EC2, DynamoDB, SSM parameters) + the fake Run Command. Prints (asserts nothing):
SendCommand calls (target 10), DynamoDB writes, EC2 DescribeInstances calls, and the throughput
of decode+match (Powertools decode + parse_lines on every payload) as a ratio to a bare
base64+gzip+json decode of the same payloads in the same run (target >= 0.5): warmed up, then
9 interleaved rounds, median of the per-round ratios.

The payloads are what a Fluent Bit journald pipeline shipping into one log stream per cluster
delivers: 20 payloads of 1,000 events, every node in every payload, kubelet and containerd
lines in both Go wordings. (With one log stream per node, e.g. Container Insights dataplane, each
payload holds one node and every node costs its own SendCommand: see docs/pull-failure.md.)

    PYTHONPATH=layers/common:functions/pull_failure:functions/on_command_status:functions/agent_wait:tools:. \\
        .venv/bin/python bench/pull_failure_bench.py
"""

from __future__ import annotations

import base64
import gzip
import json
import statistics
import time
from collections import Counter
from typing import Any

from bench import moto_env  # first: the environment the handlers are imported in

moto_env.use(POWERTOOLS_METRICS_DISABLED="true")

from eks_ca_remediator.pull_failures import decode_subscription, parse_lines  # noqa: E402
from pull_failure import handler  # noqa: E402

from tests.fakes.cloudwatch_logs import fixture, for_node, payload  # noqa: E402
from tests.fakes.world import LambdaContext, World  # noqa: E402

NODES = 500
LINES = 20_000
PER_PAYLOAD = 1_000
TEMPLATES = (
    "Fluent Bit journald record as read (systemd input, no rename), regional hostname",
    "Container Insights dataplane record without the aws filter: hostname only",
)
DYNAMO_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}


def bare_decode(event: dict[str, Any]) -> int:
    return len(json.loads(gzip.decompress(base64.b64decode(event["awslogs"]["data"])))["logEvents"])


def decode_and_match(event: dict[str, Any]) -> int:
    batch = decode_subscription(event)
    return len(parse_lines(batch.messages, batch.log_stream))


def throughput(events: list[dict[str, Any]], rounds: int = 9) -> tuple[float, float, float]:
    """Seconds per pass over `events` of the bare decode and of decode+match, and their ratio.

    Both sides run over the same payloads in the same process, warmed up once, in interleaved rounds
    (alternating which goes first, so load drifting on a busy machine hits both alike); the ratio is
    the median of the per-round ratios, the seconds the medians of each side."""
    for event in events:  # warm-up: imports, regex compilation, allocator
        bare_decode(event)
        decode_and_match(event)
    bare_times: list[float] = []
    ours_times: list[float] = []
    for round_ in range(rounds):
        sides = [(bare_decode, bare_times), (decode_and_match, ours_times)]
        for function, times in sides if round_ % 2 == 0 else reversed(sides):
            started = time.perf_counter()
            for event in events:
                function(event)
            times.append(time.perf_counter() - started)
    ratio = statistics.median(bare / ours for bare, ours in zip(bare_times, ours_times, strict=True))
    return statistics.median(bare_times), statistics.median(ours_times), ratio


def run() -> dict[str, Any]:
    with World.create(MAX_IN_FLIGHT_PER_CLUSTER=str(NODES * 2)) as world:  # measure batching, not the limit
        nodes = world.add_nodes(NODES, cluster="prod-a")
        pages = world.ec2.get_paginator("describe_instances").paginate(InstanceIds=nodes)
        hosts = {i["InstanceId"]: i["PrivateDnsName"] for p in pages for r in p["Reservations"] for i in r["Instances"]}
        calls: Counter[str] = Counter()

        def count(event_name: str, **_: Any) -> None:
            calls[event_name.rsplit(".", 1)[-1]] += 1

        world.ec2.meta.events.register("before-call.ec2.DescribeInstances", count)
        world.table.meta.client.meta.events.register("before-call.dynamodb", count)
        templates = [fixture(name)["message"] for name in TEMPLATES]
        lines = [
            for_node(templates[i % len(templates)], nodes[i % NODES], hosts[nodes[i % NODES]]) for i in range(LINES)
        ]
        events = [
            payload(lines[start : start + PER_PAYLOAD], "fluent-bit-journald", log_group="/eks/prod-a/journald")
            for start in range(0, LINES, PER_PAYLOAD)
        ]
        matched = sum(decode_and_match(e) for e in events)
        bare, ours, ratio = throughput(events)

        started = time.perf_counter()
        results = [handler(event, LambdaContext()) for event in events]
        handler_seconds = time.perf_counter() - started
        records = Counter(a["status"] for a in world.all_attempts())
        return {
            "log lines": LINES,
            "payloads": len(events),
            "lines matched": matched,
            "nodes": NODES,
            "SendCommand calls": len(world.ssm.commands),
            "largest SendCommand": max(len(ids) for ids in world.ssm.sent_to()),
            "DynamoDB writes": sum(n for op, n in calls.items() if op in DYNAMO_WRITES),
            "DynamoDB reads": sum(n for op, n in calls.items() if op in ("GetItem", "Query")),
            "EC2 DescribeInstances calls": calls["DescribeInstances"],
            "records": dict(records),
            "bare decode lines/s": round(LINES / bare),
            "decode+match lines/s": round(LINES / ours),
            "throughput ratio (target >= 0.5)": round(ratio, 2),
            "handler wall seconds (moto)": round(handler_seconds, 1),
            "pull failures seen by the handler": sum(r["pull_failures"] for r in results),
        }


def figures() -> list[tuple[str, str]]:
    return [(name, str(value)) for name, value in run().items()]


if __name__ == "__main__":
    for name, value in figures():
        print(f"{name:<40} {value}")
