"""The node script's model of containerd, tested as pure shell functions through bash: the
version parser on the strings the images really print, and the CRI pull path (local or Transfer
service, which hosts directory it reads) from containerd's version and config of any version.

Sources: containerd v2.1.4 internal/cri/config/config.go (CheckLocalImagePullConfigs),
plugins/cri/images/plugin.go (configMigration), internal/cri/server/images/image_pull.go
(registryHosts, pullImageWithTransferService), core/transfer/registry/registry.go
(HostDirFromRoot of the whole config_path: containerd issues #12415, #12808)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.node_shell import run_modules, running


def bash(code: str, tmp_path: Path | None = None) -> str:
    return run_modules(("result.sh", "containerd.sh", "pullpath.sh"), code, tmp_path)


# What `ctr version` (Server) and `containerd --version` print on each image.
VERSIONS = {
    # upstream release builds: VERSION is `git describe`, so "v2.1.4" (containerd Makefile), and
    # `containerd --version` prints "containerd <package> <version> <revision>"
    # (cmd/containerd/command/main.go); the package path ends in /v2 for 2.x.
    "containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7193e4e490e9fbdc236c0e811ccaba3376": (2, 1),
    "v2.1.4": (2, 1),
    "v2.0.5": (2, 0),
    # Amazon Linux: `ctr version` Server "1.7.20" (awslabs/amazon-eks-ami issue #1950); the RPM
    # versions "1.7.11-1.amzn2.0.1" / "1.7.11-1.amzn2023.0.1" (amazon-eks-ami pull request #1937).
    "1.7.20": (1, 7),
    "1.7.27-1.amzn2023.0.1": (1, 7),
    "1.7.11-1.amzn2.0.1": (1, 7),
    "2.1.4": (2, 1),
    # Debian (measured in the node lab: bookworm, trixie and sid packages).
    "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3": (1, 6),
    "containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6+deb13u1": (1, 7),
    "containerd github.com/containerd/containerd/v2 2.1.9+unknown": (2, 1),
    "2.1.4~ds1-1": (2, 1),
    "2.10.0": (2, 10),
}


@pytest.mark.parametrize(("text", "expected"), VERSIONS.items())
def test_version_major_minor_reads_every_form_the_images_print(text, expected):
    out = bash(f"version_major_minor {shlex.quote(text)}")
    assert tuple(int(x) for x in out.split()) == expected


@pytest.mark.parametrize("text", ["", "unknown", "containerd github.com/containerd/containerd/v2", "v2", "2"])
def test_version_major_minor_fails_without_a_version(text):
    assert bash(f"version_major_minor {shlex.quote(text)} || echo none") == "none\n"


AL2023_V3 = """version = 3
imports = ["{d}/config.d/*.toml"]
[plugins.'io.containerd.cri.v1.images']
discard_unpacked_layers = true
[plugins."io.containerd.cri.v1.images".registry]
config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"
"""

V2_TRANSFER = """version = 2
imports = ["{d}/config.d/*.toml"]
[plugins."io.containerd.grpc.v1.cri".containerd]
  discard_unpacked_layers = false
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"
"""

V1_LOCAL = """[plugins.cri.registry]
  config_path = "/etc/containerd/certs.d"
[plugins.cri.containerd]
  discard_unpacked_layers = true
