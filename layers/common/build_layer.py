"""Build the Lambda layer: the pinned requirements for the Lambda platform, our package, and the
bytecode of both compiled ahead of time.

Lambda's /opt is read-only, so Python cannot cache what it compiles: a layer shipped without .pyc
files (what sam's python builder produces) compiles every module of pydantic, Powertools and ours
from source on every cold start - measured by `make bench` at about twice the import time of the
same layer with its bytecode. The .pyc files are written with the `unchecked-hash` invalidation
mode: the layer never changes, so they are valid whatever file times the zip round trip leaves.

    sam build runs `make build-CommonLayer` (layers/common/Makefile), which runs:
    python3.13 build_layer.py --target "$ARTIFACTS_DIR" --platform manylinux2014_aarch64

bench/run_all.py builds the same layer for this machine's platform to measure cold starts.
"""

from __future__ import annotations

import argparse
import compileall
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = "eks_ca_remediator"
RUNTIME = (3, 13)  # the functions' runtime: bytecode is specific to the Python minor version


def install(target: Path, platform: str | None) -> Path:
    """Requirements and our package into target/python (Lambda's layer layout), no bytecode."""
    site = target / "python"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--root-user-action=ignore"]
    command += ["--target", str(site)]
    command += ["-r", str(HERE / "requirements.txt")]
    if platform:
        version = f"{RUNTIME[0]}.{RUNTIME[1]}"
        command += ["--platform", platform, "--implementation", "cp", "--python-version", version]
        command += ["--only-binary=:all:"]
    subprocess.run(command, check=True)
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts: nothing a function runs
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(HERE / PACKAGE, site / PACKAGE, ignore=ignore, dirs_exist_ok=True)
    return site


def compile_bytecode(site: Path) -> None:
    """Every module's .pyc, valid without checking the source (the layer is immutable)."""
    if sys.version_info[:2] != RUNTIME:
        raise SystemExit(f"bytecode must be compiled by Python {RUNTIME[0]}.{RUNTIME[1]}, not {sys.version.split()[0]}")
    mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
    if not compileall.compile_dir(site, quiet=1, force=True, workers=0, invalidation_mode=mode):
        raise SystemExit(f"compiling the layer in {site} failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=Path, required=True, help="the layer's root (sam: $ARTIFACTS_DIR)")
    parser.add_argument("--platform", help="pip platform tag of the Lambda architecture, e.g. manylinux2014_aarch64")
    parser.add_argument("--no-bytecode", action="store_true", help="ship sources only (for comparison)")
    args = parser.parse_args()
    site = install(args.target, args.platform)
    if not args.no_bytecode:
        compile_bytecode(site)


if __name__ == "__main__":
    main()
