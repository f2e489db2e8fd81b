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