"""


def model(tmp_path: Path, config: str, version: str, host: str = "registry.example:5000", extra: str = "") -> dict:
    d = tmp_path / "etc"
    (d / "config.d").mkdir(parents=True, exist_ok=True)
    (d / "config.toml").write_text(config.replace("{d}", str(d)))
    if extra:
        (d / "config.d" / "90-extra.toml").write_text(extra)
    out = bash(
        f"CONTAINERD_CONFIG={shlex.quote(str(d / 'config.toml'))}; read_containerd_config;"
        f" v=$(version_major_minor {shlex.quote(version)}) && CTRD_MAJOR=${{v% *}} CTRD_MINOR=${{v#* }};"
        " cri_pull_path;"
        f' printf "%s\\n%s\\n%s\\n%s\\n" "$CRI_PULL" "$CFG_CONFIG_PATH" "$(cri_hosts_dir {host})" "$(hosts_toml_blocker {host})"',
        tmp_path,
    )
    pull, path, hosts_dir, blocker = out.split("\n")[:4]
    return {"pull": pull, "config_path": path, "hosts_dir": hosts_dir, "blocker": blocker}


def test_al2023_nodeadm_config_pulls_locally_and_reads_certs_d(tmp_path):
    m = model(tmp_path, AL2023_V3, "2.1.4")
    assert m["pull"] == "local"
    assert m["blocker"] == ""


def test_version_2_config_on_containerd_2_1_pulls_through_the_transfer_service(tmp_path):
    """The measured failure: a hosts.toml was written while CRI ignored it."""
    m = model(tmp_path, V2_TRANSFER, "v2.1.4")
    assert m["pull"] == "transfer"
    assert m["hosts_dir"] == "/etc/containerd/certs.d:/etc/docker/certs.d"
    assert "Transfer service, which ignores hosts.toml" in m["blocker"]
    assert "#12415" in m["blocker"]


def test_the_same_config_on_containerd_2_0_or_1_7_pulls_locally(tmp_path):
    for version in ("2.0.5", "1.7.27-1.amzn2023.0.1"):
        m = model(tmp_path, V2_TRANSFER, version)
        assert (m["pull"], m["blocker"]) == ("local", ""), version


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ("version = 3\n[plugins.'io.containerd.cri.v1.images']\n  use_local_image_pull = true\n", "use_local"),
        ("version = 3\n[plugins.'io.containerd.cri.v1.images']\n  max_concurrent_downloads = 10\n", "max_conc"),
        ("version = 3\n[plugins.'io.containerd.cri.v1.images']\n  image_pull_with_sync_fs = true\n", "sync_fs"),
        (
            'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  disable_snapshot_annotations = false\n',
            "ann",
        ),
        (
            'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\n'
            '  endpoint = ["https://mirror.example"]\n',
            "mirrors",
        ),
    ],
)
def test_each_setting_that_makes_containerd_2_1_fall_back_to_local_pull(tmp_path, extra, why):
    base = V2_TRANSFER.replace(":/etc/docker/certs.d", "")
    assert model(tmp_path, base, "2.1.4")["pull"] == "transfer"
    assert model(tmp_path, base, "2.1.4", extra=extra)["pull"] == "local", why


def test_use_local_image_pull_counts_only_in_a_version_3_file(tmp_path):
    """configMigration moves no use_local_image_pull out of a version 2 CRI section."""
    extra = 'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  use_local_image_pull = true\n'
    assert model(tmp_path, V2_TRANSFER, "2.1.4", extra=extra)["pull"] == "transfer"


def test_transfer_service_with_exactly_certs_d_reads_the_hosts_toml(tmp_path):
    m = model(tmp_path, V2_TRANSFER.replace(":/etc/docker/certs.d", ""), "2.1.9+unknown")
    assert (m["pull"], m["blocker"], m["hosts_dir"]) == ("transfer", "", "/etc/containerd/certs.d")


def test_version_1_config(tmp_path):
    m = model(tmp_path, V1_LOCAL, "1.6.20~ds1")
    assert (m["pull"], m["config_path"], m["blocker"]) == ("local", "/etc/containerd/certs.d", "")


def test_unknown_version_trusts_hosts_toml_only_where_both_paths_read_it(tmp_path):
    m = model(tmp_path, AL2023_V3, "")
    assert m["pull"] == "unknown"
    assert "version is unknown" in m["blocker"]
    assert model(tmp_path, V1_LOCAL, "")["blocker"] == ""


def test_local_pull_uses_the_first_root_that_has_the_host(tmp_path):
    first = tmp_path / "first"
    (first / "registry.example:5000").mkdir(parents=True)
    config = f'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "{first}:/etc/containerd/certs.d"\n'
    m = model(tmp_path, config, "1.7.20")
    assert m["hosts_dir"] == str(first)
    assert f"containerd reads {first} for registry.example:5000 before /etc/containerd/certs.d" == m["blocker"]


def test_empty_config_path_reads_no_hosts_toml(tmp_path):
    m = model(tmp_path, 'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = ""\n', "1.7.20")
    assert "config_path is empty" in m["blocker"]
    assert m["hosts_dir"] == ""


@pytest.mark.parametrize(
    ("args", "want"),
    [
        ([], "/etc/containerd/config.toml"),
        (["--config", "/etc/eks/containerd.toml"], "/etc/eks/containerd.toml"),
        (["-c", "/x/c.toml", "--log-level", "debug"], "/x/c.toml"),
        (["--config=/y/c.toml"], "/y/c.toml"),
        (["-c", "rel.toml"], "{cwd}/rel.toml"),
    ],
)
def test_config_file_comes_from_containerds_command_line(tmp_path, args, want):
    """containerd's --config/-c (cmd/containerd/command/main.go), read from /proc/PID/cmdline of a
    process whose arguments are containerd's."""
    fake = tmp_path / "containerd"
    fake.write_text("#!/bin/bash\nsleep 30\n")
    fake.chmod(0o755)
    with running([str(fake), *args], str(fake).encode(), cwd=tmp_path) as pid:
        out = bash(f"containerd_config_file {pid}")
    assert out == want.format(cwd=tmp_path)
