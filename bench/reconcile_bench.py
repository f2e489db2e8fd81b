"""Benchmark: one reconciler pass over 1,000 open attempts whose status events never arrived.

moto (EC2, DynamoDB) + the fake Run Command, through the real Reconcile handler. The attempts are
written as dispatch leaves them (SENT, command id, the node's claim and its lease, in the
open-attempts index); SSM knows 900 of the invocations as finished (Success with a result line),
50 as still running and has forgotten 50. Prints (asserts nothing): AWS calls of the pass by
operation, per 1,000 open attempts, and the pass's wall time here (moto in-process).

    PYTHONPATH=layers/common:functions/reconcile:functions/on_command_status:tools:. \\
        .venv/bin/python bench/reconcile_bench.py [attempts]
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from bench import moto_env  # first: the environment the handlers are imported in

moto_env.use(POWERTOOLS_METRICS_DISABLED="true")

from eks_ca_remediator.adapters.records import CLUSTER_PK, IN_FLIGHT  # noqa: E402
from eks_ca_remediator.models import ClusterRef  # noqa: E402
from eks_ca_remediator.reconcile import result_due  # noqa: E402
from reconcile import handler  # noqa: E402

from tests.fakes.open_attempts import sent_attempt  # noqa: E402
from tests.fakes.run_command import Invocation  # noqa: E402
from tests.fakes.world import LambdaContext, World, node_output  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Context(LambdaContext):
    """The reconciler's 300 s, counted down by the real wall clock."""

    def __init__(self) -> None:
        super().__init__()
        self.deadline = time.monotonic() + 300

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


def run(total: int = 1000) -> dict[str, object]:
    with World.create(MAX_IN_FLIGHT_PER_CLUSTER="10000", BREAKER_FAILURE_THRESHOLD="1000") as world:
        nodes = world.add_nodes(total, cluster="prod-a")
        sent_at = world.clock() - 3600
        due = result_due(sent_at, world.settings.command_timeout_seconds)
        leases = {}
        with world.table.batch_writer() as batch:
            for n, node in enumerate(nodes):
                command_id = str(uuid.uuid4())
                item = sent_attempt(node, f"bench-{n}", command_id, sent_at, int(due))
                sk = item["sk"]
                batch.put_item(Item=item)
                batch.put_item(Item={"pk": node, "sk": "HEAD", "active_attempt": sk, "active_until": int(due + 600)})
                leases[node] = int(due + 600)
                invocation = Invocation(command_id, node)
                if n % 20 == 0:
                    continue  # SSM has forgotten it (5 %)
                if n % 20 == 1:
                    invocation.status = invocation.status_details = "InProgress"  # still running (5 %)
                else:
                    invocation.status = invocation.status_details = "Success"
                    invocation.stdout = node_output()
                world.ssm.invocations[(command_id, node)] = invocation
            batch.put_item(Item={"pk": CLUSTER_PK + "prod-a", "sk": IN_FLIGHT, "leases": leases, "version": 1})

        calls: Counter[str] = Counter()
        world.ec2.meta.events.register("before-call.ec2.*", lambda model, **_: calls.update([f"EC2 {model.name}"]))
        world.table.meta.client.meta.events.register(
            "before-call.dynamodb.*", lambda model, **_: calls.update([f"DynamoDB {model.name}"])
        )
        world.ssm.calls.clear()
        event = json.loads((ROOT / "events" / "reconcile-scheduled.json").read_text())
        started = time.monotonic()
        with contextlib.redirect_stdout(io.StringIO()):  # the handler's EMF metrics document
            result = handler(event, Context())
        seconds = time.monotonic() - started
        calls.update({f"SSM {k}": v for k, v in world.ssm.calls.items()})
        pass_calls = Counter(calls)
        statuses: Counter[str] = Counter()
        for page in world.table.meta.client.get_paginator("scan").paginate(TableName=world.table.name):
            statuses.update(i["status"] for i in page["Items"] if i["sk"].startswith("ATTEMPT#"))
        left = len(world.remediator.records.leases(ClusterRef("prod-a"))[0])
        calls = pass_calls

    per = 1000 / total
    figures: dict[str, object] = {
        "open attempts overdue": total,
        "pass wall seconds per 1,000 (moto)": round(seconds * per, 1),
        "SSM GetCommandInvocation per 1,000": round(calls["SSM GetCommandInvocation"] * per),
        "EC2 DescribeInstances per 1,000": round(calls["EC2 DescribeInstances"] * per),
        "DynamoDB calls per 1,000": round(sum(v for k, v in calls.items() if k.startswith("DynamoDB")) * per),
        "DynamoDB by operation": ", ".join(
            f"{k.split()[1]} {v}" for k, v in sorted(calls.items()) if k.startswith("DynamoDB")
        ),
        "records after the pass": dict(statuses),
        "repaired / left running": f"{result.get('repaired', 0)} / {result.get('running', 0)}",
        "leases still held (running commands)": left,
    }
    return figures


def figures() -> list[tuple[str, str]]:
    return [(name, str(value)) for name, value in run().items()]


if __name__ == "__main__":
    for name, value in run(int(sys.argv[1]) if len(sys.argv) > 1 else 1000).items():
        print(f"{name:<40} {value}")
