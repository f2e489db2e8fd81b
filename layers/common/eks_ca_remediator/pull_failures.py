"""Image-pull failures in node logs: decode, attribute to a node, classify. Pure: no I/O, no clock.

A CloudWatch Logs subscription delivers one log stream's events per payload. Each event is either
a plain line (kubelet/containerd journald text) or a JSON record written by a shipper:

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

import functools
import json
import operator
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
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

_INSTANCE_IN_TEXT = re.compile(r"(?<!\w)(i-[0-9a-f]{17}|i-[0-9a-f]{8})(?![\w-])")
_PRIVATE_DNS = re.compile(
    r"(?<![\w.])(ip-\d{1,3}-\d{1,3}-\d{1,3}-\d{1,3}\.(?:ec2\.internal|[a-z]{2}(?:-[a-z]+)+-\d\.compute\.internal))"
)
# The image a line is about: kubelet `Failed to pull image "..."`, containerd `PullImage "..."` and
# `failed to pull and unpack image "..."`, klog `image="..."`. Quotes may be escaped once or twice.
_IMAGE = re.compile(
    r"(?:PullImage|[Ff]ailed to pull image|pull and unpack image|failed to resolve reference|image=)"
    r'\s*\\*"([^"\\\s]+)'
)
# The request that failed, as Go's url.Error prints it: `Head "https://host/v2/...": ...`.
_REQUEST_HOST = re.compile(r'(?:Head|Get|Post|HEAD|GET|POST)\s+\\*"?https://([^/"\\\s?#]+)')
_ECR = re.compile(r"^\d{12}\.dkr\.ecr(?:-fips)?\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?$")
_S3 = re.compile(r"^(?:[a-z0-9.-]+\.)?s3[.-](?:[a-z0-9-]+\.)*amazonaws\.com(?:\.cn)?$")

# The fields shippers name the node in, and how they appear in a JSON record's raw text (str.find is
# far cheaper than a regex scan).
_INSTANCE_FIELDS = ("ec2_instance_id", "instance_id", "InstanceId", "instanceId")
_HOST_FIELDS = ("hostname", "_HOSTNAME", "host", "NodeName", "nodeName")
_RAW_INSTANCE_KEYS = tuple(f'"{key}":' for key in _INSTANCE_FIELDS)
_RAW_HOST_KEYS = tuple(f'"{key}":' for key in _HOST_FIELDS)
# A field's value: a string of 3-128 of [a-z0-9.-] that is an instance id or a private DNS name, read
# and validated by one match (both forms are made of those characters only - `\d` spelled [0-9] so no
# other digits pass; the caller checks the length).
_RAW_INSTANCE_ID = re.compile(r'\s*"(' + INSTANCE_ID_RE.pattern.removeprefix("^").removesuffix("$") + ')"')
_RAW_HOSTNAME = re.compile(r'\s*"' + _PRIVATE_DNS.pattern.removeprefix(r"(?<![\w.])").replace(r"\d", "[0-9]") + '"')
_RAW_NODE_KEYS = _RAW_INSTANCE_KEYS + _RAW_HOST_KEYS
# A host field and its private DNS name in one search: far cheaper than a find per key.
_RAW_HOST_FIELD = re.compile('"(?:' + "|".join(re.escape(key) for key in _HOST_FIELDS) + ')":' + _RAW_HOSTNAME.pattern)
_UNSEEN: Any = object()
_MESSAGE = operator.itemgetter("message")
_DECODE = "powertools_json(powertools_base64_gzip(data))"  # a subscription payload's awslogs.data
# A line is about an image pull when it holds one of these.
_CONTEXT_MARKERS = (
    "PullImage",
    "Failed to pull",
    "failed to pull",
    "pull and unpack image",
    "ErrImagePull",
    "failed to resolve reference",
    "httpReadSeeker",
)
_WORTH_A_LOOK = ("x509", "pull", "Pull")  # every line classify() can accept holds one of these
# The leftmost marker in one scan (a regex alternation of the literals; cheaper than a find per marker).
_CONTEXT = re.compile("|".join(re.escape(marker) for marker in _CONTEXT_MARKERS))
# Markers that hold none of _WORTH_A_LOOK: a line found by one of these still needs the word check.
_MARKERS_WITHOUT_A_WORD = tuple(m for m in _CONTEXT_MARKERS if not any(w in m for w in _WORTH_A_LOOK))
_ESCAPED = re.compile(r"\\[/u]")  # a JSON record whose shipper escaped `/` or used `\u` escapes
_ESCAPE_OR_CONTEXT = re.compile(_ESCAPED.pattern + "|" + _CONTEXT.pattern)  # the leftmost of either
_FROM_STREAM = "\0log stream"  # parse_lines' result key for a plain line: its node is the log stream's
_TEXT_FIELDS = ("message", "MESSAGE", "log", "msg")

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


# ---------------------------------------------------------------- the subscription payload


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
    try:
        raw = query({"data": data}, _DECODE)
    except InvalidEnvelopeExpressionError:  # Powertools' message quotes the whole payload: not repeated
        raise InvalidRequest("CloudWatch Logs payload: awslogs.data does not decode: not UTF-8 text") from None
    except ValueError as exc:  # base64 (binascii.Error) and JSON errors are ValueErrors
        raise InvalidRequest(f"CloudWatch Logs payload: awslogs.data does not decode: {str(exc)[:200]}") from exc
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError; truncated: EOFError
        raise InvalidRequest(f"CloudWatch Logs payload: awslogs.data is not (complete) gzip: {exc}") from exc
    if not isinstance(raw, dict):
        raise InvalidRequest(f"CloudWatch Logs payload: decoded data is a {type(raw).__name__}, not an object")
    message_type = raw.get("messageType")
    if message_type not in ("DATA_MESSAGE", "CONTROL_MESSAGE"):
        raise InvalidRequest(f"CloudWatch Logs payload: unknown messageType {str(message_type)[:40]!r}")
    events = raw.get("logEvents", [])
    if not isinstance(events, list):
        raise InvalidRequest("CloudWatch Logs payload: logEvents is not a list")
    try:  # the usual payload, read in C: every event an object with a string message
        messages = tuple(map(_MESSAGE, events))
        well_formed = not messages or set(map(type, messages)) == {str}
    except (KeyError, TypeError):
        well_formed = False
    if not well_formed:  # keep the events that have one
        messages = tuple([e["message"] for e in events if isinstance(e, dict) and isinstance(e.get("message"), str)])
    return LogBatch(message_type, str(raw.get("logGroup", "")), str(raw.get("logStream", "")), messages)


# ---------------------------------------------------------------- one log line


class NodeRef(NamedTuple):
    """Who logged a line: an instance id, or a private DNS hostname to resolve. (Named tuples: a flood
    builds one per node and line kind, and a tuple is built several times faster than a frozen dataclass.)"""

    instance_id: str = ""
    hostname: str = ""


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


class PullFailureLine(NamedTuple):
    node: NodeRef | None
    failure: PullFailure


def _json_record(message: str) -> dict[str, Any] | None:
    if not message.startswith("{"):
        return None
    try:
        record = json.loads(message)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _text_of(record: Mapping[str, Any]) -> str:
    for key in _TEXT_FIELDS:
        value = record.get(key)
        if isinstance(value, str):
            return value
    return ""


def node_of(record: Mapping[str, Any] | None, log_stream: str) -> NodeRef | None:
    """The node from the shipper's fields, else from the log stream name."""
    if record is not None:
        for key in _INSTANCE_FIELDS:
            value = record.get(key)
            if isinstance(value, str) and INSTANCE_ID_RE.fullmatch(value):
                return NodeRef(instance_id=value)
        hosts = []  # in the record's order, as the raw-text reading finds them (the leftmost first)
        for key, value in record.items():
            if key in _HOST_FIELDS:
                hosts.append(value)
            elif key == "kubernetes" and isinstance(value, dict):
                hosts.append(value.get("host"))
        for value in hosts:
            if isinstance(value, str):
                if match := _INSTANCE_IN_TEXT.search(value):
                    return NodeRef(instance_id=match.group(1))
                if match := _PRIVATE_DNS.fullmatch(value.lower()):
                    return NodeRef(hostname=match.group(1))
    if match := _INSTANCE_IN_TEXT.search(log_stream):
        return NodeRef(instance_id=match.group(1))
    if match := _PRIVATE_DNS.search(log_stream.lower()):
        return NodeRef(hostname=match.group(1))
    return None


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
    """The pull failure a log line reports, or None when it is not one."""
    start = _context_start(text)
    if start < 0:
        return None
    image_match = _IMAGE.search(text, start)
    image = image_match.group(1) if image_match else ""
    host_match = _REQUEST_HOST.search(text)
    failing_host = host_match.group(1).lower() if host_match else ""
    registry = registry_of(image) if image else failing_host
    if registry and not REGISTRY_HOST_RE.fullmatch(registry):
        registry = ""
    if UNKNOWN_AUTHORITY in text:
        who = registry or failing_host or "the registry"
        return PullFailure("unknown-authority", f"x509 unknown authority from {who}", registry, image, failing_host)
    for marker, kind, why in _NOT_REMEDIABLE:
        if marker in text:
            return PullFailure(kind, why, registry, image, failing_host)
    if (at := text.find("x509: ")) >= 0:
        detail = text[at : at + 160].split('"', 1)[0].rstrip("\\")
        return PullFailure("tls-other", f"TLS failure a CA cannot fix: {detail}", registry, image, failing_host)
    return None


