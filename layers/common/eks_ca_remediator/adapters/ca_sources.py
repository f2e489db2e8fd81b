"""Read CA bundle PEM text from its sources: SSM, S3, Secrets Manager, ACM Private CA, inline.

Each source's text is cached per warm Lambda for `max_age` seconds (BUNDLE_CACHE_SECONDS), keyed
by source URI, on the caller's clock. Every failure is a BundleError raised from the ClientError.
"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import ClientError

from eks_ca_remediator.adapters import clients
from eks_ca_remediator.errors import BundleError
from eks_ca_remediator.sources import BundleSource, SourceKind

# A PEM bundle the SSM document can carry is far smaller; refuse to download more than this.
MAX_SOURCE_BYTES = 256 * 1024


@dataclass(frozen=True)
class _Cached:
    fetched_at: float
    text: str


_cache: dict[str, _Cached] = {}


def clear_cache() -> None:
    """Forget every cached source text (tests; a new deployment starts with an empty cache)."""
    _cache.clear()


def read_source(source: BundleSource, *, now: float, max_age: int, inline_pem: str = "") -> str:
    """The PEM text of one source, from the cache when younger than `max_age` seconds."""
    cached = _cache.get(source.uri)
    if cached is not None and 0 <= now - cached.fetched_at < max_age:
        return cached.text
    text = _fetch(source, inline_pem)
    if not text.strip():
        raise BundleError(f"CA bundle source {source.uri} is empty")
    _cache[source.uri] = _Cached(now, text)
    return text


def _fetch(source: BundleSource, inline_pem: str) -> str:
    try:
        match source.kind:
            case SourceKind.INLINE:
                return inline_pem
            case SourceKind.SSM:
                return _ssm(source)
            case SourceKind.S3:
                return _s3(source)
            case SourceKind.SECRETS_MANAGER:
                return _secret(source)
            case SourceKind.ACM_PCA:
                return _private_ca(source)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise BundleError(
            f"cannot read CA bundle source {source.uri}: {error.get('Code')}: {error.get('Message')}"
        ) from exc
    raise BundleError(f"unsupported CA bundle source {source.uri}")  # pragma: no cover - enum is exhaustive


def _ssm(source: BundleSource) -> str:
    # GetParameter takes a name or an ARN; advanced-tier values (up to 8 KB) need nothing else.
    response = clients.client("ssm").get_parameter(Name=source.location, WithDecryption=True)
    return response["Parameter"]["Value"]


def _s3(source: BundleSource) -> str:
    bucket, key = source.bucket_key
    response = clients.client("s3").get_object(Bucket=bucket, Key=key)
    body = response["Body"]
    try:
        if int(response.get("ContentLength", 0)) > MAX_SOURCE_BYTES:
            raise BundleError(f"CA bundle source {source.uri} is over {MAX_SOURCE_BYTES} bytes")
        data = body.read(MAX_SOURCE_BYTES + 1)
    finally:
        body.close()
    return _text(source, data)


def _secret(source: BundleSource) -> str:
    # AWSCURRENT, explicitly: a rotation's AWSPENDING version is not the bundle until it moves
    response = clients.client("secretsmanager").get_secret_value(SecretId=source.location, VersionStage="AWSCURRENT")
    if "SecretString" not in response:
        raise BundleError(f"CA bundle source {source.uri} is a binary secret; store the PEM as a secret string")
    return response["SecretString"]


def _private_ca(source: BundleSource) -> str:
    response = clients.client("acm-pca").get_certificate_authority_certificate(CertificateAuthorityArn=source.location)
    # Certificate is the CA's own; CertificateChain (absent for a root) holds its issuers up to the root.
    return "\n".join(part for part in (response.get("Certificate", ""), response.get("CertificateChain", "")) if part)


def _text(source: BundleSource, data: bytes) -> str:
    if len(data) > MAX_SOURCE_BYTES:
        raise BundleError(f"CA bundle source {source.uri} is over {MAX_SOURCE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(f"CA bundle source {source.uri} is not UTF-8 PEM text") from exc
