"""A whole deployment on one machine: moto for AWS, the fake Run Command, a controllable clock.

Used by the integration tests and by the local main job (`make demo`). Handlers are the real
ones; only `wiring.remediator` is swapped for one built on moto clients and the fakes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
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
from eks_ca_remediator.adapters.records import RecordStore
from eks_ca_remediator.adapters.ssm import RunCommand, SendRoles
from eks_ca_remediator.logic.remediation import Remediator
from eks_ca_remediator.models import AgentWaitMessage
from eks_ca_remediator.provisioners import BY_KEY
from eks_ca_remediator.settings import Settings, get_settings
from moto import mock_aws
from ssm_document import load_template

from tests.fakes.iam import SendRoleFakes, authorizer, home_deployment
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
SETTINGS_PATH = "/eks-ca-remediator/settings/"  # the template's, for the stack eks-ca-remediator


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

    def schedule(self, message: AgentWaitMessage, delay_seconds: int) -> None:
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
    def create(cls, ca_pem: str | None = None, **env: str) -> Iterator[World]:
        """A fresh moto account; `ca_pem` is the bundle stored in the SSM parameter (default: a new CA)."""
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
            settings = Settings.from_env(
                {
                    "RECORDS_TABLE": TABLE,
                    "DOCUMENT_NAME": DOCUMENT,
                    "ENROLLED_CLUSTERS": "prod-a,prod-b",
                    "CA_BUNDLE_PARAMETER": BUNDLE_PARAMETER,
                    "AGENT_WAIT_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/agent-wait",
                    "REGISTRY_HOSTS": "registry.example.internal:443",
                    "AGENT_WAIT_DEADLINE_SECONDS": "600",
                    "SETTINGS_PATH": SETTINGS_PATH,
                    "AGENT_RECHECK_SECONDS": "15",
                    **env,
                }
            )
            fake_ssm = FakeRunCommand(clock=clock, document_name=DOCUMENT)
            # IAM as template.yaml grants it, for the enrolled clusters: the sending functions' own
            # roles may not send (every sending function has the same grant: test_send_policy.py);
            # each cluster's send role, which they assume, may send to that cluster's nodes.
            deployment = home_deployment(list(settings.enrolled_clusters), ACCOUNT, DOCUMENT)
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
            )
            world = cls(clock, fake_ssm, queue, settings, remediator, ec2, table, ssm_parameters, ca_pem, send_roles)
            original = wiring.home_remediator
            wiring.home_remediator = lambda: remediator  # the handlers' factory, swapped
            wiring.get_settings = lambda: settings  # (reset() clears the real one's cache)
            edge.get_settings = wiring.get_settings
            try:
                yield world
            finally:
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
