"""Embed the node script into the SSM document in template.yaml, and read it back.

The node script (node/remediate-ca.sh) is the only copy that is edited by hand. This tool writes
it into the `runCommand` of the SSM document between two marker comments; `extract_script`
reads the document back through a YAML parser, so tests and the node lab run exactly what
CloudFormation will deploy.

Usage: python tools/ssm_document.py [--check]
"""

from __future__ import annotations

import argparse
import copy
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
SCRIPT = ROOT / "node" / "remediate-ca.sh"
SCRIPT_NAME = "node/remediate-ca.sh"
BEGIN = f"# BEGIN EMBEDDED {SCRIPT_NAME}"
END = f"# END EMBEDDED {SCRIPT_NAME}"
DOCUMENT_MAX_BYTES = 64 * 1024


class EmbedError(ValueError):
    """The template does not have the marker block, or the script cannot be embedded."""


class _CfnLoader(yaml.SafeLoader):
    """A SafeLoader that accepts CloudFormation short-form tags (!Ref, !Sub, ...)."""


def _any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node, deep=True)}
    return {suffix: loader.construct_mapping(node, deep=True)}


_CfnLoader.add_multi_constructor("!", _any_tag)


def load_template(text: str) -> dict[str, Any]:
    """The template parsed: a fresh copy each call (parsing, the slow part, is cached by text)."""
    return copy.deepcopy(_parsed(text))


@lru_cache(maxsize=8)
def _parsed(text: str) -> dict[str, Any]:
    return yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def document_resource(template: dict[str, Any]) -> dict[str, Any]:
    # (a Fn::ForEach loop's value is a list, not a resource)
    docs = [r for r in template["Resources"].values() if isinstance(r, dict) and r.get("Type") == "AWS::SSM::Document"]
    if len(docs) != 1:
        raise EmbedError(f"expected exactly one AWS::SSM::Document, found {len(docs)}")
    return docs[0]


def document_content(template_text: str) -> dict[str, Any]:
    return document_resource(load_template(template_text))["Properties"]["Content"]


def extract_script(template_text: str) -> str:
    """The script exactly as CloudFormation will put it in the document."""
    steps = document_content(template_text)["mainSteps"]
    return steps[0]["inputs"]["runCommand"][0]


def embed(template_text: str, script_text: str) -> str:
    """Return template_text with the marker block replaced by script_text."""
    if not script_text.endswith("\n") or script_text.endswith("\n\n"):
        raise EmbedError("the script must end with exactly one newline")
    if "{{" in script_text:
        raise EmbedError("the script must not contain '{{': SSM would splice parameters into it")
    lines = template_text.splitlines(keepends=True)
    try:
        begin = next(i for i, line in enumerate(lines) if line.strip() == BEGIN)
        end = next(i for i, line in enumerate(lines) if line.strip() == END)
    except StopIteration as exc:
        raise EmbedError(f"template.yaml lacks the '{BEGIN}' / '{END}' markers") from exc
    if end < begin:
        raise EmbedError("END marker before BEGIN marker")
    indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
    body = [f"{indent}- |\n"]
    for line in script_text.splitlines():
        body.append(f"{indent}  {line}\n" if line else "\n")
    return "".join(lines[: begin + 1] + body + lines[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if template.yaml is stale")
    args = parser.parse_args(argv)
    script = SCRIPT.read_text()
    current = TEMPLATE.read_text()
    wanted = embed(current, script)
    if extract_script(wanted) != script:
        raise EmbedError("the embedded script does not read back identically")
    size = len(yaml.safe_dump(document_content(wanted)).encode())
    if size > DOCUMENT_MAX_BYTES:
        raise EmbedError(f"SSM document would be {size} bytes, over the 64 KB limit")
    if args.check:
        if wanted != current:
            print(f"template.yaml is out of date: run `make embed` ({SCRIPT_NAME} changed)")
            return 1
        print(f"template.yaml embeds {SCRIPT_NAME} ({size} byte document)")
        return 0
    if wanted != current:
        TEMPLATE.write_text(wanted)
        print(f"embedded {SCRIPT_NAME} into template.yaml ({size} byte document)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
