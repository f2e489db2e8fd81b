"""Node lab benchmark: per image profile and containerd version, how long the node script takes
per case, how many containerd restarts it makes, and how long containerd's CRI API is
unavailable while it runs.

Not a test. Needs what the node lab needs (root, unshare, containerd, runc, docker-registry,
openssl; grpcio, grpcio-tools, cryptography; containerd 2.x is fetched into .nodelab/). From the
repository root:

    PYTHONPATH=tools:. .venv/bin/python bench/nodelab_bench.py [--runs 3] [--node al2023-2]

Each run uses a fresh lab node in the EKS situation: on Linux images the CA was trusted after
containerd had loaded its CA pool; on Bottlerocket the CA is not in settings.pki yet. The
"already current" case first fixes the node, then measures a second run (nothing to do).
During every run a thread calls the CRI Version RPC every ~10 ms; "CRI unavailable" is the
longest stretch from the first failed call to the next successful one (resolution ~10 ms plus
one call timeout). Restarts are counted by containerd's PID, not by what the script reports
(on Bottlerocket, the OS restarts containerd when settings.pki changes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for entry in (str(ROOT / "tools"), str(ROOT)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from tests.nodelab.cri.client import CriClient  # noqa: E402
from tests.nodelab.lab import NODES, NodeLab, Registry, lab_available  # noqa: E402

# (label, strategy, fix the node first and measure a second run)
LINUX_CASES = [
    ("auto, containerd predates CA", "auto", False),
    ("auto, already current", "auto", True),
    ("restart", "restart", False),
    ("hosts-toml", "hosts-toml", False),
]
BOTTLEROCKET_CASES = [
    ("settings.pki set", "auto", False),
    ("already current", "auto", True),
]


class CriPoller(threading.Thread):
    """Calls RuntimeService/Version every `interval` seconds; records (monotonic time, ok)."""

    def __init__(self, socket_path: Path, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.socket_path = socket_path
        self.interval = interval
        self.samples: list[tuple[float, bool]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        with CriClient(str(self.socket_path)) as client:
            while not self._stop_event.is_set():
                ok, _ = client.version(timeout=0.2)
                self.samples.append((time.monotonic(), ok))
                self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def longest_outage(self) -> float:
        longest, down_since = 0.0, None
        for t, ok in self.samples:
            if not ok and down_since is None:
                down_since = t
            elif ok and down_since is not None:
                longest = max(longest, t - down_since)
                down_since = None
        if down_since is not None and self.samples:
            longest = max(longest, self.samples[-1][0] - down_since)
        return longest


def run_case(registry: Registry, node: tuple[str, str], strategy: str, second_run: bool) -> dict:
    with NodeLab(node[0], registry=registry, containerd=node[1]) as lab:
        if not lab.is_bottlerocket:
            lab.trust_ca_without_restart()
        env = lab.script_env(SSM_Strategy=strategy)
        if second_run:
            first = lab.run_script(env)
            if first.exit_code != 0:
                raise RuntimeError(f"{node} {strategy}: first run failed: {first.result}")
        pid = lab.containerd_pid()
        poller = CriPoller(lab.socket_path)
        poller.start()
        time.sleep(0.05)
        try:
            run = lab.run_script(env)
        finally:
            time.sleep(0.05)
            poller.stop()
        if run.exit_code != 0 or run.result is None:
            raise RuntimeError(
                f"{node} {strategy}: script failed (exit {run.exit_code}): {run.result}\n{run.stderr[-2000:]}"
            )
        pulled, message = lab.cri_pull()
        if not pulled:
            raise RuntimeError(f"{node} {strategy}: CRI pull failed after the remediation: {message}")
        return {
            "seconds": lab.last_script_seconds,
            "restarted": lab.containerd_pid() != pid,
            "outage": poller.longest_outage(),
            "polls": len(poller.samples),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per case (default 3)")
    parser.add_argument(
        "--node", action="append", choices=[f"{p}-{v}" for p, v in NODES], help="only these nodes (repeatable)"
    )
    args = parser.parse_args(argv)
    ok, reason = lab_available()
    if not ok:
        print(f"node lab unavailable: {reason}", file=sys.stderr)
        return 2
    nodes = [n for n in NODES if not args.node or f"{n[0]}-{n[1]}" in args.node]

    header = (
        f"{'node':<28}  {'case':<30}  {'runs':>4} {'script s (median)':>18} {'restarts':>8} "
        f"{'CRI unavailable s (max)':>24}"
    )
    print(f"node lab bench, {args.runs} run(s) per case")
    print(header)
    print("-" * len(header))
    with Registry() as registry:
        for node in nodes:
            cases = BOTTLEROCKET_CASES if node[0] == "bottlerocket" else LINUX_CASES
            for label, strategy, second_run in cases:
                results = [run_case(registry, node, strategy, second_run) for _ in range(args.runs)]
                secs = [r["seconds"] for r in results]
                name = f"{node[0]}, containerd {node[1]}"
                print(
                    f"{name:<28}  {label:<30}  {len(results):>4} {statistics.median(secs):>18.3f} "
                    f"{sum(r['restarted'] for r in results):>8} {max(r['outage'] for r in results):>24.3f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
