"""What IAM allows: SendCommand of our document to each provisioner's nodes, enrolled and not.

The statements are read from template.yaml and member-account.yaml as deployed (Fn::ForEach
expanded for the enrolled clusters, intrinsics resolved) and evaluated like IAM's policy
evaluation (tests/fakes/iam.py): action, resource ARN, condition keys with StringEquals
semantics. SendCommand is granted only to the send role of each enrolled cluster: a sending
role's statements are those of the send roles it may assume, and each send role alone allows
its own cluster's nodes only. For every provisioner of the one list (provisioners.py), a node of an enrolled cluster
is allowed, a node of any other cluster is not, and IAM's verdict is the product's recognition.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from eks_ca_remediator.decisions import enrolled_cluster
from eks_ca_remediator.provisioners import NAME_IN_KEY_PREFIXES, PROVISIONERS, NameInKey, Provisioner

from tests.fakes.iam import (
    SENDING_FUNCTIONS,
    home_deployment,
    home_send_statements,
    member_deployment,
    member_send_statements,
    send_command_allowed,
)

ROOT = Path(__file__).resolve().parents[2]
HOME = "123456789012"
MEMBER = "111111111111"
REGION = "us-east-1"
DOCUMENT = "eks-ca-remediator-RemediateCa"
DOCUMENT_ARN = f"arn:aws:ssm:{REGION}:{HOME}:document/{DOCUMENT}"
ENROLLED = ["prod-a", "prod_b"]
NOT_ENROLLED = ["staging", "prod", "prod-a-2", "proda"]


def instance_arn(account: str) -> str:
    return f"arn:aws:ec2:{REGION}:{account}:instance/i-0123456789abcdef0"


def deployments() -> dict[str, tuple[list[dict], str, str]]:
    """(statements, document ARN, instance ARN) of every role that sends, home and member."""
    found = {
        f"home {function}": (statements, DOCUMENT_ARN, instance_arn(HOME))
        for function, statements in home_send_statements(ENROLLED, HOME, DOCUMENT).items()
    }
    found["member role"] = (member_send_statements(ENROLLED, MEMBER, DOCUMENT_ARN), DOCUMENT_ARN, instance_arn(MEMBER))
    return found


DEPLOYMENTS = deployments()


@pytest.mark.parametrize("where", sorted(DEPLOYMENTS))
@pytest.mark.parametrize("provisioner", PROVISIONERS, ids=lambda p: p.key)
def test_exactly_the_enrolled_clusters_nodes_are_allowed(where: str, provisioner: Provisioner):
    statements, document, instance = DEPLOYMENTS[where]
    for cluster in ENROLLED:
        tags = provisioner.tags_for(cluster)
        assert send_command_allowed(statements, document, instance, tags), f"{cluster}: {tags}"
    for cluster in NOT_ENROLLED:
        tags = provisioner.tags_for(cluster)
        assert not send_command_allowed(statements, document, instance, tags), f"{cluster}: {tags}"


@pytest.mark.parametrize("where", sorted(DEPLOYMENTS))
@pytest.mark.parametrize(
    "tags",
    [
        {},
        {"Name": "prod-a"},
        {"aws:eks:cluster-name": "prod-a"},  # the cluster security group's tag, not a node's
        {"kubernetes.io/cluster/prod-a": "something-else"},
        {"sigs.k8s.io/cluster-api-provider-aws/cluster/prod-a": "shared"},
        {"k8s.io/cluster/prod-a": "owned"},
        {"eks:cluster-name": "prod-a,prod_b"},
        {"eks:cluster-name": "prod-a", "kubernetes.io/cluster/prod_b": "owned"},  # IAM allows; we skip
        {"eks:cluster-name": "prod-a", "kubernetes.io/cluster/other": "owned"},
        {"kubernetes.io/cluster/prod-a": "shared"},
    ],
)
def test_iam_and_recognition_agree_except_where_the_product_is_stricter(where, tags):
    """A node the product recognises is one IAM lets us send to; IAM alone may allow a node whose
    tags name two clusters (one enrolled): the product records those SKIPPED instead."""
    statements, document, instance = DEPLOYMENTS[where]
    allowed = send_command_allowed(statements, document, instance, tags)
    recognised = enrolled_cluster(tags, ENROLLED) is not None
    assert allowed >= recognised
    names_two = "kubernetes.io/cluster/other" in tags or ("eks:cluster-name" in tags and len(tags) > 1)
    assert allowed == (recognised or names_two)


@pytest.mark.parametrize("where", sorted(DEPLOYMENTS))
@pytest.mark.parametrize("provisioner", PROVISIONERS, ids=lambda p: p.key)
def test_a_cluster_name_differing_only_in_case(where: str, provisioner: Provisioner):
    """IAM compares condition key NAMES case-insensitively, tag values case-sensitively
    (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html,
    aws:ResourceTag: "the tag key component is not case-sensitive"). So IAM lets a node tagged
    kubernetes.io/cluster/Prod-A through when prod-a is enrolled; the product's recognition is
    exact and never sends to it. With the name in a tag's value IAM refuses it too."""
    statements, document, instance = DEPLOYMENTS[where]
    tags = provisioner.tags_for("Prod-A")
    assert enrolled_cluster(tags, ENROLLED) is None
    name_in_key = any(isinstance(t, NameInKey) for t in provisioner.names_cluster)
    assert send_command_allowed(statements, document, instance, tags) == name_in_key


@pytest.mark.parametrize("where", sorted(DEPLOYMENTS))
def test_only_our_document(where):
    statements, _, instance = DEPLOYMENTS[where]
    tags = PROVISIONERS[0].tags_for("prod-a")
    other = f"arn:aws:ssm:{REGION}:{HOME}:document/AWS-RunShellScript"
    assert not send_command_allowed(statements, other, instance, tags)
    assert not send_command_allowed(statements, "arn:aws:ssm:us-east-1::document/AWS-RunShellScript", instance, tags)


