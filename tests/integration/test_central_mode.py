"""Central mode (docs/scale.md): one deployment acts on nodes of member accounts through their role.

moto models the accounts: AssumeRole returns credentials that moto maps to the role's account, so
the member's EC2 is a different EC2 from ours. Run Command in each account is a FakeRunCommand of
its own; the member's accepts only our document's ARN (the shared document), as SSM would.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from agent_wait import handler as agent_wait_handler
from botocore.stub import Stubber
from eks_ca_remediator import wiring
from eks_ca_remediator.adapters import clients
from eks_ca_remediator.errors import ConfigurationError, InvalidRequest, MemberAccessDenied
from eks_ca_remediator.settings import Settings
from on_command_status import handler as status_handler
from on_launch import handler as launch_handler
from remediate import handler as remediate_handler

from tests.fakes import iam_contract
from tests.fakes.iam import SendRoleFakes, authorizer
from tests.fakes.iam import member_deployment as member_send_deployment
from tests.fakes.run_command import FakeRunCommand
from tests.fakes.world import ACCOUNT, DOCUMENT, REGION, LambdaContext, World, member_deployment, node_output

MEMBER = "111111111111"
ROLE = "eks-ca-remediator-member"
DOCUMENT_ARN = f"arn:aws:ssm:{REGION}:{ACCOUNT}:document/{DOCUMENT}"
CENTRAL = {"MEMBER_ROLE_NAME": ROLE, "DOCUMENT_ARN": DOCUMENT_ARN}


@dataclass
class Member:
    ssm: FakeRunCommand
    ec2: object
    assumed: list[str]
    send_roles: SendRoleFakes


@dataclass
class MemberSsm:
    """SSM in the member account: Run Command is the member's fake, Parameter Store moto's."""

    run_command: FakeRunCommand
    parameters: object

    def get_parameter(self, **kwargs: object) -> dict:
        return self.parameters.get_parameter(**kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self.run_command, name)


@contextmanager
def central_world(**env: str) -> Iterator[tuple[World, Member]]:
    """A central deployment and one member account; member clients come from a real AssumeRole
    (moto), except Run Command, which is the member's fake."""
    with World.create(**CENTRAL, **env) as world:
        member_ssm = FakeRunCommand(clock=world.clock, document_name=DOCUMENT_ARN, account=MEMBER)
        member_ssm.role_arn = f"arn:aws:iam::{MEMBER}:role/{ROLE}"  # reached through the member role
        assumed: list[str] = []
        setup = clients.assume_member(f"arn:aws:iam::{MEMBER}:role/{ROLE}", MEMBER)  # the test's own hands
        # IAM as member-account.yaml grants it, for the same enrolled clusters: the member role may
        # not send; each cluster's send role, which the member role assumes, may.
        enrolled = list(world.settings.enrolled_clusters)
        deployment = member_send_deployment(enrolled, MEMBER, DOCUMENT_ARN)
        own = deployment.role_statements("MemberRole", "ssm:SendCommand")
        member_ssm.authorize = authorizer(own, DOCUMENT_ARN, MEMBER, REGION, setup.ec2)
        send_roles = SendRoleFakes(deployment, "MemberRole", member_ssm, DOCUMENT_ARN, MEMBER, REGION, setup.ec2)
        send_roles.put_parameters(setup.ssm)

        def member_session(role_arn: str, account: str) -> clients.MemberSession:
            assumed.append(role_arn)
            real = clients.assume_member(role_arn, account)
            return clients.MemberSession(account, real.ec2, MemberSsm(member_ssm, real.ssm), real.expires_at, real.sts)

        original = wiring.member_session, clients.assumed_ssm
        wiring.member_session = member_session
        clients.assumed_ssm = send_roles.assume
        try:
            yield world, Member(member_ssm, setup.ec2, assumed, send_roles)
        finally:
            wiring.member_session, clients.assumed_ssm = original


def add_member_node(world: World, member: Member, cluster: str = "prod-a", online_after: float = 0.0) -> str:
    response = member.ec2.run_instances(
        ImageId="ami-12345678",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "eks:cluster-name", "Value": cluster}]}],
    )
    instance_id = response["Instances"][0]["InstanceId"]
    member.ssm.register(instance_id, online_at=world.clock() + online_after)
    return instance_id


def member_launch(world: World, instance_id: str, account: str = MEMBER, region: str = REGION) -> dict:
    event = world.launch_event(instance_id)
    event.update(account=account, region=region)
    return event


