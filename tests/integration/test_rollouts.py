"""Rollouts in waves through the real handlers: a new CA bundle reaches 1 node, then 10 %, 50 %,
100 %; the first failure halts it; other triggers send the good bundle meanwhile; resume and
rollback. The fake nodes judge the bundle they are sent (World.node_verdict)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from eks_ca_remediator.logic.plans import current_bundle
from eks_ca_remediator.models import ClusterRef
from eks_ca_remediator.rollouts import trust_changed
from remediate import handler as remediate

from tests.fakes.pki import make_cert
from tests.fakes.world import BUNDLE_PARAMETER, LambdaContext
from tests.integration.test_metrics import emitted
from tests.integration.test_sweep import Harness, harness

REGISTRY_CA = make_cert("Registry Root CA")[0]
WAVES = {"ROLLOUT_WAVES": "1,10%,50%,100%", "ROLLOUT_BAKE_SECONDS": "60", "SWEEP_RECHECK_SECONDS": "300"}


@contextmanager
def fleet(nodes: int, **env: str) -> Iterator[tuple[Harness, list[str], str]]:
    """`nodes` nodes of prod-a holding a good bundle (REGISTRY_CA): its rollout completed."""
    with harness(**(WAVES | env)) as h:
        w = h.world
        w.registry_ca = REGISTRY_CA
        put_bundle(h, REGISTRY_CA)
        ids = w.add_nodes(nodes)
        h.trigger()
        settle(h)
        good = current_bundle(w.settings, "prod-a", w.clock()).fingerprint
        assert w.remediator.records.good_bundle(ClusterRef("prod-a"))["fingerprint"] == good
        yield h, ids, good


def put_bundle(h: Harness, *pems: str) -> str:
    w = h.world
    w.ssm_parameters.put_parameter(Name=BUNDLE_PARAMETER, Value="".join(pems), Type="SecureString", Overwrite=True)
    w.clock.advance(w.settings.bundle_cache_seconds + 1)
    return current_bundle(w.settings, "prod-a", w.clock()).fingerprint


def settle(h: Harness, step: int = 10, limit: int = 20_000) -> float:
    """Nodes answer, queued passes run, time passes; until nothing is in flight or queued.
    Returns the simulated seconds it took."""
    w, start = h.world, h.world.clock()
    for _ in range(limit):
        w.finish_all()
        h.drain(rounds=1)
        open_invocations = [i for i in w.ssm.invocations.values() if i.status in ("Pending", "InProgress")]
        if not h.queue.pending and not open_invocations:
            return w.clock() - start
        w.clock.advance(step)
    raise AssertionError("rollout did not settle")


def sends(h: Harness, fingerprint: str) -> Counter[str]:
    """Per node, how many SendCommand calls carried the bundle `fingerprint` (from the fake Run
    Command itself: a scan of the records table would need paging past 1 MB)."""
    sent: Counter[str] = Counter()
    for command in h.world.ssm.commands:
        pem = base64.b64decode(command["Parameters"]["CaBundle"][0])
        if hashlib.sha256(pem).hexdigest() == fingerprint:
            sent.update(command["InstanceIds"])
    return sent


def rollout(h: Harness, fingerprint: str) -> dict[str, Any]:
    item = h.world.remediator.records.rollout(ClusterRef("prod-a"), fingerprint)
    assert item is not None
    return item


def manual(payload: dict[str, Any]) -> dict[str, Any]:
    return remediate(payload, LambdaContext())


def test_a_bundle_that_fails_verification_changes_no_node_when_registry_hosts_is_set():
    with fleet(300) as (h, nodes, good):
        w = h.world
        bad = put_bundle(h, make_cert("Wrong Root CA")[0])  # lacks the registry's CA
        h.trigger(id="rotation")
        settle(h)

        item = rollout(h, bad)
        assert item["rollout_status"] == "HALTED"
        assert (item["halted_wave"], item["halted_committed"]) == (0, False)
        assert "x509" in item["halted_reason"]
        assert sum(sends(h, bad).values()) == 1, "only wave 1 (one node) was sent the bad bundle"
        changed = [n for n in nodes if w.trust.get(n) != good]
        assert changed == [], "the node rejected it before commit: no trust changed"
        assert not [a for a in w.all_attempts() if a.get("fingerprint") == bad and trust_changed(a)]

        # later sweeps and other triggers keep to the good bundle while it is halted
        h.trigger(id="next-schedule")
        settle(h)
        assert sum(sends(h, bad).values()) == 1
        late = w.add_nodes(1)[0]
        assert manual({"instance_id": late})["records"][0]["fingerprint"] == good

        # the source is fixed (the registry's CA is back in the bundle), the rollout resumed
        fixed = put_bundle(h, REGISTRY_CA, make_cert("Second Root CA")[0])
        resumed = manual({"cluster": "prod-a", "rollout": "resume"})
        assert resumed["rollout"] == "resumed"
        took = settle(h)
        assert rollout(h, fixed)["rollout_status"] == "COMPLETE"
        assert rollout(h, bad)["rollout_status"] == "SUPERSEDED"
        assert all(w.trust[n] == fixed for n in nodes + [late])
        assert sends(h, fixed) == Counter({n: 1 for n in nodes + [late]}), "each node sent the fixed bundle once"
        assert w.remediator.records.good_bundle(ClusterRef("prod-a"))["fingerprint"] == fixed
        print(
            f"\n300-node fault test (RegistryHosts set): nodes whose trust changed with the bad bundle: 0; "
            f"SendCommand instances with it: 1; resumed rollout reached 301 nodes in {took:.0f} s simulated"
        )


def test_without_registry_hosts_at_most_one_node_changes_and_a_rollback_restores_it():
    with fleet(300, REGISTRY_HOSTS="") as (h, nodes, good):
        w = h.world
        bad = put_bundle(h, make_cert("Wrong Root CA")[0])
        h.trigger(id="rotation")
        settle(h)

        item = rollout(h, bad)
        assert (item["rollout_status"], item["halted_wave"], item["halted_committed"]) == ("HALTED", 0, True)
        changed = [n for n in nodes if w.trust.get(n) != good]
        assert changed == [item["halted_node"]], "the one node of wave 1, committed before it could verify"

        rolled = manual({"cluster": "prod-a", "rollout": "rollback"})
        assert [r["pk"] for r in rolled["records"]] == changed
        settle(h)
        assert all(w.trust[n] == good for n in nodes), "the node is back on the last good bundle"
        assert rollout(h, bad)["rollout_status"] == "HALTED"  # until resumed or superseded


def test_waves_go_1_then_10_50_100_percent_and_other_triggers_send_the_good_bundle_meanwhile():
    with fleet(40) as (h, nodes, good):
        w = h.world
        new = put_bundle(h, REGISTRY_CA, make_cert("Added Root CA")[0])
        w.ssm.commands.clear()
        h.trigger(id="rotation")
        h.drain(rounds=1)
        assert sum(sends(h, new).values()) == 1  # wave 1: one node
        late = w.add_nodes(1)[0]
        assert manual({"instance_id": late})["records"][0]["fingerprint"] == good  # not yet the new one
        forced = w.add_nodes(1)[0]
        assert manual({"instance_id": forced, "force": True})["records"][0]["fingerprint"] == new

        seen: list[int] = []
        order: list[str] = []
        for _ in range(2000):
            w.finish_all()
            h.drain(rounds=1)
            sent = sends(h, new)
            order += [n for n in sent if n not in order]
            total = sum(sent.values())
            if not seen or total != seen[-1]:
                seen.append(total)
            if not h.queue.pending:
                break
            w.clock.advance(10)
        # cumulative sends: 1 (+1 forced), then to 10 % (5 of 42), 50 % (21), 100 % (42); the node
        # given the good bundle by hand is still in its cooldown (InstanceCooldownSeconds, 300 s)
        # when the last wave starts, so it is sent after the others
        assert seen == [2, 5, 21, 41, 42]
        assert order[-1] == late
        assert rollout(h, new)["rollout_status"] == "COMPLETE"
        assert manual({"instance_id": late})["records"][0]["fingerprint"] == new


def test_a_one_node_cluster_rolls_out_in_one_wave_and_the_first_deployment_has_no_good_bundle():
    with harness(**WAVES) as h:
        w = h.world
        w.registry_ca = REGISTRY_CA
        put_bundle(h, REGISTRY_CA)
        [node] = w.add_nodes(1)
        assert w.remediator.records.good_bundle(ClusterRef("prod-a")) is None
        # first deployment: nothing better to send a launched node than the bundle being rolled out
        h.trigger()
        [first] = [r for r in h.drain(rounds=1) if r["cluster"] == "prod-a"]
        assert (first["wave"], first["waves"], first["started"]) == (1, 1, 1)
        settle(h)
        assert w.remediator.records.good_bundle(ClusterRef("prod-a")) is not None
        assert w.trust[node] == current_bundle(w.settings, "prod-a", w.clock()).fingerprint


def test_a_newer_change_supersedes_a_rollout_in_progress():
    with fleet(20) as (h, nodes, good):
        w = h.world
        second = put_bundle(h, REGISTRY_CA, make_cert("Second Root CA")[0])
        h.trigger(id="second")
        h.drain(rounds=1)
        third = put_bundle(h, REGISTRY_CA, make_cert("Third Root CA")[0])
        h.trigger(id="third")
        settle(h)
        assert rollout(h, second)["rollout_status"] == "SUPERSEDED"
        assert rollout(h, third)["rollout_status"] == "COMPLETE"
        assert all(w.trust[n] == third for n in nodes)
        assert sum(sends(h, second).values()) == 1  # the superseded rollout got no further than wave 1


def test_in_flight_limit_and_breaker_act_together_with_waves():
    env = {"MAX_IN_FLIGHT_PER_CLUSTER": "3", "BREAKER_FAILURE_THRESHOLD": "1", "BREAKER_OPEN_SECONDS": "600"}
    with fleet(30, **env) as (h, nodes, good):
        w = h.world
        new = put_bundle(h, REGISTRY_CA, make_cert("Added Root CA")[0])
        h.trigger(id="rotation")
        in_flight_max = 0
        for _ in range(3000):
            h.drain(rounds=1)
            open_now = sum(1 for i in w.ssm.invocations.values() if i.status in ("Pending", "InProgress"))
            in_flight_max = max(in_flight_max, open_now)
            w.finish_all()
            if not h.queue.pending:
                break
            w.clock.advance(10)
        assert in_flight_max <= 3
        assert rollout(h, new)["rollout_status"] == "COMPLETE"
        assert all(w.trust[n] == new for n in nodes)

        bad = put_bundle(h, make_cert("Wrong Root CA")[0])
        h.trigger(id="bad")
        settle(h)
        assert rollout(h, bad)["rollout_status"] == "HALTED"
        breaker = w.remediator.records.breaker(ClusterRef("prod-a"))
        # the one failure opened the breaker (threshold 1) for BREAKER_OPEN_SECONDS
        assert breaker["open_until"] - breaker["opened_at"] == 600
        # the breaker's open: a resume goes nowhere until it closes; the halt, not the breaker, held wave 2
        assert sum(sends(h, bad).values()) == 1
        json.dumps(rollout(h, bad), default=str)  # the record reads as plain JSON


TOPIC = "arn:aws:sns:us-east-1:123456789012:platform-alarms"


def _inbox(topic: str) -> Any:
    """A queue subscribed to the topic, as an on-call's mail would be; returns a reader of
    (subject, message) pairs received since the last read."""
    sns, sqs = boto3.client("sns", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")
    sns.create_topic(Name=topic.rsplit(":", 1)[1])
    url = sqs.create_queue(QueueName="on-call")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)

    def read() -> list[tuple[str, str]]:
        got = []
        while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            for m in batch:
                envelope = json.loads(m["Body"])
                got.append((envelope.get("Subject", ""), envelope["Message"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return got

    return read


def _ca(pem: str) -> tuple[str, str, str]:
    cert = x509.load_pem_x509_certificate(pem.encode())
    sha = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return cert.subject.rfc4514_string(), sha, cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_every_change_of_trust_and_a_halt_are_told_to_the_topic_once():
    with harness(**(WAVES | {"ALARM_TOPIC_ARN": TOPIC})) as h:
        w = h.world
        inbox = _inbox(TOPIC)
        w.registry_ca = REGISTRY_CA
        put_bundle(h, REGISTRY_CA)
        nodes = w.add_nodes(30)
        h.trigger()
        settle(h)
        # one message per cluster whose trust changes (prod-b, also enrolled, gets its own)
        received = inbox()
        assert sorted(s.split(" changes")[0] for s, _ in received) == [
            "eks-ca-remediator: CA trust of cluster prod-a",
            "eks-ca-remediator: CA trust of cluster prod-b",
        ]
        first = [m for m in received if "prod-a" in m[0]]
        subject, message = first[0]
        assert "prod-a" in subject
        assert "1 added, 0 removed" in subject
        name, sha, not_after = _ca(REGISTRY_CA)
        assert f"+ CA {name} sha256 {sha} not after {not_after}" in message
        assert "first bundle" in message

        # a rotation that drops the registry's CA: announced (one gained, one lost), then halted
        wrong = make_cert("Wrong Root CA")[0]
        bad = put_bundle(h, wrong)
        for n in ("rotation", "next-schedule"):
            h.trigger(id=n)
            settle(h)
        told = [m for m in inbox() if "prod-a" in m[0]]
        assert len(told) == 2, [s for s, _ in told]
        (announce_subject, announce), (halt_subject, halt) = told
        assert "1 added, 1 removed" in announce_subject
        assert f"- CA {name} sha256 {sha}" in announce
        assert f"+ CA {_ca(wrong)[0]}" in announce
        assert bad in announce
        item = rollout(h, bad)
        assert "halted in cluster prod-a (wave 1)" in halt_subject
        assert item["halted_node"] in halt
        assert item["halted_node"] in nodes
        assert "x509" in halt
        assert "trust changed: no" in halt
        for action in ("resume", "rollback"):
            assert f'--event \'{{"cluster": "prod-a", "rollout": "{action}"}}\'' in halt


def test_a_topic_that_refuses_is_counted_and_the_halt_still_recorded(capsys):
    with fleet(5, ALARM_TOPIC_ARN=TOPIC) as (h, nodes, good):  # no such topic: SNS answers NotFound
        bad = put_bundle(h, make_cert("Wrong Root CA")[0])
        h.trigger(id="rotation")
        settle(h)
        assert rollout(h, bad)["rollout_status"] == "HALTED"
        # the first bundle's announcement and the rotation's for each enrolled cluster (prod-a,
        # prod-b), prod-a's halt: each refused, each counted
        assert sum(emitted(capsys.readouterr().out).get("NotificationsFailed", [])) == 5
