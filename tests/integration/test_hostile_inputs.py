"""The hostile input corpus (tests/data/hostile_inputs.json) through the real handlers.

Every case must be refused with a clear error - the expected error type and a message naming
the problem, bounded in size - and must send no command and create no record. SQS handlers
report an unreadable message as a batch item failure instead (SQS redelivers it, then moves it
to the dead-letter queue).
"""

from __future__ import annotations

import base64
import gzip
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from eks_ca_remediator import errors

from tests.fakes.pki import make_cert
from tests.fakes.world import BUNDLE_PARAMETER, LambdaContext, World

CORPUS = json.loads((Path(__file__).resolve().parents[1] / "data" / "hostile_inputs.json").read_text())
CASES: list[dict[str, Any]] = CORPUS["cases"]
MAX_MESSAGE_CHARS = 600


def expand(value: Any, tokens: dict[str, str]) -> Any:
    """Resolve the corpus' tokens and generators into the event a handler receives."""
    if isinstance(value, str):
        for token, replacement in tokens.items():
            value = value.replace(token, replacement)
        return value
    if isinstance(value, list):
        return [expand(v, tokens) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        [(key, arg)] = value.items()
        arg = expand(arg, tokens)
        match key:
            case "$repeat":
                return arg[0] * arg[1]
            case "$concat":
                return "".join(arg)
            case "$json":
                return json.dumps(arg)
            case "$b64":
                return base64.b64encode(arg.encode()).decode()
            case "$gzip_b64":
                raw = arg if isinstance(arg, str) else json.dumps(arg)
                return base64.b64encode(gzip.compress(raw.encode())).decode()
            case "$gzip_b64_truncated":
                packed = gzip.compress(json.dumps(arg).encode())
                return base64.b64encode(packed[: len(packed) // 2]).decode()
    return {k: expand(v, tokens) for k, v in value.items()}


def hostile_bundle(kind: str, world: World) -> str:
    ca, key = make_cert("Hostile Test CA")
    body = ca.splitlines()
    return {
        "ca+key": ca + key,
        "leaf": make_cert("registry.example.internal", ca=False)[0],
        "expired": make_cert("Old CA", not_before=__import__("datetime").datetime(2001, 1, 1), days=30)[0],
        "future": make_cert(
            "Future CA",
            not_before=__import__("datetime").datetime.fromtimestamp(world.clock() + 86400 * 30),
        )[0],
        "garbage": "this is not a certificate; $(reboot)\n",
        "truncated": "\n".join(body[: len(body) // 2]) + "\n",
        "public-key": "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n",
        "corrupt": "\n".join([body[0], "A" * 64, "B" * 64, body[-1]]) + "\n",
    }[kind]


def handler_for(name: str) -> Any:
    try:
        return importlib.import_module(name).handler
    except ModuleNotFoundError:
        pytest.skip(f"function {name} is not part of this tree")


def test_the_corpus_is_large_and_covers_every_trigger():
    assert len(CASES) >= 50
    assert {c["handler"] for c in CASES} >= {
        "remediate",
        "on_launch",
        "on_command_status",
        "agent_wait",
        "pull_failure",
        "sweep",
    }
    assert len({c["id"] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_hostile_input_is_refused_clearly_and_sends_nothing(world, case):
    [node] = world.add_nodes(cluster="prod-a")
    [other] = world.add_nodes(cluster="staging")
    [stopped] = world.add_nodes(cluster="prod-a")
    world.ec2.stop_instances(InstanceIds=[stopped])
    if "bundle" in case:
        pem = hostile_bundle(case["bundle"], world)
        world.ssm_parameters.put_parameter(Name=BUNDLE_PARAMETER, Value=pem, Type="SecureString", Overwrite=True)
    event = expand(case["event"], {"$NODE": node, "$OTHER": other, "$STOPPED": stopped})
    handler = handler_for(case["handler"])

    if case["expect"] == "batch_failure":
        result = handler(event, LambdaContext())
        assert result["batchItemFailures"], "the unreadable message must be retried, then dead-lettered"
    else:
        with pytest.raises(getattr(errors, case["error_type"])) as raised:
            handler(event, LambdaContext())
        message = str(raised.value)
        assert case["error"] in message
        assert len(message) <= MAX_MESSAGE_CHARS, "errors name the problem, they do not echo the input"

    assert world.ssm.commands == []
    assert world.ssm.calls.get("SendCommand", 0) == 0
    assert world.all_attempts() == []