def test_a_member_node_is_remediated_through_the_member_role_and_recorded_centrally():
    with central_world() as (world, member):
        node = add_member_node(world, member, online_after=35)
        assert world.ec2.describe_instances()["Reservations"] == []  # not a node of ours

        result = launch_handler(member_launch(world, node), LambdaContext())
        assert result["action"] == "remediating"
        [attempt] = world.attempts(node)
        assert (attempt["status"], attempt["account"]) == ("PENDING_AGENT", MEMBER)

        world.run_for(60)  # the agent comes Online at 35 s; the re-check finds it
        assert member.ssm.sent_to() == [[node]]
        assert world.ssm.commands == []
        assert member.ssm.commands[0]["DocumentName"] == DOCUMENT_ARN
        assert member.assumed == [f"arn:aws:iam::{MEMBER}:role/{ROLE}"]  # one AssumeRole, reused
        # and from the member role, the send role of the node's cluster (member-account.yaml)
        assert [a.split("/")[-1] for a in member.send_roles.assumed] == ["eks-ca-remediator-SendRoleproda-FAKE0123"]

        [(command_id, _)] = member.ssm.invocations
        event = member.ssm.finish(command_id, node, "Success", node_output(restarted=True))
        assert (event["account"], event["detail"]["document-name"]) == (MEMBER, DOCUMENT_ARN)
        assert status_handler(event, LambdaContext())["action"] == "recorded"
        [attempt] = world.attempts(node)
        assert (attempt["status"], attempt["account"], attempt["command_id"]) == ("SUCCEEDED", MEMBER, command_id)
        assert attempt["restarted"] is True


def test_calls_through_the_member_role_are_judged_against_member_account_yaml():
    iam_contract.exercised.clear()
    with central_world() as (world, member):
        node = add_member_node(world, member)
        assert launch_handler(member_launch(world, node), LambdaContext())["action"] == "remediating"
        [(command_id, _)] = member.ssm.invocations
        status_handler(member.ssm.finish(command_id, node, "Success", node_output()), LambdaContext())
    # AssumeRole by the function's own role (and the member role's trust policy); the rest as the member
    assert ("OnLaunchFunction", "template.yaml:OnLaunchFunctionRole") in iam_contract.exercised
    assert ("OnLaunchFunction", "member-account.yaml:MemberRole") in iam_contract.exercised
    assert ("OnCommandStatusFunction", "member-account.yaml:MemberRole") in iam_contract.exercised
    # function -> MemberRole -> the member's send role of the cluster: SendCommand as the send role
    assert ("OnLaunchFunction", "member-account.yaml:SendRoleproda") in iam_contract.exercised


def test_a_member_role_that_cannot_describe_instances_fails_the_iam_contract():
    template = iam_contract.load(iam_contract.MEMBER_TEMPLATE)
    [policy] = template["Resources"]["MemberRole"]["Properties"]["Policies"]
    policy["PolicyDocument"]["Statement"][0]["Action"].remove("ec2:DescribeInstances")
    with central_world() as (world, member):
        iam_contract.current().member = lambda account: member_deployment(world.settings, account, template)
        launch_handler(member_launch(world, add_member_node(world, member)), LambdaContext())
        denied = iam_contract.take_denials()
    assert "OnLaunchFunction (as member-account.yaml MemberRole) is not allowed ec2:DescribeInstances on *" in denied


def test_agent_wait_messages_of_several_accounts_each_go_to_their_account():
    with central_world() as (world, member):
        theirs = add_member_node(world, member, online_after=20)
        [ours] = world.add_nodes(agent_online_after=20)
        launch_handler(member_launch(world, theirs), LambdaContext())
        launch_handler(world.launch_event(ours), LambdaContext())
        world.clock.advance(30)
        records = world.queue.due()
        assert len(records) == 2  # one batch, both accounts
        assert agent_wait_handler({"Records": records}, LambdaContext()) == {"batchItemFailures": []}
        assert member.ssm.sent_to() == [[theirs]]
        assert world.ssm.sent_to() == [[ours]]
        assert "account" not in world.attempts(ours)[0]


def test_manual_invoke_names_the_member_account_of_a_cluster():
    with central_world() as (world, member):
        nodes = sorted(add_member_node(world, member) for _ in range(3))
        request = {"cluster": "prod-a", "account": MEMBER, "region": REGION, "reason": "rotated CA"}
        result = remediate_handler(request, LambdaContext())
        assert result["count"] == 3
        assert sorted(member.ssm.sent_to()[0]) == nodes
        assert world.ssm.commands == []


def test_a_role_that_cannot_be_assumed_raises_so_the_event_is_retried_then_dead_lettered():
    with World.create(**CENTRAL) as world:
        sts = clients.client("sts")
        with Stubber(sts) as stub:
            stub.add_client_error("assume_role", "AccessDenied", "not authorized to perform sts:AssumeRole")
            with pytest.raises(MemberAccessDenied, match=f"role/{ROLE} in account {MEMBER}: AccessDenied"):
                launch_handler(member_launch(world, "i-0123456789abcdef0"), LambdaContext())
        assert world.all_attempts() == []


