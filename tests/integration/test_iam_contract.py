"""The IAM contract (tests/fakes/iam_contract.py), held to what it promises: it judges every
function of template.yaml, it names the call a template does not allow, and it is never silent
about a call it cannot judge."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from agent_wait import handler as agent_wait
from on_command_status import handler as on_command_status
from on_launch import handler as on_launch
from pull_failure import handler as pull_failure
from remediate import handler as remediate
from sweep import handler as sweep

from tests.fakes import iam_contract
from tests.fakes.cloudwatch_logs import fixture, for_node, payload
from tests.fakes.world import ACCOUNT, REGION, SWEEP_QUEUE_URL, LambdaContext, World, home_deployment, node_output

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_ARN = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/eks-ca-remediator/settings"


def without_policy(tmp_path: Path, function: str, policy: str) -> Path:
    """template.yaml with `policy` taken off `function`'s Policies, as a JSON template."""
    template = iam_contract.load(iam_contract.HOME_TEMPLATE)
    policies = template["Resources"][function]["Properties"]["Policies"]
    policies.remove({"Ref": policy})
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    return path


def cold(handler, *args):
    """Run a handler as a function's first invocation in its own Lambda environment: its settings
    are read (GetParametersByPath) and judged, whichever function ran before."""
    from eks_ca_remediator import wiring

    wiring.get_settings.cache_clear()
    return handler(*args)


def test_the_reconciler_without_read_settings_policy_is_refused_its_settings_read(tmp_path):
    # the template before this contract: ReconcileFunction did not attach ReadSettingsPolicy
    before = without_policy(tmp_path, "ReconcileFunction", "ReadSettingsPolicy")
    with World.create(template=before) as world:
        [node] = world.add_nodes()
        on_launch(world.launch_event(node), LambdaContext())
        assert iam_contract.take_denials() == []
        world.clock.advance(3600)
        world.reconcile()  # a scheduled pass: its settings are read first
        denied = iam_contract.take_denials()
    assert denied == [f"ReconcileFunction is not allowed ssm:GetParametersByPath on {SETTINGS_ARN}"]


def test_template_yaml_lets_the_reconciler_read_its_settings():
    with World.create() as world:
        world.clock.advance(3600)
        world.reconcile()
        assert iam_contract.take_denials() == []
        assert ("ReconcileFunction", "template.yaml:ReconcileFunctionRole") in iam_contract.exercised


def test_every_function_of_the_template_is_judged_on_a_cold_start():
    iam_contract.exercised.clear()
    with World.create(SWEEP_QUEUE_URL=SWEEP_QUEUE_URL) as world:
        boto3.client("sqs", region_name=REGION).create_queue(QueueName=SWEEP_QUEUE_URL.rsplit("/", 1)[1])
        [node] = world.add_nodes(agent_online_after=20)
        cold(on_launch, world.launch_event(node), LambdaContext())
        world.clock.advance(30)
        cold(agent_wait, {"Records": world.queue.due()}, LambdaContext())
        [(command_id, _)] = world.ssm.invocations
        cold(on_command_status, world.ssm.finish(command_id, node, "Success", node_output()), LambdaContext())
        cold(remediate, {"instance_id": node, "force": True}, LambdaContext())
        cold(world.reconcile)
        cold(sweep, json.loads((ROOT / "events" / "sweep-scheduled.json").read_text()), LambdaContext())
        case = fixture("kubelet structured PullImage, new Go wording, CloudWatch agent stream named by instance id")
        line, stream = (for_node(case[k], node, "ip-10-0-1-23.ec2.internal") for k in ("message", "log_stream"))
        cold(pull_failure, payload([line], stream), LambdaContext())
        functions = set(home_deployment(world.settings).functions())
    judged = {function for function, _ in iam_contract.exercised}
    assert functions == {
        "OnLaunchFunction",
        "AgentWaitFunction",
        "RemediateFunction",
        "OnCommandStatusFunction",
        "ReconcileFunction",
        "SweepFunction",
        "PullFailureFunction",
    }
    assert functions <= judged, f"never judged: {sorted(functions - judged)}"


def test_calls_of_the_test_itself_are_not_judged():
    with World.create() as world:
        iam_contract.exercised.clear()
        world.ec2.describe_instances()  # the test's hands, not a function's
        boto3.client("sts", region_name=REGION).get_caller_identity()  # (no entry in RESOURCES)
        assert iam_contract.exercised == set()
        assert iam_contract.take_denials() == []


def test_an_action_with_no_resource_entry_is_refused_with_how_to_model_it():
    call = iam_contract.Call("sts:GetCallerIdentity", {}, REGION, ACCOUNT)
    allow_all = {"Effect": "Allow", "Action": "*", "Resource": "*"}
    with pytest.raises(iam_contract.ContractViolation, match="no entry in .*RESOURCES: model its resources"):
        iam_contract.allowed([allow_all], call)


