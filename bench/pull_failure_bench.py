"""Benchmark: a pull-failure burst - 20,000 matching lines from 500 nodes - through the real handler.

moto (EC2, DynamoDB, SSM parameters) + the fake Run Command. Prints (asserts nothing):
SendCommand calls (target 10), DynamoDB writes, EC2 DescribeInstances calls, and the lines/s of
the handler's parse (decode_subscription + parse_lines on every payload; floor 50,000 lines/s:
a flood of 5,000 nodes x 30 pods backing off every 5 minutes is about 500 lines/s): warmed up,
the median of 9 rounds, in this process's CPU time (so that other processes on a shared machine do
not count) and, beside it, in wall-clock time.

The payloads are what a Fluent Bit journald pipeline shipping into one log stream per cluster
delivers: 20 payloads of 1,000 events, every node in every payload, kubelet and containerd
lines in both Go wordings. (With one log stream per node, e.g. Container Insights dataplane, each
payload holds one node and every node costs its own SendCommand: see docs/pull-failure.md.)

    PYTHONPATH=layers/common:functions/pull_failure:functions/on_command_status:functions/agent_wait:tools:. \\
        .venv/bin/python bench/pull_failure_bench.py
"""

from __future__ import annotations

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
PARSE_FLOOR = 50_000  # lines/s of decode_subscription + parse_lines
TEMPLATES = (
    "Fluent Bit journald record as read (systemd input, no rename), regional hostname",
    "Container Insights dataplane record without the aws filter: hostname only",
)
DYNAMO_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}


def parse(event: dict[str, Any]) -> int:
    """What the handler does with a payload before any AWS call: decode it, find its pull failures."""
    batch = decode_subscription(event)
    return len(parse_lines(batch.messages, batch.log_stream))


def parse_seconds(events: list[dict[str, Any]], rounds: int = 9) -> tuple[float, float]:
    """Median CPU seconds (this process's: other processes on a shared machine do not count) and
    median wall seconds of one pass of `parse` over `events`, after a warm-up pass."""
    for event in events:  # warm-up: imports, regex compilation, allocator
        parse(event)
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(rounds):
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        for event in events:
            parse(event)
        cpu.append(time.process_time() - cpu_start)
        wall.append(time.perf_counter() - wall_start)
    return statistics.median(cpu), statistics.median(wall)


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
        matched = sum(parse(e) for e in events)
        cpu_seconds, wall_seconds = parse_seconds(events)
        parse_rate = round(LINES / cpu_seconds)
        verdict = "ok" if parse_rate >= PARSE_FLOOR else "below the floor"

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
            f"parse lines/s (floor {PARSE_FLOOR})": f"{parse_rate} ({verdict}; wall clock {round(LINES / wall_seconds)})",
            "handler wall seconds (moto)": round(handler_seconds, 1),
            "pull failures seen by the handler": sum(r["pull_failures"] for r in results),
        }


def figures() -> list[tuple[str, str]]:
    return [(name, str(value)) for name, value in run().items()]


if __name__ == "__main__":
    for name, value in figures():
        print(f"{name:<40} {value}")
