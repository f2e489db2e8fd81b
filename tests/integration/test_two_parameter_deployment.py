"""Two parameters to a working deployment: EnrolledClusters and one CA source, everything else at
its default. The template is rendered with exactly those two overrides (Fn::ForEach expanded,
conditions and intrinsic functions resolved), the launch function's environment and stored
settings are taken from it, and the launch flow runs on that configuration."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from eks_ca_remediator import __version__
from language_extensions import expand_template
from on_launch import handler as on_launch
from ssm_document import load_template

from tests.fakes.world import ACCOUNT, BUNDLE_PARAMETER, DOCUMENT, REGION, LambdaContext, World, node_output

ROOT = Path(__file__).resolve().parents[2]
STACK = "eks-ca-remediator"
OVERRIDES = {"EnrolledClusters": "dev-a", "CaBundleParameterName": "eks-ca-remediator/ca-bundle"}
PSEUDO = {"AWS::StackName": STACK, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"}
# physical ids of the resources the environment names (what CloudFormation would give them)
PHYSICAL = {
    "RecordsTable": "eks-ca-remediator-RecordsTable-1ABC",
    "RemediationDocument": DOCUMENT,
    "AgentWaitQueue": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/eks-ca-remediator-AgentWaitQueue-1ABC",
}


class Rendered:
    def __init__(self, overrides: dict[str, str]) -> None:
        raw = load_template((ROOT / "template.yaml").read_text())
        self.parameters: dict[str, Any] = {}
        for name, spec in raw["Parameters"].items():
            value = overrides.get(name, spec.get("Default"))
            if value is None:
                raise AssertionError(f"parameter {name} has no default and was not given")
            self.parameters[name] = value.split(",") if spec["Type"] == "CommaDelimitedList" else str(value)
        self.template = expand_template(raw, {"EnrolledClusters": self.parameters["EnrolledClusters"]})
        self.conditions = self.template.get("Conditions", {})

    def condition(self, name: str) -> bool:
        return bool(self.value(self.conditions[name]))

    def value(self, node: Any) -> Any:  # noqa: C901 - one branch per intrinsic function
        if not isinstance(node, dict):
            return node
        [(fn, arg)] = node.items()
        fn = fn.removeprefix("Fn::")
        if fn == "Ref":
            for known in (PSEUDO, self.parameters, PHYSICAL):
                if arg in known:
                    return known[arg]
            raise AssertionError(f"Ref {arg}: not a parameter nor a resource the environment names")
        if fn == "Condition":
            return self.condition(arg)
        if fn == "If":
            return self.value(arg[1] if self.condition(arg[0]) else arg[2])
        if fn == "Not":
            return not self.value(arg[0])
        if fn == "Or":
            return any(self.value(a) for a in arg)
        if fn == "And":
            return all(self.value(a) for a in arg)
        if fn == "Equals":
            return self.value(arg[0]) == self.value(arg[1])
        if fn == "Join":
            return arg[0].join(str(v) for v in self.value(arg[1]))
        if fn == "Sub":
            text = arg if isinstance(arg, str) else arg[0]
            return re.sub(r"\$\{([^}!.]+)\}", lambda m: str(self.value({"Ref": m.group(1)})), text)
        raise AssertionError(f"no resolver for {fn}")

    def environment(self, function: str) -> dict[str, str]:
        variables = dict(self.template["Globals"]["Function"]["Environment"]["Variables"])
        own = self.template["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})
        return {k: str(self.value(v)) for k, v in (variables | own).items()}

    def stored_settings(self) -> dict[str, str]:
        """The Settings* SSM parameters the stack creates: name -> value (the direct children of
        the settings path, as the functions read them: GetParametersByPath, not recursive; the
        send roles' ARNs lie below, in send-roles/)."""
        stored = {}
        for resource in self.template["Resources"].values():
            if resource["Type"] != "AWS::SSM::Parameter" or "/settings/" not in str(resource["Properties"]["Name"]):
                continue
            if "Condition" in resource and not self.condition(resource["Condition"]):
                continue
            name = self.value(resource["Properties"]["Name"])
            if name.rsplit("/", 1)[0] == f"/{STACK}/settings":
                stored[name] = self.value(resource["Properties"]["Value"])
        return stored


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    return Rendered(OVERRIDES)


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
    assert [k for k in rendered.template["Resources"] if k.startswith("SendRole")] == [
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