@pytest.mark.parametrize(
    ("action", "params", "resource"),
    [
        ("ssm:GetParametersByPath", {"Path": "/eks-ca-remediator/settings"}, SETTINGS_ARN),
        ("ssm:GetParameter", {"Name": "/pki/ca"}, f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/pki/ca"),
        (
            "dynamodb:Query",
            {"TableName": "records", "IndexName": "open-attempts"},
            f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/records/index/open-attempts",
        ),
        ("sqs:SendMessage", {"QueueUrl": SWEEP_QUEUE_URL}, f"arn:aws:sqs:{REGION}:{ACCOUNT}:sweep"),
        ("s3:GetObject", {"Bucket": "pki", "Key": "ca.pem"}, "arn:aws:s3:::pki/ca.pem"),
        ("ec2:DescribeInstances", {}, "*"),
    ],
)
def test_each_action_is_authorized_on_the_resource_iam_names(action, params, resource):
    call = iam_contract.Call(action, params, REGION, ACCOUNT)
    assert [r for r, _ in iam_contract.RESOURCES[action](call)] == [resource]
    # one statement on exactly that resource allows it; the same statement in another region does not
    statement = {
        "Effect": "Allow",
        "Action": action,
        "Resource": resource,
        "Condition": {"StringEquals": {"aws:RequestedRegion": REGION}},
    }
    assert iam_contract.allowed([statement], call) == []
    elsewhere = iam_contract.Call(action, params, "eu-west-1", ACCOUNT)
    assert iam_contract.allowed([statement], elsewhere) != []


def test_an_assumed_role_is_found_in_the_templates_that_define_it():
    with World.create() as world:
        contract = iam_contract.Contract()
        contract.deploy(ACCOUNT, lambda: home_deployment(world.settings), home=True)
        generated = f"arn:aws:iam::{ACCOUNT}:role/eks-ca-remediator-SweepFunctionRole-1A2B3C4D5E6F"
        rendered, role = contract.role_for_arn(generated)
        assert (rendered.name, role) == ("template.yaml", "SweepFunctionRole")
        with pytest.raises(iam_contract.ContractViolation, match="defined by no template"):
            contract.role_for_arn(f"arn:aws:iam::{ACCOUNT}:role/somebody-elses-role")
        with pytest.raises(iam_contract.ContractViolation, match="defined by no template"):
            contract.role_for_arn("arn:aws:iam::111111111111:role/eks-ca-remediator-member")  # not central


DOCUMENT_ARN = f"arn:aws:ssm:{REGION}:{ACCOUNT}:document/eks-ca-remediator-RemediateCa"
SEND_ROLE_PARAMETER = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/eks-ca-remediator/settings/send-roles/prod-a"


def send_role_changed(tmp_path: Path, change) -> Path:
    """template.yaml with the send roles' definition (the Fn::ForEach body) changed by `change`."""
    template = iam_contract.load(iam_contract.HOME_TEMPLATE)
    _, _, body = template["Resources"]["Fn::ForEach::SendRoleOfEachCluster"]
    change(body["SendRole&{Cluster}"]["Properties"])
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    return path


def test_a_send_goes_through_the_clusters_send_role_and_each_hop_is_judged():
    iam_contract.exercised.clear()
    with World.create() as world:
        [node] = world.add_nodes()
        assert on_launch(world.launch_event(node), LambdaContext())["action"] == "remediating"
        assert world.ssm.sent_to() == [[node]]
        assert iam_contract.take_denials() == []
    # GetParameter (the send role's ARN) and AssumeRole by the function's role; SendCommand as the send role
    assert ("OnLaunchFunction", "template.yaml:OnLaunchFunctionRole") in iam_contract.exercised
    assert ("OnLaunchFunction", "template.yaml:SendRoleproda") in iam_contract.exercised


def test_a_send_role_that_does_not_trust_the_function_fails_the_iam_contract(tmp_path):
    def trust_only_the_sweep(props):
        [statement] = props["AssumeRolePolicyDocument"]["Statement"]
        statement["Principal"]["AWS"] = [{"Fn::GetAtt": ["SweepFunctionRole", "Arn"]}]

    with World.create(template=send_role_changed(tmp_path, trust_only_the_sweep)) as world:
        [node] = world.add_nodes()
        on_launch(world.launch_event(node), LambdaContext())
        denied = iam_contract.take_denials()
    assert "template.yaml SendRoleproda's trust policy does not let OnLaunchFunction assume it" in denied


def test_a_send_role_that_may_not_use_the_document_fails_the_iam_contract(tmp_path):
    def without_the_document(props):
        [policy] = props["Policies"]
        policy["PolicyDocument"]["Statement"] = [
            s for s in policy["PolicyDocument"]["Statement"] if s.get("Sid") != "OurDocument"
        ]

    with World.create(template=send_role_changed(tmp_path, without_the_document)) as world:
        [node] = world.add_nodes()
        on_launch(world.launch_event(node), LambdaContext())
        denied = iam_contract.take_denials()
    # judged as the send role, not as the function's role (which has no SendCommand at all)
    assert (
        f"OnLaunchFunction (as template.yaml SendRoleproda) is not allowed ssm:SendCommand on {DOCUMENT_ARN}" in denied
    )


def test_a_function_that_may_not_read_the_send_role_parameter_fails_the_iam_contract(tmp_path):
    template = iam_contract.load(iam_contract.HOME_TEMPLATE)
    statements = template["Resources"]["SendRemediationPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    statements[:] = [s for s in statements if s.get("Sid") != "ReadSendRoleArns"]
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    with World.create(template=path) as world:
        [node] = world.add_nodes()
        on_launch(world.launch_event(node), LambdaContext())
        denied = iam_contract.take_denials()
    assert f"OnLaunchFunction is not allowed ssm:GetParameter on {SEND_ROLE_PARAMETER}" in denied
