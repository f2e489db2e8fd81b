"""IAM policy evaluation of our templates' statements, for ssm:SendCommand.

The templates are read as CloudFormation deploys them: Fn::ForEach expanded for the given
EnrolledClusters (tools/language_extensions.py), intrinsic functions resolved. The statements
that reach a role are collected the way SAM and CloudFormation attach them: the managed policies
and inline statements a function lists in `Policies`, and every AWS::IAM::Policy naming the role.
SendCommand itself is granted only to the per-cluster send roles (SendRole<cluster>); a role
reaches their statements by assuming them: its own policy allows sts:AssumeRole on the role's
ARN and the role's trust policy names it (`reachable_statements`, `SendRoleFakes`).

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
import time
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
        if name == "GetAtt":
            logical, attribute = arg.split(".", 1) if isinstance(arg, str) else resolve(arg, refs)
            if f"{logical}.{attribute}" not in refs:
                raise UnmodelledPolicy(f"GetAtt {logical}.{attribute} has no value")
            return refs[f"{logical}.{attribute}"]
        if name in ("If", "Select", "Split", "ImportValue"):
            raise UnmodelledPolicy(f"{fn} is not modelled")
    return {k: resolve(v, refs) for k, v in value.items()}


STACK = "eks-ca-remediator"


@dataclass(frozen=True)
class SendRole:
    """A send role as the product finds it: the parameter naming it, its ARN, its statements."""

    logical_id: str
    parameter: str
    arn: str
    statements: list[Statement]


@dataclass(frozen=True)
class Deployment:
    """A template as deployed with given parameters: its resources with loops expanded."""

    resources: dict[str, Any]
    refs: dict[str, Any]
    conditions: dict[str, Any]

    @classmethod
    def of(cls, path: Path, parameters: dict[str, Any], account: str, region: str = "us-east-1") -> Deployment:
        template = load_template(path.read_text())
        expanded = expand_template(template, parameters)
        defaults = {k: v["Default"] for k, v in template.get("Parameters", {}).items() if "Default" in v}
        refs: dict[str, Any] = {
            "AWS::Region": region,
            "AWS::AccountId": account,
            "AWS::Partition": "aws",
            "AWS::StackName": STACK,
            "AWS::NoValue": None,
            **defaults,
            **parameters,
        }
        for name in expanded["Resources"]:  # Ref of a resource: a name standing for it (roles, documents)
            refs.setdefault(name, name)
        for name, resource in expanded["Resources"].items():
            if resource["Type"] == "AWS::Serverless::Function":
                refs.setdefault(f"{name}Role", f"{name}Role")  # the role SAM generates for it
                refs[f"{name}Role.Arn"] = f"arn:aws:iam::{account}:role/{STACK}-{name}Role-FAKE0123"
        for name, resource in expanded["Resources"].items():
            if resource["Type"] == "AWS::IAM::Role":  # a generated name unless RoleName is given
                props = resource["Properties"]
                role_path = resolve(props.get("Path", "/"), refs)
                role_name = (
                    resolve(props["RoleName"], refs) if "RoleName" in props else f"{STACK}-{name}"[:55] + "-FAKE0123"
                )
                refs[f"{name}.Arn"] = f"arn:aws:iam::{account}:role{role_path}{role_name}"
        return cls(expanded["Resources"], refs, expanded.get("Conditions", {}))

    def condition(self, name: str) -> bool:
        """A condition of the template, for these parameters (Not, Equals, Or, And, Join of Refs)."""

        def value(node: Any) -> Any:
            if isinstance(node, dict) and len(node) == 1:
                [(fn, arg)] = node.items()
                fn = fn if fn in ("Ref", "Condition") else "Fn::" + fn.removeprefix("Fn::")
                if fn == "Condition":
                    return self.condition(arg)
                if fn == "Fn::Not":
                    return not value(arg[0])
                if fn == "Fn::Equals":
                    return value(arg[0]) == value(arg[1])
                if fn == "Fn::Or":
                    return any(value(a) for a in arg)
                if fn == "Fn::And":
                    return all(value(a) for a in arg)
                if fn == "Fn::Join":
                    items = value(arg[1])
                    return arg[0].join(items.split(",") if isinstance(items, str) else items)
                if fn == "Ref":
                    return self.refs[arg]
                raise UnmodelledPolicy(f"{fn} in condition {name} is not modelled")
            return node

        return bool(value(self.conditions[name]))

    def role_arn(self, role: str) -> str:
        return self.refs[f"{role}.Arn"]

    def trusts(self, role: str, principal_arn: str) -> bool:
        """Whether the role's trust policy lets principal_arn assume it (Principal AWS by ARN)."""
        document = self.resources[role]["Properties"]["AssumeRolePolicyDocument"]
        for statement in _listed(resolve(document["Statement"], self.refs)):
            if statement.get("Condition"):
                raise UnmodelledPolicy(f"a condition in {role}'s trust policy is not modelled")
            principals = _listed(statement.get("Principal", {}).get("AWS", []))
            allows = statement["Effect"] == "Allow" and "sts:AssumeRole" in _listed(statement["Action"])
            if allows and principal_arn in principals:
                return True
        return False

    def assumable(self, role: str) -> list[str]:
        """The roles of this deployment that `role` may assume: its policies allow sts:AssumeRole
        on the role's ARN and the role's trust policy names it."""
        own = self.role_statements(role, "sts:AssumeRole")
        return [
            name
            for name, resource in self.resources.items()
            if resource["Type"] == "AWS::IAM::Role"
            and name != role
            and any(statement_allows(s, "sts:AssumeRole", self.role_arn(name), {}) for s in own)
            and self.trusts(name, self.role_arn(role))
        ]

    def reachable_statements(self, role: str, action: str) -> list[Statement]:
        """The statements granting `action` to the role itself or to a role it may assume."""
        found = self.role_statements(role, action)
        for other in self.assumable(role):
            found += self.role_statements(other, action)
        return found

    def send_roles(self) -> dict[str, SendRole]:
        """The send roles, by the name of the SSM parameter that holds each one's ARN."""
        found: dict[str, SendRole] = {}
        for resource in self.resources.values():
            props = resource.get("Properties", {})
            value = props.get("Value")
            getatt = value.get("GetAtt", value.get("Fn::GetAtt")) if isinstance(value, dict) else None
            if resource["Type"] == "AWS::SSM::Parameter" and getatt is not None:
                logical = resolve(getatt[0], self.refs)
                name = resolve(props["Name"], self.refs)
                found[name] = SendRole(
                    logical, name, resolve(value, self.refs), self.role_statements(logical, "ssm:SendCommand")
                )
        return found

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
                name, when_true, when_false = policy["If"]
                policy = when_true if self.condition(name) else when_false
            if policy == {"Ref": "AWS::NoValue"}:
                continue
            if isinstance(policy, dict) and set(policy) == {"Ref"}:
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


