"""Settings parsed once from the environment; events parsed at the edge."""

from __future__ import annotations

import pytest
from eks_ca_remediator.edge import parse
from eks_ca_remediator.errors import ConfigurationError, InvalidRequest
from eks_ca_remediator.models import CommandInvocationStatusChange, InstanceStateChange, Plan, Strategy, Trigger
from eks_ca_remediator.settings import Settings

BASE = {
    "RECORDS_TABLE": "records",
    "DOCUMENT_NAME": "stack-RemediateCa",
    "ENROLLED_CLUSTERS": "prod-a, prod-b",
    "CA_BUNDLE_PARAMETER": "/pki/bundle",
}


def test_settings_from_env_with_defaults():
    s = Settings.from_env(BASE)
    assert s.enrolled_clusters == ("prod-a", "prod-b")
    assert s.default_strategy is Strategy.AUTO
    assert s.dry_run is False
    assert s.registry_hosts == ()
    assert s.agent_wait_deadline_seconds == 900


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"ENROLLED_CLUSTERS": ""}, "ENROLLED_CLUSTERS"),
        ({"ENROLLED_CLUSTERS": "good,bad name"}, "not EKS cluster names"),
        ({"DEFAULT_STRATEGY": "reboot"}, "DEFAULT_STRATEGY"),
        ({"REGISTRY_HOSTS": "registry.example.com:5000,$(id)"}, "not registry host"),
        ({"CANARY_IMAGE": "nginx; rm -rf /"}, "not an image reference"),
        ({"AGENT_RECHECK_SECONDS": "0"}, "AGENT_RECHECK_SECONDS"),
        ({"DRY_RUN": "perhaps"}, "DRY_RUN"),
        ({"RECORDS_TABLE": ""}, "RECORDS_TABLE"),
    ],
)
def test_bad_configuration_is_a_clear_error(override, message):
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env({**BASE, **override})


def test_missing_configuration_names_what_is_missing():
    with pytest.raises(ConfigurationError, match="DOCUMENT_NAME: Field required"):
        Settings.from_env({k: v for k, v in BASE.items() if k != "DOCUMENT_NAME"})


def test_plan_document_parameters_use_the_documents_names():
    plan = Plan(
        cluster="prod-a",
        trigger=Trigger.MANUAL,
        strategy=Strategy.HOSTS_TOML,
        dry_run=True,
        registry_hosts=("a.example:5000", "b"),
        canary_image="",
        bundle_b64="QUJD",
        fingerprint="f" * 64,
    )
    assert plan.document_parameters() == {
        "CaBundle": ["QUJD"],
        "Strategy": ["hosts-toml"],
        "RegistryHosts": ["a.example:5000,b"],
        "CanaryImage": [""],
        "DryRun": ["true"],
    }


def test_event_parsing_errors_name_the_field_not_the_value():
    event = {
        "id": "1",
        "account": "123456789012",
        "region": "us-east-1",
        "time": "2026-11-26T10:00:00Z",
        "source": "aws.ec2",
        "detail-type": "EC2 Instance State-change Notification",
        "detail": {"instance-id": "i-123; curl evil", "state": "running"},
    }
    with pytest.raises(InvalidRequest) as raised:
        parse(InstanceStateChange, event, "EC2 state-change event")
    assert "detail.instance-id" in str(raised.value)
    assert "curl evil" not in str(raised.value)


def test_status_event_from_another_source_is_refused():
    event = {
        "id": "1",
        "account": "123456789012",
        "region": "us-east-1",
        "time": "2026-11-26T10:00:00Z",
        "source": "custom.attacker",
        "detail-type": "EC2 Command Invocation Status-change Notification",
        "detail": {
            "command-id": "0" * 8 + "-0000-0000-0000-" + "0" * 12,
            "instance-id": "i-0123456789abcdef0",
            "status": "Success",
            "document-name": "x",
        },
    }
    with pytest.raises(InvalidRequest, match="source"):
        parse(CommandInvocationStatusChange, event, "SSM command status event")
