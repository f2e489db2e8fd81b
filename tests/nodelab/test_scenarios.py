"""Node lab scenarios: the node script (as embedded in template.yaml) against a real containerd
pulling through CRI from a TLS registry whose CA the node does not trust at first."""

from __future__ import annotations

import hashlib
import time

import pytest

from tests.nodelab.lab import NodeLab, ScriptRun, b64

pytestmark = pytest.mark.nodelab

X509 = "x509: certificate signed by unknown authority"
FAMILIES = ["debian", "al2", "al2023"]


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


def assert_pull_ok(lab: NodeLab, why: str) -> None:
    ok, msg = lab.cri_pull()
    assert ok, f"{why}: CRI pull failed: {msg}\ncontainerd log:\n{lab.containerd_log()}"


# 1 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("os_family", FAMILIES)
def test_reproduction_trusted_ca_is_ignored_until_containerd_restarts(make_lab, os_family):
    lab = make_lab(os_family)
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
@pytest.mark.parametrize("os_family", [*FAMILIES, "ubuntu"])
def test_auto_restarts_containerd_that_predates_the_trust_bundle(make_lab, os_family):
    lab = make_lab(os_family)
    lab.trust_ca_without_restart()
    pid = lab.containerd_pid()
    assert_pull_fails_x509(lab, "reproduction precondition")

    r = assert_success(lab.run_script(lab.script_env(SSM_Strategy="auto")))

    assert r["os_family"] == os_family
    assert r["strategy_requested"] == "auto"
    assert r["strategy_used"] == "restart"
    assert r["restarted"] is True
    assert r["containerd_before"]["pid"] == pid
    assert r["containerd_after"]["pid"] == lab.containerd_pid() != pid
    assert r["containerd_after"]["started_at"] > r["containerd_before"]["started_at"]
    assert r["verification"] == {lab.registry_host: "ok"}
    assert r["canary"] == "ok"
    assert r["fingerprint"] == hashlib.sha256(lab.ca_pem.encode()).hexdigest()
    assert r["dry_run"] is False
    anchor = f"{lab.anchor_dir}/eks-ca-remediator.{'pem' if lab.is_al else 'crt'}"
    assert lab.read_file(anchor) == lab.ca_pem.encode()
    assert lab.last_stdout.count("\n") == 1, f"stdout must be exactly one JSON line: {lab.last_stdout!r}"
    assert len(lab.last_stdout) < 20_000
    assert_pull_ok(lab, "after the auto remediation")


def test_multi_ca_bundle_with_crlf_line_endings_is_installed(lab):
    pem = (lab.pki.other_ca_pem + "# comment between certificates\n" + lab.ca_pem).replace("\n", "\r\n")
    r = assert_success(lab.run_script(lab.script_env(SSM_CaBundle=b64(pem))))
    assert r["fingerprint"] == hashlib.sha256(pem.encode()).hexdigest()
    assert r["restarted"] is True
    assert r["canary"] == "ok"
    bundle = (lab.read_file(lab.trust_bundle_path) or b"").replace(b"\r\n", b"\n")
    for ca in (lab.ca_pem, lab.pki.other_ca_pem):
        assert ca.strip().encode() in bundle
    assert_pull_ok(lab, "with a two-CA bundle")


def test_auto_on_a_node_that_never_trusted_the_ca(lab):
    pid = lab.containerd_pid()
    r = assert_success(lab.run_script(lab.script_env()))
    assert r["bundle_changed"] is True
    assert "ran update-ca-certificates" in r["actions"]
    assert r["restarted"] is True
    assert r["containerd_after"]["pid"] != pid
    assert r["trust_bundle_mtime"] <= r["containerd_after"]["started_at"]
    assert_pull_ok(lab, "after installing the CA on a fresh node")


# 3 -----------------------------------------------------------------------------------------
def test_auto_does_not_restart_containerd_started_after_the_ca_was_trusted(lab):
    lab.trust_ca_without_restart()
    pid = lab.restart_containerd()
    assert_pull_ok(lab, "containerd started after the CA was trusted")

    r = assert_success(lab.run_script(lab.script_env()))
    assert r["restarted"] is False
    assert r["strategy_used"] == "none"
    assert r["containerd_before"]["pid"] == r["containerd_after"]["pid"] == pid
    assert r["containerd_before"]["started_at"] == r["containerd_after"]["started_at"]
    assert r["containerd_before"]["started_at"] > r["trust_bundle_mtime"]
    assert lab.containerd_pid() == pid
    assert r["verification"] == {lab.registry_host: "ok"}
    assert_pull_ok(lab, "after a no-restart auto run")


def test_restart_strategy_always_restarts(lab):
    lab.trust_ca_without_restart()
    pid = lab.restart_containerd()
    r = assert_success(lab.run_script(lab.script_env(SSM_Strategy="restart")))
    assert r["restarted"] is True
    assert r["strategy_used"] == "restart"
    assert lab.containerd_pid() not in (None, pid)


