"""Least privilege and the private SSM document, read from template.yaml itself.

checkov (make lint) checks the transformed template against its generic rules; these tests pin
the rules that are ours: who may send which document to which instances, which actions may use
Resource "*", and that every document parameter is constrained.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eks_ca_remediator.provisioners import NAME_IN_KEY_PREFIXES, NAME_TAG_KEYS
from language_extensions import expand_template
from ssm_document import document_content, load_template

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "template.yaml").read_text()
ENROLLED = ["prod-a", "prod_b"]
# As deployed: Fn::ForEach (AWS::LanguageExtensions) expanded for two enrolled clusters.
TEMPLATE = expand_template(load_template(TEXT), {"EnrolledClusters": ENROLLED})
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]

# The only actions AWS authorizes on Resource "*" alone (no resource-level permissions), which we use.
STAR_ONLY_ACTIONS = {
    "ec2:DescribeInstances",
    "ssm:DescribeInstanceInformation",
    "ssm:ListCommands",
    "ssm:GetCommandInvocation",
    "ssm:ListCommandInvocations",
}
SENDING_FUNCTIONS = {
    "OnLaunchFunction",
    "AgentWaitFunction",
    "RemediateFunction",
    "SweepFunction",
    "PullFailureFunction",
}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _unwrap_if(statement: Any) -> Iterator[dict[str, Any]]:
    """Statements, with `!If [cond, statement, NoValue]` opened up."""
    if isinstance(statement, dict) and set(statement) == {"If"}:
        for branch in statement["If"][1:]:
            yield from _unwrap_if(branch)
    elif isinstance(statement, dict) and "Effect" in statement:
        yield statement


def statements() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM statement of the template: managed policies and functions' inline policies."""
    for name, resource in RESOURCES.items():
        props = resource.get("Properties", {})
        if resource["Type"] in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
            for statement in _listed(props["PolicyDocument"]["Statement"]):
                for s in _unwrap_if(statement):
                    yield name, s
        if resource["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                for statement in _listed(policy["PolicyDocument"]["Statement"]):
                    for s in _unwrap_if(statement):
                        yield name, s
        if resource["Type"] == "AWS::Serverless::Function":
            for policy in props.get("Policies", []):
                if isinstance(policy, dict) and "Statement" in policy:
                    for statement in policy["Statement"]:
                        for s in _unwrap_if(statement):
                            yield name, s


def functions() -> dict[str, dict[str, Any]]:
    return {n: r["Properties"] for n, r in RESOURCES.items() if r["Type"] == "AWS::Serverless::Function"}


def test_no_wildcard_actions_and_star_resources_only_for_reads_that_need_it():
    for where, statement in statements():
        assert statement["Effect"] == "Allow", where
        actions = _listed(statement["Action"])
        assert not [a for a in actions if "*" in a], f"{where} {statement.get('Sid')}: wildcard action"
        if "*" in _listed(statement["Resource"]):
            assert set(actions) <= STAR_ONLY_ACTIONS, f"{where} {statement.get('Sid')}: {actions} on *"
            assert statement["Condition"]["StringEquals"]["aws:RequestedRegion"] == {"Ref": "AWS::Region"}


def test_send_command_only_for_our_document_and_nodes_tagged_with_an_enrolled_cluster():
    """Who may send what to which nodes: only each enrolled cluster's send role, our document and
    that cluster's tags; what IAM then allows for each provisioner's tags is evaluated in
    test_send_policy.py."""
    sends = [(where, s) for where, s in statements() if "ssm:SendCommand" in _listed(s["Action"])]
    roles = {f"SendRole{c.replace('-', '').replace('_', '')}": c for c in ENROLLED}
    assert {where for where, _ in sends} == set(roles), "SendCommand granted elsewhere"
    for role, cluster in roles.items():
        documents, value_keys, name_in_key = [], {}, {}
        for _, statement in (ws for ws in sends if ws[0] == role):
            assert _listed(statement["Action"]) == ["ssm:SendCommand"]
            [resource] = _listed(statement["Resource"])
            arn = resource["Sub"]
            if ":document/" in arn:
                assert arn.endswith(":document/${RemediationDocument}")
                assert "Condition" not in statement
                documents.append(arn)
                continue
            assert arn.endswith(":instance/*")
            [(key, wanted)] = statement["Condition"]["StringEquals"].items()
            key = key.removeprefix("ssm:resourceTag/")
            if key in NAME_TAG_KEYS:
                value_keys[key] = wanted
            else:
                name_in_key[key] = tuple(_listed(wanted))
        assert len(documents) == 1
        assert value_keys == dict.fromkeys(NAME_TAG_KEYS, cluster)  # the one list (provisioners.py)
        assert name_in_key == {prefix + cluster: values for prefix, values in NAME_IN_KEY_PREFIXES.items()}
        # trusted by the roles of exactly the functions that send
        [trust] = RESOURCES[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Action"] == "sts:AssumeRole"
        assert set(trust) == {"Effect", "Principal", "Action"}
        assert trust["Principal"] == {
            "AWS": [{"GetAtt": f"{f}Role.Arn"} for f in sorted(SENDING_FUNCTIONS, key=list(RESOURCES).index)]
        }


def test_functions_that_send_attach_the_send_policy_and_records_are_scoped_to_our_table():
    for name, props in functions().items():
        policies = props.get("Policies", [])
        assert ({"Ref": "SendRemediationPolicy"} in policies) == (name in SENDING_FUNCTIONS), name
        assert not [p for p in policies if isinstance(p, dict) and "DynamoDBCrudPolicy" in p], name
        assert {"Ref": "RecordsTablePolicy"} in policies, name
    records = RESOURCES["RecordsTablePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    [statement] = records
    assert statement["Resource"] == [
        {"GetAtt": "RecordsTable.Arn"},
        {"Sub": "${RecordsTable.Arn}/index/*"},
    ]
    assert set(statement["Action"]) == {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"}


def test_the_ssm_document_stays_private():
    assert "ModifyDocumentPermission" not in TEXT
    assert not [r for r in RESOURCES.values() if r["Type"].startswith("Custom::") or "Custom" in r["Type"]]
    [document] = [r for r in RESOURCES.values() if r["Type"] == "AWS::SSM::Document"]
    assert set(document["Properties"]) <= {"DocumentType", "DocumentFormat", "UpdateMethod", "Name", "Content"}


@pytest.mark.parametrize("name", ["CaBundle", "Strategy", "RegistryHosts", "CanaryImage", "DryRun"])
def test_every_document_parameter_is_constrained(name):
    parameters = document_content(TEXT)["parameters"]
    assert set(parameters) == {"CaBundle", "Strategy", "RegistryHosts", "CanaryImage", "DryRun"}
    spec = parameters[name]
    assert spec["type"] == "String"
    assert spec["interpolationType"] == "ENV_VAR"
    assert "allowedPattern" in spec or "allowedValues" in spec
    assert 0 < int(spec["maxChars"]) <= 40000
    if "allowedPattern" in spec:
        pattern = spec["allowedPattern"]
        assert pattern.startswith("^"), "anchored, or a prefix slips through"
        assert pattern.endswith("$"), "anchored, or a suffix slips through"
        for hostile in ["$(reboot)", "a;rm -rf /", "`id`", "x\ny", "a b", "'", '"', "&&", "|"]:
            assert not re.search(pattern, hostile), hostile
    else:
        longest = max(len(str(v)) for v in spec["allowedValues"])
        assert int(spec["maxChars"]) >= longest
