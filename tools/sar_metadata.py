"""Check the template's AWS::ServerlessRepo::Application metadata offline, as `sam publish` reads it.

Runs in SAM CLI's virtualenv (`make lint`: .venv-sam): SAM CLI vendors `serverlessrepo`, whose
parser and `ApplicationMetadata.validate` are what `sam publish` runs before calling the
Serverless Application Repository (samcli/vendor/serverlessrepo/publish.py validates author,
description and name to create an application, semantic_version to create a version). On top of
those, the constraints the SAM documentation lists for each property
(https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/serverless-sam-template-publishing-applications-metadata-properties.html):
name and author patterns and lengths, description length, at most 10 labels and their pattern,
no intrinsic functions; then what this project adds: the license is the LICENSE file's, the local
LICENSE and README exist, and SemanticVersion is the package's version.

    python tools/sar_metadata.py --check [--template template.yaml]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NAME_RE = re.compile(r"^[a-zA-Z0-9\-]{1,140}$")
AUTHOR_RE = re.compile(r"^[a-z0-9](([a-z0-9]|-(?!-))*[a-z0-9])?$")
LABEL_RE = re.compile(r"^[a-zA-Z0-9+\-_:/@]{1,127}$")
SEMVER_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$")
VERSION_RE = re.compile(r'^__version__ = "([^"]+)"$', re.MULTILINE)
LICENSE_HEADINGS = {"Apache-2.0": "Apache License", "MIT": "MIT License"}


def _intrinsics(value: Any) -> bool:
    if isinstance(value, dict):
        return any(k == "Ref" or k.startswith("Fn::") or _intrinsics(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_intrinsics(v) for v in value)
    return False


def problems(template_path: Path) -> list[str]:
    from samcli.vendor.serverlessrepo.exceptions import ServerlessRepoError
    from samcli.vendor.serverlessrepo.parser import get_app_metadata, parse_template

    found: list[str] = []
    template = parse_template(template_path.read_text())
    try:
        metadata = get_app_metadata(template)
        metadata.validate(["author", "description", "name", "semantic_version", "spdx_license_id", "source_code_url"])
        metadata.validate(["license_url", "readme_url"])
    except ServerlessRepoError as exc:
        return [str(exc)]
    raw = template["Metadata"]["AWS::ServerlessRepo::Application"]
    if _intrinsics(raw):
        found.append("intrinsic functions are not supported in AWS::ServerlessRepo::Application")
    if not NAME_RE.match(str(metadata.name)):
        found.append(f"Name {metadata.name!r}: letters, digits and '-', at most 140")
    if not AUTHOR_RE.match(str(metadata.author)) or len(str(metadata.author)) > 127:
        found.append(f"Author {metadata.author!r}: lowercase letters, digits and single '-', at most 127")
    if not 1 <= len(str(metadata.description)) <= 256:
        found.append(f"Description: {len(str(metadata.description))} characters, at most 256")
    labels = list(metadata.labels or [])
    if len(labels) > 10:
        found.append(f"Labels: {len(labels)}, at most 10")
    found += [f"Label {label!r}: letters, digits and + - _ : / @" for label in labels if not LABEL_RE.match(str(label))]
    if not SEMVER_RE.match(str(metadata.semantic_version)):
        found.append(f"SemanticVersion {metadata.semantic_version!r} is not a semantic version")
    package = VERSION_RE.search((ROOT / "layers/common/eks_ca_remediator/__init__.py").read_text())
    if package is None or package.group(1) != str(metadata.semantic_version):
        found.append(f"SemanticVersion {metadata.semantic_version} is not the package's __version__")
    for prop, local in (("LicenseUrl", metadata.license_url), ("ReadmeUrl", metadata.readme_url)):
        if not str(local).startswith("s3://") and not (template_path.parent / str(local)).is_file():
            found.append(f"{prop} {local!r}: no such file next to the template")
    heading = LICENSE_HEADINGS.get(str(metadata.spdx_license_id))
    license_file = template_path.parent / str(metadata.license_url)
    if heading is None:
        found.append(f"SpdxLicenseId {metadata.spdx_license_id!r}: expected one of {sorted(LICENSE_HEADINGS)}")
    elif license_file.is_file() and heading not in license_file.read_text()[:400]:
        found.append(f"{metadata.license_url} is not the {metadata.spdx_license_id} license text")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report problems, exit 1 if any")
    parser.add_argument("--template", type=Path, default=ROOT / "template.yaml")
    args = parser.parse_args(argv)
    try:
        found = problems(args.template)
    except ModuleNotFoundError:
        print("sar_metadata: run with SAM CLI's Python (make lint uses .venv-sam)", file=sys.stderr)
        return 2
    for problem in found:
        print(f"{args.template.name}: AWS::ServerlessRepo::Application: {problem}", file=sys.stderr)
    if not found:
        print(f"{args.template.name}: AWS::ServerlessRepo::Application metadata is valid for sam publish")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