def home_deployment(enrolled: list[str], account: str, document: str) -> Deployment:
    deployment = Deployment.of(HOME_TEMPLATE, {"EnrolledClusters": enrolled}, account)
    deployment.refs["RemediationDocument"] = document
    return deployment


def member_deployment(enrolled: list[str], account: str, document_arn: str) -> Deployment:
    parameters = {"EnrolledClusters": enrolled, "CentralDocumentArn": document_arn}
    return Deployment.of(MEMBER_TEMPLATE, parameters, account)


def home_send_statements(enrolled: list[str], account: str, document: str) -> dict[str, list[Statement]]:
    """The SendCommand statements each sending function's role reaches in a home deployment: its
    own (none) and those of every send role it may assume."""
    deployment = home_deployment(enrolled, account, document)
    return {f: deployment.reachable_statements(f"{f}Role", "ssm:SendCommand") for f in SENDING_FUNCTIONS}


def member_send_statements(enrolled: list[str], account: str, document_arn: str) -> list[Statement]:
    """The SendCommand statements the member role (assumed by a central deployment in `account`)
    reaches: its own (none) and those of every send role it may assume."""
    return member_deployment(enrolled, account, document_arn).reachable_statements("MemberRole", "ssm:SendCommand")


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


class SendRoleFakes:
    """A deployment's send roles for the fake Run Command, as the product meets them: the SSM
    parameters naming them are put in (moto) SSM; `assume` (clients.assumed_ssm's stand-in) gives
    the Run Command as seen through the role, judged by that role's statements alone, and refuses
    a caller the role does not let in (AccessDenied, as STS would)."""

    def __init__(
        self,
        deployment: Deployment,
        caller: str,
        run_command: Any,
        document_arn: str,
        account: str,
        region: str,
        ec2_client: Any,
    ) -> None:
        self.deployment = deployment
        self.caller = caller
        self.account, self.region = account, region
        self.roles = {role.arn: role for role in deployment.send_roles().values()}
        self.assumed: list[str] = []
        self._clients = {
            arn: run_command.acting_as(
                authorizer(role.statements, document_arn, account, region, ec2_client), role_arn=arn
            )
            for arn, role in self.roles.items()
        }

    def refuse_everything(self) -> None:
        """Every send role's IAM refuses every send (a test that IAM's refusal reaches the product)."""
        for client in self._clients.values():
            client.authorize = lambda _ids: False

    def put_parameters(self, ssm_client: Any) -> None:
        for role in self.roles.values():
            ssm_client.put_parameter(Name=role.parameter, Value=role.arn, Type="String", Overwrite=True)

    def assume(self, sts: Any, role_arn: str) -> tuple[Any, float]:
        from botocore.exceptions import ClientError

        from tests.fakes import iam_contract

        role = self.roles.get(role_arn)
        refused = role is None or role.logical_id not in self.deployment.assumable(self.caller)
        # The IAM contract judges the AssumeRole as made with the credentials of `sts` (the member
        # role's, in central mode; None: the function's own role): its policy and the trust policy.
        caller = iam_contract.role_of_client(sts)
        account = caller.split(":")[4] if caller else self.account
        iam_contract.record_fake("sts", "AssumeRole", {"RoleArn": role_arn}, self.region, account, caller, refused)
        if refused:
            error = {"Error": {"Code": "AccessDenied", "Message": f"not authorized to assume {role_arn}"}}
            raise ClientError(error, "AssumeRole")
        self.assumed.append(role_arn)
        return self._clients[role_arn], time.time() + 3600
