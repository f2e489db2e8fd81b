"""Run node-script modules (node/lib/*.sh) as pure shell functions through bash, for unit tests."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "node" / "lib"


def run_modules(modules: tuple[str, ...], code: str, cwd: Path | None = None) -> str:
    """Source `modules` (they only define functions and globals), run `code`, return its stdout."""
    sources = " ".join(f". {shlex.quote(str(LIB / m))};" for m in modules)
    proc = subprocess.run(
        ["bash", "-c", f"set -u; exec 3>/dev/null; {sources} {code}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@contextmanager
def running(argv: list[str], marker: bytes, **popen: object) -> Iterator[int]:
    """A process started from `argv`, once its /proc/PID/cmdline holds `marker` (it has exec'd);
    yields its pid and kills it afterwards."""
    proc = subprocess.Popen(argv, **popen)
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    for _ in range(200):
        if marker in cmdline.read_bytes():
            break
        time.sleep(0.01)
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
