"""member-account.yaml's pull-failure forwarder, run from the template itself (its inline code),
and what EventBridge makes of what it puts on the central bus."""

from __future__ import annotations

import json
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from language_extensions import render

ROOT = Path(__file__).resolve().parents[2]
MEMBER_TEMPLATE = ROOT / "member-account.yaml"
LOG_GROUP = "/aws/containerinsights/prod-a/dataplane"


def member_template(log_groups: list[str] | None = None, clusters: list[str] | None = None) -> dict[str, Any]:
    """member-account.yaml rendered as deployed with these log groups (Fn::ForEach expanded)."""
    return render(
        MEMBER_TEMPLATE.read_text(),
        {"EnrolledClusters": clusters or ["prod-a"], "PullFailureSourceLogGroups": log_groups or [LOG_GROUP]},
    )


def forwarder_code() -> str:
    return member_template()["Resources"]["PullFailureForwarder"]["Properties"]["Code"]["ZipFile"]


class StubEvents:
    """An EventBridge client that keeps every PutEvents request; `failing` entries are refused as
    EventBridge refuses them (FailedEntryCount, ErrorCode on the entry), and `judge` sees each call."""

    def __init__(self, failing: int = 0, judge: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.requests: list[list[dict[str, Any]]] = []
        self.failing = failing
        self.judge = judge

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803 - boto3's name
        if self.judge is not None:
            self.judge({"Entries": Entries})
        self.requests.append(Entries)
        if self.failing:
            self.failing -= 1
            failed = {"ErrorCode": "InternalFailure", "ErrorMessage": "try again"}
            return {"FailedEntryCount": len(Entries), "Entries": [failed for _ in Entries]}
        return {"FailedEntryCount": 0, "Entries": [{"EventId": str(uuid.uuid4())} for _ in Entries]}

    @property
    def entries(self) -> list[dict[str, Any]]:
        return [e for request in self.requests for e in request]


def load(client: Any, bus_arn: str, monkeypatch: Any) -> types.ModuleType:
    """The forwarder's code from the rendered template, as Lambda loads index.py, with `client` as
    its EventBridge client and the environment the template gives it."""
    module = types.ModuleType("index")
    exec(compile(forwarder_code(), "member-account.yaml:PullFailureForwarder", "exec"), module.__dict__)  # noqa: S102
    module.client = client
    monkeypatch.setenv("CENTRAL_EVENT_BUS_ARN", bus_arn)
    return module


def delivered(entry: dict[str, Any], account: str, region: str) -> dict[str, Any]:
    """The event EventBridge delivers for a PutEvents entry of `account` in `region`: it sets
    account, region, id and time itself (PutEvents' request has no account field)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": entry["DetailType"],
        "source": entry["Source"],
        "account": account,
        "time": "2026-11-26T10:00:00Z",
        "region": region,
        "resources": entry.get("Resources", []),
        "detail": json.loads(entry["Detail"]),
    }
