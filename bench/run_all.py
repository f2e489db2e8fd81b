"""All benchmarks in one command (`make bench`): printed figures and ratios, never pass/fail tests.

1. Cold start: each handler's import time as a ratio to `import boto3` alone, measured with
   `python -B -X importtime` in fresh subprocesses, interleaved, medians of --runs (target <= 1.3),
   with the layer built for this machine by layers/common/build_layer.py as it is shipped (bytecode
   compiled ahead) and, for comparison, as sources only; plus the stack floor (boto3 + Powertools +
   one pydantic model). The handler figure includes boto3; the costliest packages are listed.
2. Built artifact sizes of the layer and each function, from `sam build` into .aws-sam/bench-build
   (skipped, with the reason, when sam or Python 3.13 or PyPI is not available).
3. Launch to command on the simulated clock (moto + fake Run Command): a node whose SSM agent
   comes Online at t=35 s; seconds from Online to SendCommand (target <= 5) and describe calls per
   node, for the re-check schedule in decisions.agent_recheck_delay and for a flat 15 s interval.
4. The other benchmarks' figures (pull-failure burst, node lab, sweep, reconciler pass per 1,000
   open attempts): a bench module with a
   `figures() -> list[tuple[str, str]]` function is asked for its rows; the node lab bench's
   printed table is read; an absent bench is reported "not available".

    PYTHONPATH=layers/common:tools:. .venv/bin/python bench/run_all.py [--runs 7] [--skip-build]
        [--skip-nodelab] [--readme]

--readme writes the summary table into README.md between the bench markers.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for entry in (
    ROOT / "layers" / "common",
    ROOT / "functions" / "on_launch",
    ROOT / "functions" / "agent_wait",
    ROOT / "functions" / "on_command_status",
    ROOT / "functions" / "reconcile",
    ROOT / "tools",
    ROOT,
):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

HANDLERS = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / f"{p.name}.py").exists())
COLD_START_TARGET = 1.3
ONLINE_TARGET_SECONDS = 5.0
README_START = "<!-- bench:start (bench/run_all.py --readme writes this table) -->"
README_END = "<!-- bench:end -->"

Row = tuple[str, str, str]  # figure, value, note


# ------------------------------------------------------------------ 1. cold start


def deployed_environment() -> dict[str, str]:
    """The functions' literal environment variables from template.yaml's Globals (those that are
    not CloudFormation expressions): the handlers are imported with them, as Lambda imports them."""
    from ssm_document import load_template

    variables = load_template((ROOT / "template.yaml").read_text())["Globals"]["Function"]["Environment"]["Variables"]
    return {key: value for key, value in variables.items() if isinstance(value, str)}


def import_profile(code: str, pythonpath: list[Path]) -> tuple[float, dict[str, float]]:
    """Total import milliseconds of `code` (sum of the top-level imports' cumulative times), and
    self milliseconds per top-level package."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in pythonpath), PYTHONDONTWRITEBYTECODE="")
    env.update(deployed_environment())
    env.pop("PYTHONSTARTUP", None)
    # -B: like Lambda on its read-only /opt, nothing compiled here is cached for the next run
    proc = subprocess.run(
        [sys.executable, "-B", "-X", "importtime", "-c", code], env=env, capture_output=True, text=True, check=True
    )
    total, per_package = 0.0, defaultdict(float)
    for line in proc.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)", line)
        if not match:
            continue
        self_us, cumulative_us, indent, module = int(match[1]), int(match[2]), match[3], match[4]
        if len(indent) == 1:
            total += cumulative_us / 1000
        per_package[module.split(".")[0]] += self_us / 1000
    return total, dict(per_package)


# The least any handler of this stack imports: boto3, Powertools Logger and Metrics, one pydantic
# model - what the project's packages cost before a line of ours. Its ratio is the floor.
STACK_FLOOR = """\
import boto3
from aws_lambda_powertools import Logger, Metrics
from pydantic import BaseModel


class Event(BaseModel):
    id: str


logger, metrics = Logger(), Metrics()
"""
FLOOR = "(stack floor)"


def host_layers(directory: Path) -> dict[str, Path]:
    """The layer built by layers/common/build_layer.py for this machine: as shipped (bytecode
    compiled ahead) and as sources only (what sam's python builder ships)."""
    import build_layer

    sources = build_layer.install(directory / "sources", platform=None)
    shipped = directory / "shipped" / "python"
    shutil.copytree(sources, shipped)
    build_layer.compile_bytecode(shipped)
    return {"shipped": shipped, "sources only": sources}


