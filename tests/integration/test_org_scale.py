"""Org scale (docs/scale.md): a central deployment sweeps every member account of its organisation.

moto multi-account: the central account (the organisation's management account) has a cluster
`prod` of 20 nodes, and so have three member accounts that deployed the member stack; a fourth
member account has no member role. The organisation's accounts come from Organizations
ListAccounts (moto), read by the real sweep handler; each member's Run Command is a fake of its
own, reached through the member role and the member's send role of `prod`, judged by the IAM
contract like every other call.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from eks_ca_remediator import cli, telemetry, wiring
from eks_ca_remediator.adapters import clients
from eks_ca_remediator.errors import MemberAccessDenied
from eks_ca_remediator.logic.plans import current_bundle
from eks_ca_remediator.logic.sweep import Sweeper
from eks_ca_remediator.models import ClusterRef
from on_command_status import handler as status_handler
from sweep import handler as sweep

from tests.fakes import iam_contract
from tests.fakes.iam import SendRoleFakes, authorizer
from tests.fakes.iam import member_deployment as member_send_deployment
from tests.fakes.pki import make_cert
from tests.fakes.run_command import FakeRunCommand
from tests.fakes.world import (
    ACCOUNT,
    BUNDLE_PARAMETER,
    DOCUMENT,
    REGION,
    TABLE,
    FakeQueue,
    LambdaContext,
    World,
    node_output,
)
from tests.integration.test_central_mode import MemberSsm
from tests.integration.test_metrics import emitted

EVENTS = Path(__file__).resolve().parents[2] / "events"
ROLE = "eks-ca-remediator-member"
DOCUMENT_ARN = f"arn:aws:ssm:{REGION}:{ACCOUNT}:document/{DOCUMENT}"
NODES = 20
ENV = {
    "MEMBER_ROLE_NAME": ROLE,
    "DOCUMENT_ARN": DOCUMENT_ARN,
    "ENROLLED_CLUSTERS": "prod",
    "SWEEP_QUEUE_URL": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/sweep",
    "ROLLOUT_WAVES": "100%",  # one wave: this is about reaching every account (test_rollouts.py: waves)
}


@dataclass
class Member:
    account: str
    ssm: FakeRunCommand
    send_roles: SendRoleFakes
    nodes: list[str] = field(default_factory=list)


@dataclass
class Org:
    world: World
    queue: FakeQueue
    members: dict[str, Member]  # the accounts with the member stack
    roleless: list[str]  # accounts of the organisation without it
    home_nodes: list[str]
    assumed: list[str] = field(default_factory=list)

    def run_commands(self) -> dict[str, FakeRunCommand]:
        """Each account's Run Command: ours first, then the members'."""
        return {ACCOUNT: self.world.ssm} | {a: m.ssm for a, m in self.members.items()}

    def trigger(self, name: str) -> dict[str, Any]:
        now = datetime.fromtimestamp(self.world.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return sweep(json.loads((EVENTS / name).read_text()) | {"time": now}, LambdaContext())

    def drain(self) -> list[dict[str, Any]]:
        """Deliver the due sweep jobs, one per invocation (BatchSize 1), until none is due."""
        ran: list[dict[str, Any]] = []
        for _ in range(20):
            due = self.queue.due()
            if not due:
                return ran
            ran += [sweep({"Records": [record]}, LambdaContext()) for record in due]
        raise AssertionError("sweep did not settle")

    def finish(self, failing: str | None = None) -> None:
        """Every open invocation finishes (those of account `failing`: Failed); each status event
        goes through the real handler, as EventBridge delivers it to the central bus."""
        self.world.finish_all("Success")
        for account, member in self.members.items():
            for (command_id, node), inv in list(member.ssm.invocations.items()):
                if inv.status not in ("Pending", "InProgress"):
                    continue
                if account == failing:
                    reason = "verification failed: x509: certificate signed by unknown authority"
                    event = member.ssm.finish(command_id, node, "Failed", node_output("failure", reason=reason))
                else:
                    event = member.ssm.finish(command_id, node, "Success", node_output())
                status_handler(event, LambdaContext())

    def rotate(self, common_name: str) -> str:
        world = self.world
        ca, _ = make_cert(common_name)
        world.ssm_parameters.put_parameter(Name=BUNDLE_PARAMETER, Value=ca, Type="SecureString", Overwrite=True)
        world.clock.advance(world.settings.bundle_cache_seconds + 1)
        return current_bundle(world.settings, "prod", world.clock()).fingerprint


def _organisation(accounts: int) -> list[str]:
    """An organisation whose management account is ours, with `accounts` member accounts (moto)."""
    organizations = boto3.client("organizations", region_name=REGION)
    organizations.create_organization(FeatureSet="ALL")
    created = []
    for index in range(accounts):
        status = organizations.create_account(Email=f"member{index}@example.com", AccountName=f"member-{index}")
        created.append(status["CreateAccountStatus"]["AccountId"])
    return created


def _member(world: World, account: str) -> Member:
    """A member account with the member stack enrolling `prod`, and its 20 `prod` nodes."""
    role_arn = f"arn:aws:iam::{account}:role/{ROLE}"
    run_command = FakeRunCommand(clock=world.clock, document_name=DOCUMENT_ARN, account=account)
    run_command.role_arn = role_arn  # reached through the member role
    setup = clients.assume_member(role_arn, account)  # the test's own hands
    deployment = member_send_deployment(["prod"], account, DOCUMENT_ARN)
    own = deployment.role_statements("MemberRole", "ssm:SendCommand")
    run_command.authorize = authorizer(own, DOCUMENT_ARN, account, REGION, setup.ec2)
    send_roles = SendRoleFakes(deployment, "MemberRole", run_command, DOCUMENT_ARN, account, REGION, setup.ec2)
    send_roles.put_parameters(setup.ssm)
    launched = setup.ec2.run_instances(
        ImageId="ami-12345678",
        MinCount=NODES,
        MaxCount=NODES,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "eks:cluster-name", "Value": "prod"}]}],
    )
    nodes = sorted(i["InstanceId"] for i in launched["Instances"])
    for node in nodes:
        run_command.register(node)
    return Member(account, run_command, send_roles, nodes)


@contextmanager
def organisation(members: int = 3, roleless: int = 1) -> Iterator[Org]:
    with World.create(**ENV) as world:
        accounts = _organisation(members + roleless)
        with_role = {account: _member(world, account) for account in accounts[:members]}
        home_nodes = sorted(world.add_nodes(NODES, cluster="prod"))
        queue = FakeQueue(world.clock, url=ENV["SWEEP_QUEUE_URL"])
        org = Org(world, queue, with_role, accounts[members:], home_nodes)

        def member_session(role_arn: str, account: str) -> clients.MemberSession:
            org.assumed.append(account)
            if account not in with_role:  # no member stack: no role to assume
                raise MemberAccessDenied(f"cannot assume {role_arn} in account {account}: AccessDenied")
            real = clients.assume_member(role_arn, account)
            ssm = MemberSsm(with_role[account].ssm, real.ssm)
            return clients.MemberSession(account, real.ec2, ssm, real.expires_at, real.sts)

        def assumed_ssm(sts: Any, role_arn: str) -> tuple[Any, float]:
            return with_role[role_arn.split(":")[4]].send_roles.assume(sts, role_arn)

        sweeper = Sweeper(world.remediator, queue, wiring.remediator, wiring.member_accounts)
        world.remediator.sweep_queue = queue  # results queue a rollout's next pass
        original = wiring.member_session, clients.assumed_ssm, wiring.sweeper
        wiring.member_session, clients.assumed_ssm = member_session, assumed_ssm
        wiring.sweeper = lambda: sweeper
        try:
            yield org
        finally:
            wiring.member_session, clients.assumed_ssm, wiring.sweeper = original


def sends_per_node(org: Org) -> Counter[str]:
    return Counter(
        node for rc in org.run_commands().values() for command in rc.commands for node in command["InstanceIds"]
    )


def figures(org: Org) -> dict[str, dict[str, int]]:
    """Per account: SendCommand calls, and nodes reached (the figures of the report)."""
    return {
        account: {"send_command_calls": len(rc.commands), "nodes_reached": len({n for c in rc.sent_to() for n in c})}
        for account, rc in org.run_commands().items()
    }


def status_json(org: Org, *accounts: str) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    argv = ["status", "--table", TABLE, "--region", REGION, "--json"]
    argv += [arg for account in accounts for arg in ("--account", account)]
    code = cli.main(argv + ["--cluster", "prod"], out=out, err=err, clock=org.world.clock)
    assert code == 0, err.getvalue()
    return json.loads(out.getvalue())


# ---------------------------------------------------------------- the sweep reaches every member


def test_a_rotation_sweep_reaches_every_enrolled_node_of_every_member_account_once(capsys, caplog):
    iam_contract.exercised.clear()
    with organisation() as org:
        org.rotate("Rotated Root")
        capsys.readouterr()
        started = org.trigger("sweep-parameter-changed.json")
        out = capsys.readouterr().out
        unreachable = emitted(out).get(telemetry.SWEEP_ACCOUNTS_UNREACHABLE)
        assert "member account unreachable: not swept" in caplog.text
        assert started["clusters"] == ["prod"]
        assert started["member_accounts"] == sorted(org.members)
        assert started["accounts_unreachable"] == org.roleless, "reported, and the others swept"
        assert unreachable == [1.0]

        results = org.drain()
        swept = {(r.get("account"), r["cluster"]): r for r in results if r.get("started")}
        assert set(swept) == {(None, "prod")} | {(a, "prod") for a in org.members}
        sent = sends_per_node(org)
        every_node = org.home_nodes + [n for m in org.members.values() for n in m.nodes]
        assert len(every_node) == 80
        assert sent == Counter(every_node), "each of the 80 nodes sent exactly once"
        report = figures(org)
        print("\nSendCommand calls and nodes reached per account:", json.dumps(report, indent=1))
        assert all(f == {"send_command_calls": 1, "nodes_reached": NODES} for f in report.values())
        for member in org.members.values():  # sent by the member's send role of prod, by the shared document's ARN
            assert {c["DocumentName"] for c in member.ssm.commands} == {DOCUMENT_ARN}
            assert len(member.send_roles.assumed) == 1

        org.finish()
        # each attempt names its account, region and cluster; the by-cluster key tells accounts apart
        for account, member in org.members.items():
            [attempt] = org.world.attempts(member.nodes[0])
            assert (attempt["account"], attempt["region"], attempt["cluster_name"]) == (account, REGION, "prod")
            assert (attempt["cluster"], attempt["status"]) == (f"{account}/prod", "SUCCEEDED")
        [home] = org.world.attempts(org.home_nodes[0])
        assert (home["cluster"], home["status"], "account" in home) == ("prod", "SUCCEEDED", False)
    # the sweep lists the organisation and acts through the member role and its send role
    assert ("SweepFunction", "template.yaml:SweepFunctionRole") in iam_contract.exercised
    assert ("SweepFunction", "member-account.yaml:MemberRole") in iam_contract.exercised
    assert ("SweepFunction", "member-account.yaml:SendRoleprod") in iam_contract.exercised


def test_failures_in_one_member_account_open_that_accounts_breaker_only():
    with organisation() as org:
        failing = sorted(org.members)[1]
        org.rotate("Rotated Root")
        org.trigger("sweep-parameter-changed.json")
        org.drain()
        org.finish(failing=failing)
        org.world.clock.advance(60)  # the results queued each rollout's next pass: it completes them
        org.drain()
        records = org.world.remediator.records
        now = org.world.clock()
        breakers = {a: records.breaker(ClusterRef("prod", a)) or {} for a in [None, *sorted(org.members)]}
        opened = sorted(str(a) for a, b in breakers.items() if float(b.get("open_until", 0)) > now)
        assert opened == [failing], "the member's prod breaker opened; the three other prod breakers stay closed"
        assert breakers[failing]["failures"] >= org.world.settings.breaker_failure_threshold
        assert all(b["failures"] == 0 for a, b in breakers.items() if a != failing)
        # its rollout halted; the others' completed (a good bundle each)
        assert records.good_bundle(ClusterRef("prod", failing)) is None
        assert all(records.good_bundle(ClusterRef("prod", a)) for a in [None, *org.members] if a != failing)

        # status: four `prod` clusters, apart, each with its account
        shown = status_json(org, *sorted(org.members))["clusters"]
        rows = {(c["account"], c["name"]): c for c in shown}
        assert sorted(rows) == sorted([("", "prod")] + [(a, "prod") for a in org.members])
        assert [c["cluster"] for c in shown] == ["prod"] + [f"{a}/prod" for a in sorted(org.members)]
        assert {a: c["breaker"] for (a, _), c in rows.items()} == {
            "": "closed",
            **{a: "OPEN" if a == failing else "closed" for a in org.members},
        }
        assert all(c["nodes"] == NODES for c in shown)
        text = io.StringIO()
        argv = ["status", "--table", TABLE, "--region", REGION, "--cluster", "prod"]
        assert cli.main(argv + ["--account", failing], out=text, clock=org.world.clock) == 0
        assert f"{failing}/prod" in text.getvalue()


def test_a_new_sweep_skips_the_open_breaker_of_one_account_and_sweeps_the_others():
    with organisation(members=2, roleless=0) as org:
        failing, fine = sorted(org.members)
        org.rotate("First Root")
        org.trigger("sweep-parameter-changed.json")
        org.drain()
        org.finish(failing=failing)
        before = sends_per_node(org)
        org.rotate("Second Root")
        org.trigger("sweep-parameter-changed.json")
        results = org.drain()
        paused = {r.get("account") for r in results if r["action"] == "paused"}
        assert paused == {failing}
        again = sends_per_node(org) - before
        assert set(again) == set(org.home_nodes) | set(org.members[fine].nodes)


def test_when_the_organisation_cannot_be_listed_the_deployments_own_account_is_still_swept(capsys, caplog):
    with organisation(members=1, roleless=0) as org:
        with Stubber(clients.client("organizations")) as stub:
            stub.add_client_error("list_accounts", "AccessDeniedException", "not the management account")
            capsys.readouterr()
            started = org.trigger("sweep-scheduled.json")
            out = capsys.readouterr().out
        assert started["account_listing_error"] == "organizations:ListAccounts failed: AccessDeniedException"
        assert "member_accounts" not in started
        assert emitted(out)[telemetry.SWEEP_ACCOUNT_LISTING_FAILED] == [1.0]
        assert "cannot list the organisation's accounts: only this account is swept" in caplog.text
        org.drain()
        assert sends_per_node(org) == Counter(org.home_nodes)


def test_a_member_stack_that_does_not_enroll_the_cluster_is_not_swept_for_it():
    with organisation(members=1, roleless=0) as org:
        [member] = org.members.values()
        setup = clients.assume_member(f"arn:aws:iam::{member.account}:role/{ROLE}", member.account)
        setup.ssm.delete_parameter(Name=f"/{ROLE}/send-roles/prod")  # its EnrolledClusters lacks prod
        org.trigger("sweep-scheduled.json")
        results = org.drain()
        assert [r["action"] for r in results if r.get("account") == member.account] == ["not-enrolled"]
        assert member.ssm.commands == []
        assert sends_per_node(org) == Counter(org.home_nodes)


# ---------------------------------------------------------------- records of the previous version


def test_records_keyed_by_bare_cluster_name_stay_the_deployments_own():
    """Records written before member accounts were swept (cluster items `CLUSTER#prod`, attempts
    `cluster` = "prod", no cluster_name): read as the deployment's own `prod` - no migration."""
    with organisation(members=1, roleless=0) as org:
        world = org.world
        now = world.clock()
        old = org.home_nodes[0]
        world.table.put_item(
            Item={
                "pk": "CLUSTER#prod",
                "sk": "BREAKER",
                "failures": 5,
                "open_until": int(now + 600),
                "cluster_name": "prod",
            }
        )
        world.table.put_item(
            Item={
                "pk": old,
                "sk": "ATTEMPT#2026-11-01T10:00:00.000000Z#sweep#old",
                "instance_id": old,
                "cluster": "prod",
                "trigger": "sweep",
                "trigger_key": "old",
                "status": "FAILED",
                "fingerprint": "0" * 64,
                "created_at": "2026-11-01T10:00:00.000000Z",
                "updated_at": "2026-11-01T10:00:10.000000Z",
            }
        )
        [member] = org.members.values()
        shown = {c["cluster"]: c for c in status_json(org, member.account)["clusters"]}
        assert (shown["prod"]["breaker"], shown["prod"]["nodes"]) == ("OPEN", 1), "the old records are ours"
        assert shown[f"{member.account}/prod"]["breaker"] == "closed"
        # the breaker carries over: the deployment's own prod is paused, the member's prod is swept
        org.trigger("sweep-scheduled.json")
        results = org.drain()
        assert {r.get("account") for r in results if r["action"] == "paused"} == {None}
        assert sends_per_node(org) == Counter(member.nodes)


@pytest.mark.parametrize("key", ["prod", "123456789012/prod"])
def test_a_cluster_key_names_its_account(key: str):
    ref = ClusterRef.of_key(key, REGION)
    assert (ref.key, ref.region) == (key, REGION)


@pytest.mark.parametrize("key", ["12/prod", "123456789012/", "a/b/c", ""])
def test_a_malformed_cluster_key_is_refused_clearly(key: str):
    with pytest.raises(ValueError, match="give a cluster name or <account>/<name>"):
        ClusterRef.of_key(key)
