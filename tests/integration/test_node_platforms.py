"""Dispatch by the platform SSM reports: Bottlerocket nodes take the CA through their API, so no
Linux-host strategy (restart, hosts-toml) is sent to them; the record says what was sent."""

from __future__ import annotations

from on_launch import handler as on_launch
from remediate import handler as remediate

from tests.fakes.world import LambdaContext, World, node_output


def launch_all(world: World, nodes: list[str]) -> None:
    for node in nodes:
        on_launch(world.launch_event(node), LambdaContext())


def test_bottlerocket_nodes_get_strategy_auto_in_a_command_of_their_own():
    with World.create(DEFAULT_STRATEGY="hosts-toml") as world:
        linux = world.add_nodes(2)
        bottlerocket = world.add_nodes(2)
        for node in bottlerocket:
            world.ssm.platforms[node] = "Bottlerocket"
        remediate({"cluster": "prod-a"}, LambdaContext())  # one trigger, one batch of four

        sent = {tuple(c["InstanceIds"]): c["Parameters"]["Strategy"][0] for c in world.ssm.commands}
        by_node = {n: s for ids, s in sent.items() for n in ids}
        assert {by_node[n] for n in linux} == {"hosts-toml"}
        assert {by_node[n] for n in bottlerocket} == {"auto"}
        assert not any(set(ids) & set(linux) and set(ids) & set(bottlerocket) for ids in sent)
        for node in bottlerocket:
            [record] = world.attempts(node)
            assert record["status"] == "SENT"
            assert record["strategy"] == "hosts-toml"  # what the trigger asked for
            assert record["strategy_sent"] == "auto"
            assert record["platform"] == "Bottlerocket"
        for node in linux:
            [record] = world.attempts(node)
            assert record["strategy_sent"] == "hosts-toml"
            assert record["platform"] == "Amazon Linux"


def test_the_record_keeps_which_verification_the_node_ran():
    with World.create() as world:
        [node] = world.add_nodes()
        world.ssm.platforms[node] = "Bottlerocket"
        launch_all(world, [node])
        world.finish_all(
            "Success",
            node_output(
                "success",
                restarted=False,
                os_family="bottlerocket",
                strategy_used="bottlerocket-api",
                verification_level="settings-readback",
                canary="unavailable: Bottlerocket's control container cannot reach the host's containerd",
            ),
        )
        [record] = world.attempts(node)
        assert record["status"] == "SUCCEEDED"
        assert record["verification_level"] == "settings-readback"
        assert record["node_result"]["canary"].startswith("unavailable: ")
