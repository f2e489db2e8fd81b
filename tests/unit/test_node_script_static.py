"""Static checks of the node script: shellcheck, no SSM splicing, dash re-exec guard, and
template.yaml embedding the current script."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "node" / "remediate-ca.sh"
TEMPLATE = ROOT / "template.yaml"


def _tool_missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}, and CI=true forbids skipping", pytrace=False)
    pytest.skip(reason)


def test_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        _tool_missing("shellcheck is not installed")
    result = subprocess.run(
        [shellcheck, "--shell=bash", "--severity=style", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"shellcheck findings:\n{result.stdout}{result.stderr}"


def test_script_has_no_ssm_parameter_braces():
    text = SCRIPT.read_text()
    assert "{{" not in text, "SSM would splice parameter values into the script text at '{{'"


def test_script_reexecs_under_bash_when_run_by_sh():
    lines = SCRIPT.read_text().splitlines()
    assert lines[0] == "#!/bin/bash"
    head = "\n".join(lines[:40])
    guard = re.search(r'if \[ -z "\$\{BASH_VERSION:-\}" \]; then.*?exec bash "\$0" "\$@"', head, re.S)
    assert guard, "the first lines must re-exec under bash when BASH_VERSION is empty (SSM runs `sh`)"
    # Nothing bash-only may run before the guard.
    before_guard = head[: guard.start()]
    code = [line for line in before_guard.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert code == [], f"code before the re-exec guard: {code}"


def test_script_reads_parameters_only_from_ssm_env_vars():
    text = SCRIPT.read_text()
    for name in ("CaBundle", "Strategy", "RegistryHosts", "CanaryImage", "DryRun"):
        assert f"SSM_{name}" in text
    assert not re.search(r"^\s*eval\b|[;&|]\s*eval\b", text, re.M), "the script must never eval"


def test_template_embeds_the_current_script():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "ssm_document.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, f"{result.stdout}{result.stderr}"


def test_rejects_missing_ca_bundle_under_dash_without_touching_anything(tmp_path):
    """Runs only the parameter check (fails before any file or service is touched)."""
    sh = shutil.which("sh")
    assert sh is not None
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = subprocess.run(
        [sh, str(SCRIPT)], capture_output=True, text=True, timeout=30, check=False, env=env, cwd=tmp_path
    )
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    assert "SSM agent too old for ENV_VAR interpolation, needs 3.3.2746+" in lines[0]
