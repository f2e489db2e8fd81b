"""Two parameters to a working deployment: EnrolledClusters and one CA source, everything else at
its default. The template is rendered with exactly those two overrides (Fn::ForEach expanded,
conditions and intrinsic functions resolved), the launch function's environment and stored
settings are taken from it, and the launch flow runs on that configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from eks_ca_remediator import __version__
from on_launch import handler as on_launch
from ssm_document import load_template

from tests.fakes import iam_contract
from tests.fakes.world import ACCOUNT, BUNDLE_PARAMETER, DOCUMENT, REGION, LambdaContext, World, node_output

ROOT = Path(__file__).resolve().parents[2]
STACK = "eks-ca-remediator"
OVERRIDES = {"EnrolledClusters": "dev-a", "CaBundleParameterName": "eks-ca-remediator/ca-bundle"}
# physical ids of the resources the environment names (what CloudFormation would give them)
NAMES = iam_contract.merge(
    iam_contract.Names({"RecordsTable": "eks-ca-remediator-RecordsTable-1ABC", "RemediationDocument": DOCUMENT}),
    iam_contract.queue_names("AgentWaitQueue", f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{STACK}-AgentWait-1ABC"),
    iam_contract.queue_names("SweepQueue", f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{STACK}-Sweep-1ABC"),
)


class Deployment:
    """template.yaml as CloudFormation deploys it with exactly OVERRIDES (the IAM contract's
    renderer: Fn::ForEach expanded, SAM's translator, conditions and intrinsic functions)."""

    def __init__(self, overrides: dict[str, str]) -> None:
        self.rendered = iam_contract.Rendered(
            iam_contract.load(ROOT / "template.yaml"), overrides, ACCOUNT, REGION, NAMES, STACK
        )

    def environment(self, function: str) -> dict[str, str]:
        """The function's environment as Lambda gets it (SAM merged Globals into it)."""
        variables = self.rendered.resources[function]["Properties"]["Environment"]["Variables"]
        return {k: str(v) for k, v in self.rendered.value(variables).items()}

    def stored_settings(self) -> dict[str, str]:
        """The Settings* SSM parameters the stack creates: name -> value (the direct children of
        the settings path, as the functions read them: GetParametersByPath, not recursive; the
        send roles' ARNs lie below, in send-roles/)."""
        stored = {}
        for logical_id, resource in self.rendered.resources.items():
            if resource["Type"] != "AWS::SSM::Parameter" or not self.rendered.exists(logical_id):
                continue
            name = self.rendered.value(resource["Properties"]["Name"])
            if name.rsplit("/", 1)[0] == f"/{STACK}/settings":
                stored[name] = self.rendered.value(resource["Properties"]["Value"])
        return stored


@pytest.fixture(scope="module")
def rendered() -> Deployment:
    return Deployment(OVERRIDES)


def test_only_enrolled_clusters_has_no_default():
    # the two overrides are all a deployment needs: every other parameter has a default
    raw = load_template((ROOT / "template.yaml").read_text())
    assert [name for name, spec in raw["Parameters"].items() if "Default" not in spec] == ["EnrolledClusters"]


def test_rendered_configuration_is_what_the_user_asked_for(rendered):
    env = rendered.environment("OnLaunchFunction")
    assert env["CA_BUNDLE_PARAMETER"] == "/eks-ca-remediator/ca-bundle"
    assert env["DRY_RUN"] == "false"
    assert env["DEFAULT_STRATEGY"] == "auto"
    assert env["MEMBER_ROLE_NAME"] == ""  # single account: central mode stays off
    assert rendered.stored_settings() == {f"/{STACK}/settings/ENROLLED_CLUSTERS": "dev-a"}
    # one send role, and the parameter naming it, for the one enrolled cluster
    assert [k for k in rendered.rendered.source["Resources"] if k.startswith("SendRole")] == [
        "SendRoledeva",
        "SendRoleArnOfdeva",
    ]  # &{Cluster} keeps alphanumerics


def test_the_launch_flow_remediates_a_node_on_that_configuration(rendered):
    env = rendered.environment("OnLaunchFunction")
    stored = rendered.stored_settings()
    settings_env = {
        name: value
        for name, value in env.items()
        # the test world has its own table, queue and document (the same names the template wires)
        if name not in ("RECORDS_TABLE", "AGENT_WAIT_QUEUE_URL", "SETTINGS_PATH", "DOCUMENT_ARN")
    } | {name.rsplit("/", 1)[1]: value for name, value in stored.items()}
    with World.create(**settings_env) as world:
        assert world.settings.enrolled_clusters == ("dev-a",)
        # the CA is where the user put it (README's Deploy), the parameter the template points to
        assert world.settings.ca_bundle_parameter == env["CA_BUNDLE_PARAMETER"] == BUNDLE_PARAMETER
        [node] = world.add_nodes(cluster="dev-a")
        on_launch(world.launch_event(node), LambdaContext())
        assert len(world.ssm.commands) == 1
        assert world.ssm.commands[0]["Parameters"]["DryRun"] == ["false"]
        world.finish_all("Success", node_output("success", restarted=True))
        [record] = world.attempts(node)
        assert record["status"] == "SUCCEEDED"
        assert record["cluster"] == "dev-a"
        assert record["remediator_version"] == __version__