def cold_start(runs: int) -> list[Row]:
    baseline: list[float] = []
    totals: dict[tuple[str, str], list[float]] = defaultdict(list)
    ratios: dict[tuple[str, str], list[float]] = defaultdict(list)
    packages: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as work:
        print("\nbuilding the layer for this machine (layers/common/build_layer.py) ...", flush=True)
        layers = host_layers(Path(work))
        floor_dir = Path(work) / "floor"
        floor_dir.mkdir()
        (floor_dir / "stack_floor.py").write_text(STACK_FLOOR)
        imports: dict[tuple[str, str], tuple[str, list[Path]]] = {}
        for kind, layer in layers.items():
            imports[FLOOR, kind] = ("import stack_floor", [layer, floor_dir])
            for name in HANDLERS:
                imports[name, kind] = (f"import {name}", [layer, ROOT / "functions" / name])
        for _ in range(runs):  # interleaved, so machine load affects every column alike
            base_run = import_profile("import boto3", [])[0]
            baseline.append(base_run)
            for key, (code, path) in imports.items():
                total, per_package = import_profile(code, path)
                totals[key].append(total)
                ratios[key].append(total / base_run)
                packages[key].append(per_package)
    base = statistics.median(baseline)
    rows: list[Row] = [("cold start: import boto3 alone", f"{base:.0f} ms", f"median of {runs}")]
    print(f"\ncold start (python -B -X importtime, {runs} interleaved runs): import boto3 = {base:.0f} ms (median)")
    print("ratio: median over the runs of (import ms / that run's boto3 ms); environment: template Globals;")
    print("layer: built for this machine, as shipped (bytecode compiled ahead) and as sources only")
    print(f"{'handler':<20} {'layer':<13} {'import ms':>9} {'ratio':>6}  costliest packages (self ms, median)")
    for key in imports:
        name, kind = key
        median = statistics.median(totals[key])
        ratio = statistics.median(ratios[key])
        keys = {k for run in packages[key] for k in run}
        by_package = {k: statistics.median(run.get(k, 0.0) for run in packages[key]) for k in keys}
        top = sorted(by_package.items(), key=lambda kv: -kv[1])[:5]
        costly = ", ".join(f"{k} {v:.0f}" for k, v in top)
        verdict = "ok" if ratio <= COLD_START_TARGET else f"misses {COLD_START_TARGET}"
        print(f"{name:<20} {kind:<13} {median:>9.0f} {ratio:>6.2f}  {costly}  [{verdict}]")
        if kind == "shipped":
            note = f"{median:.0f} ms; target <= {COLD_START_TARGET}"
            if name == FLOOR:
                note = f"{median:.0f} ms; boto3 + Powertools Logger/Metrics + one pydantic model, nothing of ours"
            rows.append((f"cold start: {name} / boto3", f"{ratio:.2f}", note))
    for name in (FLOOR, HANDLERS[0]):  # what shipping the bytecode saves, in two rows
        shipped, sources = (statistics.median(totals[name, kind]) for kind in ("shipped", "sources only"))
        ratio = statistics.median(ratios[name, "sources only"])
        note = f"{sources:.0f} ms vs {shipped:.0f} ms as shipped: a layer without .pyc on a read-only /opt"
        rows.append((f"cold start: {name}, layer without bytecode / boto3", f"{ratio:.2f}", note))
    return rows


# ------------------------------------------------------------------ 2. artifact sizes


def zipped_size(directory: Path) -> int:
    with tempfile.TemporaryFile() as handle:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(directory.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(directory))
        return handle.tell()