# 4 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("os_family", ["debian", "al2023"])
def test_hosts_toml_fixes_pulls_without_restart_and_leaves_other_files_alone(make_lab, os_family):
    lab = make_lab(os_family)
    foreign_path = "/etc/containerd/certs.d/other.example.test:5000/hosts.toml"
    foreign = 'server = "https://other.example.test:5000"\n[host."https://mirror.example.test"]\n'
    lab.write_file(foreign_path, foreign)
    lab.sh(f"touch -d '2020-01-01 00:00:00' '{foreign_path}'")
    foreign_stat = lab.sh(f"stat -c '%Y %s %i' '{foreign_path}'").stdout
    pid = lab.containerd_pid()
    assert_pull_fails_x509(lab, "before the remediation")

    r = assert_success(lab.run_script(lab.script_env(SSM_Strategy="hosts-toml", SSM_RegistryHosts=lab.registry_host)))
    assert r["strategy_used"] == "hosts-toml"
    assert r["restarted"] is False
    assert r["containerd_before"]["pid"] == r["containerd_after"]["pid"] == pid == lab.containerd_pid()
    assert r["hosts_toml"]["written"] == [lab.registry_host]
    assert r["hosts_toml"]["foreign_untouched"] == []
    assert r["canary"] == "ok"

    path = f"/etc/containerd/certs.d/{lab.registry_host}/hosts.toml"
    text = (lab.read_file(path) or b"").decode()
    assert "managed-by: eks-ca-remediator" in text
    assert f'server = "https://{lab.registry_host}"' in text
    assert f'[host."https://{lab.registry_host}"]' in text
    assert 'capabilities = ["pull", "resolve"]' in text
    assert f'ca = "{lab.anchor_dir}/eks-ca-remediator.{"pem" if lab.is_al else "crt"}"' in text

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


# 5 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["auto", "hosts-toml"])
def test_second_run_changes_and_restarts_nothing(lab, strategy):
    lab.trust_ca_without_restart()
    first = assert_success(lab.run_script(lab.script_env(SSM_Strategy=strategy)))
    pid = lab.containerd_pid()
    assert pid == first["containerd_after"]["pid"]
    state = lab.snapshot()

    second = assert_success(lab.run_script(lab.script_env(SSM_Strategy=strategy)))
    assert second["restarted"] is False
    assert second["bundle_changed"] is False
    assert second["actions"] == []
    assert second["trust_bundle_mtime"] == first["trust_bundle_mtime"]
    assert second["containerd_before"]["pid"] == second["containerd_after"]["pid"] == pid
    assert lab.containerd_pid() == pid
    if strategy == "hosts-toml":
        assert second["hosts_toml"]["written"] == []
        assert second["hosts_toml"]["unchanged"] == [lab.registry_host]
    assert lab.snapshot() == state, "the second run changed files"


# 6 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["auto", "restart", "hosts-toml"])
def test_dry_run_reports_and_changes_nothing(lab, strategy):
    lab.trust_ca_without_restart()
    pid = lab.containerd_pid()
    before = lab.snapshot()

    run = lab.run_script(lab.script_env(SSM_Strategy=strategy, SSM_DryRun="true"))
    assert run.exit_code == 0, explain(run)
    r = run.result
    assert r["result"] == "dry-run", explain(run)
    assert r["dry_run"] is True
    assert r["restarted"] is False
    assert r["canary"] == "skipped"
    anchor = "/usr/local/share/ca-certificates/eks-ca-remediator.crt"
    assert any(a.startswith(f"would write {anchor}") for a in r["actions"]), r["actions"]
    if strategy == "hosts-toml":
        hosts = f"/etc/containerd/certs.d/{lab.registry_host}/hosts.toml"
        assert f"would write {hosts}" in r["actions"], r["actions"]
        assert not any("restart" in a for a in r["actions"]), r["actions"]
    else:
        assert any(a.startswith("would restart containerd") for a in r["actions"]), r["actions"]
    assert not any(a.startswith(("wrote", "ran", "restarted")) for a in r["actions"]), r["actions"]

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
}


@pytest.mark.parametrize("case", list(BAD_BUNDLES))
def test_bad_bundle_is_rejected_before_anything_changes(shared_lab, case):
    lab = shared_lab
    make, reason = BAD_BUNDLES[case]
    pid = lab.containerd_pid()
    before = lab.snapshot()
    run = lab.run_script(lab.script_env(SSM_CaBundle=make(lab.pki)))
    assert_failure(run, 2, reason)
    assert run.result["restarted"] is False
    assert lab.snapshot() == before, "a rejected bundle changed the trust store or /etc/containerd"
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
def test_containerd_not_running_fails_fast_and_changes_nothing(lab):
    lab.stop_containerd()
    assert lab.containerd_pid() is None
    before = lab.snapshot()
    started = time.monotonic()
    run = lab.run_script(lab.script_env(), timeout=60)
    elapsed = time.monotonic() - started
    assert_failure(run, 1, "containerd is not running")
    assert elapsed < 15, f"took {elapsed:.1f} s"
    assert lab.snapshot() == before


def test_missing_cri_socket_fails_fast_and_changes_nothing(lab):
    pid = lab.containerd_pid()
    lab.remove_cri_socket()
    before = lab.snapshot()
    started = time.monotonic()
    run = lab.run_script(lab.script_env(SSM_Strategy="restart"), timeout=60)
    elapsed = time.monotonic() - started
    r = assert_failure(run, 1, "does not answer on its CRI socket")
    assert r["containerd_before"]["pid"] == pid
    assert elapsed < 15, f"took {elapsed:.1f} s"
    assert lab.snapshot() == before
    assert lab.containerd_pid() == pid


# 10 ----------------------------------------------------------------------------------------
def test_canary_reports_failure_when_the_registry_is_signed_by_another_ca(lab):
    run = lab.run_script(lab.script_env(SSM_CaBundle=b64(lab.pki.other_ca_pem)))
    r = assert_failure(run, 1, "canary pull failed")
    assert r["canary"].startswith("failed: "), r["canary"]
    assert "x509" in r["canary"], r["canary"]
    assert r["verification"][lab.registry_host].startswith("failed: "), r["verification"]
    assert r["restarted"] is True  # the new CA was trusted after containerd started
    assert_pull_fails_x509(lab, "with only the wrong CA trusted")