def _parse_decoded(message: str, log_stream: str) -> PullFailureLine | None:
    """The thorough way: decode a JSON record, classify its text field."""
    record = _json_record(message)
    failure = classify(_text_of(record) if record is not None else message)
    if failure is None:
        return None
    return PullFailureLine(node_of(record, log_stream), failure)


def _raw_field(record_text: str, key: str, at: int, value: re.Pattern[str]) -> str:
    """The value of `key` found at `at` in a JSON record's raw text when it is a `value`; else ""."""
    if at <= 0 or record_text[at - 1] == "\\":  # absent, or inside an escaped string
        return ""
    match = value.match(record_text, at + len(key))
    return match.group(1) if match and len(match.group(1)) <= 128 else ""


def _raw_host(record_text: str, start: int = 0, end: int | None = None) -> str:
    """The leftmost host field in record_text[start:end] whose value is a private DNS name of at most
    128 characters (and not inside an escaped string), or ""."""
    end = len(record_text) if end is None else end
    while (match := _RAW_HOST_FIELD.search(record_text, start, end)) is not None:
        if record_text[match.start() - 1] != "\\" and len(match.group(1)) <= 128:
            return match.group(1)
        start = match.start() + 1
    return ""


class _Seen:
    """What parse_lines learns once about the text of a line from its pull context on (its key)."""

    __slots__ = ("escaped", "failure", "host", "instance_keys", "lines", "needs_word", "plain_failure")

    def __init__(self, text: str) -> None:
        self.failure: PullFailure | None | object = _UNSEEN  # classify() of the first line reaching it
        # the failure once classified, when no line with this text needs a closer look (no word check,
        # no escapes): the one test on the common path
        self.plain_failure: PullFailure | None = None
        self.lines: dict[str, PullFailureLine] = {}  # the result per node value (or _FROM_STREAM)
        self.needs_word = text.startswith(_MARKERS_WITHOUT_A_WORD)  # its marker holds none of _WORTH_A_LOOK
        # For JSON records (an escape, a key or its value cannot straddle the start of the context,
        # where the text begins with a marker: tests/unit/test_pull_failures_scan.py checks this):
        self.escaped = _ESCAPED.search(text) is not None  # holds `\/` or `\u`
        self.instance_keys = tuple((key, text.find(key)) for key in _RAW_INSTANCE_KEYS)  # first occurrence or -1
        self.host = _raw_host(text) if '":' in text else ""  # the leftmost host field's DNS name, or ""


