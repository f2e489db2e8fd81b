"""The largest environment template.yaml can give a function stays well under Lambda's 4 KB.

Lambda limits the total size of a function's environment variables (keys and values) to 4 KB
(https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html); a deployment over it
fails. Every value is taken at its maximum: a parameter at its MaxLength, its longest allowed
value or its MaxValue, and at 4096 characters (the most CloudFormation accepts for a parameter
value, https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_Parameter.html)
when the template does not bound it; a resource's name or URL at the most AWS allows for it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from language_extensions import expand_template
from ssm_document import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = expand_template(load_template((ROOT / "template.yaml").read_text()), {"EnrolledClusters": ["prod-a"]})
PARAMETERS: dict[str, Any] = TEMPLATE["Parameters"]
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
LIMIT = 3500  # bytes; Lambda's limit is 4096
CFN_PARAMETER_MAX = 4096
PSEUDO = {
    "AWS::StackName": 128,  # stack names: at most 128 characters
    "AWS::Region": 25,  # the longest region names are 14-20 characters
    "AWS::AccountId": 12,
    "AWS::Partition": 10,  # aws-us-gov
    "AWS::URLSuffix": 20,
}
# A Ref to a resource, as long as AWS lets it be: queue URL (name <= 80), table name (<= 255).
RESOURCE_REF = {
    "AWS::SQS::Queue": len("https://sqs..amazonaws.com//") + PSEUDO["AWS::Region"] + 12 + 80,
    "AWS::DynamoDB::Table": 255,
}
GETATT = {"QueueName": 80, "Arn": 300}


def parameter_max(name: str) -> int:
    spec = PARAMETERS[name]
    if "AllowedValues" in spec:
        return max(len(str(v)) for v in spec["AllowedValues"])
    if spec["Type"] == "Number" and "MaxValue" in spec:
        return max(len(str(spec["MaxValue"])), len(str(spec.get("MinValue", ""))))
    if spec["Type"] == "String" and "MaxLength" in spec:
        return int(spec["MaxLength"])
    return CFN_PARAMETER_MAX


def ref_max(name: str) -> int:
    if name in PSEUDO:
        return PSEUDO[name]
    if name in PARAMETERS:
        return parameter_max(name)
    resource = RESOURCES[name]
    if resource["Type"] in ("AWS::SSM::Document", "AWS::SSM::Parameter"):
        return value_max(resource["Properties"]["Name"])
    return RESOURCE_REF[resource["Type"]]


def value_max(value: Any) -> int:
    """The longest string `value` (a literal or an intrinsic function) can become."""
    if isinstance(value, str | int | float | bool):
        return len(str(value))
    [(fn, arg)] = value.items()
    fn = fn.removeprefix("Fn::")
    if fn == "Ref":
        return ref_max(arg)
    if fn == "Sub":
        text = arg if isinstance(arg, str) else arg[0]
        names = re.findall(r"\$\{([^}!]+)\}", text)
        literal = len(re.sub(r"\$\{[^}!]+\}", "", text))
        return literal + sum(GETATT[n.split(".")[1]] if "." in n else ref_max(n) for n in names)
    if fn == "If":
        return max(value_max(arg[1]), value_max(arg[2]))
    if fn == "Join":
        separator, items = arg
        if isinstance(items, dict):  # a Ref to a list parameter, joined: at most the parameter's value
            return value_max(items)
        return len(separator) * (len(items) - 1) + sum(value_max(i) for i in items)
    if fn == "GetAtt":
        attribute = arg[1] if isinstance(arg, list) else arg.split(".")[1]
        return GETATT[attribute]
    raise AssertionError(f"unmodelled intrinsic {fn}")


def environments() -> dict[str, dict[str, Any]]:
    shared = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    return {
        name: shared | resource["Properties"].get("Environment", {}).get("Variables", {})
        for name, resource in RESOURCES.items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


@pytest.mark.parametrize("function", sorted(environments()))
def test_largest_environment_is_well_under_lambdas_4_kb(function):
    variables = environments()[function]
    sizes = {key: len(key) + value_max(value) for key, value in variables.items()}
    total = sum(sizes.values())
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    assert total <= LIMIT, f"{function}: {total} bytes at most (largest: {largest})"


def test_no_ca_material_in_any_environment():
    for function, variables in environments().items():
        assert "CA_BUNDLE_INLINE" not in variables, function
        assert not [k for k, v in variables.items() if "CaBundleInline" in str(v)], function


def test_the_size_model_counts_what_it_should():
    """4096 for an unbounded parameter: the inline bundle alone would have broken the limit."""
    assert parameter_max("CaBundleInline") == CFN_PARAMETER_MAX
    assert value_max({"Sub": "/${AWS::StackName}/settings/"}) == len("//settings/") + 128
    assert value_max({"If": ["C", "abc", {"Ref": "AWS::AccountId"}]}) == 12
