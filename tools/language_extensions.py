"""Expand `Fn::ForEach` (the AWS::LanguageExtensions transform) offline, as CloudFormation does
before any other transform, for the parameter values given.

Only what our templates use: loops in Resources over a list or a Ref to a CommaDelimitedList
parameter, `${Identifier}` replaced in keys and strings, `&{Identifier}` (logical ids) replaced
by the value without its non-alphanumeric characters. Semantics:
https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/intrinsic-function-reference-foreach.html
"""

from __future__ import annotations

import re
from typing import Any

FOR_EACH = "Fn::ForEach::"


def _collection(value: Any, parameters: dict[str, Any]) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    ref = value.get("Ref") if isinstance(value, dict) else None
    if ref is None or ref not in parameters:
        raise ValueError(f"Fn::ForEach collection must be a list or a Ref to a given parameter, not {value!r}")
    found = parameters[ref]
    return [v.strip() for v in found.split(",")] if isinstance(found, str) else list(found)


def _replace(fragment: Any, identifier: str, value: str) -> Any:
    if isinstance(fragment, str):
        alnum = re.sub(r"[^A-Za-z0-9]", "", value)
        return fragment.replace(f"${{{identifier}}}", value).replace(f"&{{{identifier}}}", alnum)
    if isinstance(fragment, list):
        return [_replace(item, identifier, value) for item in fragment]
    if isinstance(fragment, dict):
        return {_replace(k, identifier, value): _replace(v, identifier, value) for k, v in fragment.items()}
    return fragment


def expand(section: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """The section (e.g. Resources) with every Fn::ForEach loop replaced by what it writes."""
    out: dict[str, Any] = {}
    for key, value in section.items():
        if not key.startswith(FOR_EACH):
            out[key] = value
            continue
        identifier, collection, fragment = value
        for item in _collection(collection, parameters):
            for written_key, written in _replace(fragment, identifier, item).items():
                if written_key in out:
                    raise ValueError(f"Fn::ForEach {key} writes {written_key} twice")
                out[written_key] = written
    return out


def expand_template(template: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    """The template as CloudFormation hands it to the next transform: loops expanded, the
    AWS::LanguageExtensions transform removed."""
    expanded = dict(template)
    expanded["Resources"] = expand(template["Resources"], parameters)
    transform = template.get("Transform")
    rest = [
        t for t in (transform if isinstance(transform, list) else [transform]) if t and t != "AWS::LanguageExtensions"
    ]
    if rest:
        expanded["Transform"] = rest[0] if len(rest) == 1 else rest
    else:
        expanded.pop("Transform", None)
    return expanded
