"""containerd versions EKS images run, for the node lab, without touching the machine.

Debian 12 packages containerd 1.6. AL2 EKS AMIs and Ubuntu run 1.7, AL2023 2.x
(awslabs/amazon-eks-ami: "containerd_version": "1.7.*" for AL2, "2.*" for AL2023). Debian
trixie's `containerd` package (1.7.x) and sid's (2.1.x) run on Debian 12: their binaries need
only libc. `ensure(version)` fetches one once with `apt-get download` from a source list private
to the lab (own sourcelist, lists and cache directories, so the machine's apt state is
untouched), unpacks it with `dpkg -x` into a cache directory and returns the directory holding
`containerd`, `containerd-shim-runc-v2` and `ctr`. The system's containerd 1.6 is never
replaced. Concurrent callers (pytest-xdist workers) share one fetch through a file lock.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("NODELAB_CACHE", str(ROOT / ".nodelab")))
BINARIES = ("containerd", "containerd-shim-runc-v2", "ctr")
# lab version -> Debian suite whose containerd package is that version
SUITES = {"1.7": "trixie", "2": "sid"}
DEFAULT_MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def _mirror() -> str:
    """The Debian mirror the machine's own apt sources name (deb822 or one-line), else the default."""
    candidates = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"(?:^URIs:\s*|^deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.M):
            uri = match.group(1).rstrip("/")
            if uri.startswith("http") and "security" not in uri and uri.endswith("/debian"):
                return uri
    return DEFAULT_MIRROR


def bin_dir(version: str) -> Path:
    return CACHE / f"containerd-{version}" / "usr" / "bin"


def binary_version(directory: Path) -> str:
    """`containerd --version` of the unpacked binaries ("" when absent)."""
    binary = directory / "containerd"
    if not binary.exists():
        return ""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False)
    match = re.search(r"\s(\d+\.\d+\.\d+)", out.stdout)
    return match.group(1) if match else ""


def ensure(version: str) -> tuple[Path | None, str]:
    """(directory of containerd `version`'s binaries, "") or (None, one-line reason it cannot be had)."""
    target = bin_dir(version)
    if all((target / b).exists() for b in BINARIES):
        return target, ""
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            return None, f"containerd {version} for the node lab needs {tool} (Debian)"
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f".containerd-{version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all((target / b).exists() for b in BINARIES):
            return target, ""
        return _fetch(version, SUITES[version], target)


def _fetch(version: str, suite: str, target: Path) -> tuple[Path | None, str]:
    work = CACHE / f"apt-{suite}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "lists" / "partial").mkdir(parents=True)
    (work / "cache" / "archives" / "partial").mkdir(parents=True)
    signed = f"[signed-by={KEYRING}] " if Path(KEYRING).exists() else ""
    (work / "sources.list").write_text(f"deb {signed}{_mirror()} {suite} main\n")
    options = [
        "-o",
        f"Dir::Etc::sourcelist={work / 'sources.list'}",
        "-o",
        "Dir::Etc::sourceparts=-",
        "-o",
        f"Dir::State::Lists={work / 'lists'}",
        "-o",
        f"Dir::Cache={work / 'cache'}",
        "-o",
        "APT::Sandbox::User=root",
        "-qq",
    ]
    for step in (["update"], ["download", "containerd"]):
        result = subprocess.run(
            ["apt-get", *options, *step], cwd=work, capture_output=True, text=True, timeout=600, check=False
        )
        if result.returncode != 0:
            why = (result.stderr or result.stdout).strip().splitlines()
            return (
                None,
                f"apt-get {step[0]} of Debian {suite}'s containerd failed: {why[-1] if why else result.returncode}",
            )
    debs = sorted(work.glob("containerd_*.deb"))
    if not debs:
        return None, "apt-get download containerd produced no .deb"
    unpack = CACHE / f"containerd-{version}.tmp"
    shutil.rmtree(unpack, ignore_errors=True)
    result = subprocess.run(["dpkg", "-x", str(debs[-1]), str(unpack)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return None, f"dpkg -x {debs[-1].name} failed: {result.stderr.strip()[:200]}"
    shutil.rmtree(CACHE / f"containerd-{version}", ignore_errors=True)
    unpack.rename(CACHE / f"containerd-{version}")
    shutil.rmtree(work, ignore_errors=True)
    found = binary_version(target)
    if not found.startswith(f"{version}."):
        return None, f"Debian {suite}'s containerd is {found or 'not runnable'}, not {version}.x"
    return target, ""
