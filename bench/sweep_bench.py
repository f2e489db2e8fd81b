"""Benchmark: API calls of a rotation sweep over 5,000 nodes, on moto + the fake Run Command.

Prints (does not assert) how many DescribeInstances, DescribeInstanceInformation, SendCommand
and DynamoDB reads/writes one cluster's sweep makes, per pass, and how long the passes took
here. Run: `PYTHONPATH=layers/common:functions/sweep:functions/remediate:functions/on_command_status:functions/agent_wait:tools:. .venv/bin/python bench/sweep_bench.py [nodes]`
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from bench import moto_env  # first: the environment the handlers are imported in

moto_env.use()

from eks_ca_remediator import wiring  # noqa: E402
from eks_ca_remediator.adapters import clients  # noqa: E402
from eks_ca_remediator.logic.plans import current_bundle  # noqa: E402
from eks_ca_remediator.logic.remediation import iso  # noqa: E402
from eks_ca_remediator.logic.sweep import Sweeper  # noqa: E402
from sweep import handler  # noqa: E402

from tests.fakes.pki import make_cert  # noqa: E402
from tests.fakes.world import BUNDLE_PARAMETER, FakeQueue, LambdaContext, World  # noqa: E402

DYNAMO_READS = {"GetItem", "Query", "BatchGetItem", "Scan"}
DYNAMO_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}


class Context(LambdaContext):
    """A Lambda context with the sweep function's 900 s, counted down by the real wall clock."""

    def __init__(self) -> None:
        super().__init__()
        self.deadline = time.monotonic() + 900

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


def main(total: int) -> None:
    current_share, never_share = total // 10, total // 10
    with World.create(
        SWEEP_QUEUE_URL="https://sqs.us-east-1.amazonaws.com/123456789012/sweep",
        MAX_IN_FLIGHT_PER_CLUSTER=str(total),
        BUNDLE_CACHE_SECONDS="300",
    ) as world:
        old = current_bundle(world.settings, "prod-a", world.clock()).fingerprint
        nodes = world.add_nodes(total, cluster="prod-a")
        new_ca, _ = make_cert("Rotated Root")
        world.ssm_parameters.put_parameter(Name=BUNDLE_PARAMETER, Value=new_ca, Type="SecureString", Overwrite=True)
        world.clock.advance(301)
        new = current_bundle(world.settings, "prod-a", world.clock()).fingerprint
        # history: 80 % succeeded with the old CA, 10 % already current, 10 % never remediated
        with world.table.batch_writer() as batch:
            for n, node in enumerate(nodes[: total - never_share]):
                fingerprint = new if n < current_share else old
                at = iso(world.clock() - 3600)
                batch.put_item(
                    Item={
                        "pk": node,
                        "sk": f"ATTEMPT#{at}#launch#seed-{n}",
                        "cluster": "prod-a",
                        "created_at": at,
                        "updated_at": at,
                        "status": "SUCCEEDED",
                        "fingerprint": fingerprint,
                        "trigger": "launch",
                        "trigger_key": f"seed-{n}",
                    }
                )

        calls: Counter[str] = Counter()

        def count(service: str):
            return lambda model, **_: calls.update([f"{service}:{model.name}"])

        world.ec2.meta.events.register("before-call.ec2.*", count("ec2"))
        world.table.meta.client.meta.events.register("before-call.dynamodb.*", count("dynamodb"))
        clients.client("ssm").meta.events.register("before-call.ssm.*", count("ssm-parameters"))
        world.ssm.calls.clear()

        queue = FakeQueue(world.clock)
        sweeper = Sweeper(remediator=world.remediator, queue=queue)
        original, wiring.sweeper = wiring.sweeper, lambda: sweeper
        try:
            event = json.loads((Path(__file__).resolve().parents[1] / "events" / "sweep-scheduled.json").read_text())
            event["time"] = datetime.fromtimestamp(world.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            handler(event, LambdaContext())
            passes = []
            while due := [r for r in queue.due() if '"prod-a"' in r["body"]]:
                for record in due:
                    started = time.monotonic()
                    result = handler({"Records": [record]}, Context())
                    passes.append((result, time.monotonic() - started))
        finally:
            wiring.sweeper = original

        ssm = Counter(world.ssm.calls)
        sent = Counter(i for c in world.ssm.commands for i in c["InstanceIds"])
        print(
            f"sweep of {total} running nodes of one cluster ({total - current_share - never_share} on the old CA, "
            f"{current_share} already current, {never_share} never remediated), in-flight limit {total}"
        )
        for n, (result, seconds) in enumerate(passes, 1):
            print(
                f"  pass {n}: {result['action']}, states {result.get('states')}, started {result.get('started')}, "
                f"{seconds:.1f} s wall on moto"
            )
        print(f"  nodes sent the new CA: {len(sent)} (max commands per node: {max(sent.values(), default=0)})")
        print(f"  DescribeInstances:           {calls['ec2:DescribeInstances']}")
        print(f"  DescribeInstanceInformation: {ssm['DescribeInstanceInformation']}")
        print(
            f"  SendCommand:                 {ssm['SendCommand']} (largest batch "
            f"{max((len(c['InstanceIds']) for c in world.ssm.commands), default=0)})"
        )
        print(f"  ListCommands:                {ssm['ListCommands']}")
        reads = sum(v for k, v in calls.items() if k.startswith("dynamodb:") and k.split(":")[1] in DYNAMO_READS)
        writes = sum(v for k, v in calls.items() if k.startswith("dynamodb:") and k.split(":")[1] in DYNAMO_WRITES)
        detail = ", ".join(f"{k.split(':')[1]} {v}" for k, v in sorted(calls.items()) if k.startswith("dynamodb:"))
        print(f"  DynamoDB reads: {reads}, writes: {writes} ({detail})")
        print(
            f"  SSM GetParameter (bundle source, cached {world.settings.bundle_cache_seconds} s): "
            f"{calls['ssm-parameters:GetParameter']}"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
