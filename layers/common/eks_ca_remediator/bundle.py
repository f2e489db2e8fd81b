"""CA bundle validation and canonical form (pure: the caller passes the clock)."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from eks_ca_remediator.errors import BundleError

if TYPE_CHECKING:  # cryptography (~30-60 ms to import) loads on first validation, not at cold start
    from cryptography import x509

PEM_BLOCK_RE = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)\r?\n-----END \1-----", re.DOTALL)
# The document's CaBundle parameter holds base64 of the PEM bundle, at most this many chars.
DOCUMENT_BUNDLE_MAX_B64 = 40000


@dataclass(frozen=True)
class CaCertificate:
    subject: str
    not_after: datetime
    sha256: str


@dataclass(frozen=True)
class CaBundle:
    """A validated, canonical bundle: deduplicated, sorted by certificate fingerprint."""

    pem: str
    certificates: tuple[CaCertificate, ...]

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.pem.encode()).hexdigest()

    @property
    def b64(self) -> str:
        return base64.b64encode(self.pem.encode()).decode()

    def expiring_within(self, now: datetime, days: int) -> list[CaCertificate]:
        return [c for c in self.certificates if (c.not_after - now).total_seconds() < days * 86400]


def canonical_bundle(*pem_texts: str, now: datetime) -> CaBundle:
    """Validate one or more PEM texts and merge them into one canonical bundle.

    Rejects, with the reason: private keys anywhere, blocks that are not certificates,
    certificates that are not CAs, expired or not-yet-valid certificates, an empty bundle,
    a bundle larger than the SSM document accepts.
    """
    text = "\n".join(pem_texts)
    if "PRIVATE KEY-----" in text:
        raise BundleError("the bundle contains a private key; refusing to send it to any node")
    blocks = PEM_BLOCK_RE.findall(text)
    leftovers = PEM_BLOCK_RE.sub("", text).strip()
    if leftovers and "-----BEGIN" in leftovers:
        raise BundleError("the bundle has a malformed or truncated PEM block")
    if not blocks:
        raise BundleError("the bundle holds no PEM certificate")
    by_fingerprint: dict[str, tuple[CaCertificate, str]] = {}
    for index, (label, _) in enumerate(blocks, start=1):
        if label != "CERTIFICATE":
            raise BundleError(f"PEM block {index} is a {label}, not a CERTIFICATE")
    for index, match in enumerate(PEM_BLOCK_RE.finditer(text), start=1):
        cert = _load(match.group(0), index)
        info = _check_ca(cert, index, now)
        pem = cert.public_bytes(_encoding().PEM).decode()
        by_fingerprint.setdefault(info.sha256, (info, pem))
    ordered = sorted(by_fingerprint.values(), key=lambda pair: pair[0].sha256)
    bundle = CaBundle(pem="".join(pem for _, pem in ordered), certificates=tuple(i for i, _ in ordered))
    if len(bundle.b64) > DOCUMENT_BUNDLE_MAX_B64:
        raise BundleError(
            f"the bundle is {len(bundle.b64)} base64 chars; the SSM document accepts {DOCUMENT_BUNDLE_MAX_B64}"
        )
    return bundle


def _encoding() -> type:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding


def _load(pem: str, index: int) -> x509.Certificate:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise BundleError(f"certificate {index} does not parse: {exc}") from exc


def _check_ca(cert: x509.Certificate, index: int, now: datetime) -> CaCertificate:
    from cryptography import x509

    subject = cert.subject.rfc4514_string() or f"certificate {index}"
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise BundleError(f"certificate {index} ({subject}) is not a CA (basicConstraints CA:TRUE missing)")
    if cert.not_valid_after_utc <= now:
        raise BundleError(f"certificate {index} ({subject}) expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    if cert.not_valid_before_utc > now:
        raise BundleError(f"certificate {index} ({subject}) is not valid before {cert.not_valid_before_utc:%Y-%m-%d}")
    der = cert.public_bytes(_encoding().DER)
    return CaCertificate(subject=subject, not_after=cert.not_valid_after_utc, sha256=hashlib.sha256(der).hexdigest())
