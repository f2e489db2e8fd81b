"""Where each enrolled cluster's CA bundle comes from (pure: parsing and matching, no I/O).

A source is a short URI:

    ssm:/pki/ca-bundle            SSM parameter (String or SecureString, standard or advanced tier);
                                  a name or a parameter ARN after `ssm:`
    s3://bucket/key               S3 object
    secretsmanager:<name-or-arn>  Secrets Manager secret (SecretString)
    acm-pca:<ca-arn>              ACM Private CA certificate and its chain
    inline                        the PEM given in the template parameter CaBundleInline

Configuration (`CA_BUNDLE_SOURCES`) is a JSON object from cluster name to a list of sources;
the key "*" is the default for every enrolled cluster without its own entry. Several sources
of a cluster are merged into one canonical bundle. A cluster's own entry replaces the default.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_KEY = "*"
INLINE = "inline"

_SSM_NAME_RE = re.compile(r"^/?[a-zA-Z0-9_.\-]+(/[a-zA-Z0-9_.\-]+)*$")
_SSM_ARN_RE = re.compile(r"^arn:aws[a-z-]*:ssm:[a-z0-9-]+:\d{12}:parameter/(?P<name>[a-zA-Z0-9_.\-/]+)$")
_S3_RE = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])/(?P<key>.+)$")
_SECRET_ARN_RE = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:(?P<name>[\w/+=.@\-]+)-\w{6}$")
_SECRET_NAME_RE = re.compile(r"^[\w/+=.@\-]{1,512}$")
_PCA_ARN_RE = re.compile(r"^arn:aws[a-z-]*:acm-pca:[a-z0-9-]+:\d{12}:certificate-authority/[0-9a-f-]{36}$")


class SourceKind(StrEnum):
    SSM = "ssm"
    S3 = "s3"
    SECRETS_MANAGER = "secretsmanager"
    ACM_PCA = "acm-pca"
    INLINE = "inline"


@dataclass(frozen=True)
class BundleSource:
    """One place a CA bundle (or part of it) is read from."""

    kind: SourceKind
    location: str  # parameter name or ARN, "bucket/key", secret id, CA ARN; "" for inline

    @property
    def uri(self) -> str:
        match self.kind:
            case SourceKind.INLINE:
                return INLINE
            case SourceKind.S3:
                return f"s3://{self.location}"
            case _:
                return f"{self.kind.value}:{self.location}"

    @property
    def parameter_name(self) -> str:
        """The SSM parameter name with its leading slash, from a name or an ARN."""
        arn = _SSM_ARN_RE.fullmatch(self.location)
        name = arn.group("name") if arn else self.location
        return name if name.startswith("/") else f"/{name}"

    @property
    def bucket_key(self) -> tuple[str, str]:
        bucket, _, key = self.location.partition("/")
        return bucket, key


def parse_source(uri: str) -> BundleSource:
    """One source URI into a BundleSource; ValueError says what is wrong with it."""
    uri = uri.strip()
    if uri == INLINE:
        return BundleSource(SourceKind.INLINE, "")
    if match := _S3_RE.fullmatch(uri):
        return BundleSource(SourceKind.S3, f"{match.group('bucket')}/{match.group('key')}")
    scheme, sep, rest = uri.partition(":")
    if not sep:
        raise ValueError(f"{uri!r}: expected ssm:, s3://, secretsmanager:, acm-pca: or inline")
    if scheme == "ssm" and (_SSM_NAME_RE.fullmatch(rest) or _SSM_ARN_RE.fullmatch(rest)):
        return BundleSource(SourceKind.SSM, rest)
    if scheme == "secretsmanager" and (_SECRET_ARN_RE.fullmatch(rest) or _SECRET_NAME_RE.fullmatch(rest)):
        return BundleSource(SourceKind.SECRETS_MANAGER, rest)
    if scheme == "acm-pca" and _PCA_ARN_RE.fullmatch(rest):
        return BundleSource(SourceKind.ACM_PCA, rest)
    if scheme in ("ssm", "secretsmanager", "acm-pca"):
        raise ValueError(f"{uri!r}: not a valid {scheme} reference")
    raise ValueError(f"{uri!r}: unknown source type {scheme!r} (ssm, s3, secretsmanager, acm-pca, inline)")


def parse_source_map(
    text: str, enrolled: Iterable[str], legacy_parameter: str = "", inline_pem: str = ""
) -> dict[str, tuple[BundleSource, ...]]:
    """`CA_BUNDLE_SOURCES` into the sources of every enrolled cluster.

    `legacy_parameter` (CA_BUNDLE_PARAMETER) is the default when the map has no "*" entry.
    Raises ValueError naming the cluster and source at fault.
    """
    enrolled = tuple(enrolled)
    raw = _source_map_object(text)
    unknown = sorted(set(raw) - set(enrolled) - {DEFAULT_KEY})
    if unknown:
        raise ValueError(f"clusters {unknown} are not enrolled (enrolled: {', '.join(enrolled)})")
    parsed = {key: _entry_sources(key, uris) for key, uris in raw.items()}
    if DEFAULT_KEY not in parsed and legacy_parameter:
        parsed[DEFAULT_KEY] = (parse_source(f"ssm:{legacy_parameter}"),)
    return _per_cluster(parsed, enrolled, inline_pem)


def _source_map_object(text: str) -> dict[str, object]:
    """The map's JSON object; blank text is an empty map."""
    raw: object = {}
    if text.strip():
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc.msg} at char {exc.pos})") from exc
    if not isinstance(raw, dict):
        raise ValueError('expected a JSON object like {"*": ["ssm:/pki/ca-bundle"], "prod-a": ["s3://b/k"]}')
    return raw


