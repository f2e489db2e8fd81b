"""The quotas a deployment of template.yaml or member-account.yaml must fit, measured for N clusters.

A real account refuses a stack past any of these, so tests/unit/test_quotas.py renders both
templates for 1, 15, 50 and 100 enrolled clusters and checks each one:

- IAM (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html): a role's inline
  policies together at most 10,240 characters, a managed policy at most 6,144, a role's trust
  policy at most 2,048 - sizes counted without whitespace ("IAM doesn't count white space when
  computing the size of a policy"); 10 managed policies attached to a role (default quota).
- CloudFormation (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/cloudformation-limits.html):
  500 resources, 200 parameters, 200 outputs, a parameter value at most 4,096 bytes, a template
  body at most 51,200 bytes when passed directly and 1 MB from S3 (`sam deploy` uploads it).
  Fn::ForEach does not change them: they apply to the resultant template (Fn::ForEach reference).
- SSM: a document at most 64 KB. Lambda's 4 KB environment: tests/unit/test_environment_size.py
  (no function's environment depends on the cluster count).

Sizes are counted on the policies as deployed: Fn::ForEach expanded, every intrinsic function
replaced by the longest value it can take (stack name, ARNs, names at AWS's maximum lengths), as
compact JSON. SAM's functions become what the SAM translator makes of them: `model_sam` writes the
same roles and resources offline (`make lint` compares it with the translator itself:
`python tools/quotas.py --translator`, in the checkov virtualenv that has aws-sam-translator).

Usage: python tools/quotas.py [--clusters 1,15,50,100] [--translator]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from language_extensions import _CfnYaml, expand_template

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / "template.yaml"
MEMBER = ROOT / "member-account.yaml"

IAM_INLINE_PER_ROLE = 10_240
IAM_MANAGED_POLICY = 6_144
IAM_MANAGED_PER_ROLE = 10
IAM_TRUST_POLICY = 2_048
CFN_RESOURCES = 500
CFN_PARAMETERS = 200
CFN_OUTPUTS = 200
CFN_PARAMETER_VALUE = 4_096
CFN_TEMPLATE_BODY = 51_200  # passed in the request; above it the template must come from S3
CFN_TEMPLATE_S3 = 1_000_000  # "1 MB"
SSM_DOCUMENT = 64_000  # "64 KB", taken as 64,000 bytes to be safe

EKS_CLUSTER_NAME_MAX = 100  # EKS CreateCluster: 1-100 characters
# The longest values AWS allows, for what the policies name.
STACK_NAME = "s" * 116  # stack names: 128; our document "<stack>-RemediateCa" must fit SSM's 128
PSEUDO = {
    "AWS::StackName": STACK_NAME,
    "AWS::Region": "r" * 20,
    "AWS::AccountId": "1" * 12,
    "AWS::Partition": "aws-us-gov",
    "AWS::URLSuffix": "amazonaws.com.cn",
    "AWS::NoValue": None,
}
ARN_PREFIX = "arn:aws-us-gov:sss:" + "r" * 20 + ":" + "1" * 12 + ":"
GETATT = {
    "Arn": ARN_PREFIX + "x" * 300,
    "QueueName": "q" * 80,
}
ROLE_ARN = "arn:aws-us-gov:iam::" + "1" * 12 + ":role/" + "n" * 64  # generated role names: 64


def lambda_trust() -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Action": ["sts:AssumeRole"], "Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com"]}}
        ],
    }


# ---------------------------------------------------------------- SAM, as the translator writes it
AWS_MANAGED = "arn:aws:iam::aws:policy/"
BASIC_EXECUTION = AWS_MANAGED + "service-role/AWSLambdaBasicExecutionRole"
XRAY = AWS_MANAGED + "AWSXrayWriteOnlyAccess"
SQS_EXECUTION = AWS_MANAGED + "service-role/AWSLambdaSQSQueueExecutionRole"
# The SAM policy templates our functions use (aws-sam-translator policy_templates.json).
POLICY_TEMPLATES = {
    "SQSSendMessagePolicy": lambda queue: {
        "Statement": [
            {
                "Action": ["sqs:SendMessage*"],
                "Effect": "Allow",
                "Resource": {
                    "Fn::Sub": [
                        "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:${queueName}",
                        {"queueName": queue["QueueName"]},
                    ]
                },
            }
        ]
    },
}
EVENT_RESOURCES = {"SQS": 1, "EventBridgeRule": 2, "Schedule": 2}  # mapping; rule + permission


def _function_role(name: str, props: dict[str, Any], tracing: bool) -> dict[str, Any]:
    managed: list[Any] = [BASIC_EXECUTION] + ([XRAY] if tracing else [])
    if any(e["Type"] == "SQS" for e in props.get("Events", {}).values()):
        managed.append(SQS_EXECUTION)
    inline: list[dict[str, Any]] = []
    destination = props.get("EventInvokeConfig", {}).get("DestinationConfig", {}).get("OnFailure")
    if destination and destination.get("Type") == "SQS":
        document = {
            "Statement": [{"Action": "sqs:SendMessage", "Effect": "Allow", "Resource": destination["Destination"]}]
        }
        inline.append({"PolicyName": f"{name}EventInvokeConfigOnFailureSQSPolicy", "PolicyDocument": document})
    for policy in props.get("Policies", []):
        if "Statement" in policy:
            document = policy
        elif len(policy) == 1 and next(iter(policy)) in POLICY_TEMPLATES:
            [(template, arguments)] = policy.items()
            document = POLICY_TEMPLATES[template](arguments)
        elif "Fn::If" in policy and any(isinstance(b, dict) and "Statement" in b for b in policy["Fn::If"][1:]):
            # an inline statement under a condition: SAM keeps the Fn::If around the inline policy
            condition, yes, no = policy["Fn::If"]
            named = {"PolicyName": f"{name}RolePolicy{len(inline)}", "PolicyDocument": yes}
            inline.append({"Fn::If": [condition, named, no]})
            continue
        else:  # a managed policy: Ref, or !If [condition, Ref, NoValue]
            managed.append(policy)
            continue
        inline.append({"PolicyName": f"{name}RolePolicy{len(inline)}", "PolicyDocument": document})
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {"AssumeRolePolicyDocument": lambda_trust(), "ManagedPolicyArns": managed, "Policies": inline},
    }


def model_sam(template: dict[str, Any]) -> dict[str, Any]:
    """The template as the SAM translator makes it, as far as quotas go: every resource it writes
    (function, role, event invoke config, one per SQS event, rule and permission per EventBridge or
    schedule event, layer version) and each function's role with its policies."""
    out = {k: v for k, v in template.items() if k not in ("Transform", "Globals")}
    tracing = template.get("Globals", {}).get("Function", {}).get("Tracing") == "Active"
    resources: dict[str, Any] = {}
    for name, resource in template["Resources"].items():
        kind = resource["Type"]
        props = resource.get("Properties", {})
        if kind == "AWS::Serverless::LayerVersion":
            resources[name] = {"Type": "AWS::Lambda::LayerVersion", "Properties": props}
        elif kind == "AWS::Serverless::Function":
            resources[name] = {"Type": "AWS::Lambda::Function", "Properties": props}
            resources[f"{name}Role"] = _function_role(name, props, tracing or props.get("Tracing") == "Active")
            if "EventInvokeConfig" in props:
                resources[f"{name}EventInvokeConfig"] = {"Type": "AWS::Lambda::EventInvokeConfig"}
            for event_name, event in props.get("Events", {}).items():
                for i in range(EVENT_RESOURCES[event["Type"]]):
                    resources[f"{name}{event_name}{i}"] = {"Type": f"SAM::{event['Type']}"}
        else:
            resources[name] = resource
    out["Resources"] = resources
    return out


