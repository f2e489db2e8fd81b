"""Image-pull failures in node logs. Pure: no I/O, no clock. A pipeline, read top to bottom:

1. decode_subscription: the CloudWatch Logs payload, decoded with Powertools, into one log stream's events;
2. text_of: each event's text - a shipper's JSON record's text field, or the plain line;
3. classify: the pull failure that text reports, or None (parse_lines asks once per distinct text);
4. node_of: the node that logged it - the record's node fields, else the log stream name;
5. NodeFailures: what one node's failures add up to (logic/pull_failure.py, once nodes are instances).

The events a payload holds are plain lines (kubelet/containerd journald text) or JSON records from a
shipper:

- Container Insights dataplane (Fluent Bit `systemd` input + `aws` filter):
  `{"hostname": "ip-10-0-1-23.ec2.internal", "systemd_unit": "kubelet.service", "message": "...",
  "ec2_instance_id": "i-...", "az": "..."}` in stream `ip-10-0-1-23.ec2.internal-dataplane.systemd.kubelet.service`;
- Fluent Bit journald records as read: `{"_HOSTNAME": ..., "_SYSTEMD_UNIT": ..., "MESSAGE": ...}`;
- tail-based records: `{"log": "...", "kubernetes": {"host": ...}}` or `{"host": ..., "log": ...}`.

The node is the EC2 instance id when the record or stream name carries one, else its private DNS
hostname (`ip-10-0-1-23.ec2.internal`, `ip-10-0-1-23.us-west-2.compute.internal`), resolved to an
instance id later with batched EC2 lookups.

Only `x509: certificate signed by unknown authority` (both Go wordings; the newer one, `tls: failed
to verify certificate: x509: ...`, contains the older) in a pull context is remediable by
installing our CA. Other pull failures are NOT_REMEDIABLE with a reason; lines that are not pull
failures at all (webhooks, metrics scrapes, successful pulls, back-off notices) are ignored.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aws_lambda_powertools.exceptions import InvalidEnvelopeExpressionError
from aws_lambda_powertools.utilities.jmespath_utils import query

from eks_ca_remediator.errors import InvalidRequest
from eks_ca_remediator.models import INSTANCE_ID_RE, REGISTRY_HOST_RE, Strategy

UNKNOWN_AUTHORITY = "x509: certificate signed by unknown authority"
# Both Go wordings contain this phrase, so one quoted term matches them; the other terms let the
# failures our CA cannot fix reach us too, to be recorded NOT_REMEDIABLE with their reason.
FILTER_TERMS = (UNKNOWN_AUTHORITY, "x509: certificate has expired", "x509: certificate is valid for")
FILTER_PATTERN = " ".join(f'?"{term}"' for term in FILTER_TERMS)
MAX_REGISTRY_HOSTS = 20  # the document's RegistryHosts pattern allows 20 entries

_DECODE = "powertools_json(powertools_base64_gzip(data))"  # a subscription payload's awslogs.data
_TEXT_FIELDS = ("message", "MESSAGE", "log", "msg")  # a JSON record's text: the first that is a string
_INSTANCE_FIELDS = ("ec2_instance_id", "instance_id", "InstanceId", "instanceId")
_HOST_FIELDS = ("hostname", "_HOSTNAME", "host", "NodeName", "nodeName")  # and a tail record's kubernetes.host
_MAX_HOSTNAME = 128  # longer than any EC2 private DNS name

_INSTANCE_IN_TEXT = re.compile(r"(?<!\w)(i-[0-9a-f]{17}|i-[0-9a-f]{8})(?![\w-])", re.ASCII)
_PRIVATE_DNS = re.compile(
    r"(?<![\w.])(ip-\d{1,3}-\d{1,3}-\d{1,3}-\d{1,3}\.(?:ec2\.internal|[a-z]{2}(?:-[a-z]+)+-\d\.compute\.internal))",
    re.ASCII,
)
# A line is about an image pull when it holds one of these. `failed pulling image` is the older
# kubelet's sandbox (pause) image pull through dockershim: ensureSandboxImageExists in
# pkg/kubelet/dockershim/helpers.go (kubernetes/kubernetes before 1.24) returns
# `failed pulling image %q: %v`, as in kubernetes/kubernetes#72684: `Failed create pod sandbox: rpc
# error: code = Unknown desc = failed pulling image "k8s.gcr.io/pause-amd64:3.1": Error response from
# daemon: Get https://k8s.gcr.io/v2/: x509: certificate signed by unknown authority`.
_CONTEXT = re.compile(
    "PullImage|Failed to pull|failed to pull|failed pulling image|pull and unpack image|ErrImagePull"
    "|failed to resolve reference|httpReadSeeker"
)
# The image a line is about: kubelet `Failed to pull image "..."`, containerd `PullImage "..."` and
# `failed to pull and unpack image "..."`, klog `image="..."`. Quotes may be escaped once or twice.
_IMAGE = re.compile(
    r"(?:PullImage|[Ff]ailed to pull image|failed pulling image|pull and unpack image|failed to resolve reference"
    r'|image=)\s*\\*"([^"\\\s]+)'
)
# The request that failed, as Go's url.Error prints it: `Head "https://host/v2/...": ...` (older Go
# and the Docker daemon: unquoted).
_REQUEST_HOST = re.compile(r'(?:Head|Get|Post|HEAD|GET|POST)\s+\\*"?https://([^/"\\\s?#]+)')
_ECR = re.compile(r"^\d{12}\.dkr\.ecr(?:-fips)?\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?$")
_S3 = re.compile(r"^(?:[a-z0-9.-]+\.)?s3[.-](?:[a-z0-9-]+\.)*amazonaws\.com(?:\.cn)?$")

# Ordered: the first marker a line holds decides. (marker, kind, why a CA cannot fix it)
_NOT_REMEDIABLE = (
    (
        "x509: certificate has expired or is not yet valid",
        "certificate-expired",
        "the registry certificate has expired or is not yet valid",
    ),
    ("x509: certificate is valid for", "hostname-mismatch", "the registry certificate does not name this host"),
    ("doesn't contain any IP SANs", "hostname-mismatch", "the registry certificate does not name this IP address"),
    (
        "x509: certificate relies on legacy Common Name field",
        "hostname-mismatch",
        "the registry certificate has no subjectAltName (legacy Common Name only)",
    ),
    ("401 Unauthorized", "unauthorized", "the registry refused the credentials (401)"),
    ("no basic auth credentials", "unauthorized", "no registry credentials (401)"),
    ("unauthorized:", "unauthorized", "the registry refused the credentials (401)"),
    ("403 Forbidden", "forbidden", "the registry denied access (403)"),
    ("denied:", "forbidden", "the registry denied access (403)"),
    ("manifest unknown", "manifest-unknown", "the image or tag does not exist in the registry"),
    (": not found", "manifest-unknown", "the image or tag does not exist in the registry"),
    ("i/o timeout", "timeout", "the registry did not answer in time"),
    ("TLS handshake timeout", "timeout", "the registry did not answer in time"),
    ("context deadline exceeded", "timeout", "the registry did not answer in time"),
    ("connection timed out", "timeout", "the registry did not answer in time"),
)


# ---------------------------------------------------------------- 1. the subscription payload


@dataclass(frozen=True)
class LogBatch:
    """One decoded subscription payload: a single log stream's events."""

    message_type: str
    log_group: str
    log_stream: str
    messages: tuple[str, ...]


