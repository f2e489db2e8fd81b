"""Verify before commit (issue #19): with RegistryHosts set, the node script checks every host
against the trust the node would have after the change BEFORE it writes anything; a bundle that
fails is rejected and the node is left exactly as it was. And removing a CA is a change like any
other: after a rollout that drops a CA, containerd no longer trusts it. On every image profile
and containerd version the lab runs (lab.py NODES)."""

from __future__ import annotations

import re

import pytest

from tests.nodelab.lab import NODES, NodeLab, Registry, b64
from tests.nodelab.test_scenarios import (
    X509,
    assert_failure,
    assert_pull_ok,
    assert_success,
    explain,
    node_id,
)

pytestmark = pytest.mark.nodelab

REJECTED = "bundle rejected before any change: "
# What openssl (s_client's verify error) or curl (exit 60) says when the chain does not verify.
VERIFY_ERROR = re.compile(r"unable to get local issuer certificate|verify error|\(60\)|certificate", re.I)


def remediated(lab: NodeLab, **env: str) -> dict:
    """The node after a successful remediation with the registry's CA (the lab re-pulls a fresh
    image through CRI after it); on Bottlerocket, once the API stand-in has applied it."""
    r = assert_success(lab.run_script(lab.script_env(**env)))
    if lab.is_bottlerocket:
        assert lab.wait_bottlerocket_applied()
    return r


def node_state(lab: NodeLab) -> dict:
    """What must not move when a bundle is rejected: the trust store, /etc/containerd (hosts.toml
    included) and Bottlerocket's settings (snapshot), our anchor file's and the trust bundle's
    bytes, containerd's PID."""
    anchor = f"{lab.anchor_dir}/eks-ca-remediator.{'pem' if lab.is_al else 'crt'}"
    return {
        "snapshot": lab.snapshot(),
        "anchor": lab.read_file(anchor),
        "trust_bundle": lab.read_file(lab.trust_bundle_path),
        "certs.d": lab.sh("find /etc/containerd/certs.d | sort").stdout,
        "containerd_pid": lab.containerd_pid(),
    }


def assert_rejected(lab: NodeLab, run, host: str) -> dict:
    r = assert_failure(run, 1, REJECTED)
    reason = r["reason"]
    assert reason.startswith(f"{REJECTED}{host}: "), explain(run)
    assert VERIFY_ERROR.search(reason.removeprefix(f"{REJECTED}{host}: ")), explain(run)
    assert (r["bundle_rejected"], r["committed"]) == (True, False), explain(run)
    assert r["precheck"] == "rejected", explain(run)
    assert r["precheck_hosts"][host].startswith("failed: "), explain(run)
    assert r["actions"] == [], explain(run)
    assert r["restarted"] is False, explain(run)
    return r


# (a) a bundle lacking the registry's CA changes nothing ----------------------------------------
@pytest.mark.parametrize("strategy", ["auto", "hosts-toml"])
@pytest.mark.parametrize("node", NODES, ids=node_id)
def test_a_bundle_lacking_the_registrys_ca_is_rejected_and_changes_nothing(make_lab, node, strategy):
    lab = make_lab(*node)
    first = remediated(lab, SSM_Strategy=strategy)
    assert (first["precheck"], first["precheck_hosts"]) == ("ok", {lab.registry_host: "ok"}), first
    assert (first["bundle_rejected"], first["committed"]) == (False, True), first
    before = node_state(lab)

    run = lab.run_script(lab.script_env(SSM_CaBundle=b64(lab.pki.other_ca_pem), SSM_Strategy=strategy))

    assert_rejected(lab, run, lab.registry_host)
    if lab.is_bottlerocket:
        assert lab.wait_bottlerocket_applied()
        assert lab.bottlerocket_settings()["pki"]["eks-ca-remediator"] == {"data": lab.ca_b64, "trusted": True}
    assert node_state(lab) == before, "a rejected bundle changed the node"
    ok, msg = lab.cri_pull(lab.registry.fresh_image())
    assert ok, f"CRI pulls stopped working after a rejected bundle: {msg}"


@pytest.mark.parametrize(
    "node", [("debian", "1.6"), ("al2", "1.7"), ("al2023", "2"), ("bottlerocket", "2")], ids=node_id
)
def test_the_pre_check_runs_in_a_dry_run_and_on_a_node_never_remediated(make_lab, node):
    """A node that trusts no CA of the registry yet: a dry run with a bundle lacking the
    registry's CA is rejected like a real run, and neither changes anything. (Had userdata
    trusted the CA through its own anchor, the pre-check would count it and pass:
    test_a_ca_trusted_through_another_anchor_stays_in_the_trust_after_the_change.)"""
    lab = make_lab(*node)
    before = node_state(lab)
    env = lab.script_env(SSM_CaBundle=b64(lab.pki.other_ca_pem))
    assert_rejected(lab, lab.run_script({**env, "SSM_DryRun": "true"}), lab.registry_host)
    assert_rejected(lab, lab.run_script(env), lab.registry_host)
    assert node_state(lab) == before


def test_without_registry_hosts_there_is_no_pre_check(make_lab):
    lab = make_lab("debian")
    r = assert_success(lab.run_script(lab.script_env(SSM_RegistryHosts="")))
    assert (r["precheck"], r["precheck_hosts"]) == ("skipped: no registry hosts", {}), r
    assert (r["bundle_rejected"], r["committed"]) == (False, True), r


def test_a_ca_trusted_through_another_anchor_stays_in_the_trust_after_the_change(make_lab):
    """The trust after the change keeps every other anchor the refresh reads: a bundle without
    the registry's CA passes when userdata's own anchor file still trusts that CA."""
    lab = make_lab("debian")
    remediated(lab)
    lab.trust_ca_without_restart()  # userdata's anchor, besides ours
    r = assert_success(lab.run_script(lab.script_env(SSM_CaBundle=b64(lab.pki.other_ca_pem))))
    assert r["precheck"] == "ok", r


# (b) removing a CA is a first-class change ------------------------------------------------------
# Bottlerocket has one way to change trust (its API): the auto case covers it.
REMOVALS = [(n, s) for n in NODES for s in ("auto", "hosts-toml") if s == "auto" or n[0] != "bottlerocket"]


@pytest.mark.parametrize(("node", "strategy"), REMOVALS, ids=lambda v: node_id(v) if isinstance(v, tuple) else v)
def test_a_rollout_that_removes_a_ca_makes_containerd_stop_trusting_it(make_lab, node, strategy):
    lab = make_lab(*node)
    other = Registry().start()  # registry B: the same name, another port, signed by its own CA
    try:
        a, b = lab.registry_host, other.host
        both = b64(lab.ca_pem + other.pki.ca_pem)
        remediated(lab, SSM_CaBundle=both, SSM_RegistryHosts=f"{a},{b}", SSM_Strategy=strategy)
        ok, msg = lab.cri_pull(other.fresh_image())
        assert ok, f"registry B with its CA in the bundle: {msg}"

        r = remediated(lab, SSM_RegistryHosts=a, SSM_Strategy=strategy)  # the bundle: CA1 only

        assert (r["precheck"], r["bundle_changed"]) == ("ok", True), r
        if not lab.is_bottlerocket:
            assert r["restarted"] is True, f"containerd kept a pool holding the removed CA: {r}"
        ok, msg = lab.cri_pull(other.fresh_image())
        assert not ok, f"containerd still trusts the removed CA: {msg}"
        assert X509 in msg, msg
        assert_pull_ok(lab, "registry A, whose CA stayed")
    finally:
        other.stop()
