"""Parsing at the edge: raw Lambda events into models, with errors a person can read."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ValidationError

from eks_ca_remediator.errors import InvalidRequest
from eks_ca_remediator.settings import get_settings

M = TypeVar("M", bound=BaseModel)
MAX_EVENT_CHARS = 256 * 1024
# arn:<partition>:<service>:<region>:<account>:... (Lambda function, SQS queue)
ARN_RE = re.compile(r"^arn:aws[a-z-]*:[a-z0-9-]+:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):")

logger = Logger(child=True)


@dataclass(frozen=True)
class Origin:
    account: str
    region: str

    def __str__(self) -> str:  # bounded: the values may be hostile
        return f"account {self.account[:24]!r} region {self.region[:24]!r}"


def deployment_of(context: Any) -> Origin:
    """This function's own account and region, from the ARN it was invoked by."""
    match = ARN_RE.match(str(getattr(context, "invoked_function_arn", "")))
    if match is None:
        raise InvalidRequest("cannot tell this deployment's account and region: no invoked function ARN")
    return Origin(match["account"], match["region"])


def _field(event: dict[str, Any], key: str) -> str | None:
    value = event.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"event {key}: expected a string, got {type(value).__name__}")
    return value


def origins_of(event: Any) -> list[tuple[str, Origin | None, str | None]]:
    """Where an event says it comes from: (what, origin or None, bare region or None) per part.

    EventBridge events and a manual invoke that names them carry `account` and `region`; SQS
    records carry their queue's ARN and `awsRegion`. CloudWatch Logs can deliver to a Lambda of
    its own account only, so a subscription payload names nothing to check here.
    """
    if not isinstance(event, dict):
        return []
    found: list[tuple[str, Origin | None, str | None]] = []
    account, region = _field(event, "account"), _field(event, "region")
    if account is not None:
        found.append(("event", Origin(account, region or ""), None))
    elif region is not None:
        found.append(("event", None, region))
    records = event.get("Records")
    if isinstance(records, list):
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                raise InvalidRequest(f"Records.{index}: expected a JSON object, got {type(record).__name__}")
            arn = _field(record, "eventSourceARN")
            if arn is not None:
                match = ARN_RE.match(arn)
                if match is None:
                    raise InvalidRequest(f"Records.{index}.eventSourceARN: not an ARN")
                found.append((f"Records.{index}", Origin(match["account"], match["region"]), None))
            aws_region = _field(record, "awsRegion")
            if aws_region is not None:
                found.append((f"Records.{index}", None, aws_region))
    return found


def require_own_origin(event: Any, context: Any, members: bool = False) -> None:
    """Refuse an event from another account or region than this deployment's. With `members`
    (central mode), an event of another account in this region is accepted: the central bus takes
    only the organisation's accounts, and acting there needs their member role. SQS records must
    still come from this deployment's own queues."""
    own = deployment_of(context)
    for what, origin, region in origins_of(event):
        if members and what == "event" and origin is not None and origin.region == own.region:
            continue
        if origin is not None and origin != own:
            logger.error("refused an event from another account or region", what=what, own=str(own))
            raise InvalidRequest(f"{what}: comes from {origin}, not this deployment's {own}: refused")
        if region is not None and region != own.region:
            logger.error("refused an event from another region", what=what, own=str(own))
            raise InvalidRequest(f"{what}: comes from region {region[:24]!r}, not this deployment's {own}: refused")


def own_origin[H: Callable[..., Any]](handler: H) -> H:
    """Handler decorator: events from another account or region are refused before parsing."""

    @functools.wraps(handler)
    def wrapper(event: Any, context: Any) -> Any:
        require_own_origin(event, context, members=get_settings().central)
        return handler(event, context)

    return wrapper  # type: ignore[return-value]


def describe(exc: ValidationError, limit: int = 5) -> str:
    """One line per problem: where, and what is wrong (never the offending value itself)."""
    problems = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "event"
        problems.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - limit
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def parse[M: BaseModel](model: type[M], event: Any, what: str) -> M:
    if not isinstance(event, dict):
        raise InvalidRequest(f"{what}: expected a JSON object, got {type(event).__name__}")
    try:
        return model.model_validate(event)
    except ValidationError as exc:
        raise InvalidRequest(f"{what}: {describe(exc)}") from exc
