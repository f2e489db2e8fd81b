"""Node lab scenarios: the node script (as embedded in template.yaml) against a real containerd
pulling from a TLS registry whose CA the node does not trust at first, on every image profile
and both containerd versions (see lab.py PROFILES)."""

from __future__ import annotations

import hashlib
import time

import pytest

from tests.nodelab.lab import NODES, NodeLab, ScriptRun, b64

pytestmark = pytest.mark.nodelab

X509 = "x509: certificate signed by unknown authority"

LINUX_NODES = [n for n in NODES if n[0] != "bottlerocket"]
BOTTLEROCKET_NODES = [n for n in NODES if n[0] == "bottlerocket"]
STRATEGIES = ["auto", "restart", "hosts-toml"]


def node_id(node: tuple[str, str]) -> str:
    return f"{node[0]}-containerd{node[1]}"


def explain(run: ScriptRun) -> str:
    return f"exit {run.exit_code}\nresult: {run.result}\nstderr (tail):\n{run.stderr[-3000:]}"


def assert_success(run: ScriptRun) -> dict:
    assert run.exit_code == 0, explain(run)
    assert run.result is not None, explain(run)
    assert run.result["result"] == "success", explain(run)
    assert run.result["reason"] == "", explain(run)
    return run.result


def assert_failure(run: ScriptRun, exit_code: int, reason_part: str) -> dict:
    assert run.exit_code == exit_code, explain(run)
    assert run.result is not None, f"no JSON line on stdout\n{explain(run)}"
    assert run.result["result"] == "failure", explain(run)
    assert reason_part in run.result["reason"], explain(run)
    return run.result


def assert_pull_fails_x509(lab: NodeLab, why: str) -> None:
    ok, msg = lab.cri_pull()
    assert not ok, f"{why}: the CRI pull succeeded ({msg})"
    assert X509 in msg, f"{why}: expected {X509!r}, got {msg!r}"


def assert_hosts_toml_ignored(lab: NodeLab, why: str) -> None:
    """Control for a Transfer-service pull path: a hosts.toml naming the CA does not make a CRI
    pull work (containerd #12415, #12808); the file is removed again afterwards."""
    hosts = f"/etc/containerd/certs.d/{lab.registry_host}/hosts.toml"
    lab.write_file("/etc/nodelab-ca.pem", lab.ca_pem)
    lab.write_file(
        hosts,
        f'server = "https://{lab.registry_host}"\n[host."https://{lab.registry_host}"]\n'
        '  capabilities = ["pull", "resolve"]\n  ca = "/etc/nodelab-ca.pem"\n',
    )
    assert_pull_fails_x509(lab, why)
    lab.sh(f"rm '{hosts}'")


def assert_pull_ok(lab: NodeLab, why: str) -> None:
    ok, msg = lab.cri_pull()
    assert ok, f"{why}: CRI pull failed: {msg}\ncontainerd log:\n{lab.containerd_log()}"


def eks_situation(lab: NodeLab) -> None:
    """The failure the product fixes: on Linux images, userdata trusted the CA after containerd
    had loaded its CA pool; on Bottlerocket, the CA is not in settings.pki yet."""
    if not lab.is_bottlerocket:
        lab.trust_ca_without_restart()
    assert_pull_fails_x509(lab, "the node before the remediation")


def expected_level(lab: NodeLab) -> str:
    """Which verification the node can run honestly (the canary image is always set here)."""
    if lab.is_bottlerocket:
        return "settings-readback"
    if lab.has_crictl:
        return "cri-pull"
    return "daemon-pull" if lab.containerd_version == "2" else "tls-only"


def anchor_of(lab: NodeLab) -> str:
    return f"{lab.anchor_dir}/eks-ca-remediator.{'pem' if lab.is_al else 'crt'}"


