"""What a user of the published application sees: one version everywhere, and the console's
parameter groups covering every parameter once."""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from pathlib import Path

from eks_ca_remediator import __version__
from ssm_document import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template((ROOT / "template.yaml").read_text())
INTERFACE = TEMPLATE["Metadata"]["AWS::CloudFormation::Interface"]


def test_one_version_everywhere():
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == __version__
    assert TEMPLATE["Metadata"]["AWS::ServerlessRepo::Application"]["SemanticVersion"] == __version__
    assert TEMPLATE["Outputs"]["Version"]["Value"] == __version__
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert released[0] == __version__  # the newest release in the changelog


def test_license_is_the_one_declared():
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert TEMPLATE["Metadata"]["AWS::ServerlessRepo::Application"]["SpdxLicenseId"] == "Apache-2.0"
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"


def test_every_parameter_is_in_exactly_one_console_group():
    grouped = Counter(p for group in INTERFACE["ParameterGroups"] for p in group["Parameters"])
    assert set(grouped) == set(TEMPLATE["Parameters"])
    assert [p for p, n in grouped.items() if n > 1] == []


def test_groups_in_the_order_a_user_fills_them():
    labels = [group["Label"]["default"] for group in INTERFACE["ParameterGroups"]]
    assert labels == [
        "Required",
        "CA bundle sources (set one)",
        "Remediation strategy",
        "Fleet safety",
        "Triggers",
        "Central mode (many accounts)",
        "Observability and retention",
    ]
    required = INTERFACE["ParameterGroups"][0]["Parameters"]
    assert required == [p for p, spec in TEMPLATE["Parameters"].items() if "Default" not in spec]


def test_every_parameter_has_a_console_label():
    labels = INTERFACE["ParameterLabels"]
    assert set(labels) == set(TEMPLATE["Parameters"])
    assert all(0 < len(label["default"]) <= 60 for label in labels.values())
