"""`eks-ca-remediator status`: the fleet's state from the records table, for people and scripts.

    eks-ca-remediator status [--stack NAME | --table NAME] [--cluster [ACCOUNT/]NAME ...] [--account ID ...] [--json]
    eks-ca-remediator status --instance i-0123456789abcdef0
    eks-ca-remediator status --failed --since 24h

The table is found from the stack's outputs (`--stack`, by default the stack_name of samconfig.toml
in the current directory, `--config-env` picks its block), or named with `--table`. The clusters
are the stack's EnrolledClusters, or those named with `--cluster`; in a central deployment a member
account's cluster is `<account>/<name>`, and `--account` shows the clusters in those member accounts
too (models.ClusterRef). Records are read through the
functions' own adapter (RecordStore): a cluster's attempts by the by-cluster index, a node's by its
partition key; never a scan.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError, PartialCredentialsError

from eks_ca_remediator import __version__, status
from eks_ca_remediator.adapters.clients import RETRY_CONFIG
from eks_ca_remediator.adapters.ec2 import Ec2Reader
from eks_ca_remediator.adapters.records import RecordStore
from eks_ca_remediator.models import ACCOUNT_RE, INSTANCE_ID_RE, ClusterRef

DEFAULT_STACK = "eks-ca-remediator"
EARLIEST = "0000"  # sorts before every created_at: the whole of a cluster's records (their TTL bounds them)
CREDENTIAL_CODES = frozenset(
    {"ExpiredToken", "ExpiredTokenException", "UnrecognizedClientException", "InvalidClientTokenId"}
)


class UsageError(Exception):
    """Bad input (a name that does not exist, a malformed option): one line, exit code 2."""


class EnvironmentProblem(Exception):
    """No credentials, no region, no endpoint: one line, exit code 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def _since(text: str) -> int:
    try:
        return status.parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--since {text!r}: ")) from exc


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="eks-ca-remediator", description="eks-ca-remediator's command line.")
    top.add_argument("--version", action="version", version=f"eks-ca-remediator {__version__}")
    commands = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    cmd = commands.add_parser("status", help="the fleet's state from the records table")
    where = cmd.add_mutually_exclusive_group()
    where.add_argument("--stack", help="the deployed stack (default: stack_name in samconfig.toml)")
    where.add_argument("--table", help="the records table, when there is no stack to read it from")
    cmd.add_argument("--config-env", default="default", help="samconfig.toml block for the default stack")
    cmd.add_argument("--region", help="AWS region (default: the AWS CLI's)")
    cmd.add_argument(
        "--cluster", action="append", default=[], help="a cluster, [account/]name (repeatable; default: enrolled ones)"
    )
    cmd.add_argument(
        "--account", action="append", default=[], help="central mode: also these member accounts' clusters (repeatable)"
    )
    cmd.add_argument("--instance", help="one node's attempt history")
    cmd.add_argument("--failed", action="store_true", help="the FAILED and TIMED_OUT attempts")
    cmd.add_argument("--since", type=_since, metavar="30m|24h|7d", help="only attempts created since then")
    cmd.add_argument("--json", action="store_true", help="JSON for scripts")
    return top


# ---------------------------------------------------------------- where the records are


@dataclass(frozen=True)
class Source:
    table: str
    clusters: list[str]
    in_flight_limit: str = ""


def default_stack(config_env: str, cwd: Path) -> str:
    """The stack_name samconfig.toml deploys (its `<env>.global` or `<env>.deploy` parameters)."""
    path = cwd / "samconfig.toml"
    if not path.is_file():
        return DEFAULT_STACK
    config = tomllib.loads(path.read_text()).get(config_env, {})
    for command in ("global", "deploy"):
        name = config.get(command, {}).get("parameters", {}).get("stack_name")
        if name:
            return str(name)
    return DEFAULT_STACK


def stack_source(cloudformation: Any, stack: str, region: str) -> Source:
    try:
        described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ValidationError":
            raise UsageError(f"stack {stack!r} not found in {region}") from exc
        raise
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    if "RecordsTableName" not in outputs:
        raise UsageError(f"stack {stack!r} has no RecordsTableName output: is it an eks-ca-remediator stack?")
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in described.get("Parameters", [])}
    clusters = [c.strip() for c in parameters.get("EnrolledClusters", "").split(",") if c.strip()]
    return Source(outputs["RecordsTableName"], clusters, parameters.get("MaxInFlightPerCluster", ""))


# ---------------------------------------------------------------- reading


