"""The local main job: the product end to end on one machine.

AWS is moto plus the fake Run Command (tests/fakes); the node is the node lab - a real containerd
and a real TLS registry signed by a private CA, running our SSM document's own script - where the
machine allows it (root, unshare, the Debian packages), otherwise a clearly announced fake node.
Handlers are the real ones. Exits non-zero if any step did not happen.

Run: make demo   (or: python -m demo [--fake-node])
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "demo")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "demo")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "EksCaRemediatorDemo")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "eks-ca-remediator")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

STARTED = time.monotonic()
# Powertools warns when a handler publishes no metric; the demo's timeline says what happened.
warnings.filterwarnings("ignore", message="No application metrics to publish")


class StepFailed(RuntimeError):
    pass


def say(kind: str, text: str) -> None:
    print(f"[{time.monotonic() - STARTED:5.1f}s] {kind:<10} {text}", flush=True)


def check(ok: bool, what: str) -> None:
    if not ok:
        raise StepFailed(what)
    say("ok", what)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Handlers print EMF metrics and JSON logs to stdout; the demo shows its own timeline."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def run_handler(handler: Callable[..., Any], event: Any) -> Any:
    from tests.fakes.world import LambdaContext

    with quiet():
        return handler(event, LambdaContext())


class FakeNode:
    """Stands in for a node where the lab cannot run: answers like the script would."""

    name = "fake node (announced: the node lab is not available here)"

    def __init__(self) -> None:
        self.restarted = False

    def before(self) -> tuple[bool, str]:
        return False, "x509: certificate signed by unknown authority (simulated)"

    def userdata_trusts_ca(self) -> None:
        return None

    def run(self, params: dict[str, list[str]]) -> tuple[int, str, str]:
        from tests.fakes.world import node_output

        dry = params["DryRun"][0] == "true"
        return 0, node_output("dry-run" if dry else "success", restarted=not dry), "fake node: nothing executed\n"

    def after(self) -> tuple[bool, str]:
        return True, "sha256:simulated"

    def failing_message(self) -> str:
        return (
            'failed to pull and unpack image "registry.example.internal/team/app:1.4.2": failed to resolve '
            'reference "registry.example.internal/team/app:1.4.2": failed to do request: Head '
            '"https://registry.example.internal/v2/team/app/manifests/1.4.2": tls: failed to verify '
            "certificate: x509: certificate signed by unknown authority"
        )

    image = "registry.example.internal/team/app:1.4.2"

    def twin(self, stack: contextlib.ExitStack) -> FakeNode:
        return FakeNode()


class LabNode:
    """The node lab: real containerd, real registry, the document's own script."""

    def __init__(self, lab: Any) -> None:
        self.lab = lab
        self.name = f"node lab (real containerd + TLS registry {lab.registry_host}, os={lab.os_family})"

    def before(self) -> tuple[bool, str]:
        return self.lab.cri_pull()

    def userdata_trusts_ca(self) -> None:
        self.lab.trust_ca_without_restart()

    def run(self, params: dict[str, list[str]]) -> tuple[int, str, str]:
        run = self.lab.run_script({f"SSM_{name}": values[0] for name, values in params.items()})
        stdout = json.dumps(run.result) + "\n" if run.result is not None else ""
        return run.exit_code, stdout, run.stderr

    def after(self) -> tuple[bool, str]:
        return self.lab.cri_pull()

    def failing_message(self) -> str:
        ok, message = self.lab.cri_pull()
        if ok:
            raise StepFailed("the second lab node pulls already: nothing to remediate")
        return message

    @property
    def image(self) -> str:
        return self.lab.image

    def twin(self, stack: contextlib.ExitStack) -> LabNode:
        """A second node of the same cluster, same registry: its containerd predates the CA too."""
        from tests.nodelab.lab import NodeLab

        lab = stack.enter_context(NodeLab(os_family=self.lab.os_family, registry=self.lab.registry))
        lab.trust_ca_without_restart()
        return LabNode(lab)


