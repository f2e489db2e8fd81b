"""CloudWatch Logs subscription payloads, encoded as CloudWatch Logs delivers them to Lambda."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
# The fixture lines name this node; tests put a moto instance's id and private DNS name in its place.
SAMPLE_INSTANCE = "i-0a1b2c3d4e5f60789"
SAMPLE_HOSTNAMES = ("ip-10-0-1-23.ec2.internal", "ip-10-0-1-23.us-west-2.compute.internal")


def fixture_lines() -> list[dict[str, Any]]:
    return json.loads((ROOT / "tests/fixtures/pull_failure_lines.json").read_text())


def fixture(name: str) -> dict[str, Any]:
    return next(case for case in fixture_lines() if case["name"] == name)


def for_node(text: str, instance_id: str, hostname: str) -> str:
    """A fixture line or stream name as the given node would have logged it."""
    for sample in SAMPLE_HOSTNAMES:
        text = text.replace(sample, hostname)
    return text.replace(SAMPLE_INSTANCE, instance_id)


def payload(
    messages: Iterable[str],
    log_stream: str,
    log_group: str = "/aws/containerinsights/prod-a/dataplane",
    first_timestamp: int = 1_795_000_000_000,
    message_type: str = "DATA_MESSAGE",
) -> dict[str, Any]:
    data = {
        "messageType": message_type,
        "owner": ACCOUNT,
        "logGroup": log_group,
        "logStream": log_stream,
        "subscriptionFilters": ["eks-ca-remediator-pull-failures-1"],
        "logEvents": [
            {
                "id": str(37_000_000_000_000_000_000_000_000_000_000_000_000_000 + i),
                "timestamp": first_timestamp + i,
                "message": message,
            }
            for i, message in enumerate(messages)
        ],
    }
    raw = gzip.compress(json.dumps(data, separators=(",", ":")).encode())
    return {"awslogs": {"data": base64.b64encode(raw).decode()}}