def test_instances_of_another_account_or_region_are_not_allowed():
    statements, document, _ = DEPLOYMENTS["home OnLaunchFunction"]
    tags = PROVISIONERS[0].tags_for("prod-a")
    assert not send_command_allowed(statements, document, instance_arn(MEMBER), tags)
    elsewhere = f"arn:aws:ec2:eu-west-1:{HOME}:instance/i-0123456789abcdef0"
    assert not send_command_allowed(statements, document, elsewhere, tags)


def test_one_enrolled_cluster_allows_that_one_only():
    statements = home_send_statements(["prod-a"], HOME, DOCUMENT)["SweepFunction"]
    for provisioner in PROVISIONERS:
        assert send_command_allowed(statements, DOCUMENT_ARN, instance_arn(HOME), provisioner.tags_for("prod-a"))
        assert not send_command_allowed(statements, DOCUMENT_ARN, instance_arn(HOME), provisioner.tags_for("prod_b"))


def test_every_sending_function_gets_the_same_grant():
    """The fake Run Command judges every send with one function's statements."""
    grants = list(home_send_statements(ENROLLED, HOME, DOCUMENT).values())
    assert all(g == grants[0] for g in grants)


def test_the_member_template_renders_without_the_transform_for_service_managed_stacksets():
    """Service-managed StackSets accept no macros: tools/language_extensions.py renders
    member-account.yaml for the enrolled clusters into plain CloudFormation."""
    from language_extensions import render

    rendered = render((ROOT / "member-account.yaml").read_text(), {"EnrolledClusters": ENROLLED})
    assert "Transform" not in rendered
    assert not [k for k in rendered["Resources"] if k.startswith("Fn::")]
    for name, cluster in (("proda", "prod-a"), ("prodb", "prod_b")):
        role = rendered["Resources"][f"SendRole{name}"]["Properties"]
        assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
            "AWS": {"Fn::GetAtt": ["MemberRole", "Arn"]}
        }
        keys = {
            k
            for s in role["Policies"][0]["PolicyDocument"]["Statement"]
            for k in s.get("Condition", {}).get("StringEquals", {})
        }
        assert {f"ssm:resourceTag/{prefix}{cluster}" for prefix in NAME_IN_KEY_PREFIXES} <= keys
        parameter = rendered["Resources"][f"SendRoleArnOf{name}"]["Properties"]
        assert parameter["Value"] == {"Fn::GetAtt": [f"SendRole{name}", "Arn"]}  # plain CloudFormation


# ---------------------------------------------------------------- the send roles, one by one
HOME_DEPLOYMENT = home_deployment(ENROLLED, HOME, DOCUMENT)
MEMBER_DEPLOYMENT = member_deployment(ENROLLED, MEMBER, DOCUMENT_ARN)
SEND_ROLES = {
    f"home {cluster}": (
        HOME_DEPLOYMENT.send_roles()[f"/eks-ca-remediator/settings/send-roles/{cluster}"],
        instance_arn(HOME),
    )
    for cluster in ENROLLED
} | {
    f"member {cluster}": (
        MEMBER_DEPLOYMENT.send_roles()[f"/eks-ca-remediator-member/send-roles/{cluster}"],
        instance_arn(MEMBER),
    )
    for cluster in ENROLLED
}


@pytest.mark.parametrize("where", sorted(SEND_ROLES))
@pytest.mark.parametrize("provisioner", PROVISIONERS, ids=lambda p: p.key)
def test_a_send_role_sends_to_its_own_clusters_nodes_only(where: str, provisioner: Provisioner):
    """The product sends with the role of the node's cluster: that role alone must allow it, and
    refuse every other cluster's node, enrolled or not, in every provisioner's tag style."""
    role, instance = SEND_ROLES[where]
    own = where.split()[1]
    for cluster in ENROLLED + NOT_ENROLLED:
        allowed = send_command_allowed(role.statements, DOCUMENT_ARN, instance, provisioner.tags_for(cluster))
        assert allowed == (cluster == own), f"{role.logical_id} and a node of {cluster}"


def test_only_the_sending_functions_may_assume_the_send_roles():
    roles = sorted(r.logical_id for r in HOME_DEPLOYMENT.send_roles().values())
    assert roles == ["SendRoleproda", "SendRoleprodb"]
    functions = [n for n, r in HOME_DEPLOYMENT.resources.items() if r["Type"] == "AWS::Serverless::Function"]
    for function in functions:
        expected = roles if function in SENDING_FUNCTIONS else []
        assert sorted(HOME_DEPLOYMENT.assumable(f"{function}Role")) == expected, function
        assert HOME_DEPLOYMENT.role_statements(f"{function}Role", "ssm:SendCommand") == []  # only by a send role
    assert MEMBER_DEPLOYMENT.assumable("MemberRole") == ["SendRoleproda", "SendRoleprodb"]
    assert MEMBER_DEPLOYMENT.role_statements("MemberRole", "ssm:SendCommand") == []
    assert MEMBER_DEPLOYMENT.assumable("ForwardRole") == []


def test_no_other_role_of_the_templates_sends():
    for deployment in (HOME_DEPLOYMENT, MEMBER_DEPLOYMENT):
        senders = {
            name
            for name, resource in deployment.resources.items()
            if resource["Type"] == "AWS::IAM::Role" and deployment.role_statements(name, "ssm:SendCommand")
        }
        assert senders == {"SendRoleproda", "SendRoleprodb"}
