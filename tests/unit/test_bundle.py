"""CA bundle validation and canonical form."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from eks_ca_remediator.bundle import canonical_bundle
from eks_ca_remediator.errors import BundleError

from tests.fakes.pki import make_cert

NOW = datetime.now(UTC)


def test_canonical_bundle_is_deduplicated_and_order_independent():
    a, _ = make_cert("Root A")
    b, _ = make_cert("Root B")
    one = canonical_bundle(a + b, now=NOW)
    two = canonical_bundle(b, a + a, now=NOW)
    assert one.pem == two.pem
    assert one.fingerprint == two.fingerprint
    assert len(one.certificates) == 2


def test_fingerprint_is_what_the_node_computes_from_the_parameter():
    a, _ = make_cert()
    bundle = canonical_bundle(a, now=NOW)
    assert bundle.fingerprint == hashlib.sha256(base64.b64decode(bundle.b64)).hexdigest()


def test_expiring_within():
    soon, _ = make_cert("Soon", days=10)
    later, _ = make_cert("Later", days=400)
    bundle = canonical_bundle(soon, later, now=NOW)
    assert [c.subject for c in bundle.expiring_within(NOW, 30)] == ["CN=Soon"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: "", "holds no PEM certificate"),
        (lambda: "hello world", "holds no PEM certificate"),
        (lambda: make_cert()[0] + make_cert()[1], "contains a private key"),
        (lambda: make_cert(ca=False)[0], "is not a CA"),
        (lambda: make_cert(not_before=NOW - timedelta(days=30), days=10)[0], "expired on"),
        (lambda: make_cert(not_before=NOW + timedelta(days=3))[0], "is not valid before"),
        (lambda: "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n", "is a PUBLIC KEY, not a CERTIFICATE"),
        (lambda: "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", "does not parse"),
        (lambda: make_cert()[0][:200], "malformed or truncated PEM block"),
    ],
)
def test_rejections_say_why(make, message):
    with pytest.raises(BundleError, match=message):
        canonical_bundle(make(), now=NOW)


def test_oversized_bundle_is_rejected_before_it_reaches_ssm():
    certs = "".join(make_cert(f"Root {i}")[0] for i in range(90))
    with pytest.raises(BundleError, match="the SSM document accepts 40000"):
        canonical_bundle(certs, now=NOW)