def launch_story(world: Any, node: Any) -> str:
    from on_launch import handler as on_launch

    check(node.before()[0] is False, f"before: CRI pull fails -> {node.before()[1][-90:]}")
    node.userdata_trusts_ca()
    ok, message = node.before()
    check(
        ok is False,
        f"userdata added the CA to the trust store; containerd still running: pull STILL fails ({message[-60:]})",
    )

    [instance] = world.add_nodes(cluster="prod-a", agent_online_after=35)
    say("launch", f"EC2 {instance} running (cluster prod-a); its SSM agent comes Online at t=35s")
    result = run_handler(on_launch, world.launch_event(instance))
    check(
        result["records"][0]["status"] == "PENDING_AGENT",
        "OnLaunch: agent not Online yet -> record PENDING_AGENT, re-check queued",
    )
    t0 = world.clock()
    while not world.ssm.commands and world.clock() - t0 < 120:
        world.clock.advance(1)
        with quiet():
            world.run_agent_wait()
    check(
        len(world.ssm.commands) == 1,
        f"AgentWait: agent Online -> SendCommand at t={world.clock() - t0:.0f}s (1 command)",
    )
    command = world.ssm.commands[0]
    say(
        "command",
        f"{command['CommandId']} Strategy={command['Parameters']['Strategy'][0]} "
        f"RegistryHosts={command['Parameters']['RegistryHosts'][0]}",
    )
    code, stdout, stderr = node.run(command["Parameters"])
    for line in stderr.strip().splitlines()[-8:]:
        say("node", line[:140])
    summary = json.loads(stdout) if stdout else {}
    say(
        "node",
        f"result={summary.get('result')} restarted={summary.get('restarted')} "
        f"verification={summary.get('verification')} ({summary.get('verification_level')}) "
        f"canary={summary.get('canary')}",
    )
    from on_command_status import handler as on_status

    event = world.ssm.finish(command["CommandId"], instance, "Success" if code == 0 else "Failed", stdout, stderr)
    status = run_handler(on_status, event)
    check(status["record"]["status"] == "SUCCEEDED", f"OnCommandStatus: record {status['record']['status']}")
    ok, message = node.after()
    check(ok, f"after: CRI pull OK ({message[:60]})")
    return instance


def kubelet_line(message: str, image: str, n: int) -> str:
    """A kubelet journal line as Container Insights / Fluent Bit ship it, around containerd's error."""
    escaped = message.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f'E1126 10:20:{n % 60:02d}.{n:06d}    2841 log.go:32] "PullImage from image service failed" '
        f'err="rpc error: code = Unknown desc = {escaped}" image="{image}"'
    )


def flood_story(world: Any, node: Any) -> None:
    from on_command_status import handler as on_status
    from pull_failure import handler as on_pull_failure

    from tests.fakes.cloudwatch_logs import payload

    [instance] = world.add_nodes(cluster="prod-a")
    message = node.failing_message()
    say("node", f"{instance}: kubelet's pulls fail -> {message[-70:]}")
    before = len(world.ssm.commands)
    lines = [kubelet_line(message, node.image, n) for n in range(1000)]
    for part in range(10):
        event = payload(
            lines[part * 100 : (part + 1) * 100],
            log_stream=f"{instance}/kubelet",
            log_group="/aws/containerinsights/prod-a/dataplane",
        )
        run_handler(on_pull_failure, event)
        world.clock.advance(3)
    sent = world.ssm.commands[before:]
    check(
        len(sent) == 1,
        f"PullFailure: 1,000 x509 lines in 10 log deliveries -> {len(sent)} remediation (cooldown + claim)",
    )
    command = sent[0]
    say(
        "command",
        f"{command['CommandId']} RegistryHosts={command['Parameters']['RegistryHosts'][0]} (from the failing line)",
    )
    code, stdout, stderr = node.run(command["Parameters"])
    summary = json.loads(stdout) if stdout else {}
    say("node", f"result={summary.get('result')} restarted={summary.get('restarted')} canary={summary.get('canary')}")
    event = world.ssm.finish(command["CommandId"], instance, "Success" if code == 0 else "Failed", stdout, stderr)
    status = run_handler(on_status, event)
    check(
        status["record"]["status"] == "SUCCEEDED", f"OnCommandStatus: pull-failure record {status['record']['status']}"
    )
    ok, message = node.after()
    check(ok, f"after: CRI pull OK on {instance} ({message[:40]})")


def print_records(world: Any) -> None:
    rows = sorted(world.all_attempts(), key=lambda r: r["created_at"])
    print("\nremediation records (DynamoDB):")
    print(f"  {'instance':<21} {'trigger':<13} {'status':<14} {'restarted':<9} {'command':<10} reason")
    for r in rows:
        print(
            f"  {r['instance_id']:<21} {r['trigger']:<13} {r['status']:<14} {str(r.get('restarted', '-')):<9} "
            f"{(r.get('command_id') or '-')[:8]:<10} {(r.get('reason') or '')[:50]}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="eks-ca-remediator, end to end on this machine")
    parser.add_argument("--fake-node", action="store_true", help="do not use the node lab even where it can run")
    args = parser.parse_args(argv)

    from tests.fakes.world import World
    from tests.nodelab.lab import NodeLab, lab_available

    available, why = (False, "--fake-node given") if args.fake_node else lab_available()
    with contextlib.ExitStack() as stack:
        if available:
            lab = stack.enter_context(NodeLab(os_family="debian"))
            node: Any = LabNode(lab)
            world = stack.enter_context(
                World.create(ca_pem=lab.ca_pem, REGISTRY_HOSTS=lab.registry_host, CANARY_IMAGE=lab.image)
            )
        else:
            node = FakeNode()
            say("note", f"node lab unavailable: {why}")
            world = stack.enter_context(World.create())
        say("start", f"AWS: moto + fake Run Command; node: {node.name}")
        try:
            launch_story(world, node)
            flood_story(world, node.twin(stack))
        except StepFailed as exc:
            say("FAILED", str(exc))
            print_records(world)
            return 1
        print_records(world)
    say("done", "every step happened")
    return 0


if __name__ == "__main__":
    sys.exit(main())
