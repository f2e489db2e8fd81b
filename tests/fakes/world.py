"""A whole deployment on one machine: moto for AWS, the fake Run Command, a controllable clock.

Used by the integration tests and by the local main job (`make demo`). Handlers are the real
ones; only `wiring.home_remediator` is swapped for one built on moto clients and the fakes. The
settings are read as a deployed function reads them: the environment the template gives the
functions is set in os.environ and the stored settings are SSM parameters under SETTINGS_PATH,
so the real `get_settings` runs (its GetParametersByPath is judged by the IAM contract).

The IAM contract (tests/fakes/iam_contract.py) is in force while a world exists: every call a
function's code makes is judged against template.yaml rendered for this world's settings.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from aws_lambda_powertools.utilities import parameters
from eks_ca_remediator import edge, wiring
from eks_ca_remediator.adapters.ec2 import Ec2Reader
from eks_ca_remediator.adapters.notify import Notifier
from eks_ca_remediator.adapters.records import RecordStore
from eks_ca_remediator.adapters.ssm import RunCommand, SendRoles
from eks_ca_remediator.logic.remediation import Remediator
from eks_ca_remediator.models import AgentWaitMessage
from eks_ca_remediator.provisioners import BY_KEY
from eks_ca_remediator.settings import SETTINGS_PATH, STORED_SETTINGS, Settings, get_settings
from eks_ca_remediator.sources import SourceKind
from moto import mock_aws
from ssm_document import load_template

from tests.fakes import iam_contract
from tests.fakes.iam import SendRoleFakes, authorizer
from tests.fakes.iam import home_deployment as home_send_deployment
from tests.fakes.pki import make_cert
from tests.fakes.run_command import FakeClock, FakeRunCommand

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
REGION = "us-east-1"
DOCUMENT = "eks-ca-remediator-RemediateCa"
BUNDLE_PARAMETER = "/eks-ca-remediator/ca-bundle"
# moto's Windows Server AMI (moto/ec2/resources/amis.json.gz: platform "windows"): an instance run
# from it is described with Platform "windows", as EC2 describes Windows instances.
WINDOWS_AMI = "ami-03cf127a"
LINUX_AMI = "ami-12345678"
# Node kinds add_nodes launches (README: node kinds).
NODE_KINDS = ("linux", "bottlerocket", "windows", "auto-mode", "no-agent")
TABLE = "remediation-records"
STACK = "eks-ca-remediator"  # the document is <stack>-RemediateCa, the settings under /<stack>/settings/
SETTINGS = f"/{STACK}/settings/"  # the template's SETTINGS_PATH; the send roles' ARNs are under SETTINGS/send-roles/
QUEUES = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/"
AGENT_WAIT_QUEUE_URL = QUEUES + "agent-wait"
SWEEP_QUEUE_URL = QUEUES + "sweep"
DEAD_LETTER_QUEUE_URL = QUEUES + "dead-letter"


@dataclass
class LambdaContext:
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_name: str = "test-function"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:test-function"
    function_version: str = "$LATEST"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@dataclass
class FakeQueue:
    """The agent-wait queue with SQS delay semantics on the fake clock."""

    clock: FakeClock
    pending: list[tuple[float, str, str]] = field(default_factory=list)
    sent: int = 0
    url: str = AGENT_WAIT_QUEUE_URL  # the queue it stands for (the IAM contract judges its sends)

    def schedule(self, message: AgentWaitMessage, delay_seconds: int) -> None:
        iam_contract.record_fake("sqs", "SendMessage", {"QueueUrl": self.url}, REGION, ACCOUNT)
        assert 0 <= delay_seconds <= 900, "SQS DelaySeconds is 0..900"
        self.sent += 1
        self.pending.append((self.clock() + delay_seconds, str(uuid.uuid4()), message.model_dump_json()))

    def due(self) -> list[dict[str, Any]]:
        """Pop the messages whose delay has passed, shaped as a Lambda SQS event's records."""
        now = self.clock()
        ready = [p for p in self.pending if p[0] <= now]
        self.pending = [p for p in self.pending if p[0] > now]
        return [{"messageId": mid, "body": body, "eventSource": "aws:sqs"} for _, mid, body in ready]


