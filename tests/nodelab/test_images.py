"""What each image profile of the node lab holds the script to, and what only one image does:
the stand-ins refuse what the real tool of that version refuses, the canary without crictl is
daemon-side, and Bottlerocket's control container reaches the host only through apiclient."""

from __future__ import annotations

import pytest

from tests.nodelab.lab import NodeLab
from tests.nodelab.test_scenarios import (
    X509,
    assert_hosts_toml_ignored,
    assert_pull_fails_x509,
    assert_pull_ok,
    assert_success,
)

pytestmark = pytest.mark.nodelab


def in_node(lab: NodeLab, command: str) -> tuple[int, str]:
    """Run a shell command with the node's own tool surface (as the node script sees it)."""
    run = lab.run_script({}, script=f"exec 2>&1\n{command}\n")
    return run.exit_code, run.stderr + lab.last_stdout


def assert_refused(lab: NodeLab, command: str, message: str) -> str:
    """The tool refuses the command as the real one of the image's version does: exit 1, message."""
    code, out = in_node(lab, command)
    assert code == 1, f"{command}: {out}"
    assert message in out, f"{command}: {out}"
    return out


# AL2: systemd 219 ------------------------------------------------------------------------------
def test_al2_systemctl_refuses_options_newer_than_systemd_219(node_lab):
    al2, al2023 = node_lab("al2", "1.7"), node_lab("al2023", "2")
    pid = al2.containerd_pid()
    assert in_node(al2, "systemctl show -p MainPID containerd") == (0, f"MainPID={pid}\n")
    assert_refused(al2, "systemctl show --value -p MainPID containerd", "unrecognized option '--value'")
    assert_refused(al2, "systemctl show -P MainPID containerd", "invalid option -- 'P'")
    # systemd 252 (AL2023) has both.
    assert in_node(al2023, "systemctl show --value -p MainPID containerd") == (0, f"{al2023.containerd_pid()}\n")


def test_al2_openssl_has_the_option_surface_of_1_0_2(node_lab):
    lab = node_lab("al2", "1.7")
    code, out = in_node(lab, "openssl version")
    assert out.startswith("OpenSSL 1.0.2k")
    assert_refused(lab, "openssl s_client -connect 127.0.0.1:1 -no-CApath </dev/null", "unknown option -no-CApath")
    usage = assert_refused(lab, "openssl s_client -help", "unknown option -help")
    assert "-verify_return_error" in usage
    assert "-no-CApath" not in usage
    assert_refused(lab, "openssl x509 -in /dev/null -noout -ext basicConstraints", "unknown option -ext")


def test_al2_sh_is_bash_in_posix_mode_with_bash_4_2_compat(node_lab):
    lab = node_lab("al2", "1.7")
    code, out = in_node(lab, 'echo "$BASH_COMPAT"; set -o | grep "^posix"')
    assert code == 0, out
    assert out.split() == ["42", "posix", "on"]


# crictl ----------------------------------------------------------------------------------------
def test_crictl_needs_an_explicit_endpoint_as_on_eks_images(node_lab):
    lab = node_lab("al2", "1.7")
    code, out = in_node(lab, "crictl info")
    assert code == 1, out
    assert "no runtime endpoint" in out
    code, out = in_node(lab, "crictl --runtime-endpoint unix:///run/containerd/containerd.sock info")
    assert code == 0, out


def test_al2023_has_no_crictl(node_lab):
    lab = node_lab("al2023", "2")
    code, out = in_node(lab, "command -v crictl || echo absent; ctr --version")
    assert code == 0, out
    assert out.splitlines()[0] == "absent"
    assert "containerd/v2 2." in out


# The canary without crictl ---------------------------------------------------------------------
def test_al2023_canary_pulls_through_the_daemon_so_it_fails_while_kubelet_would(make_lab):
    """The script's canary on AL2023 is `ctr -n k8s.io images pull` (containerd 2.x's Transfer
    service, inside the daemon): it fails with x509 exactly while CRI does. A client-side pull
    (`--local`) loads a fresh CA pool in ctr's own process and succeeds: it would prove nothing."""
    lab = make_lab("al2023")
    lab.trust_ca_without_restart()
    assert_pull_fails_x509(lab, "CRI after the CA was trusted, containerd not restarted")
    sock = "--address /run/containerd/containerd.sock --namespace k8s.io"
    code, out = in_node(lab, f"ctr {sock} images pull {lab.image}")
    assert code != 0, out
    assert X509 in out
    code, out = in_node(lab, f"ctr {sock} images pull --local {lab.image}")
    assert code == 0, f"the client-side pull should succeed (that is why it is no canary): {out}"


