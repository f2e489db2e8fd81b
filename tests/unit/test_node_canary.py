"""What the node script's canary result proves (node/lib/verify.sh canary_outcome), on the error
texts containerd prints (core/remotes/docker/resolver.go, core/remotes/errors/errors.go at
v2.1.4): an x509 failure is a failure; an HTTP refusal after a verified TLS handshake proves the
CA inside containerd (success at tls-only, with the reason)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "node" / "lib"
REF = "registry.example:5000/team/app:1"
URL = "https://registry.example:5000/v2/team/app/manifests/1"


def outcome(rc: int, out: str) -> tuple[str, str, str]:
    modules = " ".join(f". {shlex.quote(str(LIB / m))};" for m in ("result.sh", "verify.sh"))
    code = (
        f"set -u; exec 3>/dev/null; {modules} CANARY_IMAGE={REF}; R_LEVEL=cri-pull;"
        f" canary_outcome {rc} {shlex.quote(out)} crictl 2>/dev/null;"
        ' printf "%s\\n%s\\n%s\\n" "$R_CANARY" "$R_LEVEL" "${R_WARNINGS[*]+${R_WARNINGS[*]}}"'
    )
    proc = subprocess.run(["bash", "-c", code], capture_output=True, text=True, timeout=30, check=True)
    canary, level, warnings = proc.stdout.split("\n")[:3]
    return canary, level, warnings


PULL = (
    f'rpc error: code = Unknown desc = failed to pull and unpack image "{REF}": failed to resolve reference "{REF}": '
)


@pytest.mark.parametrize(
    "out",
    [
        PULL + f'failed to do request: Head "{URL}": tls: failed to verify certificate: x509: certificate signed by '
        "unknown authority",
        PULL + f'failed to do request: Head "{URL}": x509: certificate signed by unknown authority',
        f'ctr: failed to resolve reference "{REF}": no resolve hosts: not found',
        PULL + "dial tcp 10.0.0.1:5000: connect: connection refused",
    ],
)
def test_tls_failures_and_no_answer_fail(out):
    canary, level, warnings = outcome(1, out)
    assert canary.startswith("failed: ")
    assert level == "cri-pull"
    assert warnings == ""


@pytest.mark.parametrize(
    "out",
    [
        PULL + f"unexpected status from HEAD request to {URL}: 401 Unauthorized",
        PULL + f"unexpected status from HEAD request to {URL}: 403 Forbidden",
        PULL + f"{REF}: not found",
        f'ctr: failed to resolve reference "{REF}": {REF}: not found',
        PULL + "pull access denied, repository does not exist or may require authorization: server message: "
        "insufficient_scope: authorization failed: DENIED: access to the requested resource is not authorized",
    ],
)
def test_an_http_refusal_after_a_verified_handshake_proves_the_ca_at_tls_only(out):
    canary, level, warnings = outcome(1, out)
    assert canary.startswith("tls-proven: the registry refused the pull after containerd verified its certificate")
    assert level == "tls-only"
    assert "anonymously pullable canary image gives the strongest proof" in warnings


def test_ok_and_timeout():
    assert outcome(0, "Image is up to date for sha256:abc")[:2] == ("ok", "cri-pull")
    assert outcome(124, "")[0] == "failed: crictl pull timed out after 120 s"
