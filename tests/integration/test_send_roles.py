"""The product sends only through the send role of the node's cluster (template.yaml SendRole<cluster>).

The World's Run Command judges a send by the statements of the role whose credentials it comes
with (tests/fakes/iam.py SendRoleFakes): the functions' own roles may not send at all, and a
cluster's send role may send to that cluster's nodes only, whatever tags its provisioner uses.
"""

from __future__ import annotations

import pytest
from eks_ca_remediator.adapters.ssm import RunCommand, SendRoles
from eks_ca_remediator.errors import SendDenied
from eks_ca_remediator.provisioners import PROVISIONERS, Provisioner
from on_launch import handler as launch_handler

from tests.fakes.world import DOCUMENT, LambdaContext, World

PARAMETERS = {"CaBundle": ["QUJD"], "DryRun": ["true"]}


def sender(world: World) -> RunCommand:
    return world.remediator.run_command


@pytest.mark.parametrize("provisioner", PROVISIONERS, ids=lambda p: p.key)
def test_a_launch_is_sent_through_its_clusters_send_role(provisioner: Provisioner):
    with World.create() as world:
        [node] = world.add_nodes(cluster="prod-b", tag_style=provisioner.key)
        launch_handler(world.launch_event(node), LambdaContext())
        assert world.ssm.sent_to() == [[node]]
        assert [arn.rsplit("/", 1)[-1] for arn in world.send_roles.assumed] == [
            "eks-ca-remediator-SendRoleprodb-FAKE0123"
        ]


@pytest.mark.parametrize("provisioner", PROVISIONERS, ids=lambda p: p.key)
def test_a_send_role_refuses_another_clusters_nodes(provisioner: Provisioner):
    """Enrolled or not, a node of another cluster is refused by a cluster's send role."""
    with World.create(ENROLLED_CLUSTERS="prod-a,prod-b") as world:
        for cluster in ("prod-b", "staging"):
            [node] = world.add_nodes(cluster=cluster, tag_style=provisioner.key)
            with pytest.raises(SendDenied):
                sender(world).send([node], PARAMETERS, "test", 600, cluster="prod-a")
        assert world.ssm.commands == []


def test_the_functions_own_role_may_not_send():
    with World.create() as world:
        [node] = world.add_nodes(cluster="prod-a")
        own = RunCommand(world.ssm, DOCUMENT, "remediateCa")  # no send role: the function's credentials
        with pytest.raises(SendDenied):
            own.send([node], PARAMETERS, "test", 600, cluster="prod-a")
        assert world.ssm.commands == []


def test_a_cluster_without_a_send_role_is_refused_with_its_parameter_named():
    with World.create() as world:
        [node] = world.add_nodes(cluster="staging")
        with pytest.raises(SendDenied, match="send-roles/staging"):
            sender(world).send([node], PARAMETERS, "test", 600, cluster="staging")


def test_a_send_role_is_assumed_once_per_warm_lambda():
    with World.create() as world:
        nodes = world.add_nodes(3, cluster="prod-a")
        for node in nodes:
            sender(world).send([node], PARAMETERS, "test", 600, cluster="prod-a")
        assert len(world.ssm.commands) == 3
        assert len(world.send_roles.assumed) == 1


def test_send_role_credentials_are_renewed_before_they_expire():
    with World.create() as world:
        [node] = world.add_nodes(cluster="prod-a")
        now = [1_000_000.0]
        roles = SendRoles(
            world.ssm_parameters, None, world.settings.send_roles_path, world.send_roles.assume, lambda: now[0]
        )
        run_command = RunCommand(world.ssm, DOCUMENT, "remediateCa", roles)
        run_command.send([node], PARAMETERS, "first", 600, cluster="prod-a")
        now[0] = roles._held["prod-a"][1] - 1_000  # under the margin (a Lambda may run 15 minutes)
        run_command.send([node], PARAMETERS, "second", 600, cluster="prod-a")
        assert len(world.send_roles.assumed) == 2