def test_containerd_1_7_ctr_pulls_client_side_so_it_is_no_canary(make_lab):
    """containerd 1.x's `ctr images pull` pulls in ctr's own process (1.7: `--local` defaults to
    true, containerd cmd/ctr/commands/images/pull.go): it succeeds while CRI still fails."""
    lab = make_lab("ubuntu", "1.7")
    lab.trust_ca_without_restart()
    assert_pull_fails_x509(lab, "CRI after the CA was trusted, containerd not restarted")
    code, out = in_node(
        lab, f"ctr --address /run/containerd/containerd.sock --namespace k8s.io images pull {lab.image}"
    )
    assert code == 0, f"ctr 1.7's default pull is client-side and sees the new CA: {out}"
    assert_pull_fails_x509(lab, "CRI, right after ctr's pull succeeded")


@pytest.mark.parametrize(("profile", "containerd"), [("debian", "1.6"), ("ubuntu", "1.7")])
def test_no_crictl_on_containerd_1_means_no_honest_canary_and_no_false_failure(make_lab, profile, containerd):
    lab = make_lab(profile, containerd, crictl=False)
    lab.trust_ca_without_restart()
    r = assert_success(lab.run_script(lab.script_env()))
    assert r["verification_level"] == "tls-only"
    assert r["canary"].startswith("unavailable: no crictl on "), r["canary"]
    assert "pulls in its own process" in r["canary"]
    assert r["restarted"] is True
    assert_pull_ok(lab, "after the fix verified by TLS only")


def test_readiness_after_a_restart_means_containerd_answers(make_lab):
    """The readiness check calls containerd; a socket file that exists proves nothing."""
    lab = make_lab("al2023")
    lab.trust_ca_without_restart()
    code, out = in_node(lab, "ctr --address /run/containerd/containerd.sock version")
    assert code == 0, out
    lab.stop_containerd()
    lab.sh("touch /run/containerd/containerd.sock")  # a stale socket path, nobody listening
    code, out = in_node(lab, "ctr --address /run/containerd/containerd.sock version")
    assert code != 0, out


# hosts.toml on containerd 2.x's Transfer-service pull ------------------------------------------
def test_hosts_toml_falls_back_where_the_transfer_service_would_ignore_it(make_lab):
    """containerd 2.x's CRI pulls through the Transfer service unless discard_unpacked_layers
    (AL2023's nodeadm sets it) or use_local_image_pull; that path ignores hosts.toml with a
    colon-separated config_path (containerd issues #12415, #12808): the script does not rely
    on a hosts.toml there."""
    lab = make_lab("debian", "2")
    lab.write_file(
        "/etc/containerd/config.d/90-transfer.toml",
        "version = 3\n[plugins.'io.containerd.cri.v1.images']\n  discard_unpacked_layers = false\n",
    )
    lab.restart_containerd(prime=False)
    # Control: in this mode a hosts.toml naming the CA really is ignored by CRI pulls.
    assert_hosts_toml_ignored(lab, "Transfer-service pull with a hosts.toml naming the CA")
    lab.trust_ca_without_restart()
    r = assert_success(lab.run_script(lab.script_env(SSM_Strategy="hosts-toml")))
    assert r["strategy_used"] == "restart"
    assert any("Transfer service, which ignores hosts.toml" in w for w in r["warnings"]), r["warnings"]
    assert_pull_ok(lab, "after the fallback")


# Bottlerocket ----------------------------------------------------------------------------------
@pytest.mark.parametrize("containerd", ["2", "1.7"])
def test_bottlerocket_control_container_has_apiclient_and_none_of_the_host_tools(node_lab, containerd):
    lab = node_lab("bottlerocket", containerd)
    code, out = in_node(
        lab,
        "test -d /.bottlerocket && echo bottlerocket; . /etc/os-release; echo $ID $VERSION_ID; "
        "for t in apiclient systemctl ctr crictl openssl containerd; do command -v $t >/dev/null && echo has-$t; done; "
        "test -e /run/containerd/containerd.sock || echo no-socket; test -e /etc/containerd || echo no-etc-containerd",
    )
    assert code == 0, out
    assert out.split() == ["bottlerocket", "amzn", "2", "has-apiclient", "no-socket", "no-etc-containerd"]


def test_bottlerocket_api_refuses_what_bottlerocket_refuses(node_lab):
    lab = node_lab("bottlerocket", "2")
    before = lab.snapshot()
    cases = {
        "apiclient set pki.bad_name.data=x": "Invalid Identifier 'bad_name'",
        "apiclient set pki.ok.data=not-base64!": "Invalid base64",
        "apiclient set pki.ok.trusted=yes": "expected a boolean",
        "apiclient set pki.ok.colour=red": "unknown field 'colour'",
        "apiclient set motd=hello": "models settings.pki only",
        "apiclient set pki.ok.data=aGVsbG8K": "No valid certificate found",
    }
    for command, message in cases.items():
        assert_refused(lab, command, message)
    assert lab.snapshot() == before