def table_definition() -> dict[str, Any]:
    """The records table exactly as template.yaml defines it (keys, GSI), for moto."""
    props = load_template((ROOT / "template.yaml").read_text())["Resources"]["RecordsTable"]["Properties"]
    return {k: props[k] for k in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode")}


def deployment_parameters(settings: Settings) -> dict[str, Any]:
    """The template parameters of a deployment configured as `settings` are: what decides its IAM
    (enrolled clusters, the CA bundle parameter and the ARNs of every other source, central mode)."""
    arns: dict[str, list[str]] = {}
    for cluster in settings.enrolled_clusters:
        for source in settings.sources_for(cluster):
            if source.kind == SourceKind.SSM:
                arn = source.location if source.location.startswith("arn:") else None
                arn = arn or f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/{source.location.lstrip('/')}"
                arns.setdefault("CaBundleParameterArns", []).append(arn)
            elif source.kind == SourceKind.S3:
                bucket, key = source.bucket_key
                arns.setdefault("CaBundleObjectArns", []).append(f"arn:aws:s3:::{bucket}/{key}")
            elif source.kind == SourceKind.SECRETS_MANAGER:
                arn = source.location if source.location.startswith("arn:") else None
                # by name: the ARN ends in -<6 random characters> (Secrets Manager user guide, IAM)
                arn = arn or f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{source.location}-??????"
                arns.setdefault("CaBundleSecretArns", []).append(arn)
            elif source.kind == SourceKind.ACM_PCA:
                arns.setdefault("CaBundlePrivateCaArns", []).append(source.location)
    parameters: dict[str, Any] = {
        "EnrolledClusters": list(settings.enrolled_clusters),
        "CaBundleParameterName": settings.ca_bundle_parameter.lstrip("/"),
        "CaBundleSources": settings.ca_bundle_sources,
        "CaBundleInline": settings.ca_bundle_inline,
        **{k: sorted(set(v)) for k, v in arns.items()},
    }
    if settings.alarm_topic_arn:
        parameters["AlarmTopicArn"] = settings.alarm_topic_arn
    if settings.central:
        parameters |= {"OrganizationId": iam_contract.ORGANIZATION, "MemberRoleName": settings.member_role_name}
    return parameters


def home_names(settings: Settings) -> iam_contract.Names:
    """What the template's resources are called in the test world (Ref, Fn::GetAtt)."""
    table = iam_contract.Names(
        {"RecordsTable": settings.records_table, "RemediationDocument": settings.document_name},
        {("RecordsTable", "Arn"): f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{settings.records_table}"},
    )
    return iam_contract.merge(
        table,
        iam_contract.queue_names("AgentWaitQueue", settings.agent_wait_queue_url or AGENT_WAIT_QUEUE_URL),
        iam_contract.queue_names("SweepQueue", settings.sweep_queue_url or SWEEP_QUEUE_URL),
        iam_contract.queue_names("DeadLetterQueue", DEAD_LETTER_QUEUE_URL),
    )


# Rendered templates of this process, by what decides them (a template renders once per process,
# whichever worlds and tests ask for it; Rendered is read-only once made).
_RENDERED: dict[str, iam_contract.Rendered] = {}


def _rendered(key: tuple[Any, ...], render: Any) -> iam_contract.Rendered:
    text = json.dumps(key, sort_keys=True, default=repr)
    if text not in _RENDERED:
        _RENDERED[text] = render()
    return _RENDERED[text]


def home_deployment(settings: Settings, template: Path | None = None) -> iam_contract.Rendered:
    """template.yaml (or `template`) rendered as deployed for this world's settings."""
    path = template or ROOT / "template.yaml"
    parameters, names = deployment_parameters(settings), home_names(settings)
    return _rendered(
        ("home", str(path), path.stat().st_mtime_ns, parameters, repr(names)),
        lambda: iam_contract.Rendered(iam_contract.load(path), parameters, ACCOUNT, REGION, names, STACK),
    )


@functools.lru_cache(maxsize=32)
def _home_send_deployment(enrolled: tuple[str, ...], account: str, document: str) -> Any:
    """The send roles' view of template.yaml (tests/fakes/iam.py), once per process per cluster list."""
    return home_send_deployment(list(enrolled), account, document)


def member_deployment(
    settings: Settings, account: str, template: dict[str, Any] | None = None
) -> iam_contract.Rendered:
    """member-account.yaml (or `template`) as a member account of this central world deploys it."""
    parameters = {
        "EnrolledClusters": list(settings.enrolled_clusters),
        "CentralDocumentArn": settings.document_arn,
        "CentralAccountId": ACCOUNT,
        "CentralEventBusArn": f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{STACK}-nodes",
        "MemberRoleName": settings.member_role_name,
    }
    if template is not None:  # a test's own variant: rendered for it alone
        return iam_contract.Rendered(
            template, parameters, account, REGION, iam_contract.Names(), STACK, "member-account.yaml"
        )
    path = iam_contract.MEMBER_TEMPLATE
    return _rendered(
        ("member", str(path), path.stat().st_mtime_ns, parameters, account),
        lambda: iam_contract.Rendered(
            iam_contract.load(path), parameters, account, REGION, iam_contract.Names(), STACK, "member-account.yaml"
        ),
    )


class PerFunctionSettings:
    """`get_settings` as each function's own Lambda environment runs it: the real one, once per
    function (a test runs every function in one process; Lambda gives each its own). Not a swap of
    what it reads: each function's first call reads the environment and GetParametersByPath, so
    the IAM contract judges every function's read. Outside a handler (a test's own calls) the
    cache is one shared entry."""

    def __init__(self) -> None:
        self.cache: dict[str | None, Settings] = {}

    def __call__(self) -> Settings:
        function = iam_contract.attribute(sys._getframe(1))
        if function not in self.cache:
            self.cache[function] = get_settings.__wrapped__()
        return self.cache[function]

    def cache_clear(self) -> None:
        self.cache.clear()
        get_settings.cache_clear()


@contextmanager
def function_environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ as the template sets it for the functions (restored afterwards); the stored
    settings are not in it (they are SSM parameters under SETTINGS_PATH, as deployed)."""
    keys = set(values) | set(STORED_SETTINGS)
    saved = {k: os.environ.get(k) for k in keys}
    for key in STORED_SETTINGS:
        os.environ.pop(key, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def node_output(result: str = "success", restarted: bool = True, reason: str = "", **extra: Any) -> str:
    """stdout as the node script prints it: logs on stderr, one JSON line on stdout."""
    payload = {
        "result": result,
        "reason": reason,
        "os_family": "al2023",
        "strategy_requested": "auto",
        "strategy_used": "auto",
        "restarted": restarted,
        "containerd_before": {"pid": 812, "started_at": 1790000000.5},
        "containerd_after": {"pid": 1904 if restarted else 812, "started_at": 1790000050.1},
        "bundle_changed": True,
        "hosts_toml": {"written": [], "foreign_untouched": []},
        "verification": {"registry.example.internal:443": "ok" if result == "success" else "failed: x509"},
        "canary": "skipped",
        "fingerprint": "0" * 64,
        "dry_run": result == "dry-run",
        "actions": ["installed CA", "restarted containerd"] if restarted else ["installed CA"],
    }
    payload.update(extra)
    return json.dumps(payload) + "\n"


def _pem_blocks(pem: str) -> list[str]:
    return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", pem, re.S)


def _der(pem: str) -> bytes:
    body = "".join(line for line in pem.strip().splitlines() if "-----" not in line)
    return base64.b64decode(body)


@dataclass
class World:
    clock: FakeClock
    ssm: FakeRunCommand
    queue: FakeQueue
    settings: Settings
    remediator: Remediator
    ec2: Any
    table: Any
    ssm_parameters: Any
    ca_pem: str
    send_roles: SendRoleFakes
    # The CA that signed the registry the fake nodes verify against (None: every node succeeds).
    registry_ca: str | None = None
    trust: dict[str, str] = field(default_factory=dict)  # node -> fingerprint of its committed bundle

    # ------------------------------------------------------------------ setup

    @classmethod
    @contextmanager
    def create(cls, ca_pem: str | None = None, template: Path | None = None, **env: str) -> Iterator[World]:
        """A fresh moto account; `ca_pem` is the bundle stored in the SSM parameter (default: a new CA).
        `template`: the home template the IAM contract judges by (default: template.yaml)."""
        with mock_aws():
            parameters.clear_caches()
            parameters.base.DEFAULT_PROVIDERS.clear()
            wiring.reset()
            clock = FakeClock()
            dynamodb = boto3.resource("dynamodb", region_name=REGION)
            table = dynamodb.create_table(TableName=TABLE, **table_definition())
            ssm_parameters = boto3.client("ssm", region_name=REGION)
            ca_pem = ca_pem or make_cert("Example Corp Private Root CA")[0]
            ssm_parameters.put_parameter(Name=BUNDLE_PARAMETER, Value=ca_pem, Type="SecureString")
            values = {
                "RECORDS_TABLE": TABLE,
                "DOCUMENT_NAME": DOCUMENT,
                "ENROLLED_CLUSTERS": "prod-a,prod-b",
                "CA_BUNDLE_PARAMETER": BUNDLE_PARAMETER,
                "AGENT_WAIT_QUEUE_URL": AGENT_WAIT_QUEUE_URL,
                "REGISTRY_HOSTS": "registry.example.internal:443",
                "AGENT_WAIT_DEADLINE_SECONDS": "600",
                "AGENT_RECHECK_SECONDS": "15",
                "AWS_REGION": REGION,  # (Lambda sets it)
                SETTINGS_PATH: SETTINGS,
                **env,
            }
            settings = Settings.from_env(values)  # the world's view; the functions read their own
            for name in STORED_SETTINGS:  # the Settings* parameters of the stack (SSM holds no "")
                if values.get(name):
                    ssm_parameters.put_parameter(
                        Name=SETTINGS + name, Value=values[name], Type="String", Tier="Intelligent-Tiering"
                    )
            environment = {k: v for k, v in values.items() if k not in STORED_SETTINGS}
            fake_ssm = FakeRunCommand(clock=clock, document_name=DOCUMENT)
            # IAM as template.yaml grants it, for the enrolled clusters: the sending functions' own
            # roles may not send (every sending function has the same grant: test_send_policy.py);
            # each cluster's send role, which they assume, may send to that cluster's nodes.
            deployment = _home_send_deployment(tuple(settings.enrolled_clusters), ACCOUNT, DOCUMENT)
            document_arn = f"arn:aws:ssm:{REGION}:{ACCOUNT}:document/{DOCUMENT}"
            iam_ec2 = boto3.client("ec2", region_name=REGION)  # its own client: tests count the product's calls
            fake_ssm.authorize = authorizer(
                deployment.role_statements("OnLaunchFunctionRole", "ssm:SendCommand"),
                document_arn,
                ACCOUNT,
                REGION,
                iam_ec2,
            )
            send_roles = SendRoleFakes(
                deployment, "OnLaunchFunctionRole", fake_ssm, document_arn, ACCOUNT, REGION, iam_ec2
            )
            send_roles.put_parameters(ssm_parameters)
            queue = FakeQueue(clock)
            ec2 = boto3.client("ec2", region_name=REGION)
            remediator = Remediator(
                settings=settings,
                records=RecordStore(table),
                run_command=RunCommand(
                    fake_ssm,
                    DOCUMENT,
                    settings.document_step,
                    SendRoles(ssm_parameters, None, settings.send_roles_path, assume=send_roles.assume),
                ),
                ec2=Ec2Reader(ec2),
                queue=queue,
                clock=clock,
                notifier=Notifier(boto3.client("sns", region_name=REGION), settings.alarm_topic_arn)
                if settings.alarm_topic_arn
                else None,
            )
            world = cls(clock, fake_ssm, queue, settings, remediator, ec2, table, ssm_parameters, ca_pem, send_roles)
            original = wiring.home_remediator
            wiring.home_remediator = lambda: remediator  # the handlers' factory, swapped
            wiring.get_settings = edge.get_settings = PerFunctionSettings()
            contract = iam_contract.Contract()
            contract.deploy(ACCOUNT, lambda: home_deployment(settings, template), home=True)
            if settings.central:
                contract.member = lambda account: member_deployment(settings, account)
            iam_contract.deploy(contract)
            try:
                with function_environment(environment):
                    yield world
            finally:
                iam_contract.deploy(None)
                wiring.home_remediator = original
                wiring.get_settings = edge.get_settings = get_settings
                wiring.reset()
                parameters.clear_caches()

    # ------------------------------------------------------------------ nodes

    def add_nodes(
        self,
        count: int = 1,
        cluster: str = "prod-a",
        tag_style: str = "eks",
        agent_online_after: float | None = 0.0,
        register_agent: bool = True,
        tags: dict[str, str] | None = None,
        kind: str = "linux",
    ) -> list[str]:
        """Launch `count` instances tagged the way a provisioner tags nodes (`tag_style`: its key in
        provisioners.PROVISIONERS), or "none" (a bastion), or with exactly `tags`.

        `kind` (NODE_KINDS), as EC2 and SSM report it: "windows" runs moto's Windows AMI (Platform
        windows, PlatformDetails Windows) and its agent reports PlatformType Windows; "auto-mode" is
        an EC2 managed instance of EKS (Operator managed by eks.amazonaws.com) with no SSM agent;
        "no-agent" has no SSM agent; "bottlerocket" reports PlatformName Bottlerocket."""
        assert kind in NODE_KINDS, kind
        if tags is None:
            tags = {"Name": "bastion"} if tag_style == "none" else BY_KEY[tag_style].tags_for(cluster)
        response = self.ec2.run_instances(
            ImageId=WINDOWS_AMI if kind == "windows" else LINUX_AMI,
            MinCount=count,
            MaxCount=count,
            InstanceType="m6i.large",
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
        )
        ids = [i["InstanceId"] for i in response["Instances"]]
        for instance_id in ids:
            self._describe_as(instance_id, kind)
            if not register_agent or kind in ("auto-mode", "no-agent"):
                continue
            if agent_online_after is None:
                self.ssm.register_never_online(instance_id)
            else:
                platform = {"windows": "Microsoft Windows Server 2022 Datacenter", "bottlerocket": "Bottlerocket"}
                self.ssm.register(
                    instance_id,
                    online_at=self.clock() + agent_online_after,
                    platform=platform.get(kind, "Amazon Linux"),
                    platform_type="Windows" if kind == "windows" else "Linux",
                )
        return ids

    @staticmethod
    def _describe_as(instance_id: str, kind: str) -> None:
        """What moto 5.2.5 does not set on its own: DescribeInstances' PlatformDetails and Operator
        (botocore ec2 model, shape Instance), set on moto's instance so that the product reads them
        through its own DescribeInstances call (moto serialises the snake_case attributes)."""
        from moto.ec2.models import ec2_backends

        instance = ec2_backends[ACCOUNT][REGION].get_instance(instance_id)
        instance.platform_details = "Windows" if kind == "windows" else "Linux/UNIX"
        if kind == "auto-mode":
            instance.operator = {"Managed": True, "Principal": "eks.amazonaws.com"}

    def launch_event(self, instance_id: str, event_id: str | None = None, state: str = "running") -> dict[str, Any]:
        return {
            "version": "0",
            "id": event_id or str(uuid.uuid4()),
            "detail-type": "EC2 Instance State-change Notification",
            "source": "aws.ec2",
            "account": ACCOUNT,
            "time": "2026-11-26T10:00:00Z",
            "region": REGION,
            "resources": [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}"],
            "detail": {"instance-id": instance_id, "state": state},
        }

    # ------------------------------------------------------------------ running the handlers

    def run_agent_wait(self) -> dict[str, Any] | None:
        """Deliver due agent-wait messages to the real AgentWait handler, as SQS would."""
        from agent_wait import handler

        records = self.queue.due()
        if not records:
            return None
        return handler({"Records": records}, LambdaContext())

    def run_for(self, seconds: float, step: float = 1.0) -> None:
        """Let simulated time pass, delivering queue messages as their delays expire."""
        end = self.clock() + seconds
        while self.clock() < end:
            self.clock.advance(step)
            self.run_agent_wait()

    def finish_all(self, status: str = "Success", stdout: str | None = None) -> list[dict[str, Any]]:
        """Every open invocation finishes; SSM's status events go through the real handler. With a
        `registry_ca` set and no `stdout`, each node judges the bundle it was sent (node_verdict)."""
        from on_command_status import handler

        results = []
        for (command_id, instance_id), inv in list(self.ssm.invocations.items()):
            if inv.status in ("Pending", "InProgress"):
                node_status, output = status, stdout if stdout is not None else node_output()
                if stdout is None and self.registry_ca is not None:
                    node_status, output = self.node_verdict(command_id, instance_id)
                event = self.ssm.finish(command_id, instance_id, node_status, output)
                results.append(handler(event, LambdaContext()))
        return results

    def node_verdict(self, command_id: str, instance_id: str) -> tuple[str, str]:
        """What a node does with the bundle a command sent it, as the node script does: a bundle
        without the registry's CA fails verification - rejected before commit (trust unchanged)
        when RegistryHosts names the registry to check it against, committed and then failed
        otherwise. `trust` keeps each node's committed bundle (fingerprint)."""
        command = next(c for c in self.ssm.commands if c["CommandId"] == command_id)
        pem = base64.b64decode(command["Parameters"]["CaBundle"][0]).decode()
        fingerprint = hashlib.sha256(pem.encode()).hexdigest()
        registry_hosts = command["Parameters"].get("RegistryHosts", [""])[0]
        trusted = _der(self.registry_ca or "") in {_der(block) for block in _pem_blocks(pem)}
        if trusted:
            self.trust[instance_id] = fingerprint
            return "Success", node_output(committed=True, bundle_rejected=False, precheck="ok")
        reason = "verification failed: x509: certificate signed by unknown authority"
        if registry_hosts:
            output = node_output("failure", restarted=False, reason=reason, committed=False, bundle_rejected=True)
            return "Failed", output.replace('"bundle_changed": true', '"bundle_changed": false')
        self.trust[instance_id] = fingerprint
        return "Failed", node_output("failure", reason=reason, committed=True, bundle_rejected=False)

    def reconcile(self) -> dict[str, Any]:
        """One pass of the real Reconcile handler, as its schedule starts it (events/ sample)."""
        from reconcile import handler

        event = json.loads((ROOT / "events" / "reconcile-scheduled.json").read_text())
        return handler(event, LambdaContext())

    # ------------------------------------------------------------------ reading records

    def attempts(self, instance_id: str) -> list[dict[str, Any]]:
        return self.table.query(
            KeyConditionExpression="pk = :p AND begins_with(sk, :a)",
            ExpressionAttributeValues={":p": instance_id, ":a": "ATTEMPT#"},
        )["Items"]

    def all_attempts(self) -> list[dict[str, Any]]:
        items = self.table.scan()["Items"]
        return [i for i in items if i["sk"].startswith("ATTEMPT#")]
