"""Transform the SAM template into plain CloudFormation, offline, for checkov.

checkov does not expand `AWS::Serverless::Function` `Policies` (SAM policy templates and inline
statements), so least-privilege checks would never see the roles SAM generates. This tool runs
the same translator `sam deploy` uses (aws-sam-translator) with placeholder parameter values and
the translator's bundled AWS-managed-policy map, so it needs no credentials and no network.

Usage: python tools/transform_template.py [template.yaml] [-o build/cfn/template.json]
       python tools/transform_template.py - -o -   (a template with its loops expanded, stdin to stdout)

The IAM contract test (tests/fakes/iam_contract.py) runs the second form in .venv-translator.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import boto3
from language_extensions import expand_template
from samtranslator.internal.managed_policies import get_bundled_managed_policy_map
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "build" / "cfn" / "template.json"
# Only parameters without a default need a value; SAM resolves few of them anyway.
PLACEHOLDERS = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::StackName": "eks-ca-remediator",
}
# Fn::ForEach loops over these (AWS::LanguageExtensions runs before the SAM transform).
LOOP_PARAMETERS = {"EnrolledClusters": ["prod-a", "prod-b"]}


def _as_packaged(sam: dict[str, Any]) -> dict[str, Any]:
    """Local CodeUri/ContentUri folders become S3 URIs, as `sam package` would upload them."""
    for resource in sam.get("Resources", {}).values():
        properties = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            local = properties.get(key)
            if isinstance(local, str) and not local.startswith("s3://"):
                properties[key] = f"s3://packaged-artifacts/{local.strip('/') or 'root'}.zip"
    return sam


def transform_file(path: Path) -> dict[str, Any]:
    sam = expand_template(yaml_parse(path.read_text(encoding="utf-8")), LOOP_PARAMETERS)
    return translate_template(sam, dict(PLACEHOLDERS))


def translate(expanded: dict[str, Any]) -> dict[str, Any]:
    """SAM's translation of a template whose Fn::ForEach loops are already expanded."""
    return translate_template(expanded, dict(PLACEHOLDERS))


def translate_template(sam: dict[str, Any], parameter_values: dict[str, Any]) -> dict[str, Any]:
    """A SAM template (loops expanded) as the SAM translator writes it in CloudFormation."""
    import copy

    sam = _as_packaged(copy.deepcopy(sam))
    # A session that only names a region: the translator reads no credentials and calls nothing.
    session = boto3.session.Session(region_name=PLACEHOLDERS["AWS::Region"])
    translator = Translator(None, Parser(), boto_session=session)
    try:
        return translator.translate(
            sam,
            parameter_values=parameter_values,
            # the AWS managed policies SAM attaches (basic execution, X-Ray), from the bundled map
            get_managed_policy_map=lambda: dict(get_bundled_managed_policy_map("aws") or {}),
        )
    except InvalidDocumentException as exc:
        causes = "; ".join(str(cause) for cause in exc.causes)
        raise SystemExit(f"SAM transform failed: {causes}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template", nargs="?", type=Path, default=ROOT / "template.yaml")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if str(args.template) == "-":
        cfn = translate(yaml_parse(sys.stdin.read()))
        if str(args.output) == "-":
            json.dump(cfn, sys.stdout, sort_keys=True)
            return 0
    else:
        cfn = transform_file(args.template)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(cfn, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{args.template.name} -> {args.output} ({len(cfn.get('Resources', {}))} resources)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