def decode_subscription(event: Any) -> LogBatch:
    """Decode `{"awslogs": {"data": base64(gzip(json))}}` with Powertools; InvalidRequest says what is wrong.

    Powertools' JMESPath functions do the decoding (powertools_base64_gzip, powertools_json): Logger
    has them loaded already, where its `CloudWatchLogsEvent` would load every event data class with
    it (about 20 ms more of every cold start)."""
    if not isinstance(event, dict) or not isinstance(event.get("awslogs"), dict):
        raise InvalidRequest("CloudWatch Logs payload: expected {'awslogs': {'data': ...}}")
    data = event["awslogs"].get("data")
    if not isinstance(data, str) or not data:
        raise InvalidRequest("CloudWatch Logs payload: awslogs.data must be a non-empty base64 string")
    raw = _decoded(data)
    if not isinstance(raw, dict):
        raise InvalidRequest(f"CloudWatch Logs payload: decoded data is a {type(raw).__name__}, not an object")
    message_type = raw.get("messageType")
    if message_type not in ("DATA_MESSAGE", "CONTROL_MESSAGE"):
        raise InvalidRequest(f"CloudWatch Logs payload: unknown messageType {str(message_type)[:40]!r}")
    messages = _messages(raw.get("logEvents", []))
    return LogBatch(message_type, str(raw.get("logGroup", "")), str(raw.get("logStream", "")), messages)


def _decoded(data: str) -> Any:
    try:
        return query({"data": data}, _DECODE)
    except InvalidEnvelopeExpressionError:  # Powertools' message quotes the whole payload: not repeated
        raise InvalidRequest("CloudWatch Logs payload: awslogs.data does not decode: not UTF-8 text") from None
    except ValueError as exc:  # base64 (binascii.Error) and JSON errors are ValueErrors
        raise InvalidRequest(f"CloudWatch Logs payload: awslogs.data does not decode: {str(exc)[:200]}") from exc
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError; truncated: EOFError
        raise InvalidRequest(f"CloudWatch Logs payload: awslogs.data is not (complete) gzip: {exc}") from exc


