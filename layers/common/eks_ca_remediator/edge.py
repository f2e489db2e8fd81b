"""Parsing at the edge: raw Lambda events into models, with errors a person can read."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from eks_ca_remediator.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)
MAX_EVENT_CHARS = 256 * 1024


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
