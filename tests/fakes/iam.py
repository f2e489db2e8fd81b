"""IAM policy evaluation of our templates' statements, for ssm:SendCommand.

The templates are read as CloudFormation deploys them: Fn::ForEach expanded for the given
EnrolledClusters (tools/language_extensions.py), intrinsic functions resolved. The statements
that reach a role are collected the way SAM and CloudFormation attach them: the managed policies
and inline statements a function lists in `Policies`, and every AWS::IAM::Policy naming the role.

Evaluation follows IAM's identity-policy logic for what these statements use
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html):
no Deny statements exist (a test pins that), so a request is allowed when, for EVERY resource
it names, some Allow statement matches the action, the resource ARN (wildcards * and ?) and all
its conditions. SendCommand names the document and each instance; an instance's tags are in the
request context as ssm:resourceTag/<key> (service authorization reference for Systems Manager:
https://docs.aws.amazon.com/service-authorization/latest/reference/list_awssystemsmanager.html).
Condition semantics
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html):
keys in one block are ANDed, the values of one key ORed; a key missing from the request fails
every operator but the ...IfExists ones; condition key NAMES are case-insensitive, values of
StringEquals case-sensitive. An operator this module does not model raises: a template using
one is not silently judged.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from language_extensions import expand_template
from ssm_document import load_template

ROOT = Path(__file__).resolve().parents[2]
Statement = dict[str, Any]


class UnmodelledPolicy(ValueError):
    """The policy uses something this evaluator does not model."""


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def resolve(value: Any, refs: Mapping[str, Any]) -> Any:
    """Resolve Ref, Sub and Join against `refs` (parameters, pseudo parameters, resources)."""
    if isinstance(value, list):
        return [resolve(v, refs) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        [(fn, arg)] = value.items()
        name = fn.removeprefix("Fn::")
        if name == "Ref":
            if arg not in refs:
                raise UnmodelledPolicy(f"Ref {arg} has no value")
            return refs[arg]
        if name == "Sub":
            text, local = (arg, {}) if isinstance(arg, str) else (arg[0], resolve(arg[1], refs))

            def sub(match: re.Match[str]) -> str:
                key = match.group(1)
                found = local.get(key, refs.get(key))
                if found is None:
                    raise UnmodelledPolicy(f"Sub ${{{key}}} has no value")
                return str(found)

            return re.sub(r"\$\{([^}!]+)\}", sub, text)
        if name == "Join":
            return arg[0].join(resolve(arg[1], refs))
        if name in ("If", "GetAtt", "Select", "Split", "ImportValue"):
            raise UnmodelledPolicy(f"{fn} is not modelled")
    return {k: resolve(v, refs) for k, v in value.items()}


@dataclass(frozen=True)
class Deployment:
    """A template as deployed with given parameters: its resources with loops expanded."""

    resources: dict[str, Any]
    refs: dict[str, Any]

    @classmethod
    def of(cls, path: Path, parameters: dict[str, Any], account: str, region: str = "us-east-1") -> Deployment:
        template = load_template(path.read_text())
        expanded = expand_template(template, parameters)
        refs: dict[str, Any] = {
            "AWS::Region": region,
            "AWS::AccountId": account,
            "AWS::Partition": "aws",
            "AWS::NoValue": None,
            **parameters,
        }
        for name in expanded["Resources"]:  # Ref of a resource: a name standing for it (roles, documents)
            refs.setdefault(name, name)
        for name, resource in expanded["Resources"].items():
            if resource["Type"] == "AWS::Serverless::Function":
                refs.setdefault(f"{name}Role", f"{name}Role")  # the role SAM generates for it
        return cls(expanded["Resources"], refs)

    def _policy_statements(self, document: Mapping[str, Any], action: str) -> Iterator[Statement]:
        for statement in _listed(document["Statement"]):
            if isinstance(statement, dict) and set(statement) == {"If"}:
                if action in str(statement):
                    raise UnmodelledPolicy(f"a conditional statement (!If) granting {action} is not modelled")
                continue
            if action in _listed(statement["Action"]):
                yield resolve(statement, self.refs)

    def role_statements(self, role: str, action: str) -> list[Statement]:
        """Every statement granting `action` that reaches the role: a function's `Policies` (SAM)
        or an IAM role's own, and each AWS::IAM::Policy / ManagedPolicy attached to it by name.
        A conditional policy (!If) must not grant it (it raises UnmodelledPolicy if it does)."""
        found: list[Statement] = []
        owner = self.resources.get(role) or self.resources.get(role.removesuffix("Role"))
        props = (owner or {}).get("Properties", {})
        for policy in props.get("Policies", []):
            if isinstance(policy, dict) and set(policy) == {"If"}:
                branches = [self.resources.get(b.get("Ref"), {}) for b in policy["If"][1:] if isinstance(b, dict)]
                if action in str(branches):
                    raise UnmodelledPolicy(f"a conditional policy (!If) granting {action} is not modelled")
            elif isinstance(policy, dict) and set(policy) == {"Ref"}:
                managed = self.resources[policy["Ref"]]["Properties"]["PolicyDocument"]
                found += self._policy_statements(managed, action)
            elif isinstance(policy, dict) and "Statement" in policy:  # a SAM inline statement list
                found += self._policy_statements(policy, action)
            elif isinstance(policy, dict) and "PolicyDocument" in policy:  # an IAM role's inline policy
                found += self._policy_statements(policy["PolicyDocument"], action)
        for resource in self.resources.values():
            if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                roles = resolve(resource["Properties"].get("Roles", []), self.refs)
                if self.refs[role] in roles:
                    found += self._policy_statements(resource["Properties"]["PolicyDocument"], action)
        return found


def _arn_matches(pattern: str, arn: str) -> bool:
    return fnmatch.fnmatchcase(arn, pattern)


def _condition_holds(operator: str, key: str, wanted: list[str], context: Mapping[str, str]) -> bool:
    values = {k.lower(): v for k, v in context.items()}
    present = key.lower() in values
    base = operator.removesuffix("IfExists")
    if operator.endswith("IfExists") and not present:
        return True
    if base.startswith("ForAnyValue:"):
        base = base.removeprefix("ForAnyValue:")  # single-valued keys: the same test
    if not present:
        return False
    actual = values[key.lower()]
    if base == "StringEquals":
        return actual in wanted
    if base == "StringLike":
        return any(fnmatch.fnmatchcase(actual, w) for w in wanted)
    if base in ("ArnLike", "ArnEquals"):
        return any(_arn_matches(w, actual) for w in wanted)
    raise UnmodelledPolicy(f"condition operator {operator} is not modelled")


def statement_allows(statement: Statement, action: str, resource: str, context: Mapping[str, str]) -> bool:
    if statement["Effect"] != "Allow":
        raise UnmodelledPolicy("Deny statements are not modelled")
    if "NotAction" in statement or "NotResource" in statement:
        raise UnmodelledPolicy("NotAction/NotResource are not modelled")
    if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in _listed(statement["Action"])):
        return False
    if not any(_arn_matches(r, resource) for r in _listed(statement["Resource"])):
        return False
    for operator, block in statement.get("Condition", {}).items():
        for key, wanted in block.items():
            if not _condition_holds(operator, key, [str(w) for w in _listed(wanted)], context):
                return False
    return True


def send_command_allowed(
    statements: list[Statement], document_arn: str, instance_arn: str, tags: Mapping[str, str]
) -> bool:
    """IAM's verdict on SendCommand of the document to one instance carrying `tags`."""
    context = {f"ssm:resourceTag/{k}": v for k, v in tags.items()}
    document_ok = any(statement_allows(s, "ssm:SendCommand", document_arn, {}) for s in statements)
    instance_ok = any(statement_allows(s, "ssm:SendCommand", instance_arn, context) for s in statements)
    return document_ok and instance_ok