def tree_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def artifact_sizes(skip: bool) -> list[Row]:
    sam = ROOT / ".venv-sam" / "bin" / "sam"
    # a real interpreter, not a pyenv shim: sam validates the binary it finds on PATH
    found = sorted(Path.home().glob(".pyenv/versions/3.13*/bin/python3.13"))
    python313 = str(found[-1]) if found else shutil.which("python3.13")
    reason = (
        "--skip-build"
        if skip
        else "sam not installed (make build installs it)"
        if not sam.exists()
        else "python3.13 not found"
        if python313 is None
        else ""
    )
    build_dir = ROOT / ".aws-sam" / "bench-build"
    if not reason:
        bindir = str(Path(python313).parent)
        env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""), SAM_CLI_TELEMETRY="0")
        cmd = [str(sam), "build", "--region", "us-east-1", "--build-dir", str(build_dir)]
        cmd += ["--cached", "--cache-dir", str(ROOT / ".aws-sam" / "bench-cache")]
        print("\nsam build into .aws-sam/bench-build ...", flush=True)
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                reason = "sam build failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:120]
        except subprocess.TimeoutExpired:
            reason = "sam build took longer than 15 minutes"
    if reason:
        print(f"\nartifact sizes: skipped ({reason})")
        return [("artifact sizes", "skipped", reason)]
    rows: list[Row] = []
    print(f"\n{'artifact (sam build)':<28} {'unzipped KiB':>12} {'zipped KiB':>11}")
    for directory in sorted(p for p in build_dir.iterdir() if p.is_dir()):
        raw, packed = tree_size(directory), zipped_size(directory)
        print(f"{directory.name:<28} {raw / 1024:>12.0f} {packed / 1024:>11.0f}")
        rows.append(
            (f"artifact: {directory.name}", f"{packed / 1024:.0f} KiB zipped", f"{raw / 1024:.0f} KiB unzipped")
        )
    return rows


# ------------------------------------------------------------------ 3. launch to command


def launch_to_command(online_at: float, flat: bool) -> tuple[float, int, int, int]:
    """(Online -> SendCommand seconds, DescribeInstanceInformation calls, DescribeInstances calls,
    agent-wait messages) for one node on the simulated clock."""
    from unittest import mock

    from eks_ca_remediator import decisions
    from eks_ca_remediator.logic import remediation
    from on_launch import handler as on_launch

    from tests.fakes.world import LambdaContext, World

    def flat_delay(waited: float, recheck_seconds: int) -> int:
        return recheck_seconds

    patches = (
        [mock.patch.object(decisions, "agent_recheck_delay", flat_delay)]
        + [mock.patch.object(remediation, "agent_recheck_delay", flat_delay)]
        if flat
        else []
    )
    for patch in patches:
        patch.start()
    try:
        with World.create(AGENT_RECHECK_SECONDS="15", AGENT_WAIT_DEADLINE_SECONDS="900") as world:
            counts = {"DescribeInstances": 0}

            def count_describe(**_: object) -> None:
                counts["DescribeInstances"] += 1

            world.ec2.meta.events.register("before-call.ec2.DescribeInstances", count_describe)
            [node] = world.add_nodes(agent_online_after=online_at)
            t0 = world.clock()
            on_launch(world.launch_event(node), LambdaContext())
            counts["DescribeInstances"] -= 1  # the launch's own lookup of the instance is not agent waiting
            while not world.ssm.commands and world.clock() - t0 < 900:
                world.run_for(0.5, step=0.5)
            sent = world.ssm.commands[0]["at"] - t0 - online_at if world.ssm.commands else float("inf")
            describes = world.ssm.calls.get("DescribeInstanceInformation", 0)
            return sent, describes, counts["DescribeInstances"], world.queue.sent
    finally:
        for patch in patches:
            patch.stop()


def launch_rows() -> list[Row]:
    import logging

    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "EksCaRemediatorBench")
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "eks-ca-remediator")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "testing")
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    rows: list[Row] = []
    print("\nlaunch to command (simulated clock, AGENT_RECHECK_SECONDS=15; agent Online at t)")
    print(f"{'schedule':<26} {'t=35: Online->Send s':>20} {'SSM describes':>13} {'EC2 describes':>13} {'messages':>8}")
    summary = {}
    devnull = open(os.devnull, "w")  # noqa: SIM115 - the handlers print EMF to stdout
    for label, flat in (("dense 20-60 s, backoff", False), ("flat 15 s (before)", True)):
        real_stdout, sys.stdout = sys.stdout, devnull
        try:
            sent, ssm_calls, ec2_calls, messages = launch_to_command(35, flat)
            worst = max(launch_to_command(t, flat)[0] for t in range(20, 61))
        finally:
            sys.stdout = real_stdout
        summary[label] = (sent, worst)
        print(
            f"{label:<26} {sent:>20.1f} {ssm_calls:>13} {ec2_calls:>13} {messages:>8}   worst for Online in 20..60 s: {worst:.1f} s"
        )
        if not flat:
            rows.append(
                (
                    "launch: Online (t=35 s) -> SendCommand",
                    f"{sent:.1f} s",
                    f"target <= {ONLINE_TARGET_SECONDS:.0f} s; worst for Online at 20-60 s: {worst:.1f} s",
                )
            )
            rows.append(
                (
                    "launch: describe calls per node (t=35 s)",
                    f"{ssm_calls} SSM + {ec2_calls} EC2",
                    f"{messages} agent-wait messages",
                )
            )
        else:
            rows.append(
                (
                    "launch: same, flat 15 s re-check (before)",
                    f"{sent:.1f} s",
                    f"{ssm_calls} SSM + {ec2_calls} EC2 describes; worst {worst:.1f} s",
                )
            )
    devnull.close()
    return rows