def _entry_sources(key: str, uris: object) -> tuple[BundleSource, ...]:
    """One entry's sources (a string or a non-empty list of strings), duplicates dropped, in order."""
    if isinstance(uris, str):
        uris = [uris]
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
        raise ValueError(f"{key}: expected a non-empty list of source strings")
    try:
        return tuple(dict.fromkeys(parse_source(u) for u in uris))
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from exc


def _per_cluster(
    parsed: Mapping[str, tuple[BundleSource, ...]], enrolled: tuple[str, ...], inline_pem: str
) -> dict[str, tuple[BundleSource, ...]]:
    """Each enrolled cluster's own entry, else the default; every cluster must get one, and the
    inline source needs the inline PEM."""
    missing = [c for c in enrolled if c not in parsed and DEFAULT_KEY not in parsed]
    if missing:
        raise ValueError(f"no CA bundle source for clusters {missing}: give them an entry or a '*' default")
    resolved = {cluster: parsed.get(cluster, parsed.get(DEFAULT_KEY, ())) for cluster in enrolled}
    if not inline_pem.strip() and any(s.kind is SourceKind.INLINE for v in resolved.values() for s in v):
        raise ValueError("a cluster uses the 'inline' source but CA_BUNDLE_INLINE is empty")
    return resolved


def normalize_inline_pem(value: str) -> str:
    """The inline bundle as PEM text.

    A template parameter cannot easily hold newlines: accept PEM with literal `\\n` sequences,
    or base64 of the PEM text, as well as plain PEM.
    """
    value = value.strip()
    if not value or "-----BEGIN" in value:
        return value.replace("\\n", "\n")
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("CA_BUNDLE_INLINE is neither PEM text nor base64 of PEM text") from exc
    return decoded.strip()


# ---------------------------------------------------------------- bundle-change events


@dataclass(frozen=True)
class SourceChange:
    """A change to a possible CA bundle source, as a change event names it."""

    kind: SourceKind
    name: str  # parameter name, "bucket/key", or the secret id as the API caller gave it
    arn: str = ""


def _secret_names(location: str) -> set[str]:
    arn = _SECRET_ARN_RE.fullmatch(location)
    return {location, arn.group("name")} if arn else {location}


def source_matches(source: BundleSource, change: SourceChange) -> bool:
    if source.kind is not change.kind:
        return False
    match source.kind:
        case SourceKind.SSM:
            name = change.name if change.name.startswith("/") else f"/{change.name}"
            return source.parameter_name == name or (bool(change.arn) and source.location == change.arn)
        case SourceKind.S3:
            return source.location == change.name
        case SourceKind.SECRETS_MANAGER:
            return bool(_secret_names(source.location) & _secret_names(change.name))
        case _:
            return False


def clusters_using(sources: Mapping[str, tuple[BundleSource, ...]], change: SourceChange) -> list[str]:
    """The enrolled clusters whose bundle reads the changed source."""
    return sorted(c for c, srcs in sources.items() if any(source_matches(s, change) for s in srcs))