def translate(template: dict[str, Any]) -> dict[str, Any]:
    """The SAM translator's own output (needs aws-sam-translator: the checkov virtualenv)."""
    from transform_template import PLACEHOLDERS, translate_template

    return translate_template(template, dict(PLACEHOLDERS))


# ---------------------------------------------------------------- sizes
def _ref(arg: str, parameters: dict[str, Any]) -> Any:
    if arg in PSEUDO:
        return PSEUDO[arg]
    # a resource's name otherwise: document names 128 (a ManagedPolicy's ARN is counted apart)
    return parameters.get(arg, "n" * 128)


def _getatt(arg: Any, parameters: dict[str, Any]) -> str:
    logical, attribute = arg.split(".", 1) if isinstance(arg, str) else concrete(arg, parameters)
    return ROLE_ARN if attribute == "Arn" and logical.endswith("Role") else GETATT[attribute]


def _sub(arg: Any, parameters: dict[str, Any]) -> str:
    text, local = (arg, {}) if isinstance(arg, str) else (arg[0], concrete(arg[1], parameters))

    def variable(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in local:
            return str(local[key])
        return str(_getatt(key, parameters) if "." in key else _ref(key, parameters))

    return re.sub(r"\$\{([^}!]+)\}", variable, text)


def _join(arg: Any, parameters: dict[str, Any]) -> str:
    return arg[0].join(str(v) for v in _as_list(concrete(arg[1], parameters)))


def _if(arg: Any, parameters: dict[str, Any]) -> Any:  # the longer branch
    return max((concrete(b, parameters) for b in arg[1:]), key=lambda b: len(json.dumps(b)))


INTRINSICS = {
    "Ref": _ref,
    "GetAtt": _getatt,
    "Sub": _sub,
    "Join": _join,
    "If": _if,
    "Select": lambda _arg, _parameters: "x" * 256,
}


def concrete(value: Any, parameters: dict[str, Any]) -> Any:
    """`value` with every intrinsic function replaced by the longest value it can take."""
    if isinstance(value, list):
        return [v for v in (concrete(item, parameters) for item in value) if v is not None]
    if isinstance(value, dict) and len(value) == 1 and next(iter(value)).removeprefix("Fn::") in INTRINSICS:
        [(fn, arg)] = value.items()
        return INTRINSICS[fn.removeprefix("Fn::")](arg, parameters)
    if isinstance(value, dict):
        return {k: concrete(v, parameters) for k, v in value.items()}
    return value


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def size(document: Any) -> int:
    """A policy's size as IAM counts it: its JSON without whitespace."""
    return len(json.dumps(document, separators=(",", ":")))


@dataclass
class Figures:
    template: str
    clusters: int
    inline_by_role: dict[str, int] = field(default_factory=dict)
    managed_count_by_role: dict[str, int] = field(default_factory=dict)
    trust_by_role: dict[str, int] = field(default_factory=dict)
    managed_policy_sizes: dict[str, int] = field(default_factory=dict)
    resources: int = 0
    parameters: int = 0
    outputs: int = 0
    parameter_value_bytes: int = 0
    template_bytes: int = 0  # the file as sam deploy uploads it
    processed_bytes: int = 0  # loops expanded, SAM translated: compact JSON
    document_bytes: int = 0

    def problems(self) -> list[str]:
        found = [
            f"{what} {name}: {n} > {limit}"
            for what, sizes, limit in (
                ("inline policies of role", self.inline_by_role, IAM_INLINE_PER_ROLE),
                ("trust policy of role", self.trust_by_role, IAM_TRUST_POLICY),
                ("managed policies attached to role", self.managed_count_by_role, IAM_MANAGED_PER_ROLE),
                ("managed policy", self.managed_policy_sizes, IAM_MANAGED_POLICY),
            )
            for name, n in sizes.items()
            if n > limit
        ]
        for what, n, limit in (
            ("resources", self.resources, CFN_RESOURCES),
            ("parameters", self.parameters, CFN_PARAMETERS),
            ("outputs", self.outputs, CFN_OUTPUTS),
            ("EnrolledClusters bytes", self.parameter_value_bytes, CFN_PARAMETER_VALUE),
            ("template bytes", self.template_bytes, CFN_TEMPLATE_S3),
            ("processed template bytes", self.processed_bytes, CFN_TEMPLATE_S3),
            ("SSM document bytes", self.document_bytes, SSM_DOCUMENT),
        ):
            if n > limit:
                found.append(f"{what}: {n} > {limit}")
        return found

    def summary(self) -> str:
        inline = max(self.inline_by_role.items(), key=lambda kv: kv[1])
        managed = max(self.managed_policy_sizes.items(), key=lambda kv: kv[1], default=("-", 0))
        trust = max(self.trust_by_role.items(), key=lambda kv: kv[1])
        return (
            f"{self.template} N={self.clusters}: largest inline aggregate {inline[1]} ({inline[0]}), "
            f"largest managed policy {managed[1]} ({managed[0]}), largest trust policy {trust[1]} ({trust[0]}), "
            f"managed per role {max(self.managed_count_by_role.values())}, resources {self.resources}, "
            f"EnrolledClusters {self.parameter_value_bytes} B, template {self.template_bytes} B "
            f"(processed {self.processed_bytes} B)"
        )


def policy_documents(policy: dict[str, Any]) -> list[Any]:
    """The documents an inline policy entry can be: SAM writes a conditional statement as
    {"Fn::If": [condition, {PolicyName, PolicyDocument}, AWS::NoValue]}; both branches are
    candidates (the quota is measured for the larger)."""
    if "Fn::If" in policy:
        _, yes, no = policy["Fn::If"]
        return [d for branch in (yes, no) if isinstance(branch, dict) for d in policy_documents(branch)]
    return [policy["PolicyDocument"]] if "PolicyDocument" in policy else []


def measure(path: Path, clusters: list[str], parameters: dict[str, Any], translator: bool = False) -> Figures:
    """Every quota's figure for the template at `path` deployed with these clusters. `parameters`:
    values for the other parameters (their defaults otherwise)."""
    text = path.read_text(encoding="utf-8")
    raw = yaml.load(text, Loader=_CfnYaml)  # noqa: S506 - a SafeLoader with CloudFormation's long forms
    values = {k: v.get("Default", "") for k, v in raw["Parameters"].items()}
    values.update(parameters)
    values["EnrolledClusters"] = clusters
    for name, spec in raw["Parameters"].items():  # list parameters are lists
        if spec["Type"] == "CommaDelimitedList" and isinstance(values[name], str):
            values[name] = [v for v in values[name].split(",") if v]
    # loops over list parameters (the member template's log groups too); an empty list is one "" item
    loops = {k: v or [""] for k, v in values.items() if isinstance(v, list)}
    expanded = expand_template(raw, loops)
    if "AWS::Serverless-2016-10-31" in str(expanded.get("Transform", "")):
        expanded = translate(expanded) if translator else model_sam(expanded)
    resources = expanded["Resources"]
    figures = Figures(path.name, len(clusters))
    figures.resources = len(resources)
    figures.parameters = len(raw["Parameters"])
    figures.outputs = len(raw.get("Outputs", {}))
    figures.parameter_value_bytes = len(",".join(clusters).encode())
    figures.template_bytes = len(text.encode())
    figures.processed_bytes = len(json.dumps(expanded, separators=(",", ":")).encode())
    for name, resource in resources.items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Role":
            figures.trust_by_role[name] = size(concrete(props["AssumeRolePolicyDocument"], values))
            figures.inline_by_role[name] = sum(
                max((size(concrete(d, values)) for d in policy_documents(p)), default=0)
                for p in props.get("Policies", [])
            )
            figures.managed_count_by_role[name] = len(props.get("ManagedPolicyArns", []))
        elif resource["Type"] == "AWS::IAM::ManagedPolicy":
            figures.managed_policy_sizes[name] = size(concrete(props["PolicyDocument"], values))
        elif resource["Type"] == "AWS::SSM::Document":
            figures.document_bytes = len(json.dumps(props["Content"], separators=(",", ":")).encode())
    for resource in resources.values():  # policies attached by name count on the role
        props = resource.get("Properties", {})
        for role in props.get("Roles", []):
            logical = role.get("Ref") if isinstance(role, dict) else role
            if resource["Type"] == "AWS::IAM::Policy":
                figures.inline_by_role[logical] += size(concrete(props["PolicyDocument"], values))
            elif resource["Type"] == "AWS::IAM::ManagedPolicy":
                figures.managed_count_by_role[logical] += 1
    return figures


# ---------------------------------------------------------------- what a test deploys
def cluster_names(count: int, length: int) -> list[str]:
    """`count` distinct valid EKS cluster names of `length` characters."""
    return [(f"c{i:03d}-" + "x" * EKS_CLUSTER_NAME_MAX)[:length] for i in range(count)]


def longest_names(count: int) -> int:
    """The longest names `count` clusters can have within one parameter value (4,096 bytes)."""
    return min(EKS_CLUSTER_NAME_MAX, (CFN_PARAMETER_VALUE - (count - 1)) // count)


# Log groups are named with up to 512 characters (CloudWatch Logs CreateLogGroup); each one the
# member stack subscribes adds a subscription filter and a Lambda permission.
MEMBER_LOG_GROUPS = 3
MEMBER_PARAMETERS = {
    "CentralEventBusArn": "arn:aws-us-gov:events:" + "r" * 20 + ":" + "1" * 12 + ":event-bus/" + "b" * 256,
    "CentralAccountId": "1" * 12,
    "CentralDocumentArn": "arn:aws-us-gov:ssm:" + "r" * 20 + ":" + "1" * 12 + ":document/" + "d" * 128,
    "MemberRoleName": "m" * 64,
    "PullFailureSourceLogGroups": [f"/g{i}/" + "l" * 508 for i in range(MEMBER_LOG_GROUPS)],
}


def log_groups(count: int) -> list[str]:
    """`count` distinct log group names of the longest length (512)."""
    return [(f"/g{i:03d}/" + "l" * 512)[:512] for i in range(count)]


# A home deployment with every option on: central mode, three of each CA source, names at their
# longest (the CA source lists are not bounded by the cluster count: see README, Configuration).
HOME_PARAMETERS = {
    "OrganizationId": "o-" + "a" * 32,
    "MemberRoleName": "m" * 64,
    "CaBundleParameterName": "p" * 256,
    "CaBundleParameterArns": ["arn:aws-us-gov:ssm:" + "r" * 20 + ":" + "1" * 12 + ":parameter/" + "p" * 200] * 3,
    "CaBundleObjectArns": ["arn:aws-us-gov:s3:::" + "b" * 63 + "/" + "k" * 200] * 3,
    "CaBundleSecretArns": ["arn:aws-us-gov:secretsmanager:" + "r" * 20 + ":" + "1" * 12 + ":secret:" + "s" * 200] * 3,
    "CaBundlePrivateCaArns": [
        "arn:aws-us-gov:acm-pca:" + "r" * 20 + ":" + "1" * 12 + ":certificate-authority/" + "u" * 36
    ]
    * 3,
    "CaBundleKmsKeyArns": ["arn:aws-us-gov:kms:" + "r" * 20 + ":" + "1" * 12 + ":key/" + "u" * 36] * 3,
}


def most_clusters(path: Path, parameters: dict[str, Any]) -> int:
    """The most clusters one stack of the template enrolls: every cluster adds the same resources
    (its send role and the parameter naming it), so CloudFormation's 500 resources end it."""
    one, two = (measure(path, cluster_names(n, 10), parameters).resources for n in (1, 2))
    return (CFN_RESOURCES - (one - (two - one))) // (two - one)


def most_clusters_each_with_a_log_group() -> int:
    """The most clusters one member stack enrolls when each also has a log group the forwarder
    subscribes (a filter and a permission more per cluster)."""

    def resources(n: int) -> int:
        parameters = {**MEMBER_PARAMETERS, "PullFailureSourceLogGroups": log_groups(n)}
        return measure(MEMBER, cluster_names(n, 10), parameters).resources

    one, two = resources(1), resources(2)
    return (CFN_RESOURCES - (one - (two - one))) // (two - one)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", default="1,15,50,100")
    parser.add_argument("--translator", action="store_true", help="use aws-sam-translator instead of model_sam")
    args = parser.parse_args(argv)
    failed = False
    for count in (int(c) for c in args.clusters.split(",")):
        names = cluster_names(count, longest_names(count))
        for path, parameters in ((HOME, HOME_PARAMETERS), (MEMBER, MEMBER_PARAMETERS)):
            figures = measure(path, names, parameters, translator=args.translator and path == HOME)
            print(figures.summary())
            if args.translator and path == HOME:  # model_sam must see what the translator makes
                modelled = measure(path, names, parameters)
                for what in ("resources", "inline_by_role", "managed_count_by_role", "trust_by_role"):
                    if getattr(modelled, what) != getattr(figures, what):
                        print(f"  model_sam differs from the translator in {what}")
                        failed = True
            for problem in figures.problems():
                print(f"  OVER: {problem}")
                failed = True
    print(
        f"most clusters per stack: template.yaml {most_clusters(HOME, HOME_PARAMETERS)}, member-account.yaml "
        f"{most_clusters(MEMBER, MEMBER_PARAMETERS)} ({MEMBER_LOG_GROUPS} pull-failure log groups), "
        f"{most_clusters_each_with_a_log_group()} with a pull-failure log group per cluster"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
