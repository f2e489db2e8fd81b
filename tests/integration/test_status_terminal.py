"""The status command's tables as a user reads them: in a real terminal (a tmux pane 80 columns
wide), after the progress line has come and gone."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.fakes import fleet

ROOT = Path(__file__).resolve().parents[2]
WIDTH = 80
DONE = "status-exit="


def _tmux() -> str:
    tmux = shutil.which("tmux")
    if tmux is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is missing: CI installs it (.ci/run); the terminal check cannot run without it")
        pytest.skip("tmux is not installed (apt-get install tmux)")
    return tmux


def screen(*argv: str) -> list[str]:
    """Run the status command on the fleet in a detached tmux pane; its screen once it exited."""
    tmux, socket = _tmux(), f"status-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "TERM": "xterm-256color"}
    command = f"{sys.executable} -m tests.fakes.status_terminal {' '.join(argv)}; echo {DONE}$?; sleep 60"
    base = [tmux, "-L", socket, "-f", os.devnull]
    subprocess.run(
        [*base, "new-session", "-d", "-x", str(WIDTH), "-y", "60", "-c", str(ROOT), command], env=env, check=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            shown = subprocess.run([*base, "capture-pane", "-p"], capture_output=True, text=True, check=True).stdout
            if DONE in shown:
                return shown.rstrip("\n").splitlines()
            time.sleep(0.5)
        pytest.fail(f"the status command did not finish within 120 s; screen:\n{shown}")
    finally:
        subprocess.run([*base, "kill-server"], check=False, capture_output=True)


def test_tables_fit_an_80_column_terminal_with_aligned_columns():
    lines = screen("--cluster", "prod-a", "--cluster", "prod-b", "--cluster", "prod-c")
    assert lines[-1] == f"{DONE}0" or f"{DONE}0" in lines[-1], lines
    shown = [line for line in lines if DONE not in line]
    assert not any("reading" in line for line in shown)  # the progress line was cleared
    blocks = "\n".join(shown).strip().split("\n\n")
    assert len(blocks) == 3
    for block in blocks:
        rows = block.splitlines()
        assert rows[0].startswith("CLUSTER")
        # one screen line per row: nothing wrapped at 80 columns
        assert [r.split()[0] for r in rows[1:]] == ["prod-a", "prod-b", "prod-c"]
        assert max(len(r) for r in rows) <= WIDTH
        header = rows[0]
        for title in ("NODES", "CURRENT", "FAILED", "LEASES", "SUCCEEDED"):
            if title in header:
                end = header.index(title) + len(title)
                assert all(r[end - 1].isdigit() for r in rows[1:]), (title, rows)
    states = blocks[0].splitlines()
    assert states[1].split() == ["prod-a", "300", *map(str, fleet.EXPECTED["prod-a"].values())]
    assert states[3].split()[:3] == ["prod-c", "1500", "1500"]


def test_the_readmes_command_prints_the_tables_as_written():
    """README's command, run as a reader runs it: from the repository root, no PYTHONPATH."""
    readme = (ROOT / "README.md").read_text()
    [written] = re.findall(r"`([^`]*-m tests\.fakes\.status_terminal)[^`]*` prints it", readme)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        shlex.split(written), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[0].split()[:3] == ["CLUSTER", "NODES", "CURRENT"]
    assert done.stdout.splitlines()[1].split()[:2] == ["prod-a", "300"]
