"""The IAM contract: every AWS call a function's code makes in the suite, judged as IAM would judge
it against the role the rendered templates give that function (or the role it assumed).

Recording. `install()` (tests/conftest.py) adds botocore handlers to `BUILTIN_HANDLERS`, the way
moto registers its stubber, and to the default session if it exists already, so every client made
in the tests has them: the product's, the test world's, and those of a `boto3.Session` built on
AssumeRole credentials. The fakes that are not botocore clients (tests/fakes/run_command.py, the
world's agent-wait queue) call `record_fake` themselves. The IAM action is the service model's
signing name (its IAM prefix, except where `IAM_PREFIX` says otherwise) and the operation name.

Attribution. The Python stack of a call is walked outwards, past library code (botocore, boto3,
moto, Powertools, the standard library) and this module: when the nearest of our own frames is in
tests/ (test set-up, a fake's own client such as the SendCommand authorizer's EC2 reads), the call
is not the product's and is not judged. Otherwise it is judged for the function whose handler file
(functions/<dir>/<dir>.py, from the template's CodeUri and Handler) is on the stack; product code
run by a test without a handler (the status command, a tool) is no function's and is not judged.
Credentials decide the role: a call signed with AssumeRole credentials (moto's STS backend knows
whose they are) is judged against that role as a rendered template defines it (`role_for_arn`),
any other call against the function's own role.

Judgement, as IAM's identity-policy evaluation does it for what our templates use
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html):
no Deny statement exists (one raises UnmodelledPolicy), so a request is allowed when, for every
resource it names, some Allow statement of the role matches its action, the resource and all its
conditions (tests/fakes/iam.py `statement_allows`; condition operators:
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html).
Resources and condition keys per action follow the Service Authorization Reference
(https://docs.aws.amazon.com/service-authorization/latest/reference/reference_policies_actions-resources-contextkeys.html):
`RESOURCES` is the table, one entry per action the product uses; an action without an entry is
refused with a message saying to model it, never allowed. Every request carries
aws:RequestedRegion (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html).

Statements. A template is rendered as CloudFormation deploys it: Fn::ForEach expanded
(tools/language_extensions.py), then SAM's own translator (aws-sam-translator, in
.venv-translator: it pins a pydantic below the layer's, so it runs there, through
tools/transform_template.py), conditions evaluated, intrinsic functions resolved to the names the
test world uses. A role's statements are its inline policies (SAM policy templates included, as
the translator expands them), the customer managed policies it lists, and every AWS::IAM::Policy
or ManagedPolicy naming it. The AWS managed policies SAM adds for the Lambda service itself
(`SERVICE_MANAGED_POLICIES`) grant the product's code nothing here; any other one fails rendering.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from language_extensions import expand_template
from ssm_document import load_template

from tests.fakes.iam import Statement, UnmodelledPolicy, statement_allows

ROOT = Path(__file__).resolve().parents[2]
TRANSLATOR_PYTHON = ROOT / ".venv-translator" / "bin" / "python"
CACHE = ROOT / "build" / "iam-contract"
SAM_TRANSFORM = "AWS::Serverless-2016-10-31"
# The organisation every account of the test world belongs to (aws:ResourceOrgID of their roles).
ORGANIZATION = "o-exampleorg1"

# AWS managed policies SAM attaches for the Lambda service's own use (logs written by the runtime,
# X-Ray segments by the daemon, SQS polled by the event source mapping): none of their actions is
# one the product's code calls, so here they grant it nothing. Any other AWS managed policy makes
# rendering fail: a managed policy the product relies on must be modelled.
SERVICE_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
    "arn:aws:iam::aws:policy/service-role/AWSLambdaSQSQueueExecutionRole",
}

# The IAM service prefix where it is not the service model's signing name
# (https://docs.aws.amazon.com/service-authorization/latest/reference/reference_policies_actions-resources-contextkeys.html).
IAM_PREFIX = {"monitoring": "cloudwatch"}
# Prefixes checked against the reference to equal the signing name; any other raises (model it).
KNOWN_PREFIXES = {
    "acm-pca",
    "cloudwatch",
    "dynamodb",
    "ec2",
    "events",
    "kms",
    "lambda",
    "logs",
    "organizations",
    "s3",
    "secretsmanager",
    "sns",
    "sqs",
    "ssm",
    "sts",
}
# Operations whose IAM action is not named after them (service authorization reference, S3).
ACTION_OF_OPERATION = {"s3:HeadObject": "s3:GetObject", "s3:ListObjectsV2": "s3:ListBucket"}


class ContractViolation(AssertionError):
    """A call the rendered templates do not allow (the test fails with it)."""


# ---------------------------------------------------------------------- rendering


def _translate(expanded: dict[str, Any]) -> dict[str, Any]:
    """SAM's translation of an expanded template, cached on disk by content (the translator takes
    a second to start; xdist workers and later runs share the cache)."""
    text = json.dumps(expanded, sort_keys=True)
    pins = (ROOT / "requirements-translator.txt").read_text()
    key = hashlib.sha256((pins + text).encode()).hexdigest()[:32]
    cached = CACHE / f"{key}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    if not TRANSLATOR_PYTHON.exists():
        raise ContractViolation("the IAM contract needs SAM's translator: run `make setup` (.venv-translator)")
    done = subprocess.run(
        [str(TRANSLATOR_PYTHON), str(ROOT / "tools" / "transform_template.py"), "-", "-o", "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(ROOT / "tools"), "AWS_DEFAULT_REGION": "us-east-1"},
    )
    if done.returncode != 0:
        raise ContractViolation(f"SAM translation failed: {done.stderr.strip()[-2000:]}")
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{id(done)}.tmp")
    partial.write_text(done.stdout)
    partial.replace(cached)
    return json.loads(done.stdout)


def long_form(node: Any) -> Any:
    """Short-form tags (`!Sub` read as {"Sub": ...}) in the long form CloudFormation's JSON and
    SAM's translator take: {"Fn::Sub": ...}; `!GetAtt A.B` as ["A", "B"]."""
    if isinstance(node, list):
        return [long_form(n) for n in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        [(key, value)] = node.items()
        if key in _SHORT_FORMS:
            if key == "GetAtt" and isinstance(value, str):
                value = value.split(".", 1)
            return {f"Fn::{key}": long_form(value)}
    return {k: long_form(v) for k, v in node.items()}


_SHORT_FORMS = {
    "Base64", "Cidr", "FindInMap", "GetAtt", "GetAZs", "ImportValue", "Join", "Select", "Split", "Sub",
    "Transform", "And", "Equals", "If", "Not", "Or", "ToJsonString", "Length",
}  # fmt: skip


@functools.lru_cache(maxsize=8)
def _load(path: Path, mtime: float) -> dict[str, Any]:
    return long_form(load_template(path.read_text()))


def load(path: Path) -> dict[str, Any]:
    """A template as a dict (short-form tags as Fn:: keys); a copy, cached by file and mtime."""
    return copy.deepcopy(_load(path, path.stat().st_mtime))


@dataclass(frozen=True)
class Names:
    """What Ref and Fn::GetAtt of a template's resources give in the test world."""

    refs: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[tuple[str, str], Any] = field(default_factory=dict)


def queue_names(logical_id: str, url: str) -> Names:
    """Ref (URL), QueueName and Arn of a queue of the test world, from its URL."""
    *_, account, name = url.rstrip("/").split("/")
    region = url.split(".")[1]
    arn = f"arn:aws:sqs:{region}:{account}:{name}"
    return Names({logical_id: url}, {(logical_id, "QueueName"): name, (logical_id, "Arn"): arn})


def merge(*names: Names) -> Names:
    return Names(
        {k: v for n in names for k, v in n.refs.items()},
        {k: v for n in names for k, v in n.attributes.items()},
    )


class Rendered:
    """A template as deployed with the given parameters, in one account and region."""

    def __init__(
        self,
        template: dict[str, Any],
        parameters: Mapping[str, Any],
        account: str,
        region: str,
        names: Names,
        stack: str = "eks-ca-remediator",
        name: str = "template.yaml",
    ) -> None:
        self.name, self.account, self.region = name, account, region
        self.parameters: dict[str, Any] = {}
        for key, spec in template.get("Parameters", {}).items():
            value = parameters.get(key, spec.get("Default"))
            if value is None:
                raise UnmodelledPolicy(f"{name}: parameter {key} has no default and was not given")
            if spec["Type"] == "CommaDelimitedList" and isinstance(value, str):
                value = [v.strip() for v in value.split(",")] if value else [""]
            self.parameters[key] = value if isinstance(value, list) else str(value)
        expanded = expand_template(template, {k: v for k, v in self.parameters.items() if isinstance(v, list)})
        self.source = expanded  # before SAM: functions with CodeUri and Handler
        self.template = _translate(expanded) if SAM_TRANSFORM in _listed(template.get("Transform", [])) else expanded
        self.resources: dict[str, Any] = self.template["Resources"]
        self.names = names
        self.pseudo = {
            "AWS::Region": region,
            "AWS::AccountId": account,
            "AWS::Partition": "aws",
            "AWS::StackName": stack,
            "AWS::URLSuffix": "amazonaws.com",
        }

    # ------------------------------------------------------------ intrinsic functions

    def condition(self, name: str) -> bool:
        return bool(self.value(self.template.get("Conditions", {})[name]))

    def exists(self, logical_id: str) -> bool:
        resource = self.resources.get(logical_id)
        return resource is not None and ("Condition" not in resource or self.condition(resource["Condition"]))

    def prune(self, node: Any) -> Any:
        """Fn::If decided and AWS::NoValue dropped; other intrinsic functions kept."""
        if isinstance(node, list):
            return [v for v in (self.prune(n) for n in node) if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if node == {"Ref": "AWS::NoValue"}:
            return _NO_VALUE
        if set(node) == {"Fn::If"}:
            name, yes, no = node["Fn::If"]
            return self.prune(yes if self.condition(name) else no)
        return {k: v for k, v in ((k, self.prune(v)) for k, v in node.items()) if v is not _NO_VALUE}

    def ref(self, name: str) -> Any:
        for known in (self.pseudo, self.parameters, self.names.refs):
            if name in known:
                return known[name]
        raise UnmodelledPolicy(f"{self.name}: Ref {name} has no value in the test world (add it to its Names)")

    def attribute(self, logical_id: str, attribute: str) -> Any:
        try:
            return self.names.attributes[(logical_id, attribute)]
        except KeyError:
            if attribute == "Arn" and self.resources.get(logical_id, {}).get("Type") == "AWS::IAM::Role":
                return self.role_arn(logical_id)
            raise UnmodelledPolicy(
                f"{self.name}: Fn::GetAtt {logical_id}.{attribute} has no value in the test world"
            ) from None

    def _sub(self, arg: Any) -> str:
        text, local = (arg, {}) if isinstance(arg, str) else (arg[0], {k: self.value(v) for k, v in arg[1].items()})

        def one(match: re.Match[str]) -> str:
            key = match.group(1)
            if key.startswith("!"):
                return "${" + key[1:] + "}"
            if key in local:
                return str(local[key])
            if "." in key and key.split(".", 1)[0] in self.resources:
                return str(self.attribute(*key.split(".", 1)))
            value = self.ref(key)
            return ",".join(value) if isinstance(value, list) else str(value)

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def value(self, node: Any) -> Any:  # noqa: C901 - one branch per intrinsic function
        if isinstance(node, list):
            return [v for v in (self.value(n) for n in node) if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) != 1 or not (next(iter(node)) == "Ref" or next(iter(node)).startswith(("Fn::", "Condition"))):
            return {k: v for k, v in ((k, self.value(v)) for k, v in node.items()) if v is not _NO_VALUE}
        [(fn, arg)] = node.items()
        fn = fn.removeprefix("Fn::")
        if fn == "Ref":
            return _NO_VALUE if arg == "AWS::NoValue" else self.ref(arg)
        if fn == "GetAtt":
            logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
            return self.attribute(logical_id, attribute)
        if fn == "Sub":
            return self._sub(arg)
        if fn == "Join":
            return arg[0].join(str(v) for v in self.value(arg[1]))
        if fn == "Select":
            return self.value(arg[1])[int(self.value(arg[0]))]
        if fn == "Split":
            return self.value(arg[1]).split(arg[0])
        if fn == "If":
            return self.value(arg[1] if self.condition(arg[0]) else arg[2])
        if fn == "Condition":
            return self.condition(arg)
        if fn == "Equals":
            return self.value(arg[0]) == self.value(arg[1])
        if fn == "Not":
            return not self.value(arg[0])
        if fn == "And":
            return all(self.value(a) for a in arg)
        if fn == "Or":
            return any(self.value(a) for a in arg)
        raise UnmodelledPolicy(f"{self.name}: Fn::{fn} is not modelled")

    # ------------------------------------------------------------ roles

    def functions(self) -> list[str]:
        return [k for k, r in self.resources.items() if r["Type"] == "AWS::Lambda::Function" and self.exists(k)]

    def function_role(self, function: str) -> str:
        role = self.resources[function]["Properties"]["Role"]
        if isinstance(role, dict) and "Fn::GetAtt" in role:
            target = role["Fn::GetAtt"]
            return target[0] if isinstance(target, list) else target.split(".")[0]
        raise UnmodelledPolicy(f"{self.name}: {function}'s Role {role!r} is not a role of the template")

    def role_arn(self, logical_id: str) -> str:
        """A role's ARN in the test world: its Path and RoleName, or the name CloudFormation gives
        a role it names (<stack>-<logical id>-<suffix>; the suffix here is EXAMPLE)."""
        props = self.resources[logical_id]["Properties"]
        name = props.get("RoleName")
        name = self.value(name) if name is not None else f"{self.pseudo['AWS::StackName']}-{logical_id}-EXAMPLE"
        return f"arn:aws:iam::{self.account}:role{self.value(props.get('Path', '/'))}{name}"

    def roles(self) -> dict[str, str]:
        """Role name (RoleName, or the logical id when CloudFormation names it) -> logical id."""
        found = {}
        for logical_id, resource in self.resources.items():
            if resource["Type"] == "AWS::IAM::Role" and self.exists(logical_id):
                name = resource["Properties"].get("RoleName")
                found[self.value(name) if name is not None else logical_id] = logical_id
        return found

    def _documents(self, role: str) -> Iterator[tuple[str, Any]]:
        props = self.prune(self.resources[role]["Properties"])
        for policy in props.get("Policies", []):
            yield f"{role} inline {policy.get('PolicyName')}", policy["PolicyDocument"]
        for arn in props.get("ManagedPolicyArns", []):
            if isinstance(arn, dict) and set(arn) == {"Ref"} and arn["Ref"] in self.resources:
                managed = self.resources[arn["Ref"]]
                if managed["Type"] != "AWS::IAM::ManagedPolicy" or not self.exists(arn["Ref"]):
                    raise UnmodelledPolicy(f"{self.name}: {role} lists {arn['Ref']}, not a managed policy it deploys")
                yield arn["Ref"], self.prune(managed["Properties"])["PolicyDocument"]
            elif arn in SERVICE_MANAGED_POLICIES:
                continue
            else:
                raise UnmodelledPolicy(f"{self.name}: {role}'s managed policy {arn!r} is not modelled")
        for logical_id, resource in self.resources.items():
            if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy") and self.exists(logical_id):
                attached = self.prune(resource["Properties"])
                if {"Ref": role} in attached.get("Roles", []):
                    yield logical_id, attached["PolicyDocument"]

    @functools.cache  # noqa: B019 - a Rendered lives as long as its world
    def statements(self, role: str) -> tuple[Statement, ...]:
        """Every Allow statement that reaches the role, resolved; a Deny raises (not modelled)."""
        found: list[Statement] = []
        for _source, document in self._documents(role):
            for statement in _listed(document["Statement"]):
                resolved = self.value(statement)
                if resolved.get("Effect") != "Allow" or "NotAction" in resolved or "NotResource" in resolved:
                    raise UnmodelledPolicy(
                        f"{self.name}: {role}: only Allow statements with Action/Resource are modelled"
                    )
                found.append(resolved)
        return tuple(found)

    def trust(self, role: str) -> list[Statement]:
        return _listed(
            self.value(self.prune(self.resources[role]["Properties"]["AssumeRolePolicyDocument"]))["Statement"]
        )


_NO_VALUE = object()


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# ---------------------------------------------------------------------- the contract in force

HOME_TEMPLATE = ROOT / "template.yaml"
MEMBER_TEMPLATE = ROOT / "member-account.yaml"


@dataclass
class Contract:
    """The deployments of the running test world: account -> its rendered templates (lazily)."""

    deployments: dict[str, list[Callable[[], Rendered]]] = field(default_factory=dict)
    home_account: str = ""
    # Central mode: member-account.yaml as deployed in a member account (rendered on first use).
    member: Callable[[str], Rendered] | None = None

    def deploy(self, account: str, render: Callable[[], Rendered], home: bool = False) -> None:
        self.deployments.setdefault(account, []).append(functools.cache(render))
        if home:
            self.home_account = account

    def home(self) -> Rendered:
        return self.deployments[self.home_account][0]()

    def role_for_arn(self, role_arn: str) -> tuple[Rendered, str]:
        """The role a rendered template defines behind a role ARN (the member role, or any role
        a template of the world defines). Extend here when the templates name roles otherwise."""
        match = re.fullmatch(r"arn:aws[a-z-]*:iam::(\d{12}):role/(?:.*/)?([^/]+)", role_arn)
        if match is None:
            raise ContractViolation(f"{role_arn} is not an IAM role ARN")
        account, name = match.groups()
        if account not in self.deployments and account != self.home_account and self.member is not None:
            member = self.member
            self.deploy(account, lambda: member(account))
        for render in self.deployments.get(account, []):
            rendered = render()
            roles = rendered.roles()
            # a role CloudFormation names itself is <stack>-<logical id>-<suffix>
            generated = re.fullmatch(rf"{re.escape(rendered.pseudo['AWS::StackName'])}-(\w+)-[A-Za-z0-9]+", name)
            logical_id = roles.get(name) or (generated and roles.get(generated.group(1)))
            if logical_id is not None:
                return rendered, logical_id
        raise ContractViolation(f"role {role_arn} is defined by no template deployed in the test world")


_contract: Contract | None = None
_denials: list[str] = []
# (function, role) pairs whose calls were judged: what the suite exercised.
exercised: set[tuple[str, str]] = set()


def deploy(contract: Contract | None) -> None:
    """Put a world's deployments in force (None: the world is gone; calls are no longer judged)."""
    global _contract
    _contract = contract


def current() -> Contract | None:
    return _contract


def take_denials() -> list[str]:
    """The calls refused since the last take, forgotten (the suite's hook fails a test with them)."""
    found = list(_denials)
    _denials.clear()
    return found


# ---------------------------------------------------------------------- resources per action


@dataclass(frozen=True)
class Call:
    action: str
    params: Mapping[str, Any]
    region: str
    account: str  # of the principal


Resources = list[tuple[str, dict[str, str]]]


def _star(_: Call) -> Resources:
    return [("*", {})]


def _parameter_arn(call: Call, name: str) -> str:
    if name.startswith("arn:"):
        return name
    return f"arn:aws:ssm:{call.region}:{call.account}:parameter/{name.lstrip('/')}"


def _table(call: Call) -> Resources:
    arn = f"arn:aws:dynamodb:{call.region}:{call.account}:table/{call.params['TableName']}"
    index = call.params.get("IndexName")
    return [(f"{arn}/index/{index}" if index else arn, {})]


def _queue(call: Call) -> Resources:
    url = call.params["QueueUrl"]
    *_, account, name = url.rstrip("/").split("/")
    return [(f"arn:aws:sqs:{call.region}:{account}:{name}", {})]


def _instance_tags(account: str, region: str, instance_id: str) -> dict[str, str]:
    from moto.ec2.models import ec2_backends

    try:
        instance = ec2_backends[account][region].get_instance(instance_id)
    except Exception:  # noqa: BLE001 - an unknown instance has no tags (SSM refuses it anyway)
        return {}
    return {t["key"]: t["value"] for t in instance.get_tags()}


def _send_command(call: Call) -> Resources:
    """SendCommand is authorized on the document and on each instance; an instance's tags are in
    the context as ssm:resourceTag/<key> (and aws:ResourceTag/<key>)."""
    document = call.params["DocumentName"]
    if not document.startswith("arn:"):
        document = f"arn:aws:ssm:{call.region}:{call.account}:document/{document}"
    found: Resources = [(document, {})]
    for instance_id in call.params["InstanceIds"]:
        tags = _instance_tags(call.account, call.region, instance_id)
        context = {f"ssm:resourceTag/{k}": v for k, v in tags.items()} | {
            f"aws:ResourceTag/{k}": v for k, v in tags.items()
        }
        found.append((f"arn:aws:ec2:{call.region}:{call.account}:instance/{instance_id}", context))
    return found


def _assume_role(call: Call) -> Resources:
    # aws:ResourceOrgID: the organisation of the account owning the role; every account of the
    # test world is in ORGANIZATION (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html).
    return [(call.params["RoleArn"], {"aws:ResourceOrgID": ORGANIZATION})]


def _event_buses(call: Call) -> Resources:
    """PutEvents is authorized on each entry's event bus (its ARN, or its name in the caller's
    account and region; none: the default bus)."""
    found: Resources = []
    for entry in call.params["Entries"]:
        bus = entry.get("EventBusName") or "default"
        arn = bus if bus.startswith("arn:") else f"arn:aws:events:{call.region}:{call.account}:event-bus/{bus}"
        found.append((arn, {}))
    return found


def _secret(call: Call) -> Resources:
    """IAM authorizes a secret by its full ARN (name-<6 random characters>), however it is named."""
    from moto.secretsmanager.models import secretsmanager_backends

    secret = call.params["SecretId"]
    if secret.startswith("arn:"):
        return [(secret, {})]
    found = secretsmanager_backends[call.account][call.region].secrets.get(secret)
    if found is None:
        raise ContractViolation(f"secretsmanager:GetSecretValue of {secret!r}: no such secret to name its ARN")
    return [(found.arn, {})]


# Action -> the resources (and their context) IAM authorizes it on. Get/List/Describe actions
# without resource types take "*". GetParametersByPath is authorized on the path, not on the
# parameters it returns (https://docs.aws.amazon.com/systems-manager/latest/userguide/ps-retrieval-authorization.html).
RESOURCES: dict[str, Callable[[Call], Resources]] = {
    "ssm:GetParametersByPath": lambda c: [(_parameter_arn(c, c.params["Path"]), {})],
    "ssm:GetParameter": lambda c: [(_parameter_arn(c, c.params["Name"]), {})],
    "ssm:SendCommand": _send_command,
    "ssm:DescribeInstanceInformation": _star,
    "ssm:ListCommands": _star,
    "ssm:ListCommandInvocations": _star,
    "ssm:GetCommandInvocation": _star,
    "ec2:DescribeInstances": _star,
    # no resource type (https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsorganizations.html)
    "organizations:ListAccounts": _star,
    "dynamodb:GetItem": _table,
    "dynamodb:PutItem": _table,
    "dynamodb:UpdateItem": _table,
    "dynamodb:DeleteItem": _table,
    "dynamodb:Query": _table,
    "sqs:SendMessage": _queue,
    "sns:Publish": lambda c: [(c.params["TopicArn"], {})],
    "sts:AssumeRole": _assume_role,
    "s3:GetObject": lambda c: [(f"arn:aws:s3:::{c.params['Bucket']}/{c.params['Key']}", {})],
    "secretsmanager:GetSecretValue": _secret,
    "acm-pca:GetCertificateAuthorityCertificate": lambda c: [(c.params["CertificateAuthorityArn"], {})],
    "events:PutEvents": _event_buses,
}


def allowed(statements: tuple[Statement, ...] | list[Statement], call: Call) -> list[str]:
    """The resources of the call no statement allows (empty: IAM allows the request)."""
    if call.action not in RESOURCES:
        raise ContractViolation(
            f"{call.action} has no entry in tests/fakes/iam_contract.py RESOURCES: model its resources and keys"
        )
    refused = []
    for resource, extra in RESOURCES[call.action](call):
        context = {"aws:RequestedRegion": call.region, **extra}
        if not any(statement_allows(s, call.action, resource, context) for s in statements):
            refused.append(resource)
    return refused


def _trusted(rendered: Rendered, role: str, caller_role_arn: str) -> bool:
    """The role's trust policy lets the caller's role assume it (cross-account: both the caller's
    policy and the trust policy must allow it)."""
    account = caller_role_arn.split(":")[4]
    for statement in rendered.trust(role):
        principals = _listed(statement.get("Principal", {}).get("AWS", []))
        if caller_role_arn not in principals and f"arn:aws:iam::{account}:root" not in principals:
            continue
        context = {"aws:PrincipalArn": caller_role_arn, "aws:PrincipalAccount": account}
        conditions = {
            "Effect": "Allow",
            "Action": "sts:AssumeRole",
            "Resource": "*",
            "Condition": statement.get("Condition", {}),
        }
        if statement_allows(conditions, "sts:AssumeRole", "*", context):
            return True
    return False


# ---------------------------------------------------------------------- judging a call


def judge(
    function: str, action: str, params: Mapping[str, Any], region: str, account: str, assumed: str | None
) -> list[str]:
    """Denial messages for one call of `function` (empty: allowed)."""
    contract = _contract
    assert contract is not None
    home = contract.home()
    if assumed:
        rendered, role = contract.role_for_arn(assumed)
        who = f"{function} (as {rendered.name} {role})"
    else:
        rendered, role = home, home.function_role(function)
        who = function
    exercised.add((function, f"{rendered.name}:{role}"))
    call = Call(action, params, region, account)
    denied = [f"{who} is not allowed {action} on {resource}" for resource in allowed(rendered.statements(role), call)]
    if action == "sts:AssumeRole" and not denied:
        target = params["RoleArn"]
        try:
            target_rendered, target_role = contract.role_for_arn(target)
        except ContractViolation as exc:
            return [f"{who} assumes {target}: {exc}"]
        # the caller: the role it assumed, or the function's own role (named by CloudFormation)
        caller_arn = assumed or rendered.role_arn(role)
        if not _trusted(target_rendered, target_role, caller_arn):
            denied.append(f"{target_rendered.name} {target_role}'s trust policy does not let {who} assume it")
    return denied


def _record(
    function: str | None,
    action: str,
    params: Mapping[str, Any],
    region: str,
    account: str,
    assumed: str | None,
    refused: bool | None = None,
) -> None:
    if function is None or _contract is None:
        return
    try:
        denied = judge(function, action, params, region, account, assumed)
    except (ContractViolation, UnmodelledPolicy) as exc:
        denied = [f"{function}: {action}: {exc}"]
    if refused:
        # The fake refused it (its authorizer: the template's own verdict, which test_send_policy.py
        # holds to this evaluator, or a test's forced refusal): the product faced the denial.
        return
    _denials.extend(denied)


# ---------------------------------------------------------------------- attribution


_LIBRARY_PARTS = ("site-packages", "/lib/python3")


@functools.cache
def _ours(filename: str) -> str | None:
    """The file relative to the repository when it is our code (not a library, not this module)."""
    path = Path(filename)
    if not path.is_absolute() or any(part in filename for part in _LIBRARY_PARTS):
        return None
    try:
        relative = path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return None
    if relative == "tests/fakes/iam_contract.py" or relative.startswith(".venv"):
        return None
    return relative


@functools.cache
def _handler_files() -> dict[str, str]:
    """Handler file (relative to the repository) -> function logical id, from CodeUri and Handler."""
    found = {}
    for logical_id, resource in load(HOME_TEMPLATE)["Resources"].items():
        if isinstance(resource, dict) and resource.get("Type") == "AWS::Serverless::Function":
            props = resource["Properties"]
            found[f"{props['CodeUri'].strip('/')}/{props['Handler'].rsplit('.', 1)[0]}.py"] = logical_id
    return found


def attribute(frame: FrameType | None) -> str | None:
    """The function whose code made the call starting at `frame`, or None (test or tool code)."""
    nearest: str | None = None
    handlers = _handler_files()
    while frame is not None:
        relative = _ours(frame.f_code.co_filename)
        if relative is not None:
            if nearest is None:
                nearest = relative
                if relative.startswith("tests/"):
                    return None  # the test world's own hands
            if relative in handlers:
                return handlers[relative]
        frame = frame.f_back
    return None


# ---------------------------------------------------------------------- botocore hooks


def _iam_action(model: Any) -> str:
    service = model.service_model
    prefix = service.signing_name or service.endpoint_prefix
    prefix = IAM_PREFIX.get(prefix, prefix)
    if prefix not in KNOWN_PREFIXES:
        raise ContractViolation(f"IAM prefix of service {service.service_name!r} ({prefix}) is not modelled")
    action = f"{prefix}:{model.name}"
    return ACTION_OF_OPERATION.get(action, action)


def _assumed_role(access_key: str) -> str | None:
    """The role whose AssumeRole credentials these are (moto's STS backend), else None."""
    from moto.iam.models import get_account_id_from
    from moto.sts.models import sts_backends

    account = get_account_id_from(access_key)
    role = sts_backends[account]["aws"].get_assumed_role_from_access_key(access_key)
    return role.role_arn if role is not None else None


def _account_of(access_key: str, assumed: str | None) -> str:
    if assumed:
        return assumed.split(":")[4]
    return _contract.home_account if _contract is not None else ""


def _keep_params(params: Any, model: Any, context: dict[str, Any], **_: Any) -> None:
    context["iam_contract_params"] = dict(params)


def _on_call(model: Any, params: Any, request_signer: Any, context: dict[str, Any], **_: Any) -> None:
    if _contract is None:
        return
    function = attribute(sys._getframe(1))
    if function is None:
        return
    try:
        action = _iam_action(model)
    except ContractViolation as exc:
        _denials.append(f"{function}: {exc}")
        return
    credentials = request_signer._credentials  # noqa: SLF001 - the only place a call's key lives
    access_key = credentials.get_frozen_credentials().access_key if credentials is not None else ""
    assumed = _assumed_role(access_key) if access_key else None
    region = context.get("client_region") or request_signer._region_name  # noqa: SLF001
    _record(function, action, context.get("iam_contract_params", {}), region, _account_of(access_key, assumed), assumed)
    # (returns nothing: a response here would answer the call)


def role_of_client(client: Any) -> str | None:
    """The role whose AssumeRole credentials a botocore client signs with (None: not assumed, or
    no client): a fake handed the product's client judges the call as that role."""
    signer = getattr(client, "_request_signer", None)
    credentials = getattr(signer, "_credentials", None)
    access_key = credentials.get_frozen_credentials().access_key if credentials is not None else ""
    return _assumed_role(access_key) if access_key else None


def record_fake(
    service: str,
    operation: str,
    params: Mapping[str, Any],
    region: str,
    account: str,
    assumed: str | None = None,
    refused: bool | None = None,
) -> None:
    """A fake that is not a botocore client records a call it received (the caller of the fake's
    method decides the attribution). `refused`: the fake refused it as IAM would (its authorizer)."""
    if _contract is None:
        return
    frame = sys._getframe(1)
    fake = frame.f_code.co_filename
    while frame is not None and frame.f_code.co_filename == fake:  # past the fake's own frames
        frame = frame.f_back
    function = attribute(frame)
    _record(function, f"{IAM_PREFIX.get(service, service)}:{operation}", params, region, account, assumed, refused)


_installed = False


def install() -> None:
    """Reach every botocore client the tests create (idempotent)."""
    global _installed
    if _installed:
        return
    import boto3
    from botocore.handlers import BUILTIN_HANDLERS, REGISTER_FIRST

    # 'before-call.*.*' with REGISTER_FIRST: before a Stubber's handler, which answers the call
    specs = [("before-parameter-build", _keep_params), ("before-call.*.*", _on_call, REGISTER_FIRST)]
    BUILTIN_HANDLERS.extend(specs)
    if boto3.DEFAULT_SESSION is not None:
        events = boto3.DEFAULT_SESSION._session.get_component("event_emitter")  # noqa: SLF001
        events.register("before-parameter-build", _keep_params)
        events.register_first("before-call.*.*", _on_call)
    _installed = True
