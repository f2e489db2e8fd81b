"""Static checks of the node script: shellcheck (every module, and the joined script), no SSM
splicing, dash re-exec guard, template.yaml embedding the current joined script, and the SSM
document's size under its 64 KB limit."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ssm_document import DOCUMENT_MAX_BYTES, deployed_script, document_size, extract_script, join_script, node_files

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "node" / "remediate-ca.sh"
TEMPLATE = ROOT / "template.yaml"
# Shellcheck codes that only hold across modules (a global set in one module, read in another;
# a module include): each file is checked without them, the joined script with everything.
CROSS_MODULE = "SC1091,SC2034,SC2153,SC2154"


def _script() -> str:
    """The script Run Command runs: the main file with its modules joined in, comment lines
    dropped (tools/ssm_document.py deployed_script)."""
    return deployed_script()


def _tool_missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}, and CI=true forbids skipping", pytrace=False)
    pytest.skip(reason)


def _shellcheck(*args: str) -> subprocess.CompletedProcess[str]:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        _tool_missing("shellcheck is not installed")
    return subprocess.run(
        [shellcheck, "--shell=bash", "--severity=style", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_joined_script_is_shellcheck_clean(tmp_path):
    joined = tmp_path / "remediate-ca.sh"
    joined.write_text(_script())
    result = _shellcheck(str(joined))
    assert result.returncode == 0, f"shellcheck findings:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("path", node_files(), ids=lambda p: p.name)
def test_every_node_file_is_shellcheck_clean_on_its_own(path):
    result = _shellcheck("--exclude", CROSS_MODULE, str(path))
    assert result.returncode == 0, f"shellcheck findings:\n{result.stdout}{result.stderr}"


def test_the_document_runs_the_joined_modules_and_stays_under_64_kb():
    text = TEMPLATE.read_text()
    assert extract_script(text) == _script()
    names = [p.name for p in node_files()[1:]]
    assert len(names) >= 8, names
    joined = join_script()
    for name in names:
        assert f"# ---- node/lib/{name} ----" in joined
    # Dropping comment lines changes no code line.
    code = [line for line in joined.splitlines() if not line.lstrip().startswith("#")]
    assert [line for line in _script().splitlines() if not line.lstrip().startswith("#")] == code
    size = document_size(text)
    print(f"SSM document: {size} bytes, {DOCUMENT_MAX_BYTES - size} bytes under the 64 KB limit")
    assert size < DOCUMENT_MAX_BYTES


def test_main_file_stays_short():
    """The main file is the flow; what it does lives in the modules."""
    code = [line for line in MAIN.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(code) <= 60, len(code)


def test_script_has_no_ssm_parameter_braces():
    text = _script()
    assert "{{" not in text, "SSM would splice parameter values into the script text at '{{'"


def test_script_reexecs_under_bash_when_run_by_sh():
    lines = _script().splitlines()
    assert lines[0] == "#!/bin/bash"
    head = "\n".join(lines[:40])
    guard = re.search(r'if \[ -z "\$\{BASH_VERSION:-\}" \]; then.*?exec bash "\$0" "\$@"', head, re.S)
    assert guard, "the first lines must re-exec under bash when BASH_VERSION is empty (SSM runs `sh`)"
    # Nothing bash-only may run before the guard.
    before_guard = head[: guard.start()]
    code = [line for line in before_guard.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert code == [], f"code before the re-exec guard: {code}"


def test_script_reads_parameters_only_from_ssm_env_vars():
    text = _script()
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
    script = tmp_path / "_script.sh"
    script.write_text(extract_script(TEMPLATE.read_text()))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = subprocess.run(
        [sh, str(script)], capture_output=True, text=True, timeout=30, check=False, env=env, cwd=tmp_path
    )
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    assert "SSM agent too old for ENV_VAR interpolation, needs 3.3.2746+" in lines[0]


def _code_lines() -> list[tuple[int, str]]:
    """(line number, text) of the script's lines that are not comments."""
    return [(n, line) for n, line in enumerate(_script().splitlines(), 1) if not line.lstrip().startswith("#")]


# Bash features newer than 4.2 (Amazon Linux 2 and Bottlerocket's amazonlinux:2 control container
# ship bash 4.2.46; bash's NEWS/CHANGES name the version of each): namerefs (4.3), `wait -n` (4.3),
# negative array subscripts (4.3), ${x@op} transformations (4.4), mapfile -d (4.4),
# EPOCHSECONDS/EPOCHREALTIME/SRANDOM/BASH_ARGV0 (5.0/5.1).
NEWER_BASH = {
    r"\b(local|declare|typeset)\s+-[a-zA-Z]*n": "namerefs need bash 4.3",
    r"\bwait\s+-n\b": "wait -n needs bash 4.3",
    r"\$\{[A-Za-z_][A-Za-z0-9_]*\[-[0-9]+\]\}": "negative array subscripts need bash 4.3",
    r"\$\{[^}]*@[QEPAaKkuUL]\}": "${var@op} needs bash 4.4",
    r"\b(mapfile|readarray)\s+[^|;]*-d\b": "mapfile -d needs bash 4.4",
    r"\b(EPOCHSECONDS|EPOCHREALTIME|SRANDOM|BASH_ARGV0)\b": "needs bash 5",
}


def test_script_uses_nothing_newer_than_bash_4_2():
    found = [
        f"line {n}: {why}: {line.strip()}"
        for n, line in _code_lines()
        for pattern, why in NEWER_BASH.items()
        if re.search(pattern, line)
    ]
    assert found == []


def test_every_array_expansion_survives_set_u_on_bash_4_2():
    """Before bash 4.4, "${a[@]}" of an empty array is an 'unbound variable' error under set -u:
    every expansion is written ${a[@]+"${a[@]}"}."""
    text = "\n".join(line for _, line in _code_lines())
    expansions = re.findall(r'(\$\{(\w+)\[@\]\+)?"\$\{!?(\w+)\[@\](:[^}]*)?\}"', text)
    assert expansions, "the pattern found no array expansion at all"
    bare = [name for guard, guard_name, name, _ in expansions if not guard or guard_name != name]
    assert bare == [], f'unguarded "${{a[@]}}" expansions: {bare}'


def test_script_uses_only_systemctl_options_of_systemd_219():
    """`systemctl show --value` appeared in systemd 230, `-P` in 246; AL2 ships 219."""
    lines = [line for _, line in _code_lines() if "systemctl" in line]
    assert any("systemctl show -p MainPID containerd" in line for line in lines)
    assert not [line for line in lines if re.search(r"--value|\s-P\s|--property=", line)]


def test_awk_programs_use_no_gawk_only_functions():
    """Debian and Ubuntu nodes run mawk as awk (the node lab does too)."""
    gawk_only = r"\b(gensub|strftime|systime|mktime|asorti?|patsplit|isarray|typeof)\s*\("
    assert [line for _, line in _code_lines() if re.search(gawk_only, line)] == []


def test_script_uses_no_coreutils_option_newer_than_8_22():
    """AL2 ships coreutils 8.22: `timeout -v` is 8.29, `env -S` 8.30, `date --debug` 8.26."""
    newer = r"\btimeout\s+(-v|--verbose)\b|\benv\s+-S\b|\bdate\s+--debug\b|\bcp\s+--debug\b"
    assert [line for _, line in _code_lines() if re.search(newer, line)] == []