# 1 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("node", LINUX_NODES, ids=node_id)
def test_reproduction_trusted_ca_is_ignored_until_containerd_restarts(make_lab, node):
    lab = make_lab(*node)
    if lab.is_al:
        assert lab.read_file("/etc/ssl/certs/ca-certificates.crt") is None, (
            "the AL lab must hide the Debian bundle so Go reads /etc/pki/tls/certs/ca-bundle.crt"
        )
    assert_pull_fails_x509(lab, "before the CA is trusted")
    pid = lab.containerd_pid()

    lab.trust_ca_without_restart()
    bundle = lab.read_file(lab.trust_bundle_path) or b""
    assert lab.ca_pem.strip().encode() in bundle, f"{lab.trust_bundle_path} does not hold the CA after the refresh"

    ok, msg = lab.cri_pull()
    assert lab.containerd_pid() == pid, "containerd must keep running for the reproduction"
    assert not ok, (
        "the CRI pull succeeded right after the CA was trusted, without a containerd restart: "
        "this lab no longer reproduces the bug, so it proves nothing"
    )
    assert X509 in msg, msg

    # Control: the lab's containerd really reads this trust bundle once restarted.
    lab.restart_containerd()
    assert_pull_ok(lab, "after a plain containerd restart")


# 2 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("node", LINUX_NODES, ids=node_id)
def test_every_strategy_fixes_the_node_and_reports_what_it_did(make_lab, node, strategy):
    lab = make_lab(*node)
    eks_situation(lab)
    pid = lab.containerd_pid()

    r = assert_success(lab.run_script(lab.script_env(SSM_Strategy=strategy)))

    assert r["os_family"] == lab.os_family
    assert r["strategy_requested"] == strategy
    assert r["containerd_before"]["pid"] == pid
    assert r["containerd_version"].startswith(f"{lab.containerd_version}.")
    assert r["registry_config_path"] == "/etc/containerd/certs.d:/etc/docker/certs.d"
    if strategy == "hosts-toml":
        assert r["strategy_used"] == "hosts-toml"
        assert r["restarted"] is False
        assert r["containerd_after"]["pid"] == lab.containerd_pid() == pid
        assert r["hosts_toml"]["written"] == [lab.registry_host]
    else:
        assert r["strategy_used"] == "restart"
        assert r["restarted"] is True
        assert r["containerd_after"]["pid"] == lab.containerd_pid() != pid
        assert r["containerd_after"]["started_at"] > r["containerd_before"]["started_at"]
    assert r["verification"] == {lab.registry_host: "ok"}
    assert r["verification_level"] == expected_level(lab)
    assert r["canary"] == "ok"
    assert r["fingerprint"] == hashlib.sha256(lab.ca_pem.encode()).hexdigest()
    assert lab.read_file(anchor_of(lab)) == lab.ca_pem.encode()
    assert lab.last_stdout.count("\n") == 1, f"stdout must be exactly one JSON line: {lab.last_stdout!r}"
    assert len(lab.last_stdout) < 20_000
    assert_pull_ok(lab, f"after the {strategy} remediation")
    assert lab.containerd_pid() == r["containerd_after"]["pid"]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("node", BOTTLEROCKET_NODES, ids=node_id)
def test_bottlerocket_is_fixed_through_its_api_only(make_lab, node, strategy):
    lab = make_lab(*node)
    eks_situation(lab)
    host_trust = lab.read_file(lab.trust_bundle_path)

    r = assert_success(lab.run_script(lab.script_env(SSM_Strategy=strategy)))

    assert r["os_family"] == "bottlerocket"
    assert r["strategy_used"] == "bottlerocket-api"
    assert r["verification_level"] == "settings-readback"
    assert r["canary"].startswith("unavailable: "), r["canary"]
    assert r["bundle_changed"] is True
    assert any(a.startswith("apiclient set settings.pki.eks-ca-remediator") for a in r["actions"]), r["actions"]
    if strategy == "hosts-toml":
        assert any("hosts-toml does not apply on Bottlerocket" in w for w in r["warnings"]), r["warnings"]
    assert lab.bottlerocket_settings()["pki"]["eks-ca-remediator"] == {"data": lab.ca_b64, "trusted": True}
    # The host changed only through the API: its trust bundle was regenerated by the API, and
    # nothing was written into a host trust anchor directory or /etc/containerd.
    assert lab.read_file(lab.trust_bundle_path) != host_trust
    assert lab.sh("ls -A /etc/pki/ca-trust/source/anchors /etc/containerd/certs.d").stdout.split() == [
        "/etc/containerd/certs.d:",
        "/etc/pki/ca-trust/source/anchors:",
    ]
    assert_pull_ok(lab, "after settings.pki was set")