def _messages(events: Any) -> tuple[str, ...]:
    """The events' messages; an event without a string message is left out."""
    if not isinstance(events, list):
        raise InvalidRequest("CloudWatch Logs payload: logEvents is not a list")
    return tuple(e["message"] for e in events if isinstance(e, dict) and isinstance(e.get("message"), str))


# ---------------------------------------------------------------- 2. an event's text


def json_record(message: str) -> dict[str, Any] | None:
    """The shipper's JSON record an event is, or None for a plain line."""
    if not message.startswith("{"):
        return None
    try:
        record = json.loads(message)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def text_of(record: Mapping[str, Any] | None, message: str) -> str:
    """A JSON record's text field ("" when it has none), or the plain line itself."""
    if record is None:
        return message
    for key in _TEXT_FIELDS:
        if isinstance(value := record.get(key), str):
            return value
    return ""


# ---------------------------------------------------------------- 3. classify


@dataclass(frozen=True)
class PullFailure:
    kind: str  # unknown-authority | certificate-expired | hostname-mismatch | unauthorized | ...
    reason: str
    registry: str  # registry host[:port] of the image, "" when the line names none
    image: str
    failing_host: str  # host of the request that failed ("" when the line does not say)

    @property
    def remediable(self) -> bool:
        return self.kind == "unknown-authority"


def registry_of(image: str) -> str:
    """The registry host[:port] of an image reference (Docker's rule: a first component with a
    dot or port, or `localhost`, is a registry; anything else is on docker.io)."""
    first, slash, _ = image.partition("/")
    if not slash:
        return "docker.io"
    if "." in first or ":" in first or first == "localhost":
        return first.lower()
    return "docker.io"


def classify(text: str) -> PullFailure | None:
    """The pull failure a log line's text reports, or None when it is not one."""
    context = _CONTEXT.search(text)
    if context is None:
        return None
    image, registry, failing_host = _pulled(text, context.start())
    if UNKNOWN_AUTHORITY in text:
        who = registry or failing_host or "the registry"
        return PullFailure("unknown-authority", f"x509 unknown authority from {who}", registry, image, failing_host)
    not_remediable = _not_remediable(text)
    if not_remediable is None:
        return None
    kind, why = not_remediable
    return PullFailure(kind, why, registry, image, failing_host)


def _pulled(text: str, context_start: int) -> tuple[str, str, str]:
    """(image, registry, failing request host) a pull failure names; "" for what it does not."""
    image_match = _IMAGE.search(text, context_start)
    image = image_match.group(1) if image_match else ""
    host_match = _REQUEST_HOST.search(text)
    failing_host = host_match.group(1).lower() if host_match else ""
    registry = registry_of(image) if image else failing_host
    if not REGISTRY_HOST_RE.fullmatch(registry):
        registry = ""
    return image, registry, failing_host


def _not_remediable(text: str) -> tuple[str, str] | None:
    """(kind, why a CA cannot fix it) of a pull failure that is not an unknown authority, or None."""
    for marker, kind, why in _NOT_REMEDIABLE:
        if marker in text:
            return kind, why
    if (at := text.find("x509: ")) >= 0:
        detail = text[at : at + 160].split('"', 1)[0].rstrip("\\")
        return "tls-other", f"TLS failure a CA cannot fix: {detail}"
    return None


# ---------------------------------------------------------------- 4. the node


class NodeRef(NamedTuple):
    """Who logged a line: an instance id, or a private DNS hostname to resolve."""

    instance_id: str = ""
    hostname: str = ""


def node_of(record: Mapping[str, Any] | None, log_stream: str) -> NodeRef | None:
    """The node from the shipper's fields, else from the log stream name."""
    return (_record_node(record) if record is not None else None) or _stream_node(log_stream)


def _record_node(record: Mapping[str, Any]) -> NodeRef | None:
    """The first instance-id field holding an instance id, else the leftmost host field naming a node."""
    for key in _INSTANCE_FIELDS:
        value = record.get(key)
        if isinstance(value, str) and INSTANCE_ID_RE.fullmatch(value):
            return NodeRef(instance_id=value)
    for value in _host_values(record):
        if node := _host_node(value):
            return node
    return None


def _host_values(record: Mapping[str, Any]) -> Iterator[object]:
    """The record's host fields, in its order (a tail record's kubernetes.host among them)."""
    for key, value in record.items():
        if key in _HOST_FIELDS:
            yield value
        elif key == "kubernetes" and isinstance(value, dict):
            yield value.get("host")


