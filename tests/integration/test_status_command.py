"""`eks-ca-remediator status` against moto: a stack, its records table and a few hundred records
written through the functions' adapter (tests/fakes/fleet.py)."""

from __future__ import annotations

import io
import json
import re

import boto3
import botocore.client
import pytest
from eks_ca_remediator import cli
from eks_ca_remediator.adapters.records import RecordStore
from moto import mock_aws

from tests.fakes import fleet
from tests.fakes.world import table_definition

REGION = "us-east-1"


@pytest.fixture
def calls(monkeypatch):
    """Every AWS operation the command calls; DescribeStacks answered as CloudFormation would."""
    seen: list[tuple[str, dict]] = []
    real = botocore.client.BaseClient._make_api_call

    def spy(self, operation, params):
        seen.append((operation, params))
        if operation == "DescribeStacks":
            return fleet.describe_stacks(params["StackName"])
        return real(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", spy)
    return seen


@pytest.fixture(scope="module")
def records():
    """The stack's table and the fleet's records (moto DynamoDB), written once for the module."""
    with mock_aws():
        table = boto3.resource("dynamodb", region_name=REGION).create_table(TableName=fleet.TABLE, **table_definition())
        fleet.seed(table)
        yield table


@pytest.fixture
def deployed(records, calls):
    return records


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def status(*argv: str, err: io.StringIO | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), err if err is not None else io.StringIO()
    code = cli.main(["status", *argv], out=out, err=err, clock=lambda: fleet.NOW)
    return code, out.getvalue(), err.getvalue()


def rows(text: str) -> dict[str, list[str]]:
    """First table of the output: cluster -> its cells (split on runs of two spaces or more)."""
    lines = text.split("\n\n")[0].splitlines()
    return {re.split(r"\s{2,}", line.strip())[0]: re.split(r"\s{2,}", line.strip()) for line in lines}


def test_per_cluster_summary_counts_nodes_by_state(deployed, calls):
    code, out, _ = status("--stack", fleet.STACK)
    assert code == 0
    table = rows(out)
    assert table["CLUSTER"] == ["CLUSTER", "NODES", "CURRENT", "DRIFTED", "IN FLIGHT", "FAILED", "WAITING", "SKIPPED"]
    for cluster, states in fleet.EXPECTED.items():
        assert table[cluster][1] == str(sum(states.values()))
        assert table[cluster][2:] == [
            str(states[s]) for s in ("current", "drifted", "in_flight", "failed", "waiting", "skipped")
        ]
    safety = rows(out.split("\n\n")[1])
    assert safety["CLUSTER"] == ["CLUSTER", "BUNDLE", "CA EXPIRES", "BREAKER", "FAILURES", "LEASES"]
    # ten live leases of the in-flight limit; prod-b's breaker opened at 5 consecutive failures
    assert safety["prod-a"] == ["prod-a", fleet.NEW_FP[:12], "2027-06-30", "closed", "1", "10/500"]
    assert safety["prod-b"] == ["prod-b", fleet.NEW_FP[:12], "2027-06-30", "OPEN", "5", "0/500"]
    sweeps = rows(out.split("\n\n")[2])
    assert sweeps["prod-a"] == ["prod-a", "2026-12-02 10:00", "280", "240", "12"]
    # the by-cluster index and the partition keys only: never a scan
    operations = [op for op, _ in calls]
    assert "Scan" not in operations
    assert {p.get("IndexName") for op, p in calls if op == "Query"} == {"by-cluster"}


def test_columns_are_aligned_under_their_headers(deployed):
    _, out, _ = status("--stack", fleet.STACK)
    for block in out.strip().split("\n\n"):
        lines = block.splitlines()
        header = lines[0]
        # every number column ends where its header ends
        for title in (
            "NODES",
            "CURRENT",
            "DRIFTED",
            "IN FLIGHT",
            "FAILED",
            "WAITING",
            "SKIPPED",
            "LEASES",
            "SUCCEEDED",
        ):
            if title in header:
                end = header.index(title) + len(title)
                for line in lines[1:]:
                    assert line[end - 1].isdigit(), (title, line)
                    assert line[end : end + 1] in ("", " "), (title, line)
        assert max(map(len, lines)) <= 80


def test_json_for_scripts(deployed):
    code, out, _ = status("--stack", fleet.STACK, "--json")
    assert code == 0
    payload = json.loads(out)
    assert payload["table"] == fleet.TABLE
    by_cluster = {c["cluster"]: c for c in payload["clusters"]}
    assert {name: c["states"] for name, c in by_cluster.items()} == fleet.EXPECTED
    assert by_cluster["prod-b"]["breaker"] == "OPEN"
    assert by_cluster["prod-a"]["last_sweep"]["sweep_id"] == fleet.SWEEP_ID


def test_instance_history_shows_reasons_and_the_nodes_result(deployed):
    node = fleet.instance("prod-a", 271)  # a FAILED node
    code, out, _ = status("--stack", fleet.STACK, "--instance", node)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"{node}  cluster prod-a  2 attempts")
    assert lines[2].split() == ["CREATED", "TRIGGER", "STATUS", "BUNDLE"]
    assert lines[3].split()[2:] == ["sweep", "FAILED", fleet.NEW_FP[:12]]  # newest first
    assert lines[4] == "    result: restart, restarted, verified: daemon-pull"
    assert lines[5] == "    reason: verification failed: registry.example.internal:443: x509"
    assert lines[6].split()[2:] == ["launch", "SUCCEEDED", fleet.OLD_FP[:12]]
    assert "certificate signed by unknown authority" in out  # the output tail


