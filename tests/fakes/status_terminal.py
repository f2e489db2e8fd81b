"""Run `eks-ca-remediator status` on the fleet's records (moto) in whatever terminal runs this:
tests/integration/test_status_terminal.py runs it in a tmux pane of a known width.

    .venv/bin/python -m tests.fakes.status_terminal [status options...]   (from the repository root)

It needs the repository's tools/ on the import path (tests.fakes.world reads the template with
tools/ssm_document.py), as pytest's `pythonpath` has it; so it puts it there itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TOOLS = str(Path(__file__).resolve().parents[2] / "tools")
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

os.environ.update(
    {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
)

import boto3  # noqa: E402
import botocore.client  # noqa: E402
from eks_ca_remediator import cli  # noqa: E402
from moto import mock_aws  # noqa: E402

from tests.fakes import fleet  # noqa: E402
from tests.fakes.world import table_definition  # noqa: E402


def main(argv: list[str]) -> int:
    real = botocore.client.BaseClient._make_api_call

    def api(self, operation, params):  # DescribeStacks as CloudFormation answers it (fleet.py)
        if operation == "DescribeStacks":
            return fleet.describe_stacks(params["StackName"])
        return real(self, operation, params)

    botocore.client.BaseClient._make_api_call = api
    with mock_aws():
        table = boto3.resource("dynamodb").create_table(TableName=fleet.TABLE, **table_definition())
        fleet.seed(table)
        fleet.seed_big(table, nodes=1500)
        return cli.main(["status", "--stack", fleet.STACK, *argv], clock=lambda: fleet.NOW)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