def test_bottlerocket_applies_settings_after_set_has_returned(make_lab):
    """As thar-be-settings does: `apiclient set` returns once the settings are committed; the
    trust bundle and containerd's restart follow later, in no fixed order. The control
    container cannot see either: the script says so (verification settings-readback)."""
    lab = make_lab("bottlerocket")
    bundle, pid = lab.read_file(lab.trust_bundle_path), lab.containerd_pid()
    code, out = in_node(lab, f"NODELAB_APPLY_DELAY=2 apiclient set pki.probe.data={lab.ca_b64} pki.probe.trusted=true")
    assert code == 0, out
    assert lab.bottlerocket_settings()["pki"]["probe"] == {"data": lab.ca_b64, "trusted": True}
    assert lab.read_file(lab.trust_bundle_path) == bundle, "applied before set returned"
    assert lab.containerd_pid() == pid
    assert lab.wait_bottlerocket_applied()
    assert lab.read_file(lab.trust_bundle_path) != bundle
    assert lab.containerd_pid() != pid

    r = assert_success(lab.run_script(lab.script_env(SSM_CaBundle=lab.ca_b64)))
    assert r["verification_level"] == "settings-readback"
    assert any("the control container cannot observe that" in w for w in r["warnings"]), r["warnings"]


def test_bottlerocket_rotation_replaces_the_bundle_and_restarts_containerd_once(make_lab):
    lab = make_lab("bottlerocket")
    first = assert_success(lab.run_script(lab.script_env()))
    pid = lab.containerd_pid()
    pem = lab.pki.other_ca_pem + lab.ca_pem  # the rotated bundle: a new CA plus the current one
    from tests.nodelab.lab import b64  # noqa: PLC0415

    second = assert_success(lab.run_script(lab.script_env(SSM_CaBundle=b64(pem))))
    assert second["bundle_changed"] is True
    assert second["fingerprint"] != first["fingerprint"]
    assert lab.bottlerocket_settings()["pki"]["eks-ca-remediator"]["data"] == b64(pem)
    assert lab.containerd_pid() != pid, "Bottlerocket restarts containerd when settings.pki changes"
    assert_pull_ok(lab, "after the rotation")


# The control side reads what the script prints on each image ---------------------------------
@pytest.mark.parametrize(
    ("profile", "containerd", "level"),
    [("al2", "1.7", "cri-pull"), ("al2023", "2", "daemon-pull"), ("bottlerocket", "2", "settings-readback")],
)
def test_the_status_handler_records_each_images_result_line_as_succeeded(make_lab, profile, containerd, level):
    from eks_ca_remediator.decisions import outcome_of  # noqa: PLC0415
    from eks_ca_remediator.models import Status  # noqa: PLC0415

    lab = make_lab(profile, containerd)
    if not lab.is_bottlerocket:
        lab.trust_ca_without_restart()
    run = lab.run_script(lab.script_env())
    outcome = outcome_of("Success", "Success", lab.last_stdout, dry_run=False)
    assert outcome.status is Status.SUCCEEDED, (outcome, run.stderr[-2000:])
    assert outcome.result is not None
    assert outcome.result.verification_level == level
    assert outcome.result.os_family == profile


# Missing or too old tools: a reason naming the tool and the image, nothing changed -----------
def test_a_missing_refresh_tool_is_named_with_the_image(make_lab):
    lab = make_lab("al2")
    (lab.bin_dir / "update-ca-trust").unlink()  # the machine (Debian) has none: now it is missing
    before, pid = lab.snapshot(), lab.containerd_pid()
    run = lab.run_script(lab.script_env())
    assert run.exit_code == 1, run.stderr[-2000:]
    assert run.result["reason"] == "required command not found on PATH: update-ca-trust (image: al2)"
    assert lab.snapshot() == before
    assert lab.containerd_pid() == pid


def test_a_systemctl_without_mainpid_is_not_reported_as_containerd_not_running(make_lab):
    lab = make_lab("al2")
    real = lab.bin_dir / "systemctl"
    real.rename(lab.bin_dir / "systemctl.lab")
    # A systemctl whose `show` prints nothing usable (what --value on systemd 219 used to cause).
    real.write_text(
        f'#!/bin/sh\n[ "$1" = show ] && {{ echo "Failed to parse bus message" >&2; exit 1; }}\nexec {lab.bin_dir}/systemctl.lab "$@"\n'
    )
    real.chmod(0o755)
    before, pid = lab.snapshot(), lab.containerd_pid()
    run = lab.run_script(lab.script_env())
    assert run.exit_code == 1, run.stderr[-2000:]
    reason = run.result["reason"]
    assert reason.startswith("systemctl show -p MainPID containerd gave no MainPID on al2: "), reason
    assert "Failed to parse bus message" in reason
    assert "containerd is not running" not in reason
    assert lab.snapshot() == before
    assert lab.containerd_pid() == pid


def test_bottlerocket_without_apiclient_says_where_to_run(make_lab):
    lab = make_lab("bottlerocket")
    assert lab.dir is not None
    (lab.dir / "cc-bin" / "apiclient").unlink()
    before = lab.snapshot()
    run = lab.run_script(lab.script_env())
    assert run.exit_code == 1, run.stderr[-2000:]
    assert run.result["os_family"] == "bottlerocket"
    assert "apiclient is not on PATH: run this document in the control container" in run.result["reason"]
    assert lab.snapshot() == before
