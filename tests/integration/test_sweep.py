"""Rotation sweep through the real handler: moto + fake Run Command + a fake sweep queue."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from eks_ca_remediator import wiring
from eks_ca_remediator.errors import InvalidRequest
from eks_ca_remediator.logic.plans import current_bundle
from eks_ca_remediator.logic.sweep import Sweeper
from eks_ca_remediator.models import ClusterRef
from remediate import handler as remediate
from sweep import handler as sweep

from tests.fakes.pki import make_cert
from tests.fakes.world import BUNDLE_PARAMETER, SWEEP_QUEUE_URL, FakeQueue, LambdaContext, World
from tests.integration.test_safety import fail_launch

EVENTS = Path(__file__).resolve().parents[2] / "events"


@dataclass
class SweepContext(LambdaContext):
    """A Lambda context whose remaining time is plenty for `calls` reads, then nearly gone."""

    calls: int = 10**9
    seen: int = 0

    def get_remaining_time_in_millis(self) -> int:
        self.seen += 1
        return 900_000 if self.seen <= self.calls else 30_000


@dataclass
class Harness:
    world: World
    queue: FakeQueue
    results: list[dict[str, Any]] = field(default_factory=list)

    def trigger(self, name: str = "sweep-scheduled.json", **changes: Any) -> dict[str, Any]:
        now = datetime.fromtimestamp(self.world.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = json.loads((EVENTS / name).read_text()) | {"time": now} | changes
        return sweep(event, LambdaContext())

    def drain(self, budget_calls: int = 10**9, rounds: int | None = None) -> list[dict[str, Any]]:
        """Deliver due sweep jobs one per invocation (BatchSize 1): `rounds` times, or until none is due."""
        ran = []
        for _ in range(rounds or 50):
            due = self.queue.due()
            if not due:
                return ran
            ran += [sweep({"Records": [record]}, SweepContext(calls=budget_calls)) for record in due]
        if rounds is None:
            raise AssertionError("sweep did not settle")
        return ran

    def rotate(self, common_name: str) -> str:
        """Put a new CA in the bundle parameter and let the source cache expire; returns the fingerprint."""
        ca, _ = make_cert(common_name)
        w = self.world
        w.ssm_parameters.put_parameter(Name=BUNDLE_PARAMETER, Value=ca, Type="SecureString", Overwrite=True)
        w.clock.advance(w.settings.bundle_cache_seconds + 1)
        return current_bundle(w.settings, "prod-a", w.clock()).fingerprint

    def sent_fingerprints(self) -> dict[str, list[str]]:
        """Per node, the fingerprint of every bundle it was sent, in order."""
        per_node: dict[str, list[str]] = {}
        for attempt in sorted(self.world.all_attempts(), key=lambda a: a.get("sent_at", "")):
            if attempt.get("command_id"):
                per_node.setdefault(attempt["pk"], []).append(attempt["fingerprint"])
        return per_node


@contextmanager
def harness(**env: str) -> Iterator[Harness]:
    # one wave: these tests are about the sweep itself (test_rollouts.py: the waves)
    env = {"SWEEP_QUEUE_URL": SWEEP_QUEUE_URL, "ROLLOUT_WAVES": "100%", **env}
    with World.create(**env) as world:
        queue = FakeQueue(world.clock, url=SWEEP_QUEUE_URL)
        sweeper = Sweeper(remediator=world.remediator, queue=queue)
        world.remediator.sweep_queue = queue  # results queue a rollout's next pass
        original = wiring.sweeper
        wiring.sweeper = lambda: sweeper
        try:
            yield Harness(world, queue)
        finally:
            wiring.sweeper = original


def remediated(world: World, count: int, cluster: str = "prod-a") -> list[str]:
    """`count` nodes whose latest attempt SUCCEEDED with the current bundle."""
    nodes = world.add_nodes(count, cluster=cluster)
    remediate({"cluster": cluster}, LambdaContext())
    world.finish_all("Success")
    return nodes


def latest_succeeded(world: World, node: str) -> str | None:
    done = [a for a in world.attempts(node) if a["status"] == "SUCCEEDED"]
    return max(done, key=lambda a: a["updated_at"])["fingerprint"] if done else None


# ---------------------------------------------------------------- drift


def test_sweep_re_remediates_only_drifted_nodes():
    with harness() as h:
        w = h.world
        old_nodes = remediated(w, 4)
        new_fp = h.rotate("Rotated Root")
        current_nodes = w.add_nodes(2)
        remediate({"instance_id": current_nodes[0]}, LambdaContext())
        remediate({"instance_id": current_nodes[1]}, LambdaContext())
        w.finish_all("Success")
        never = w.add_nodes(1)  # a node with no record at all is drifted too
        prod_b_nodes = w.add_nodes(3, cluster="prod-b")  # prod-b reads the same parameter: swept too
        w.ssm.commands.clear()

        assert h.trigger()["clusters"] == ["prod-a", "prod-b"]
        results = h.drain()

        sent = sorted(i for c in w.ssm.commands for i in c["InstanceIds"])
        prod_b = [r for r in results if r["cluster"] == "prod-b"][0]
        assert prod_b["started"] == 3
        prod_a = [r for r in results if r["cluster"] == "prod-a"][0]
        assert prod_a["states"] == {"drifted": 5, "current": 2}
        assert sent == sorted(old_nodes + never + prod_b_nodes)
        assert {a["trigger"] for a in w.all_attempts() if a.get("trigger_key") == prod_a["sweep_id"]} == {"sweep"}
        assert {c["Parameters"]["CaBundle"][0] for c in w.ssm.commands} == {
            current_bundle(w.settings, "prod-a", w.clock()).b64
        }

        w.finish_all("Success")
        w.ssm.commands.clear()
        h.trigger(id="second-schedule")
        again = h.drain()
        assert w.ssm.commands == []
        assert all(r["action"] == "complete" and r["started"] == 0 for r in again)
        assert all(latest_succeeded(w, n) == new_fp for n in old_nodes + never + current_nodes)


def test_a_change_event_sweeps_only_the_clusters_reading_that_source():
    inline, _ = make_cert("Inline Root")
    env = {"CA_BUNDLE_SOURCES": json.dumps({"prod-b": ["inline"]}), "CA_BUNDLE_INLINE": inline}
    with harness(**env) as h:
        assert h.trigger("sweep-parameter-changed.json")["clusters"] == ["prod-a"]
        assert h.trigger("sweep-s3-object-created.json") == {"action": "ignored", "clusters": []}
        assert h.trigger("sweep-secret-changed.json") == {"action": "ignored", "clusters": []}
        assert h.trigger("sweep-secret-rotated.json") == {"action": "ignored", "clusters": []}


def test_redelivered_trigger_and_job_send_nothing_twice():
    with harness() as h:
        w = h.world
        nodes = w.add_nodes(7)
        h.trigger(id="same-event")
        h.trigger(id="same-event")  # EventBridge redelivers: two identical jobs queued
        for record in h.queue.due():  # and SQS delivers one of them twice
            sweep({"Records": [record]}, SweepContext())
            sweep({"Records": [record]}, SweepContext())
        sent = Counter(i for c in w.ssm.commands for i in c["InstanceIds"])
        assert sent == Counter({n: 1 for n in nodes})


# ---------------------------------------------------------------- limits and continuation


def test_in_flight_limit_holds_and_the_sweep_waits_for_room():
    with harness(MAX_IN_FLIGHT_PER_CLUSTER="20", SWEEP_RECHECK_SECONDS="300") as h:
        w = h.world
        nodes = w.add_nodes(45)
        w.add_nodes(3, cluster="prod-b")
        h.trigger()
        first = [r for r in h.drain() if r["cluster"] == "prod-a"]
        assert [len(c["InstanceIds"]) for c in w.ssm.commands if set(c["InstanceIds"]) <= set(nodes)] == [20]
        assert first[0]["action"] == "waiting"
        assert first[0]["continue_in"] == 300
        h.drain()  # not due yet: nothing happens, nothing more is sent
        assert sum(len(c["InstanceIds"]) for c in w.ssm.commands) == 23

        for _ in range(3):
            w.finish_all("Success")
            w.clock.advance(300)
            h.drain()
        sizes = [len(c["InstanceIds"]) for c in w.ssm.commands if set(c["InstanceIds"]) <= set(nodes)]
        assert sizes == [20, 20, 5]
        assert Counter(i for c in w.ssm.commands for i in c["InstanceIds"] if i in nodes) == Counter(nodes)


def test_a_1000_node_sweep_under_a_limit_of_500_sends_every_node_exactly_once():
    with harness(MAX_IN_FLIGHT_PER_CLUSTER="500", SWEEP_RECHECK_SECONDS="300") as h:
        w = h.world
        nodes = w.add_nodes(1000)
        h.trigger("sweep-parameter-changed.json")
        [first] = [r for r in h.drain(rounds=1) if r["cluster"] == "prod-a"]
        assert (first["started"], first["deferred"], first["action"]) == (500, 500, "waiting")
        assert sum(1 for inv in w.ssm.invocations.values() if inv.status in ("Pending", "InProgress")) == 500
        passes = 0
        while h.queue.pending and passes < 5:  # the held-back half waits, then goes once there is room
            w.finish_all("Success")
            w.clock.advance(300)
            h.drain()
            passes += 1
        sent = Counter(i for c in w.ssm.commands for i in c["InstanceIds"])
        assert sent == Counter({n: 1 for n in nodes})
        assert all(len(c["InstanceIds"]) <= 50 for c in w.ssm.commands)


def test_a_pass_short_of_time_continues_itself_without_skipping_or_repeating():
    with harness() as h:
        w = h.world
        nodes = w.add_nodes(260)
        h.trigger("sweep-parameter-changed.json")  # prod-a and prod-b both read that parameter
        # Each invocation has time for 4 checks: reading 260 histories takes 3 (every 100 nodes),
        # then one batch of 50 is sent, then it queues its continuation.
        results = h.drain(budget_calls=4)
        prod_a = [r for r in results if r["cluster"] == "prod-a"]
        assert [r["action"] for r in prod_a] == ["continued"] * 5 + ["waiting"]  # for the results
        assert [r["started"] for r in prod_a] == [50, 50, 50, 50, 50, 10]
        sent = Counter(i for c in w.ssm.commands for i in c["InstanceIds"])
        assert sent == Counter({n: 1 for n in nodes})
        assert all(len(c["InstanceIds"]) <= 50 for c in w.ssm.commands)


def test_ca_that_changes_mid_sweep_reaches_every_node_once_per_bundle():
    with harness(SWEEP_RECHECK_SECONDS="300") as h:
        w = h.world
        nodes = remediated(w, 120)
        w.ssm.commands.clear()
        second = h.rotate("Second Root")
        h.trigger("sweep-parameter-changed.json")
        # one batch of 50 goes out with the second CA, then the pass runs short of time
        [first_pass] = [r for r in h.drain(budget_calls=3, rounds=1) if r["cluster"] == "prod-a"]
        assert first_pass["started"] == 50
        assert first_pass["fingerprint"] == second
        third = h.rotate("Third Root")  # the CA changes again before the continuation runs

        results = [r for r in h.drain() if r["cluster"] == "prod-a"]
        assert results[0]["fingerprint"] == third
        assert results[0]["sweep_id"] != first_pass["sweep_id"]
        assert results[0]["states"] == {"in_flight_stale": 50, "drifted": 70}
        assert results[0]["action"] == "waiting"  # the 50 nodes busy with the second CA are re-checked

        # The 50 finish with the second CA now; the pass that sends them the third may come at the
        # edge of their cooldown (300 s, the re-check interval too), or one re-check later.
        for _ in range(3):
            w.finish_all("Success")
            w.clock.advance(300)
            h.drain()
        w.finish_all("Success")
        assert all(latest_succeeded(w, n) == third for n in nodes)
        per_node = h.sent_fingerprints()
        assert all(len(fps) == len(set(fps)) for fps in per_node.values()), "a bundle was sent twice to a node"
        # the first CA (manual invoke), then the third; the 50 caught mid-sweep got the second in between
        assert sorted(len(per_node[n]) for n in nodes) == [2] * 70 + [3] * 50


def test_nodes_in_their_cooldown_wait_for_a_later_pass_instead_of_being_skipped():
    with harness(INSTANCE_COOLDOWN_SECONDS="600", SWEEP_RECHECK_SECONDS="300") as h:
        w = h.world
        nodes = remediated(w, 3)
        new_fp = h.rotate("Rotated Root")  # 301 s after their results: still cooling down
        w.ssm.commands.clear()
        h.trigger()
        [first] = [r for r in h.drain(rounds=1) if r["cluster"] == "prod-a"]
        assert first["states"] == {"cooldown": 3}
        assert (first["started"], first["action"]) == (0, "waiting")
        assert w.ssm.commands == []
        assert not [a for a in w.all_attempts() if a["status"] == "SKIPPED"], "waiting, not skipped"
        w.clock.advance(300)
        h.drain()
        assert Counter(i for c in w.ssm.commands for i in c["InstanceIds"]) == Counter({n: 1 for n in nodes})
        w.finish_all("Success")
        assert all(latest_succeeded(w, n) == new_fp for n in nodes)


def test_an_open_circuit_breaker_pauses_the_sweep_until_it_closes():
    env = {"BREAKER_FAILURE_THRESHOLD": "2", "BREAKER_OPEN_SECONDS": "1200", "SWEEP_RECHECK_SECONDS": "300"}
    with harness(**env) as h:
        w = h.world
        failed = w.add_nodes(2)
        for node in failed:
            fail_launch(w, node)
        assert w.remediator.records.breaker(ClusterRef("prod-a"))["open_until"] > w.clock()
        nodes = w.add_nodes(5)
        w.ssm.commands.clear()
        waiting_before = len(w.queue.pending)

        h.trigger()
        [paused] = [r for r in h.drain(rounds=1) if r["cluster"] == "prod-a"]
        assert paused["action"] == "paused"
        assert "circuit breaker of cluster prod-a is open" in paused["reason"]
        assert paused["continue_in"] == 900  # SQS's longest delay; the breaker stays open 1,200 s
        assert [c for c in w.ssm.commands if set(c["InstanceIds"]) & set(nodes + failed)] == []
        assert not [a for a in w.all_attempts() if a["pk"] in nodes], "nothing queued to fire when it closes"
        assert len(w.queue.pending) == waiting_before, "no agent-wait churn while paused"

        w.clock.advance(900)
        [still] = [r for r in h.drain(rounds=1) if r["cluster"] == "prod-a"]
        assert (still["action"], still["continue_in"]) == ("paused", 300)  # the breaker's remaining time
        w.clock.advance(300)
        h.drain()
        sent = Counter(i for c in w.ssm.commands for i in c["InstanceIds"])
        assert sent == Counter({n: 1 for n in nodes + failed}), "sent once the breaker closed"


# ---------------------------------------------------------------- handler edges


def test_sample_sweep_job_runs_a_pass():
    with harness() as h:
        h.world.add_nodes(2)
        body = json.loads((EVENTS / "sweep-job-sqs.json").read_text())
        result = sweep(body, SweepContext())
        assert result["action"] == "waiting"  # the rollout completes once their results are in
        assert result["started"] == 2


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"Records": []}, "expected 1 message per invocation"),
        ({"Records": [{"body": "{"}]}, "unreadable message"),
        ({"Records": [{"body": '{"origin": "x", "cluster": "prod a", "started_at": 1}'}]}, "cluster"),
        (
            {
                "id": "x",
                "source": "aws.ec2",
                "detail-type": "EC2 Instance State-change Notification",
                "time": "2026-11-26T10:00:00Z",
            },
            "unsupported event aws.ec2",
        ),
        (["not", "an", "object"], "expected a JSON object"),
    ],
)
def test_bad_sweep_inputs_are_clear_errors(event, message):
    with harness(), pytest.raises(InvalidRequest, match=message):
        sweep(event, SweepContext())


# ---------------------------------------------------------------- Secrets Manager rotation


def cloudtrail(name: str, detail: dict[str, Any], service_event: bool = False) -> dict[str, Any]:
    """A Secrets Manager CloudTrail record as EventBridge delivers it. Shapes: API calls are
    "AWS API Call via CloudTrail" with the call's parameters in requestParameters (camelCase of
    the API's: UpdateSecretVersionStage SecretId/VersionStage/MoveToVersionId/RemoveFromVersionId);
    rotation progress (RotationStarted, RotationSucceeded) is "AWS Service Event via CloudTrail",
    eventType AwsServiceEvent, the secret in additionalEventData.SecretId
    (https://docs.aws.amazon.com/secretsmanager/latest/userguide/cloudtrail_log_entries.html,
    https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_UpdateSecretVersionStage.html)."""
    return {
        "version": "0",
        "id": f"ct-{name}",
        "detail-type": "AWS Service Event via CloudTrail" if service_event else "AWS API Call via CloudTrail",
        "source": "aws.secretsmanager",
        "account": "123456789012",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "eventVersion": "1.08",
            "eventSource": "secretsmanager.amazonaws.com",
            "eventName": name,
            "awsRegion": "us-east-1",
            "eventType": "AwsServiceEvent" if service_event else "AwsApiCall",
            "requestParameters": None,
            "responseElements": None,
            **detail,
        },
    }


def test_a_secrets_manager_rotation_sweeps_when_awscurrent_moves_with_the_new_bundle():
    import boto3

    with harness(CA_BUNDLE_SOURCES=json.dumps({"*": ["secretsmanager:pki/eks-ca"]})) as h:
        w = h.world
        secrets = boto3.client("secretsmanager", region_name="us-east-1")
        old_ca, _ = make_cert("Secret Root 2026")
        created = secrets.create_secret(Name="pki/eks-ca", SecretString=old_ca)
        arn, old_version = created["ARN"], created["VersionId"]
        nodes = remediated(w, 2)
        old_fp = latest_succeeded(w, nodes[0])

        def trigger(event: dict[str, Any]) -> dict[str, Any]:
            w.clock.advance(w.settings.bundle_cache_seconds + 1)  # the source cache expires between steps
            now = datetime.fromtimestamp(w.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return sweep(event | {"time": now}, LambdaContext())

        # RotateSecret starts the rotation; its Lambda's createSecret step writes AWSPENDING
        token = "c1a2b3c4-0000-4000-8000-00000000beef"
        assert trigger(cloudtrail("RotateSecret", {"requestParameters": {"secretId": arn}})) == {
            "action": "ignored",
            "clusters": [],
        }
        assert (
            trigger(cloudtrail("RotationStarted", {"additionalEventData": {"SecretId": arn}}, True))["clusters"] == []
        )
        new_ca, _ = make_cert("Secret Root 2027")
        secrets.put_secret_value(
            SecretId=arn, ClientRequestToken=token, SecretString=new_ca, VersionStages=["AWSPENDING"]
        )
        pending = {"secretId": arn, "clientRequestToken": token, "versionStages": ["AWSPENDING"]}
        assert trigger(cloudtrail("PutSecretValue", {"requestParameters": pending}))["clusters"] == []
        assert h.drain() == []
        assert w.ssm.commands[-1]["Parameters"] == w.ssm.commands[0]["Parameters"]  # nothing new sent

        # finishSecret: AWSCURRENT moves to the new version - the value GetSecretValue returns changes
        secrets.update_secret_version_stage(
            SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=token, RemoveFromVersionId=old_version
        )
        moved = {
            "secretId": arn,
            "versionStage": "AWSCURRENT",
            "moveToVersionId": token,
            "removeFromVersionId": old_version,
        }
        assert trigger(cloudtrail("UpdateSecretVersionStage", {"requestParameters": moved}))["clusters"] == [
            "prod-a",
            "prod-b",
        ]
        h.drain()
        w.finish_all("Success")
        new_fp = current_bundle(w.settings, "prod-a", w.clock()).fingerprint
        assert new_fp != old_fp
        assert {n: fps[-1] for n, fps in h.sent_fingerprints().items()} == {n: new_fp for n in nodes}

        # the rotation's end is reported too: a sweep again, which finds every node current
        done = trigger(cloudtrail("RotationSucceeded", {"additionalEventData": {"SecretId": arn}}, True))
        assert done["clusters"] == ["prod-a", "prod-b"]
        sent = len(w.ssm.commands)
        assert all(r["action"] == "complete" and r["started"] == 0 for r in h.drain())
        assert len(w.ssm.commands) == sent


@pytest.mark.parametrize(
    ("name", "request_parameters", "swept"),
    [
        ("PutSecretValue", {"secretId": "pki/eks-ca"}, True),  # a direct write: AWSCURRENT by default
        ("PutSecretValue", {"secretId": "pki/eks-ca", "versionStages": ["AWSCURRENT", "v2"]}, True),
        ("UpdateSecret", {"secretId": "pki/eks-ca", "description": "x"}, True),
        (
            "UpdateSecretVersionStage",
            {"secretId": "pki/eks-ca", "versionStage": "AWSPENDING", "moveToVersionId": "t"},
            False,
        ),
        (
            "UpdateSecretVersionStage",
            {"secretId": "pki/eks-ca", "versionStage": "AWSCURRENT", "removeFromVersionId": "t"},
            False,
        ),
    ],
)
def test_secret_writes_sweep_only_when_awscurrent_may_have_changed(name, request_parameters, swept):
    with harness(CA_BUNDLE_SOURCES=json.dumps({"*": ["secretsmanager:pki/eks-ca"]})) as h:
        result = h.trigger("sweep-secret-changed.json", **cloudtrail(name, {"requestParameters": request_parameters}))
        assert result["clusters"] == (["prod-a", "prod-b"] if swept else [])
        failed = cloudtrail(name, {"requestParameters": request_parameters, "errorCode": "AccessDeniedException"})
        assert h.trigger("sweep-secret-changed.json", **failed)["clusters"] == []


def test_the_secret_rule_matches_what_the_sweep_acts_on():
    from eks_ca_remediator.sweeps import SECRET_CHANGES, SECRET_EVENT_TYPES
    from ssm_document import load_template

    rule = load_template((EVENTS.parent / "template.yaml").read_text())["Resources"]["SecretChangedRule"]
    pattern = rule["Properties"]["EventPattern"]
    assert set(pattern["detail"]["eventName"]) == SECRET_CHANGES
    assert set(pattern["detail-type"]) == SECRET_EVENT_TYPES
    assert "RotateSecret" not in SECRET_CHANGES  # it only starts a rotation
