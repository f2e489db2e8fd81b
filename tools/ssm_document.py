"""Join the node script's modules into one script, embed it into the SSM document in
template.yaml, and read it back.

The node script is node/remediate-ca.sh (the main flow) plus the modules in node/lib/, the only
copies edited by hand. `join_script` replaces each `. "$NODE_LIB/<module>.sh"` line of the main
file with that module (and drops the lines marked `# join: drop`), giving ONE script; this tool
writes it into the `runCommand` of the SSM document between two marker comments.
`extract_script` reads the document back through a YAML parser, so tests and the node lab run
exactly what CloudFormation will deploy.

Usage: python tools/ssm_document.py [--check] [--joined FILE]
  --joined FILE  also write the joined script to FILE (for shellcheck)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
NODE = ROOT / "node"
SCRIPT = NODE / "remediate-ca.sh"
LIB = NODE / "lib"
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


_INCLUDE = re.compile(r'^\. "\$NODE_LIB/([a-z0-9_-]+\.sh)"$')
_DROP = "# join: drop"
_MODULE_HEAD = "# shellcheck shell=bash"


def node_files() -> list[Path]:
    """Every file the node script is made of: the main file, then its modules."""
    return [SCRIPT, *sorted(LIB.glob("*.sh"))]


def join_script(main_text: str | None = None, lib: Path = LIB) -> str:
    """The one script: the main file with each module include replaced by the module's text.

    Every module in `lib` must be included exactly once; modules include nothing themselves.
    """
    main_text = SCRIPT.read_text() if main_text is None else main_text
    out: list[str] = []
    used: list[str] = []
    for line in main_text.splitlines():
        if line.endswith(_DROP):
            continue
        match = _INCLUDE.match(line)
        if not match:
            out.append(line)
            continue
        name = match.group(1)
        if name in used:
            raise EmbedError(f"node/lib/{name} is included twice")
        path = lib / name
        if not path.is_file():
            raise EmbedError(f"node/lib/{name} does not exist")
        module = path.read_text().splitlines()
        if not module or module[0] != _MODULE_HEAD:
            raise EmbedError(f"node/lib/{name} must start with '{_MODULE_HEAD}'")
        if any(_INCLUDE.match(m) or "NODE_LIB" in m for m in module):
            raise EmbedError(f"node/lib/{name} includes another module: only the main file includes")
        used.append(name)
        body = module[1:]
        while body and not body[-1]:
            body.pop()
        out += [f"# ---- node/lib/{name} ----", *body]
    unused = sorted({p.name for p in lib.glob("*.sh")} - set(used))
    if unused:
        raise EmbedError(f"modules not included by {SCRIPT_NAME}: {', '.join(unused)}")
    text = "\n".join(out) + "\n"
    if any("$NODE_LIB" in line for line in out if not line.lstrip().startswith("#")):
        raise EmbedError(
            "a $NODE_LIB line is left in the joined script: include lines must be exactly '. \"$NODE_LIB/x.sh\"'"
        )
    return text


def document_size(template_text: str) -> int:
    """Bytes of the SSM document's content as CloudFormation sends it (JSON-like YAML dump)."""
    return len(yaml.safe_dump(document_content(template_text)).encode())


def load_template(text: str) -> dict[str, Any]:
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
    parser.add_argument("--joined", type=Path, help="also write the joined script to this file")
    args = parser.parse_args(argv)
    script = join_script()
    if args.joined:
        args.joined.write_text(script)
    current = TEMPLATE.read_text()
    wanted = embed(current, script)
    if extract_script(wanted) != script:
        raise EmbedError("the embedded script does not read back identically")
    size = document_size(wanted)
    if size > DOCUMENT_MAX_BYTES:
        raise EmbedError(f"SSM document would be {size} bytes, over the 64 KB limit")
    if args.check:
        if wanted != current:
            print("template.yaml is out of date: run `make embed` (node/ changed)")
            return 1
        print(
            f"template.yaml embeds {SCRIPT_NAME} + node/lib ({size} byte document, {DOCUMENT_MAX_BYTES - size} bytes under 64 KB)"
        )
        return 0
    if wanted != current:
        TEMPLATE.write_text(wanted)
        print(f"embedded {SCRIPT_NAME} + node/lib into template.yaml ({size} byte document)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
