"""Shared fixtures: a moto world (EC2, DynamoDB, SSM parameters, SQS) plus the fake Run Command."""

from __future__ import annotations

import os

import pytest

# Credentials and region for moto, set before any boto3 client exists; never real ones.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_METRICS_NAMESPACE": "EksCaRemediatorTest",
        "POWERTOOLS_SERVICE_NAME": "eks-ca-remediator",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
)


@pytest.fixture
def world():
    from tests.fakes.world import World

    with World.create() as w:
        yield w


# The IAM contract (tests/fakes/iam_contract.py): every client the tests create records its calls,
# and while a test world exists each call a function's code makes is judged against the role the
# rendered templates give it. A call no statement allows fails the test that made it.
from tests.fakes import iam_contract  # noqa: E402 - after the environment above

iam_contract.install()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    iam_contract.take_denials()
    outcome = yield
    denied = iam_contract.take_denials()
    if denied:
        violation = iam_contract.ContractViolation(
            "the IAM contract refuses calls of this test (fix the template's policies, not the contract):\n  "
            + "\n  ".join(dict.fromkeys(denied))
        )
        if outcome.excinfo is not None:
            violation.__context__ = outcome.excinfo[1]
        outcome.force_exception(violation)