def test_failed_since_lists_only_recent_failures(deployed):
    code, out, _ = status("--stack", fleet.STACK, "--failed", "--since", "24h")
    assert code == 0
    assert out.rstrip().endswith("12 failed attempts since 2026-12-01 12:00 UTC")
    assert "pull-failure" not in out  # three days old
    assert "\n    verification failed: registry.example.internal:443: x509\n" in out  # each one's reason
    code, out, _ = status("--stack", fleet.STACK, "--failed", "--since", "7d", "--json")
    attempts = json.loads(out)["attempts"]
    assert len(attempts) == 12 + fleet.OLD_FAILURES
    assert {a["status"] for a in attempts} == {"FAILED", "TIMED_OUT"}


def test_table_and_clusters_named_without_a_stack(deployed):
    code, out, _ = status("--table", fleet.TABLE, "--cluster", "prod-b")
    assert code == 0
    assert list(rows(out)) == ["CLUSTER", "prod-b"]


def test_progress_on_a_terminal_while_pages_come_in(deployed):
    fleet.seed_big(deployed, nodes=2000)
    err = Tty()
    code, out, _ = status("--stack", fleet.STACK, "--cluster", "prod-c", err=err)
    assert code == 0
    assert rows(out)["prod-c"][:3] == ["prod-c", "2000", "2000"]
    counts = [int(n) for n in re.findall(r"\rreading prod-c: (\d+) attempts", err.getvalue())]
    assert len(counts) > 1  # DynamoDB returns 1 MB pages: the count moves while they come in
    assert counts == sorted(counts)
    assert counts[-1] == 2000
    assert err.getvalue().endswith("\r\033[K")  # the line is cleared before the table
    _, _, quiet = status("--stack", fleet.STACK)  # not a terminal: no progress in a pipe
    assert quiet == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--stack", "nope"], "stack 'nope' not found in us-east-1"),
        (["--stack", fleet.STACK, "--cluster", "prod-z"], "unknown cluster 'prod-z'"),
        (["--stack", fleet.STACK, "--instance", "i-0123456789abcdef0"], "unknown instance 'i-0123456789abcdef0'"),
        (["--stack", fleet.STACK, "--instance", "web-1"], "--instance 'web-1' is not an EC2 instance id"),
        (["--table", "missing-table", "--cluster", "prod-a"], "table 'missing-table' not found in us-east-1"),
        (["--table", fleet.TABLE], "no clusters to show: name them with --cluster"),
    ],
)
def test_bad_names_get_one_line_and_exit_2(deployed, argv, message):
    code, out, err = status(*argv)
    assert code == 2
    assert out == ""
    assert message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("since", ["30m", "24h", "7d"])
def test_since_accepts_minutes_hours_days(deployed, since):
    assert status("--stack", fleet.STACK, "--since", since)[0] == 0


def test_terminated_nodes_are_not_counted_among_a_clusters_nodes(deployed):
    """A node scaled in after its remediation keeps its records (until their TTL): it is not one of
    the cluster's nodes any more."""
    ec2 = boto3.client("ec2", region_name=REGION)
    launched = ec2.run_instances(ImageId="ami-12345678", MinCount=3, MaxCount=3)["Instances"]
    nodes = [i["InstanceId"] for i in launched]
    store = RecordStore(deployed)
    for n, node in enumerate(nodes):
        store.create_attempt(fleet._attempt("prod-t", node, fleet.NOW - 3600 + n, "launch", f"t-{n}", "f", "SUCCEEDED"))
    ec2.terminate_instances(InstanceIds=nodes[:1])
    code, out, _ = status("--stack", fleet.STACK, "--cluster", "prod-t", "--json")
    assert code == 0
    [cluster] = json.loads(out)["clusters"]
    assert cluster["nodes"] == 2
    assert cluster["states"]["current"] == 2
