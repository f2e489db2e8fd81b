"""The environment the moto benches run in: fake credentials for moto, Powertools quiet.

Set before the handlers are imported (Powertools reads it when their Logger and Metrics are made).
"""

from __future__ import annotations

import os

ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_METRICS_NAMESPACE": "EksCaRemediatorBench",
    "POWERTOOLS_SERVICE_NAME": "eks-ca-remediator",
    "POWERTOOLS_LOG_LEVEL": "ERROR",
    "POWERTOOLS_TRACE_DISABLED": "true",
}


def use(**extra: str) -> None:
    os.environ.update(ENVIRONMENT | extra)