# 3 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("node", LINUX_NODES, ids=node_id)
def test_auto_does_not_restart_containerd_started_after_the_ca_was_trusted(make_lab, node):
    lab = make_lab(*node)
    lab.trust_ca_without_restart()
    pid = lab.restart_containerd()
    assert_pull_ok(lab, "containerd started after the CA was trusted")

    r = assert_success(lab.run_script(lab.script_env()))
    assert r["restarted"] is False
    assert r["strategy_used"] == "none"
    assert r["containerd_before"]["pid"] == r["containerd_after"]["pid"] == pid
    assert r["containerd_before"]["started_at"] > r["trust_bundle_mtime"]
    assert lab.containerd_pid() == pid
    assert r["verification"] == {lab.registry_host: "ok"}
    assert_pull_ok(lab, "after a no-restart auto run")


@pytest.mark.parametrize("node", [("debian", "1.6"), ("al2023", "2")], ids=node_id)
def test_multi_ca_bundle_with_crlf_line_endings_is_installed(make_lab, node):
    lab = make_lab(*node)
    pem = (lab.pki.other_ca_pem + "# comment between certificates\n" + lab.ca_pem).replace("\n", "\r\n")
    r = assert_success(lab.run_script(lab.script_env(SSM_CaBundle=b64(pem))))
    assert r["fingerprint"] == hashlib.sha256(pem.encode()).hexdigest()
    assert r["restarted"] is True
    assert r["canary"] == "ok"
    bundle = (lab.read_file(lab.trust_bundle_path) or b"").replace(b"\r\n", b"\n")
    for ca in (lab.ca_pem, lab.pki.other_ca_pem):
        assert ca.strip().encode() in bundle
    assert_pull_ok(lab, "with a two-CA bundle")


# 4 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("node", LINUX_NODES, ids=node_id)
def test_hosts_toml_fixes_pulls_without_restart_and_leaves_other_files_alone(make_lab, node):
    lab = make_lab(*node)
    foreign_path = "/etc/containerd/certs.d/other.example.test:5000/hosts.toml"
    foreign = 'server = "https://other.example.test:5000"\n[host."https://mirror.example.test"]\n'
    lab.write_file(foreign_path, foreign)
    lab.sh(f"touch -d '2020-01-01 00:00:00' '{foreign_path}'")
    foreign_stat = lab.sh(f"stat -c '%Y %s %i' '{foreign_path}'").stdout
    pid = lab.containerd_pid()
    assert_pull_fails_x509(lab, "before the remediation")

    r = assert_success(lab.run_script(lab.script_env(SSM_Strategy="hosts-toml")))
    assert r["strategy_used"] == "hosts-toml"
    assert r["restarted"] is False
    assert r["containerd_before"]["pid"] == r["containerd_after"]["pid"] == pid == lab.containerd_pid()
    assert r["hosts_toml"]["foreign_untouched"] == []
    assert r["canary"] == "ok"

    path = f"/etc/containerd/certs.d/{lab.registry_host}/hosts.toml"
    text = (lab.read_file(path) or b"").decode()
    assert "managed-by: eks-ca-remediator" in text
    assert f'server = "https://{lab.registry_host}"' in text
    assert f'[host."https://{lab.registry_host}"]' in text
    assert 'capabilities = ["pull", "resolve"]' in text
    assert f'ca = "{anchor_of(lab)}"' in text

    assert lab.read_file(foreign_path) == foreign.encode(), "a user's hosts.toml was modified"
    assert lab.sh(f"stat -c '%Y %s %i' '{foreign_path}'").stdout == foreign_stat
    assert_pull_ok(lab, "through the written hosts.toml, containerd not restarted")
    assert lab.containerd_pid() == pid

    # Control: the hosts.toml is what made it work (containerd's own CA pool is still stale).
    lab.sh(f"rm '{path}'")
    assert_pull_fails_x509(lab, "after removing our hosts.toml")