# ------------------------------------------------------------------ 4. the other benchmarks


def other_benches(skip_nodelab: bool) -> list[Row]:
    rows: list[Row] = []
    for label, filename in (
        ("pull-failure burst", "pull_failure_bench.py"),
        ("sweep", "sweep_bench.py"),
        ("reconciler", "reconcile_bench.py"),
        ("rollout of 5,000 nodes", "rollout_bench.py"),
    ):
        path = ROOT / "bench" / filename
        if not path.exists():
            rows.append((label, "not available", f"bench/{filename} absent"))
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        assert spec.loader is not None
        try:
            spec.loader.exec_module(module)
            figures = getattr(module, "figures", None)
            if figures is None:
                rows.append((label, "not available", f"bench/{filename} has no figures() for this table"))
                continue
            rows += [(f"{label}: {name}", str(value), f"bench/{filename}") for name, value in figures()]
        except Exception as exc:  # noqa: BLE001 - a broken neighbour bench must not hide the others' figures
            rows.append((label, "not available", f"bench/{filename} failed: {type(exc).__name__}: {exc}"[:160]))
    rows += nodelab_rows(skip_nodelab)
    print()
    for figure, value, note in rows:
        print(f"{figure:<52} {value:>16}  {note}")
    return rows


def nodelab_rows(skip: bool) -> list[Row]:
    path = ROOT / "bench" / "nodelab_bench.py"
    if not path.exists():
        return [("node lab", "not available", "bench/nodelab_bench.py absent")]
    if skip:
        return [("node lab", "not available", "--skip-nodelab")]
    print("\nnode lab bench (1 run per case) ...", flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in (ROOT / "tools", ROOT)))
    try:
        proc = subprocess.run(
            [sys.executable, str(path), "--runs", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200
        )
    except subprocess.TimeoutExpired:
        return [("node lab", "not available", "took longer than 20 minutes")]
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [("node lab", "not available", last[:160])]
    rows: list[Row] = []
    pattern = re.compile(r"^(.{28})  (.{30})  +(\d+) +([\d.]+) +(\d+) +([\d.]+)$")
    for line in proc.stdout.splitlines():
        match = pattern.match(line)
        if match:
            node, case = match[1].strip(), match[2].strip()
            rows.append(
                (
                    f"node lab ({node}): {case}",
                    f"{float(match[4]):.2f} s",
                    f"restarts {match[5]}, CRI unavailable {float(match[6]):.2f} s",
                )
            )
    return rows or [("node lab", "not available", "no table in its output")]


# ------------------------------------------------------------------ table


def table(rows: list[Row]) -> str:
    lines = ["| Figure | Value | Note |", "| --- | --- | --- |"]
    lines += [f"| {f} | {v} | {n} |" for f, v, n in rows]
    return "\n".join(lines)


def write_readme(text: str) -> None:
    readme = ROOT / "README.md"
    content = readme.read_text()
    start, end = content.find(README_START), content.find(README_END)
    if start < 0 or end < start:
        print("README.md has no bench markers: table not written", file=sys.stderr)
        return
    readme.write_text(content[: start + len(README_START)] + "\n" + text + "\n" + content[end:])
    print("README.md: Benchmarks table updated")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="cold-start runs per import (default 7)")
    parser.add_argument("--skip-build", action="store_true", help="do not run sam build")
    parser.add_argument("--skip-nodelab", action="store_true", help="do not run the node lab bench")
    parser.add_argument("--readme", action="store_true", help="write the summary table into README.md")
    args = parser.parse_args(argv)
    rows = cold_start(args.runs)
    rows += artifact_sizes(args.skip_build)
    rows += launch_rows()
    rows += other_benches(args.skip_nodelab)
    summary = table(rows)
    print("\nsummary\n" + summary)
    if args.readme:
        write_readme(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