def _raw_instance_split(message: str, start: int, seen: _Seen) -> str:
    """The first instance-id key (in list order) holding an instance id in a JSON record, scanning only
    the part before `start` (`seen` says what the rest holds); "" when none."""
    for key, rest_at in seen.instance_keys:
        if (at := message.find(key, 0, start)) < 0:
            if rest_at < 0:
                continue
            at = start + rest_at
        if value := _raw_field(message, key, at, _RAW_INSTANCE_ID):
            return value
    return ""


def _raw_node(record_text: str) -> NodeRef | None:
    """The node named by a shipper field of a JSON record, read without decoding it: the first
    instance-id key (in list order) holding an instance id, else the leftmost host field holding a
    private DNS name. (parse_lines reads the same with the record split at its pull context.)"""
    if value := _raw_instance_split(record_text, len(record_text), _Seen("")):
        return NodeRef(instance_id=value)
    if value := _raw_host(record_text):
        return NodeRef(hostname=value)
    return None


def _context_start(text: str) -> int:
    match = _CONTEXT.search(text)
    return match.start() if match else -1


def _worth_a_look(message: str) -> bool:
    return "x509" in message or "pull" in message or "Pull" in message


def parse_lines(messages: Sequence[str], log_stream: str) -> list[PullFailureLine]:
    """The pull failures among one payload's events (one log stream), in order.

    A flood repeats one failure in lines that differ only before it (timestamps, pids, the node),
    so the work is shared within the payload, never across payloads: a line seen before in this
    payload gets the same (immutable) result; a classification - and, for JSON records, what the
    text from the pull context on holds - is kept under that text; node references and results are
    built once per (node, classification). JSON records are classified on their raw text - the
    markers and `\\*"`-tolerant patterns read the same escaped - unless the shipper escaped `/` or
    used `\\u` escapes, which are decoded first. A JSON record's node is read from its raw text too
    (_raw_node), the part before the pull context searched once per line.
    """
    # every distinct line once (dict.fromkeys: one pass in C), then each line's result by lookup
    by_message: dict[str, PullFailureLine | None] = dict.fromkeys(messages)
    by_key: dict[str, _Seen] = {}
    nodes: dict[str, NodeRef] = {}
    stream_node: NodeRef | None | object = _UNSEEN
    context = _CONTEXT.search
    scan = _ESCAPE_OR_CONTEXT.search
    host_field = _RAW_HOST_FIELD.search
    # tuple.__new__ builds a named tuple in C, without the Python-level __new__ of its class
    new_node = functools.partial(tuple.__new__, NodeRef)
    new_line = functools.partial(tuple.__new__, PullFailureLine)
    found_any = False
    for message in by_message:
        # One scan finds the pull context and, for a JSON record, whether escapes come before it.
        if (match := scan(message)) is None:
            continue
        start = match.start()
        is_json = message[0] == "{"
        if message[start] == "\\":
            if is_json:
                if _worth_a_look(message) and (line := _parse_decoded(message, log_stream)) is not None:
                    by_message[message] = line
                    found_any = True
                continue
            if (match := context(message)) is None:  # a plain line: escapes are just text
                continue
            start = match.start()
        key = message[start:]
        if (seen := by_key.get(key)) is None:
            seen = by_key[key] = _Seen(key)
        if (failure := seen.plain_failure) is None:  # not the common case: look closer
            if seen.needs_word and not _worth_a_look(message):
                continue
            if is_json and seen.escaped:
                if (line := _parse_decoded(message, log_stream)) is not None:
                    by_message[message] = line
                    found_any = True
                continue
            if (failure := seen.failure) is _UNSEEN:
                failure = seen.failure = classify(message)
                if failure is not None and not seen.needs_word and not seen.escaped:
                    seen.plain_failure = failure
            if failure is None:
                continue
        found_any = True
        if not is_json:
            value = _FROM_STREAM
        else:
            # every instance-id key holds "nstance"; without one, the common case: one search of the
            # part before the pull context for a host field
            if "nstance" in message and (value := _raw_instance_split(message, start, seen)):
                if value not in nodes:
                    nodes[value] = new_node((value, ""))
            elif (found := host_field(message, 0, start)) is None:
                value = seen.host
            elif message[found.start() - 1] == "\\" or len(value := found.group(1)) > 128:
                value = _raw_host(message, found.start() + 1, start) or seen.host
            if not value:
                by_message[message] = PullFailureLine(node_of(_json_record(message), log_stream), failure)
                continue
        if (line := seen.lines.get(value)) is None:
            if value is _FROM_STREAM:
                if stream_node is _UNSEEN:
                    stream_node = node_of(None, log_stream)
                node = stream_node
            elif (node := nodes.get(value)) is None:
                node = nodes[value] = new_node(("", value))
            line = seen.lines[value] = new_line((node, failure))
        by_message[message] = line
    if not found_any:
        return []
    lines = list(map(by_message.__getitem__, messages))  # in C; the lines that are not failures out after
    return lines if None not in lines else [line for line in lines if line is not None]


def parse_line(message: str, log_stream: str) -> PullFailureLine | None:
    """Classify one log event; None for anything that is not an image-pull failure."""
    found = parse_lines((message,), log_stream)
    return found[0] if found else None


# ---------------------------------------------------------------- per node


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
