"""The node script's one model of the CRI pull path, against a real containerd: where CRI pulls
through containerd 2.1's Transfer service (a version 2 config with discard_unpacked_layers =
false and a colon-separated config_path), a hosts.toml is ignored (containerd issues #12415,
#12808), so the script must not rely on one, and its daemon-side canary must use exactly CRI's
hosts configuration. And the script reads the config file the running containerd was started
with (--config), not a file that merely sits at the default path."""

from __future__ import annotations

import pytest

from tests.nodelab.lab import NodeLab
from tests.nodelab.test_scenarios import (
    X509,
    assert_hosts_toml_ignored,
    assert_pull_fails_x509,
    assert_pull_ok,
    assert_success,
    eks_situation,
)

pytestmark = pytest.mark.nodelab

CONFIG_PATH = "/etc/containerd/certs.d:/etc/docker/certs.d"


def daemon_pull(lab: NodeLab, *hosts_dir: str) -> tuple[int, str]:
    """containerd 2.x's `ctr images pull` (the daemon's Transfer service) with a --hosts-dir."""
    args = " ".join(f"--hosts-dir '{d}'" for d in hosts_dir)
    proc = lab.sh(
        f"ctr --address /run/containerd/containerd.sock -n k8s.io images pull {args} '{lab.image}' 2>&1", check=False
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("crictl", [True, False], ids=["crictl", "no-crictl"])
def test_transfer_service_pull_path_gets_the_trust_store_not_a_hosts_toml(make_lab, crictl):
    """The measured failure: with hosts-toml the script wrote a hosts.toml and reported success
    while a CRI pull still failed with x509. Now it falls back to the trust store (a restart),
    says why, and the lab's fresh CRI pull after the reported success works."""
    lab = make_lab("debian", "2", crictl=crictl, config="v2-transfer")
    eks_situation(lab)
    # Control: in this mode CRI really ignores a hosts.toml naming the CA.
    assert_hosts_toml_ignored(lab, "Transfer-service CRI pull with a hosts.toml naming the CA")
    pid = lab.containerd_pid()

    run = lab.run_script(lab.script_env(SSM_Strategy="hosts-toml"))
    r = assert_success(run)
    assert r["cri_pull_path"] == "transfer"
    assert r["registry_config_path"] == CONFIG_PATH
    assert r["strategy_used"] == "restart"
    assert r["restarted"] is True
    assert lab.containerd_pid() != pid
    assert r["hosts_toml"]["written"] == []
    assert lab.read_file(f"/etc/containerd/certs.d/{lab.registry_host}/hosts.toml") is None
    assert any("Transfer service, which ignores hosts.toml" in w and "#12415" in w for w in r["warnings"]), r[
        "warnings"
    ]
    assert r["canary"] == "ok"
    if crictl:
        assert r["verification_level"] == "cri-pull"
    else:
        assert r["verification_level"] == "daemon-pull"
        # The canary passed CRI's own config_path, not a directory CRI does not read.
        assert f"--hosts-dir {CONFIG_PATH} " in run.stderr, run.stderr[-2000:]
    assert_pull_ok(lab, "after the fallback")


def test_daemon_canary_with_cris_hosts_configuration_fails_exactly_where_cri_fails(make_lab):
    """Why the canary passes CRI's config_path: given the one directory the Transfer service
    would not read for CRI, it succeeds while CRI fails (a false "ok"); given CRI's own
    config_path it fails with x509 exactly as CRI does."""
    lab = make_lab("debian", "2", crictl=False, config="v2-transfer")
    lab.write_file("/etc/nodelab-ca.pem", lab.ca_pem)
    lab.write_file(
        f"/etc/containerd/certs.d/{lab.registry_host}/hosts.toml",
        f'server = "https://{lab.registry_host}"\n[host."https://{lab.registry_host}"]\n'
        '  capabilities = ["pull", "resolve"]\n  ca = "/etc/nodelab-ca.pem"\n',
    )
    assert_pull_fails_x509(lab, "CRI with the hosts.toml")
    code, out = daemon_pull(lab, CONFIG_PATH)
    assert code != 0, out
    assert X509 in out, out
    code, out = daemon_pull(lab, "/etc/containerd/certs.d")
    assert code == 0, out


@pytest.mark.parametrize(
    "node", [("debian", "1.6"), ("al2023", "2")], ids=["debian-containerd1.6", "al2023-containerd2"]
)
def test_the_config_file_is_the_one_containerd_runs_with(make_lab, node):
    """containerd started with --config /etc/containerd/eks/config.toml; a stale file at the
    default path names no certs.d. Read from the default path, hosts-toml would fall back to a
    restart; read from containerd's command line, the hosts.toml is written and works."""
    lab = make_lab(*node, config_file="/etc/containerd/eks/config.toml")
    lab.write_file(
        "/etc/containerd/config.toml",
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/nonexistent"\n',
    )
    eks_situation(lab)
    pid = lab.containerd_pid()
    r = assert_success(lab.run_script(lab.script_env(SSM_Strategy="hosts-toml")))
    assert r["containerd_config"] == "/etc/containerd/eks/config.toml"
    assert r["registry_config_path"] == CONFIG_PATH
    assert r["strategy_used"] == "hosts-toml"
    assert r["restarted"] is False
    assert r["cri_pull_path"] == "local"
    assert lab.containerd_pid() == pid
    assert_pull_ok(lab, "through the hosts.toml")
