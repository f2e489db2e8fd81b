"""The status command's refusals that need no records: --since, credentials, region, samconfig."""

from __future__ import annotations

import io

import pytest
from eks_ca_remediator import cli, status


def run(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    return cli.main(["status", *argv], out=io.StringIO(), err=err), err.getvalue()


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("24h", 86400), ("7d", 604800)])
def test_since_parses_minutes_hours_days(text, seconds):
    assert status.parse_since(text) == seconds


@pytest.mark.parametrize("since", ["1w", "24", "h", "-5m", "0d", "1.5h"])
def test_since_refuses_anything_else(since, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["status", f"--since={since}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "30m, 24h or 7d" in err


def test_no_credentials_is_a_message_not_a_traceback(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code, err = run("--table", "records", "--cluster", "prod-a")
    assert code == 1
    assert err.startswith("eks-ca-remediator status: no AWS credentials")
    assert err.count("\n") == 1


def test_no_region_is_a_message_not_a_traceback(monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    code, err = run("--table", "records", "--cluster", "prod-a")
    assert code == 1
    assert "no AWS region: pass --region" in err
    assert err.count("\n") == 1


def test_default_stack_is_samconfigs(tmp_path):
    (tmp_path / "samconfig.toml").write_text(
        'version = 0.1\n[default.global.parameters]\nstack_name = "mine"\n[prod.deploy.parameters]\nstack_name = "mine-prod"\n'
    )
    assert cli.default_stack("default", tmp_path) == "mine"
    assert cli.default_stack("prod", tmp_path) == "mine-prod"
    assert cli.default_stack("default", tmp_path / "elsewhere") == "eks-ca-remediator"
