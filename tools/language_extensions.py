"""Expand `Fn::ForEach` (the AWS::LanguageExtensions transform) offline, as CloudFormation does
before any other transform, for the parameter values given.

Also a command: `python tools/language_extensions.py member-account.yaml --enrolled-clusters
prod-a,prod-b -o build/member-account.json` writes the template rendered for those clusters,
without the transform, for service-managed StackSets (which accept no macros).

Only what our templates use: loops in Resources over a list or a Ref to a CommaDelimitedList
parameter, `${Identifier}` replaced in keys and strings, `&{Identifier}` (logical ids) replaced
by the value without its non-alphanumeric characters, `Ref` to the identifier by the value. Semantics:
https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/intrinsic-function-reference-foreach.html
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

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
        if fragment == {"Ref": identifier}:
            return value
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
    AWS::LanguageExtensions transform removed. A list parameter not given takes its default (an
    empty default is one empty item, as CloudFormation splits it)."""
    given = dict(parameters)
    for name, spec in template.get("Parameters", {}).items():
        if name not in given and spec.get("Type") == "CommaDelimitedList" and "Default" in spec:
            given[name] = [v.strip() for v in str(spec["Default"]).split(",")]
    expanded = dict(template)
    expanded["Resources"] = expand(template["Resources"], given)
    transform = template.get("Transform")
    rest = [
        t for t in (transform if isinstance(transform, list) else [transform]) if t and t != "AWS::LanguageExtensions"
    ]
    if rest:
        expanded["Transform"] = rest[0] if len(rest) == 1 else rest
    else:
        expanded.pop("Transform", None)
    return expanded


# ---------------------------------------------------------------- rendering a template offline
# Stack sets with service-managed permissions (member-account.yaml's StackSet, auto-deployed to
# an OU) refuse templates that use macros, AWS-hosted transforms included (CreateStackSet,
# Capabilities: https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_CreateStackSet.html).
# This renders such a template for given parameter values into plain CloudFormation JSON.

_SCALAR_LISTS = {"GetAtt"}  # !GetAtt a.b -> {"Fn::GetAtt": ["a", "b"]}


class _CfnYaml(yaml.SafeLoader):
    """YAML with CloudFormation's short forms turned into their long forms."""


def _long_form(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix in _SCALAR_LISTS:
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnYaml.add_multi_constructor("!", _long_form)


def _plain_subs(value: Any) -> Any:
    """An Fn::Sub left without variables by the expansion is its string."""
    if isinstance(value, list):
        return [_plain_subs(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str) and "${" not in value["Fn::Sub"]:
            return value["Fn::Sub"]
        return {k: _plain_subs(v) for k, v in value.items()}
    return value


def render(text: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The template in `text` (YAML), loops expanded for `parameters`, transform removed."""
    return _plain_subs(expand_template(yaml.load(text, Loader=_CfnYaml), parameters))  # noqa: S506 - a SafeLoader


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render a template's Fn::ForEach loops offline.")
    parser.add_argument("template", type=Path)
    parser.add_argument("--enrolled-clusters", required=True, help="comma-separated, as EnrolledClusters")
    parser.add_argument(
        "--pull-failure-log-groups",
        default="",
        help="comma-separated, as member-account.yaml's PullFailureSourceLogGroups (give the StackSet the same value)",
    )
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    clusters = [c.strip() for c in args.enrolled_clusters.split(",") if c.strip()]
    log_groups = [g.strip() for g in args.pull_failure_log_groups.split(",") if g.strip()] or [""]
    parameters = {"EnrolledClusters": clusters, "PullFailureSourceLogGroups": log_groups}
    rendered = render(args.template.read_text(encoding="utf-8"), parameters)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(rendered, indent=1) + "\n", encoding="utf-8")
    print(f"{args.template.name} -> {args.output} ({len(rendered['Resources'])} resources, clusters {clusters})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