def test_hosts_toml_does_not_overwrite_a_foreign_file_for_the_same_registry(lab):
    path = f"/etc/containerd/certs.d/{lab.registry_host}/hosts.toml"
    foreign = f'server = "https://{lab.registry_host}"\n# the cluster owner wrote this\n'
    lab.write_file(path, foreign)
    run = lab.run_script(lab.script_env(SSM_Strategy="hosts-toml", SSM_CanaryImage=""))
    r = assert_failure(run, 1, "not ours")
    assert r["hosts_toml"]["foreign_untouched"] == [lab.registry_host]
    assert r["hosts_toml"]["written"] == []
    assert lab.read_file(path) == foreign.encode()


def test_hosts_toml_needs_a_registry_host(shared_lab):
    lab = shared_lab
    before = lab.snapshot()
    run = lab.run_script(lab.script_env(SSM_Strategy="hosts-toml", SSM_RegistryHosts=""))
    assert_failure(run, 2, "needs at least one registry host")
    assert lab.snapshot() == before


# containerd reads hosts.toml only from its registry config_path: an import that takes
# certs.d off the path (1.x, version 2 config), and the empty config_path that
# `containerd config default` prints on 2.x (version 3 config), both fall back to the trust
# store with a restart, and say why.
CONFIG_WITHOUT_CERTS_D = {
    "1.7": (
        "/etc/containerd/config.d/90-registry.toml",
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/docker/certs.d"\n',
        "/etc/docker/certs.d",
    ),
    "2": (
        "/etc/containerd/config.d/90-registry.toml",
        "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = ''\n",
        "",
    ),
}


@pytest.mark.parametrize("node", [("debian", "1.6"), ("al2", "1.7"), ("al2023", "2"), ("ubuntu", "2")], ids=node_id)
def test_hosts_toml_falls_back_to_the_trust_store_when_containerd_does_not_read_certs_d(make_lab, node):
    lab = make_lab(*node)
    path, text, effective = CONFIG_WITHOUT_CERTS_D["2" if lab.containerd_version == "2" else "1.7"]
    lab.write_file(path, text)
    pid = lab.restart_containerd()  # containerd now runs with that config
    lab.trust_ca_without_restart()
    assert_pull_fails_x509(lab, "the node before the remediation")

    r = assert_success(lab.run_script(lab.script_env(SSM_Strategy="hosts-toml")))
    assert r["registry_config_path"] == effective
    assert r["strategy_requested"] == "hosts-toml"
    assert r["strategy_used"] == "restart"
    assert r["restarted"] is True
    assert lab.containerd_pid() != pid
    assert r["hosts_toml"]["written"] == []
    assert any(w.startswith("hosts-toml not applicable: ") and "used the trust store" in w for w in r["warnings"])
    assert lab.read_file(f"/etc/containerd/certs.d/{lab.registry_host}/hosts.toml") is None
    assert_pull_ok(lab, "after the fallback")


