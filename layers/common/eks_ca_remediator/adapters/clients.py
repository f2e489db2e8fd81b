"""boto3 client factories, created on first use (never at import) and cached per warm Lambda.

Tests swap a client by calling `<factory>.cache_clear()` under moto, or by passing their own
client to the adapter.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

# SSM has no published TPS: adaptive retries back off on ThrottlingException for us.
RETRY_CONFIG = Config(retries={"max_attempts": 8, "mode": "adaptive"}, connect_timeout=5, read_timeout=20)


@cache
def client(service: str) -> Any:
    return boto3.client(service, config=RETRY_CONFIG)


@cache
def resource(service: str) -> Any:
    return boto3.resource(service, config=RETRY_CONFIG)


def reset() -> None:
    """Forget every cached client (used by tests between moto contexts)."""
    client.cache_clear()
    resource.cache_clear()
