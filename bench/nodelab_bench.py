"""Node lab benchmark: how long the node script takes per strategy, how many containerd restarts
it makes, and how long the CRI API is unavailable while a restart remediation runs.

Not a test. Needs what the node lab needs (root, unshare, containerd, runc, docker-registry,
openssl; grpcio, grpcio-tools, cryptography). From the repository root:

    PYTHONPATH=tools:. .venv/bin/python bench/nodelab_bench.py [--runs 3] [--os-family debian]

(The script also puts tools/ and the repository root on sys.path itself, so plain
`.venv/bin/python bench/nodelab_bench.py` works too.)

Each run uses a fresh lab node on which the CA was trusted after containerd had loaded its CA
pool (the EKS situation), except the "auto, containerd started after CA" row, where containerd
was restarted after the CA was trusted (nothing to do). During every run a thread calls the CRI
Version RPC every ~10 ms; "CRI unavailable" is the longest stretch from the first failed call to
the next successful one (resolution ~10 ms plus one call timeout).
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
from tests.nodelab.lab import NodeLab, Registry, lab_available  # noqa: E402

CASES = [
    ("auto, containerd predates CA", "auto", False),
    ("auto, containerd started after CA", "auto", True),
    ("restart", "restart", False),
    ("hosts-toml", "hosts-toml", False),
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


def run_case(registry: Registry, os_family: str, strategy: str, started_after_ca: bool) -> dict:
    with NodeLab(os_family, registry=registry) as lab:
        lab.trust_ca_without_restart()
        if started_after_ca:
            lab.restart_containerd()
        pid = lab.containerd_pid()
        env = lab.script_env(SSM_Strategy=strategy)
        poller = CriPoller(lab.socket_path)
        poller.start()
        time.sleep(0.05)
        try:
            run = lab.run_script(env)
        finally:
            time.sleep(0.05)
            poller.stop()
        if run.exit_code != 0 or run.result is None:
            raise RuntimeError(f"{strategy}: script failed (exit {run.exit_code}): {run.result}\n{run.stderr[-2000:]}")
        pulled, message = lab.cri_pull()
        if not pulled:
            raise RuntimeError(f"{strategy}: CRI pull failed after the remediation: {message}")
        return {
            "seconds": lab.last_script_seconds,
            "restarted": bool(run.result["restarted"]) and lab.containerd_pid() != pid,
            "outage": poller.longest_outage(),
            "polls": len(poller.samples),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per strategy (default 3)")
    parser.add_argument("--os-family", default="debian", choices=["debian", "ubuntu", "al2", "al2023"])
    args = parser.parse_args(argv)
    ok, reason = lab_available()
    if not ok:
        print(f"node lab unavailable: {reason}", file=sys.stderr)
        return 2

    rows = []
    with Registry() as registry:
        for label, strategy, started_after in CASES:
            results = [run_case(registry, args.os_family, strategy, started_after) for _ in range(args.runs)]
            rows.append((label, results))

    header = (
        f"{'case':<36} {'runs':>4} {'script s (median)':>18} {'min':>6} {'max':>6} "
        f"{'restarts':>8} {'CRI unavailable s (max)':>24}"
    )
    print(f"node lab bench, os family {args.os_family}, {args.runs} run(s) per case")
    print(header)
    print("-" * len(header))
    for label, results in rows:
        secs = [r["seconds"] for r in results]
        print(
            f"{label:<36} {len(results):>4} {statistics.median(secs):>18.3f} {min(secs):>6.3f} "
            f"{max(secs):>6.3f} {sum(r['restarted'] for r in results):>8} "
            f"{max(r['outage'] for r in results):>24.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