# 5 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["auto", "hosts-toml"])
@pytest.mark.parametrize("node", NODES, ids=node_id)
def test_second_run_changes_and_restarts_nothing(make_lab, node, strategy):
    lab = make_lab(*node)
    eks_situation(lab)
    first = assert_success(lab.run_script(lab.script_env(SSM_Strategy=strategy)))
    pid = lab.containerd_pid()
    if not lab.is_bottlerocket:
        assert pid == first["containerd_after"]["pid"]
    state = lab.snapshot()

    second = assert_success(lab.run_script(lab.script_env(SSM_Strategy=strategy)))
    assert second["restarted"] is False
    assert second["bundle_changed"] is False
    assert second["actions"] == []
    assert lab.containerd_pid() == pid, "the second run restarted containerd"
    if not lab.is_bottlerocket:
        assert second["trust_bundle_mtime"] == first["trust_bundle_mtime"]
        assert second["containerd_before"]["pid"] == second["containerd_after"]["pid"] == pid
    if strategy == "hosts-toml" and not lab.is_bottlerocket:
        assert second["hosts_toml"]["written"] == []
        assert second["hosts_toml"]["unchanged"] == [lab.registry_host]
    assert lab.snapshot() == state, "the second run changed files"


# 6 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("node", NODES, ids=node_id)
def test_dry_run_reports_and_changes_nothing(make_lab, node, strategy):
    lab = make_lab(*node)
    eks_situation(lab)
    pid = lab.containerd_pid()
    before = lab.snapshot()

    run = lab.run_script(lab.script_env(SSM_Strategy=strategy, SSM_DryRun="true"))
    assert run.exit_code == 0, explain(run)
    r = run.result
    assert r["result"] == "dry-run", explain(run)
    assert r["dry_run"] is True
    assert r["restarted"] is False
    assert r["canary"] == "skipped"
    if lab.is_bottlerocket:
        assert r["actions"] == [
            f"would apiclient set settings.pki.eks-ca-remediator (data sha256 {r['fingerprint']}, trusted=true)"
        ]
    else:
        assert any(a.startswith(f"would write {anchor_of(lab)}") for a in r["actions"]), r["actions"]
        if strategy == "hosts-toml":
            hosts = f"/etc/containerd/certs.d/{lab.registry_host}/hosts.toml"
            assert f"would write {hosts}" in r["actions"], r["actions"]
            assert not any("restart" in a for a in r["actions"]), r["actions"]
        else:
            assert any(a.startswith("would restart containerd") for a in r["actions"]), r["actions"]
    assert not any(a.startswith(("wrote", "ran", "restarted", "apiclient set")) for a in r["actions"]), r["actions"]

    assert lab.snapshot() == before, "the dry run changed files"
    assert lab.containerd_pid() == pid, "the dry run touched containerd"
    assert_pull_fails_x509(lab, "a dry run must not fix anything")


# 7 -----------------------------------------------------------------------------------------
def _public_key_pem(key_pem: str) -> str:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


BAD_BUNDLES = {
    "not-base64": (lambda p: "this is not base64!", "not base64"),
    "empty": (lambda p: "", "SSM_CaBundle is empty"),
    "not-a-certificate": (lambda p: b64("hello, I am not a certificate\n"), "not PEM"),
    "der-bytes": (lambda p: b64(b"\x30\x82\x01\x00" + bytes(range(256))), "not PEM"),
    "public-key-block": (lambda p: b64(_public_key_pem(p.key_pem)), "PEM block of type PUBLIC KEY"),
    "non-ca-certificate": (lambda p: b64(p.leaf_pem), "not a CA"),
    "ca-plus-non-ca": (lambda p: b64(p.ca_pem + p.leaf_pem), "certificate #2 in the CA bundle is not a CA"),
    "expired-ca": (lambda p: b64(p.expired_ca_pem), "has expired"),
    "ca-plus-private-key": (lambda p: b64(p.ca_pem + p.key_pem), "PRIVATE KEY"),
    "truncated-pem": (lambda p: b64(p.ca_pem.rsplit("-----END", 1)[0]), "unterminated PEM block"),
    "garbage-in-certificate-block": (
        lambda p: b64("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"),
        "cannot be parsed",
    ),
}
# Bottlerocket's control container has no openssl: the CA and expiry checks are the control
# side's (tests/unit/test_bundle.py); what reaches the node is refused by the script's PEM checks
# or by Bottlerocket's API. None: a certificate the API accepts, not run on Bottlerocket.
BOTTLEROCKET_REASONS = {
    "non-ca-certificate": None,
    "ca-plus-non-ca": None,
    "expired-ca": None,
    # The pre-check's curl cannot load it (the registry hosts are set): rejected before the API.
    "garbage-in-certificate-block": "bundle rejected before any change: its certificates cannot be loaded",
}