HOME_TEMPLATE = ROOT / "template.yaml"
MEMBER_TEMPLATE = ROOT / "member-account.yaml"
SENDING_FUNCTIONS = (
    "OnLaunchFunction",
    "AgentWaitFunction",
    "RemediateFunction",
    "SweepFunction",
    "PullFailureFunction",
)


def home_send_statements(enrolled: list[str], account: str, document: str) -> dict[str, list[Statement]]:
    """The statements each sending function's role gets in a home deployment."""
    deployment = Deployment.of(HOME_TEMPLATE, {"EnrolledClusters": enrolled}, account)
    deployment.refs["RemediationDocument"] = document
    return {f: deployment.role_statements(f"{f}Role", "ssm:SendCommand") for f in SENDING_FUNCTIONS}


def member_send_statements(enrolled: list[str], account: str, document_arn: str) -> list[Statement]:
    """The statements of the member role a central deployment assumes in `account`."""
    parameters = {"EnrolledClusters": enrolled, "CentralDocumentArn": document_arn}
    deployment = Deployment.of(MEMBER_TEMPLATE, parameters, account)
    return deployment.role_statements("MemberRole", "ssm:SendCommand")


def authorizer(
    statements: list[Statement], document_arn: str, account: str, region: str, ec2_client: Any
) -> Callable[[list[str]], bool]:
    """For the fake Run Command: IAM's verdict on a SendCommand to these instance ids, each
    judged with the tags EC2 (moto) has on it now. One refused instance refuses the request."""

    def allowed(instance_ids: list[str]) -> bool:
        pages = ec2_client.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-id", "Values": list(instance_ids)}]
        )
        tags = {
            i["InstanceId"]: {t["Key"]: t["Value"] for t in i.get("Tags", [])}
            for page in pages
            for r in page["Reservations"]
            for i in r["Instances"]
        }
        return all(
            send_command_allowed(
                statements, document_arn, f"arn:aws:ec2:{region}:{account}:instance/{i}", tags.get(i, {})
            )
            for i in instance_ids
        )

    return allowed
