"""containerd's own proxy: on a node where the registry is reachable only through an HTTPS proxy
set in containerd's environment (as a systemd drop-in sets it), the node script's TLS check goes
through that proxy with what the image ships (OpenSSL >= 1.1.0 `s_client -proxy`; AL2's OpenSSL
1.0.2k has no -proxy, so curl --proxy --cacert), and the canary pulls inside containerd, which
uses the proxy itself."""

from __future__ import annotations

import pytest

from tests.nodelab.test_scenarios import assert_pull_ok, assert_success, eks_situation, expected_level

pytestmark = pytest.mark.nodelab


@pytest.mark.parametrize(
    ("node", "tool"),
    [(("debian", "1.6"), "openssl"), (("al2", "1.7"), "curl"), (("al2023", "2"), "openssl")],
    ids=["debian-containerd1.6", "al2-containerd1.7", "al2023-containerd2"],
)
def test_verification_and_canary_go_through_containerds_proxy(make_lab, node, tool):
    lab = make_lab(*node, proxy=True)
    eks_situation(lab)  # containerd reaches the registry through the proxy: x509, as without one
    assert lab.proxy is not None
    # Control: the node cannot reach the registry directly.
    direct = lab.sh(f"timeout 10 openssl s_client -connect {lab.registry_host} </dev/null 2>&1", check=False)
    assert direct.returncode != 0, direct.stdout
    before = len(lab.proxy.targets)

    run = lab.run_script(lab.script_env())
    r = assert_success(run)
    assert r["verification"] == {lab.registry_host: "ok"}, r["verification"]
    shown = f"127.0.0.1:{lab.proxy.port}" if tool == "openssl" else lab.proxy.url
    assert f"through proxy {shown} ({tool})" in run.stderr, run.stderr[-3000:]
    assert r["verification_level"] == expected_level(lab)
    assert r["canary"] == "ok"
    assert lab.registry_host in lab.proxy.targets[before:]
    assert_pull_ok(lab, "after the remediation, through the proxy")


def test_no_proxy_sends_the_registry_direct_as_containerd_does(make_lab):
    """NO_PROXY as Go reads it: containerd's NO_PROXY lists .cluster.local, not the registry, so
    the registry goes through the proxy; a registry host under NO_PROXY would be direct (unit
    tests: tests/unit/test_node_proxy.py)."""
    lab = make_lab("debian", "1.6", proxy=True)
    code = lab.sh("systemctl show -p Environment containerd")
    assert "NO_PROXY=localhost,.cluster.local" in code.stdout
    assert f"HTTPS_PROXY=http://127.0.0.1:{lab.proxy.port}" in code.stdout