BAD_BUNDLE_CASES = [
    (node, case)
    for node in NODES
    for case in BAD_BUNDLES
    if not (node[0] == "bottlerocket" and BOTTLEROCKET_REASONS.get(case, "") is None)
]


@pytest.mark.parametrize(("node", "case"), BAD_BUNDLE_CASES, ids=lambda v: node_id(v) if isinstance(v, tuple) else v)
def test_bad_bundle_is_rejected_before_anything_changes(node_lab, node, case):
    lab = node_lab(*node)
    make, reason = BAD_BUNDLES[case]
    exit_code = 2
    if lab.is_bottlerocket and case in BOTTLEROCKET_REASONS:
        reason, exit_code = BOTTLEROCKET_REASONS[case], 1
    pid = lab.containerd_pid()
    before = lab.snapshot()
    run = lab.run_script(lab.script_env(SSM_CaBundle=make(lab.pki)))
    assert_failure(run, exit_code, reason)
    assert run.result["restarted"] is False
    assert lab.snapshot() == before, "a rejected bundle changed the trust store, settings or /etc/containerd"
    assert lab.containerd_pid() == pid, "a rejected bundle touched containerd"


# 8 -----------------------------------------------------------------------------------------
def test_hostile_values_in_every_parameter_are_rejected_and_never_executed(shared_lab):
    lab = shared_lab
    canary = lab.dir / "pwned"
    payloads = [
        f"$(touch {canary})",
        f"`touch {canary}`",
        f";touch {canary}",
        f"\ntouch {canary}\n",
        f"|touch {canary}",
        f"&&touch {canary}",
        f"' \"; touch {canary} #",
        " with spaces",
        "\x1b[31m",
    ]
    valid = lab.script_env()
    pid = lab.containerd_pid()
    before = lab.snapshot()
    for name in ("CaBundle", "Strategy", "RegistryHosts", "CanaryImage", "DryRun"):
        key = f"SSM_{name}"
        for payload in payloads:
            # Appended to a valid value, and (for command substitutions) also in front of it.
            values = [valid[key] + payload]
            if payload.startswith(("$(", "`")):
                values.append(payload + valid[key])
            for value in values:
                run = lab.run_script({**valid, key: value})
                assert run.exit_code == 2, f"{key}={value!r}\n{explain(run)}"
                assert run.result is not None, explain(run)
                assert run.result["result"] == "failure", explain(run)
                assert run.result["reason"].startswith(f"rejected parameter: {key}"), (
                    f"{key}={value!r}: {run.result['reason']}"
                )
                assert not canary.exists(), f"{key}={value!r} executed a command"
    assert lab.snapshot() == before
    assert lab.containerd_pid() == pid


# 9 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("node", LINUX_NODES, ids=node_id)
def test_containerd_not_running_fails_fast_and_changes_nothing(make_lab, node):
    lab = make_lab(*node)
    lab.stop_containerd()
    assert lab.containerd_pid() is None
    before = lab.snapshot()
    started = time.monotonic()
    run = lab.run_script(lab.script_env(), timeout=60)
    elapsed = time.monotonic() - started
    assert_failure(run, 1, "containerd is not running (systemctl reports MainPID=0): nothing changed")
    assert elapsed < 15, f"took {elapsed:.1f} s"
    assert lab.snapshot() == before


