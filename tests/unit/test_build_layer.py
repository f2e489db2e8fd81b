"""The layer ships its bytecode: Lambda's /opt is read-only, so Python could not cache it."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import build_layer

ROOT = Path(__file__).resolve().parents[2]


def test_every_module_of_our_package_gets_a_pyc_that_python_uses_without_checking_the_source(tmp_path):
    site = tmp_path / "python"
    shutil.copytree(ROOT / "layers/common/eks_ca_remediator", site / "eks_ca_remediator")
    build_layer.compile_bytecode(site)
    sources = sorted((site / "eks_ca_remediator").rglob("*.py"))
    assert len(sources) > 20
    for source in sources:
        header = Path(importlib.util.cache_from_source(str(source))).read_bytes()[:8]
        assert header[:4] == importlib.util.MAGIC_NUMBER, source
        assert int.from_bytes(header[4:8], "little") == 0b01, source  # hash-based, source never checked
    # the proof that matters: with the sources' times changed (a zip round trip) and no writing
    # allowed (read-only /opt), Python still imports from the .pyc - a marker in the bytecode
    # shows it is the compiled copy that ran, not a fresh compile of the source
    marker = site / "eks_ca_remediator" / "errors.py"
    marker.write_text(marker.read_text() + "\nraise RuntimeError('compiled from source')\n")
    code = "import eks_ca_remediator.errors; print('from bytecode')"
    run = subprocess.run([sys.executable, "-B", "-c", code], env={"PYTHONPATH": str(site)}, capture_output=True)
    assert run.stdout.decode().strip() == "from bytecode", run.stderr.decode()[-500:]


def test_sam_builds_the_layer_with_this_script_for_arm64():
    template = (ROOT / "template.yaml").read_text()
    layer = template.split("  CommonLayer:\n", 1)[1].split("\n\n", 1)[0]
    assert "BuildMethod: makefile" in layer
    assert "BuildArchitecture: arm64" in layer
    makefile = (ROOT / "layers/common/Makefile").read_text()
    assert "build-CommonLayer:" in makefile
    assert 'build_layer.py --target "$(ARTIFACTS_DIR)" --platform manylinux2014_aarch64' in makefile