class Progress:
    """`reading prod-a: 12000 attempts` on stderr while pages come in, when stderr is a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._on = stream.isatty()

    def page(self, cluster: str, count: int) -> None:
        if self._on:
            self._stream.write(f"\rreading {cluster}: {count} attempts")
            self._stream.flush()

    def done(self) -> None:
        if self._on:
            self._stream.write("\r\033[K")
            self._stream.flush()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def gone_nodes(ec2: Ec2Reader, attempts: Sequence[dict[str, Any]]) -> set[str]:
    """The nodes of this account among the attempts that EC2 lists as shutting-down or terminated
    (a member account's nodes, in central mode, are not visible with these credentials)."""
    ours = [a["pk"] for a in attempts if not a.get("account")]
    return {node for node, state in ec2.states(ours).items() if state in status.GONE_STATES}


def cluster_statuses(
    store: RecordStore,
    source: Source,
    clusters: Sequence[ClusterRef],
    since: str,
    now: float,
    progress: Progress,
    ec2: Ec2Reader | None = None,
) -> list[status.ClusterStatus]:
    summaries = []
    for cluster in clusters:
        attempts = store.cluster_attempts(
            cluster, since, _iso(now), on_page=lambda n, c=cluster.key: progress.page(c, n)
        )
        progress.done()
        breaker = store.breaker(cluster)
        # (a member account's cluster is shown as asked: --account names it, records or not)
        if not attempts and breaker is None and cluster.account is None and cluster.name not in source.clusters:
            raise UsageError(f"unknown cluster {cluster.key!r}: no records of it in table {source.table}")
        leases, _ = store.leases(cluster)
        gone = gone_nodes(ec2, attempts) if ec2 is not None and attempts else set()
        summary = status.summarize(cluster, attempts, breaker, leases, now, gone)
        summaries.append(status.with_rollouts(summary, store.good_bundle(cluster), store.rollouts(cluster)))
    return summaries


def failed_attempts(
    store: RecordStore, clusters: Sequence[ClusterRef], since: str, now: float, progress: Progress
) -> list[dict[str, Any]]:
    failed = []
    for cluster in clusters:
        attempts = store.cluster_attempts(
            cluster, since, _iso(now), on_page=lambda n, c=cluster.key: progress.page(c, n)
        )
        progress.done()
        failed += [a for a in attempts if a["status"] in status.FAILED]
    return sorted(failed, key=lambda a: a["created_at"], reverse=True)


def _checked(args: argparse.Namespace, source: Source, region: str) -> list[ClusterRef]:
    """The clusters to show: each --cluster (`name` or `<account>/<name>`), else the enrolled ones;
    with --account, the same names in each of those member accounts as well."""
    try:
        named = [ClusterRef.of_key(cluster, region) for cluster in args.cluster]
    except ValueError as exc:
        raise UsageError(f"--cluster: {exc}") from exc
    bad = [account for account in args.account if not ACCOUNT_RE.fullmatch(account)]
    if bad:
        raise UsageError(f"--account {bad[0][:24]!r} is not an AWS account id (12 digits)")
    if args.instance is not None and not INSTANCE_ID_RE.match(args.instance):
        raise UsageError(f"--instance {args.instance!r} is not an EC2 instance id (i-0123456789abcdef0)")
    clusters = named or [ClusterRef(name, None, region) for name in source.clusters]
    clusters += [replace(c, account=a) for a in args.account for c in clusters if c.account is None]
    if not clusters and args.instance is None:
        raise UsageError("no clusters to show: name them with --cluster (a table alone does not list them)")
    return list(dict.fromkeys(clusters))


def run(args: argparse.Namespace, session: Any, out: TextIO, err: TextIO, now: float) -> int:
    region = session.region_name
    if not region:
        raise EnvironmentProblem(
            "no AWS region: pass --region, or set AWS_REGION (or AWS_DEFAULT_REGION) or a profile's region"
        )
    if args.table:
        source = Source(args.table, [])
    else:
        stack = args.stack or default_stack(args.config_env, Path.cwd())
        source = stack_source(session.client("cloudformation", config=RETRY_CONFIG), stack, region)
    args.resolved_table, args.resolved_region = source.table, region
    clusters = _checked(args, source, region)
    store = RecordStore(session.resource("dynamodb", config=RETRY_CONFIG).Table(source.table))
    progress = Progress(err)
    if args.instance is not None:
        attempts = store.attempts(args.instance)
        if not attempts:
            raise UsageError(f"unknown instance {args.instance!r}: no records of it in table {source.table}")
        payload: Any = {"instance_id": args.instance, "attempts": attempts}
        text = status.render_history(args.instance, attempts)
    elif args.failed:
        seconds = args.since or status.parse_since("24h")
        attempts = failed_attempts(store, clusters, _iso(now - seconds), now, progress)
        payload = {"since": _iso(now - seconds), "attempts": attempts}
        text = status.render_failed(attempts, _iso(now - seconds)[:16].replace("T", " ") + " UTC")
    else:
        since = _iso(now - args.since) if args.since else EARLIEST
        ec2 = Ec2Reader(session.client("ec2", config=RETRY_CONFIG))
        summaries = cluster_statuses(store, source, clusters, since, now, progress, ec2)
        payload = {"table": source.table, "clusters": [s.as_json() for s in summaries]}
        text = status.render_clusters(summaries, source.in_flight_limit)
    out.write(json.dumps(payload, indent=2, default=str) + "\n" if args.json else text)
    return 0


def main(
    argv: Sequence[str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    args = parser().parse_args(argv)
    try:
        # boto3 reads AWS_DEFAULT_REGION; AWS_REGION (what Lambda and other SDKs set) counts too
        region = args.region or os.environ.get("AWS_REGION") or None
        return run(args, boto3.Session(region_name=region), out, err, clock())
    except UsageError as exc:
        err.write(f"eks-ca-remediator status: {exc}\n")
        return 2
    except (NoCredentialsError, PartialCredentialsError) as exc:
        err.write(f"eks-ca-remediator status: no AWS credentials ({exc}): configure a profile or set AWS_PROFILE\n")
        return 1
    except NoRegionError:
        err.write(
            "eks-ca-remediator status: no AWS region: pass --region, or set AWS_REGION (or AWS_DEFAULT_REGION) or a profile's region\n"
        )
        return 1
    except EnvironmentProblem as exc:
        err.write(f"eks-ca-remediator status: {exc}\n")
        return 1
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") == "ResourceNotFoundException":
            table = getattr(args, "resolved_table", "")
            err.write(
                f"eks-ca-remediator status: table {table!r} not found in {getattr(args, 'resolved_region', '')}\n"
            )
            return 2
        hint = ": refresh your AWS credentials" if error.get("Code") in CREDENTIAL_CODES else ""
        err.write(f"eks-ca-remediator status: AWS refused: {error.get('Code')}: {error.get('Message', '')}{hint}\n")
        return 1
    except BotoCoreError as exc:
        err.write(f"eks-ca-remediator status: {exc}\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