@pytest.mark.parametrize("node", LINUX_NODES, ids=node_id)
def test_containerd_not_answering_fails_fast_and_changes_nothing(make_lab, node):
    lab = make_lab(*node)
    pid = lab.containerd_pid()
    lab.remove_cri_socket()
    before = lab.snapshot()
    started = time.monotonic()
    run = lab.run_script(lab.script_env(SSM_Strategy="restart"), timeout=60)
    elapsed = time.monotonic() - started
    r = assert_failure(run, 1, f"containerd (pid {pid}) does not answer on /run/containerd/containerd.sock")
    assert r["containerd_before"]["pid"] == pid
    assert elapsed < 15, f"took {elapsed:.1f} s"
    assert lab.snapshot() == before
    assert lab.containerd_pid() == pid


# 10 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("node", LINUX_NODES, ids=node_id)
def test_canary_reports_failure_when_the_registry_is_signed_by_another_ca(make_lab, node):
    lab = make_lab(*node)
    # No registry hosts: no pre-check to reject the bundle first (test_verify_before_commit.py).
    run = lab.run_script(lab.script_env(SSM_CaBundle=b64(lab.pki.other_ca_pem), SSM_RegistryHosts=""))
    r = assert_failure(run, 1, "canary pull failed")
    assert r["precheck"] == "skipped: no registry hosts", r
    assert r["verification_level"] == ("none" if expected_level(lab) == "tls-only" else expected_level(lab))
    assert r["canary"].startswith("failed: "), r["canary"]
    assert "x509" in r["canary"], r["canary"]
    assert r["restarted"] is True  # the new CA was trusted after containerd started
    assert_pull_fails_x509(lab, "with only the wrong CA trusted")


@pytest.mark.parametrize("node", [("debian", "1.6"), ("al2023", "2")], ids=node_id)
def test_a_canary_the_registry_refuses_after_a_verified_handshake_proves_the_ca_at_tls_only(make_lab, node):
    """A canary image that does not exist (404; 401/403 alike: credentials needed) still proves
    that containerd verified the registry's certificate: success at tls-only, saying why. An
    x509 failure stays a failure (the test above)."""
    lab = make_lab(*node)
    eks_situation(lab)
    missing = f"{lab.registry_host}/nodelab/hello:no-such-tag"
    r = assert_success(lab.run_script(lab.script_env(SSM_CanaryImage=missing)))
    assert r["verification_level"] == "tls-only"
    assert r["canary"].startswith("tls-proven: the registry refused the pull after containerd verified"), r["canary"]
    assert "not found" in r["canary"], r["canary"]
    assert any("anonymously pullable canary image gives the strongest proof" in w for w in r["warnings"])
    assert_pull_ok(lab, "after the remediation")


# 11 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("node", [("debian", "1.6"), ("ubuntu", "2"), ("al2", "1.7"), ("al2023", "2")], ids=node_id)
def test_a_failed_trust_refresh_puts_the_previous_trust_state_back(make_lab, node):
    lab = make_lab(*node)
    pid = lab.containerd_pid()
    before = lab.snapshot(content_only=True)
    bundle_before = lab.read_file(lab.trust_bundle_path)
    lab.write_file("/etc/nodelab-fail-refresh", "")  # the refresh tool writes, then fails

    run = lab.run_script(lab.script_env())
    r = assert_failure(run, 1, "failed (exit status 1")
    assert "the previous trust state was restored; containerd untouched" in r["reason"], r["reason"]
    assert r["restarted"] is False
    lab.sh("rm /etc/nodelab-fail-refresh")
    assert lab.read_file(lab.trust_bundle_path) == bundle_before
    assert lab.read_file(anchor_of(lab)) is None
    assert lab.snapshot(content_only=True) == before, "the failed run left the trust store changed"
    assert lab.containerd_pid() == pid
    assert_pull_fails_x509(lab, "nothing was half-applied")