def _host_node(value: object) -> NodeRef | None:
    """The node a host field names: an instance id in it (resource-name hostnames), or a private DNS name."""
    if not isinstance(value, str) or len(value) > _MAX_HOSTNAME:
        return None
    if match := _INSTANCE_IN_TEXT.search(value):
        return NodeRef(instance_id=match.group(1))
    if match := _PRIVATE_DNS.fullmatch(value.lower()):
        return NodeRef(hostname=match.group(1))
    return None


def _stream_node(log_stream: str) -> NodeRef | None:
    if match := _INSTANCE_IN_TEXT.search(log_stream):
        return NodeRef(instance_id=match.group(1))
    if match := _PRIVATE_DNS.search(log_stream.lower()):
        return NodeRef(hostname=match.group(1))
    return None


# ---------------------------------------------------------------- 2-4 per event


class PullFailureLine(NamedTuple):
    node: NodeRef | None
    failure: PullFailure


def parse_lines(messages: Sequence[str], log_stream: str) -> list[PullFailureLine]:
    """The pull failures among one payload's events (one log stream), in order. A flood repeats one
    text across lines and nodes, so each distinct text is classified once per payload."""
    classified: dict[str, PullFailure | None] = {}
    lines = []
    for message in messages:
        record = json_record(message)
        text = text_of(record, message)
        if text not in classified:
            classified[text] = classify(text)
        if (failure := classified[text]) is not None:
            lines.append(PullFailureLine(node_of(record, log_stream), failure))
    return lines


def parse_line(message: str, log_stream: str) -> PullFailureLine | None:
    """Classify one log event; None for anything that is not an image-pull failure."""
    found = parse_lines((message,), log_stream)
    return found[0] if found else None


# ---------------------------------------------------------------- 5. per node


def is_ecr(host: str) -> bool:
    """A private ECR registry, or the S3 host its layer downloads are redirected to."""
    host = host.split(":", 1)[0]
    return bool(_ECR.fullmatch(host) or _S3.fullmatch(host))


@dataclass
class NodeFailures:
    """What one node's lines in this payload say."""

    remediable: bool = False
    remediable_hosts: set[str] = field(default_factory=set)
    images: set[str] = field(default_factory=set)
    not_remediable: dict[tuple[str, str], PullFailure] = field(default_factory=dict)

    def add(self, failure: PullFailure) -> None:
        if not failure.remediable:
            self.not_remediable.setdefault((failure.kind, failure.registry), failure)
            return
        self.remediable = True
        if failure.image:
            self.images.add(failure.image)
        for host in (failure.registry, failure.failing_host):
            # the redirected S3 layer host is worth verifying; another registry's token host is not ours
            if host and (host == failure.registry or is_ecr(host)):
                self.remediable_hosts.add(host)


def registry_hosts(failures: NodeFailures) -> tuple[str, ...]:
    return tuple(sorted(failures.remediable_hosts))[:MAX_REGISTRY_HOSTS]


def strategy_for(default: Strategy, hosts: Iterable[str]) -> tuple[Strategy, str]:
    """The strategy for a node whose pulls from `hosts` fail with x509 unknown authority, and why.

    ECR behind a TLS-intercepting proxy: the proxy re-signs ECR and the S3 host its layer downloads
    are redirected to; a per-registry hosts.toml cannot cover the redirected host, so only the
    system trust store (+ a containerd restart when it predates the bundle) fixes it.
    """
    hosts = list(hosts)
    shown = ", ".join(hosts) or "an unnamed registry"
    why = f"pull failure: x509 unknown authority from {shown}"
    if not any(is_ecr(h) for h in hosts):
        return default, why
    strategy = Strategy.AUTO if default is Strategy.HOSTS_TOML else default
    return strategy, (
        f"{why}; ECR through a TLS-intercepting proxy: its layer downloads are redirected to S3, which a "
        f"per-registry hosts.toml cannot cover, so strategy {strategy.value} (system trust store + containerd "
        "restart when it predates the bundle)"
    )


def window_start(now: float, cooldown_seconds: int) -> float:
    """Start of the cooldown window `now` falls in (windows are aligned to the epoch)."""
    return float(int(now // cooldown_seconds) * cooldown_seconds)


def remediation_key(fingerprint: str) -> str:
    """Attempt key of a node's pull-failure remediation: with the window start in the attempt's sort
    key, one attempt per (node, window, CA bundle) - a conditional put turns the flood into no-ops."""
    return f"ca-{fingerprint[:16]}"


def not_remediable_key(failure: PullFailure) -> str:
    return f"nr-{failure.kind}-{failure.registry or 'unknown'}"