def test_member_credentials_are_reused_until_shortly_before_they_expire():
    with World.create(**CENTRAL):
        sessions: list[float] = []

        def member_session(role_arn: str, account: str) -> clients.MemberSession:
            expires = time.time() + (3600 if not sessions else 600)  # the second one is nearly spent
            sessions.append(expires)
            return clients.MemberSession(account, object(), object(), expires)

        original = wiring.member_session
        wiring.member_session = member_session
        try:
            first = wiring.remediator(MEMBER)
            assert wiring.remediator(MEMBER) is first
            assert len(sessions) == 1
            wiring._members[MEMBER] = (time.time() + 600, first)  # less than an invocation's worth left
            second = wiring.remediator(MEMBER)
            assert second is not first
            assert len(sessions) == 2
            assert wiring.remediator(None) is wiring.remediator(ACCOUNT)  # our own account: our clients
            assert wiring.remediator(None).account is None
            assert second.account == MEMBER
        finally:
            wiring.member_session = original


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"account": MEMBER, "region": "eu-west-1"}, "region 'eu-west-1'"),
        ({"account": "22222222222"}, "account"),
    ],
)
def test_central_mode_still_refuses_another_region_and_malformed_accounts(change, why):
    with central_world() as (world, member):
        node = add_member_node(world, member)
        event = member_launch(world, node) | change
        with pytest.raises(InvalidRequest, match=why):
            launch_handler(event, LambdaContext())
        assert member.ssm.commands == []
        assert world.all_attempts() == []


def test_central_mode_refuses_sqs_records_from_another_accounts_queue():
    with central_world() as (world, _):
        record = {
            "messageId": str(uuid.uuid4()),
            "body": "{}",
            "eventSource": "aws:sqs",
            "eventSourceARN": f"arn:aws:sqs:{REGION}:{MEMBER}:agent-wait",
        }
        with pytest.raises(InvalidRequest, match="Records.0: comes from account '111111111111'"):
            agent_wait_handler({"Records": [record]}, LambdaContext())


def test_single_account_mode_refuses_a_member_accounts_event():
    with World.create() as world:
        [node] = world.add_nodes()
        with pytest.raises(InvalidRequest, match="not this deployment's"):
            launch_handler(member_launch(world, node), LambdaContext())
        assert world.ssm.commands == []
        assert world.all_attempts() == []


BASE = {
    "RECORDS_TABLE": "records",
    "DOCUMENT_NAME": DOCUMENT,
    "ENROLLED_CLUSTERS": "prod-a",
    "CA_BUNDLE_PARAMETER": "/ca",
}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MEMBER_ROLE_NAME": ROLE}, "DOCUMENT_ARN is not"),
        ({**CENTRAL, "DOCUMENT_ARN": "arn:aws:ssm:us-east-1:123456789012:document/other-doc"}, "not DOCUMENT_NAME"),
        ({**CENTRAL, "DOCUMENT_ARN": "eks-ca-remediator-RemediateCa"}, "not an SSM document ARN"),
        ({**CENTRAL, "MEMBER_ROLE_NAME": "bad role/name"}, "not an IAM role name"),
    ],
)
def test_central_settings_are_checked_when_the_function_starts(env, message):
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(BASE | env)


def test_central_settings_name_the_member_role_in_the_documents_partition():
    settings = Settings.from_env(BASE | CENTRAL)
    assert settings.central
    assert settings.home_account == ACCOUNT
    assert settings.member_role_arn(MEMBER) == f"arn:aws:iam::{MEMBER}:role/{ROLE}"
    assert settings.is_member(MEMBER)
    assert not settings.is_member(ACCOUNT)
    assert not settings.is_member(None)
    gov = Settings.from_env(BASE | CENTRAL | {"DOCUMENT_ARN": DOCUMENT_ARN.replace("arn:aws:", "arn:aws-us-gov:")})
    assert gov.member_role_arn(MEMBER).startswith("arn:aws-us-gov:iam::")
    single = Settings.from_env(BASE)
    assert not single.central
    assert not single.is_member(MEMBER)
    with pytest.raises(ConfigurationError, match="not central"):
        single.member_role_arn(MEMBER)


def test_assume_member_returns_clients_that_act_in_the_member_account():
    with World.create(**CENTRAL):
        session = clients.assume_member(f"arn:aws:iam::{MEMBER}:role/{ROLE}", MEMBER)
        assert session.account == MEMBER
        assert session.expires_at > time.time() + 3000
        session.ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)
        assert len(session.ec2.describe_instances()["Reservations"]) == 1
        assert boto3.client("ec2", region_name=REGION).describe_instances()["Reservations"] == []


def test_member_launch_sample_event():
    sample = json.loads((Path(__file__).resolve().parents[2] / "events/ec2-instance-running-member.json").read_text())
    with central_world() as (world, member):
        node = add_member_node(world, member)
        event = json.loads(json.dumps(sample).replace("i-0a1b2c3d4e5f60789", node))
        assert event["account"] == MEMBER
        assert launch_handler(event, LambdaContext())["action"] == "remediating"
        assert member.ssm.sent_to() == [[node]]
        [attempt] = world.attempts(node)
        assert attempt["account"] == MEMBER
