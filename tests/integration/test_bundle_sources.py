"""CA bundle sources against moto: SSM, S3, Secrets Manager, ACM Private CA, inline; merged per cluster."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from eks_ca_remediator.adapters import ca_sources
from eks_ca_remediator.bundle import canonical_bundle
from eks_ca_remediator.errors import BundleError, ConfigurationError
from eks_ca_remediator.logic.plans import build_plan, current_bundle
from eks_ca_remediator.models import Trigger
from eks_ca_remediator.settings import Settings
from remediate import handler as remediate

from tests.fakes.pki import make_cert
from tests.fakes.world import BUNDLE_PARAMETER, REGION, LambdaContext, World

BUCKET = "pki-bundles"
KEY = "eks/ca-bundle.pem"


def sign_ca_csr(csr_pem: str, issuer_pem: str, issuer_key_pem: str) -> str:
    """Sign a subordinate CA's CSR with the issuer's key (basicConstraints CA:TRUE)."""
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    issuer = x509.load_pem_x509_certificate(issuer_pem.encode())
    key = serialization.load_pem_private_key(issuer_key_pem.encode(), password=None)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(issuer.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=200))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def private_ca_with_chain() -> tuple[str, str, str]:
    """An ACM PCA subordinate CA, activated with a certificate signed by our root: (arn, sub PEM, root PEM)."""
    root_pem, root_key = make_cert("Example Offline Root CA")
    pca = boto3.client("acm-pca", region_name=REGION)
    arn = pca.create_certificate_authority(
        CertificateAuthorityConfiguration={
            "KeyAlgorithm": "RSA_2048",
            "SigningAlgorithm": "SHA256WITHRSA",
            "Subject": {"CommonName": "Example Issuing CA"},
        },
        CertificateAuthorityType="SUBORDINATE",
    )["CertificateAuthorityArn"]
    csr = pca.get_certificate_authority_csr(CertificateAuthorityArn=arn)["Csr"]
    sub_pem = sign_ca_csr(csr, root_pem, root_key)
    pca.import_certificate_authority_certificate(
        CertificateAuthorityArn=arn, Certificate=sub_pem.encode(), CertificateChain=root_pem.encode()
    )
    return arn, sub_pem, root_pem


def put_object(text: str, key: str = KEY) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    if not s3.list_buckets()["Buckets"]:
        s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=key, Body=text.encode())


def put_secret(text: str, name: str = "pki/eks-ca") -> str:
    return boto3.client("secretsmanager", region_name=REGION).create_secret(Name=name, SecretString=text)["ARN"]


def pems(bundle_pem: str) -> set[str]:
    return {
        c.public_bytes(serialization.Encoding.PEM).decode()
        for c in x509.load_pem_x509_certificates(bundle_pem.encode())
    }


def sources_env(mapping: dict[str, list[str]], **extra: str) -> dict[str, str]:
    return {"CA_BUNDLE_SOURCES": json.dumps(mapping), **extra}


# ---------------------------------------------------------------- each source


def test_ssm_string_and_advanced_tier_securestring():
    big = "".join(make_cert(f"Root {i}")[0] for i in range(10))  # > 4 KB: advanced tier only
    assert len(big) > 4096
    with World.create(**sources_env({"prod-a": ["ssm:/pki/plain"], "prod-b": ["ssm:/pki/big"]})) as world:
        plain, _ = make_cert("Plain Root")
        world.ssm_parameters.put_parameter(Name="/pki/plain", Value=plain, Type="String")
        world.ssm_parameters.put_parameter(Name="/pki/big", Value=big, Type="SecureString", Tier="Advanced")
        assert pems(current_bundle(world.settings, "prod-a", world.clock()).pem) == pems(plain)
        bundle = current_bundle(world.settings, "prod-b", world.clock())
        assert len(bundle.certificates) == 10


def test_s3_object():
    with World.create(**sources_env({"*": [f"s3://{BUCKET}/{KEY}"]})) as world:
        ca, _ = make_cert("S3 Root")
        put_object(ca)
        assert pems(current_bundle(world.settings, "prod-a", world.clock()).pem) == pems(ca)


def test_secrets_manager_by_name_and_by_arn():
    with World.create(
        **sources_env({"prod-a": ["secretsmanager:pki/eks-ca"], "*": ["inline"]}, CA_BUNDLE_INLINE=make_cert()[0])
    ) as world:
        ca, _ = make_cert("Secret Root")
        arn = put_secret(ca)
        assert pems(current_bundle(world.settings, "prod-a", world.clock()).pem) == pems(ca)
        by_arn = Settings.from_env({**world_env(world), **sources_env({"*": [f"secretsmanager:{arn}"]})})
        assert pems(current_bundle(by_arn, "prod-b", world.clock() + 1000).pem) == pems(ca)


def world_env(world: World) -> dict[str, str]:
    s = world.settings
    return {"RECORDS_TABLE": s.records_table, "DOCUMENT_NAME": s.document_name, "ENROLLED_CLUSTERS": "prod-a,prod-b"}


def test_acm_private_ca_certificate_and_its_chain():
    with World.create() as world:
        arn, sub_pem, root_pem = private_ca_with_chain()
        settings = Settings.from_env({**world_env(world), **sources_env({"*": [f"acm-pca:{arn}"]})})
        bundle = current_bundle(settings, "prod-a", world.clock())
        assert pems(bundle.pem) == pems(sub_pem) | pems(root_pem)
        assert {c.subject for c in bundle.certificates} == {"CN=Example Issuing CA", "CN=Example Offline Root CA"}


@pytest.mark.parametrize(
    "encode",
    [lambda pem: pem, lambda pem: pem.replace("\n", "\\n"), lambda pem: base64.b64encode(pem.encode()).decode()],
)
def test_inline_template_parameter_as_pem_escaped_or_base64(encode):
    ca, _ = make_cert("Inline Root")
    with World.create(**sources_env({"*": ["inline"]}, CA_BUNDLE_INLINE=encode(ca))) as world:
        assert pems(current_bundle(world.settings, "prod-b", world.clock()).pem) == pems(ca)


def test_legacy_parameter_is_the_default_source(world):
    assert pems(current_bundle(world.settings, "prod-a", world.clock()).pem) == pems(world.ca_pem)


# ---------------------------------------------------------------- merge, stability, cache


def test_two_sources_merge_into_one_canonical_bundle_per_cluster():
    shared, _ = make_cert("Shared Root")
    s3_only, _ = make_cert("S3 Root")
    env = sources_env({"prod-a": ["ssm:" + BUNDLE_PARAMETER, f"s3://{BUCKET}/{KEY}"]})
    with World.create(**env) as world:
        world.ssm_parameters.put_parameter(Name=BUNDLE_PARAMETER, Value=shared, Type="SecureString", Overwrite=True)
        put_object(s3_only + shared)  # the shared CA appears in both sources: once in the bundle
        merged = current_bundle(world.settings, "prod-a", world.clock())
        assert pems(merged.pem) == pems(shared) | pems(s3_only)
        assert len(merged.certificates) == 2
        # prod-b has no entry and no "*": the legacy parameter is its default
        assert pems(current_bundle(world.settings, "prod-b", world.clock()).pem) == pems(shared)
        [node] = world.add_nodes(cluster="prod-a")
        remediate({"instance_id": node}, LambdaContext())
        [command] = world.ssm.commands
        assert command["Parameters"]["CaBundle"] == [merged.b64]
        assert world.attempts(node)[0]["fingerprint"] == merged.fingerprint


def test_fingerprint_is_stable_across_order_and_duplicates_of_sources():
    a, _ = make_cert("Root A")
    b, _ = make_cert("Root B")
    now = datetime.now(UTC)
    reference = canonical_bundle(a, b, now=now).fingerprint
    assert canonical_bundle(b, a, now=now).fingerprint == reference
    assert canonical_bundle(b + a + b, a, now=now).fingerprint == reference
    assert canonical_bundle((a + b).replace("\n", "\r\n"), now=now).fingerprint == reference


def test_sources_are_cached_for_bundle_cache_seconds_on_the_callers_clock():
    with World.create(BUNDLE_CACHE_SECONDS="60") as world:
        first = current_bundle(world.settings, "prod-a", world.clock()).fingerprint
        rotated, _ = make_cert("Rotated Root")
        world.ssm_parameters.put_parameter(Name=BUNDLE_PARAMETER, Value=rotated, Type="SecureString", Overwrite=True)
        world.clock.advance(30)
        assert current_bundle(world.settings, "prod-a", world.clock()).fingerprint == first
        world.clock.advance(31)
        assert pems(current_bundle(world.settings, "prod-a", world.clock()).pem) == pems(rotated)


# ---------------------------------------------------------------- errors


def test_missing_sources_are_bundle_errors_naming_the_source():
    with World.create(
        **sources_env({"prod-a": [f"s3://{BUCKET}/missing.pem"], "prod-b": ["secretsmanager:nope"]})
    ) as world:
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        with pytest.raises(BundleError, match=f"s3://{BUCKET}/missing.pem: NoSuchKey"):
            current_bundle(world.settings, "prod-a", world.clock())
        with pytest.raises(BundleError, match="secretsmanager:nope: ResourceNotFoundException"):
            current_bundle(world.settings, "prod-b", world.clock())


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda: make_cert()[0] + make_cert()[1], "contains a private key"),
        (lambda: make_cert(ca=False)[0], "is not a CA"),
        (lambda: make_cert(not_before=datetime.now(UTC) - timedelta(days=30), days=10)[0], "expired on"),
        (lambda: "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n", "not a CERTIFICATE"),
        (lambda: "# no certificates here\n", "holds no PEM certificate"),
        (lambda: "".join(make_cert(f"Root {i}")[0] for i in range(90)), "the SSM document accepts 40000"),
    ],
)
def test_a_bad_source_rejects_the_whole_bundle_and_nothing_is_sent(bad, message):
    """One bad source among two: the manual invoke fails with the reason, no node receives anything."""
    with World.create(**sources_env({"*": ["ssm:" + BUNDLE_PARAMETER, f"s3://{BUCKET}/{KEY}"]})) as world:
        put_object(bad())
        [node] = world.add_nodes()
        with pytest.raises(BundleError, match=message):
            remediate({"instance_id": node}, LambdaContext())
        assert world.ssm.commands == []
        assert world.attempts(node) == []


def test_expiring_ca_is_warned_on_the_record_and_as_a_metric(capsys):
    soon, _ = make_cert("Soon Expiring Root", days=10)
    with World.create(**sources_env({"*": ["inline"]}, CA_BUNDLE_INLINE=soon, CA_EXPIRY_WARNING_DAYS="30")) as world:
        [node] = world.add_nodes()
        remediate({"instance_id": node}, LambdaContext())
        [attempt] = world.attempts(node)
        assert len(attempt["ca_warnings"]) == 1
        assert "CN=Soon Expiring Root" in attempt["ca_warnings"][0]
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"CaExpiringSoon"' in line]
    assert emitted, "no CaExpiringSoon metric was emitted"
    assert emitted[0]["CaExpiringSoon"] in (1, [1])
    assert emitted[0]["cluster"] == "prod-a"


def test_no_warning_for_a_ca_far_from_expiry(world):
    plan = build_plan(world.settings, Trigger.MANUAL, world.clock(), cluster="prod-a")
    assert plan.ca_warnings == ()


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("sources", "extra", "message"),
    [
        ("{not json", {}, "CA_BUNDLE_SOURCES: not JSON"),
        ('["ssm:/a"]', {}, "expected a JSON object"),
        ('{"prod-z": ["ssm:/a"], "*": ["ssm:/b"]}', {}, r"clusters \['prod-z'\] are not enrolled"),
        ('{"prod-a": []}', {}, "prod-a: expected a non-empty list"),
        ('{"*": ["ftp://x/y"]}', {}, "unknown source type 'ftp'"),
        ('{"*": ["acm-pca:arn:aws:acm:us-east-1:123456789012:certificate/x"]}', {}, "not a valid acm-pca reference"),
        ('{"*": ["s3://Bad_Bucket/k"]}', {}, "unknown source type 's3'"),
        ('{"prod-a": ["ssm:/a"]}', {"CA_BUNDLE_PARAMETER": ""}, r"no CA bundle source for clusters \['prod-b'\]"),
        ('{"*": ["inline"]}', {}, "CA_BUNDLE_INLINE is empty"),
        ('{"*": ["inline"]}', {"CA_BUNDLE_INLINE": "%%%"}, "neither PEM text nor base64"),
    ],
)
def test_bad_source_configuration_is_a_clear_error(sources, extra, message):
    env = {
        "RECORDS_TABLE": "records",
        "DOCUMENT_NAME": "doc",
        "ENROLLED_CLUSTERS": "prod-a,prod-b",
        "CA_BUNDLE_PARAMETER": "/pki/bundle",
        "CA_BUNDLE_SOURCES": sources,
        **extra,
    }
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(env)


def test_cache_is_cleared_between_worlds():
    ca_sources.clear_cache()
    with World.create() as one:
        first = current_bundle(one.settings, "prod-a", one.clock()).fingerprint
    with World.create() as two:  # a new CA in a new account: never the cached one
        assert current_bundle(two.settings, "prod-a", two.clock()).fingerprint != first


def test_a_two_certificate_inline_bundle_reaches_the_functions_through_the_stacks_parameters(monkeypatch):
    """The stack stores EnrolledClusters, CaBundleSources and CaBundleInline in SSM parameters
    under SETTINGS_PATH (template.yaml, Settings*), not in the functions' environment (4 KB)."""
    from eks_ca_remediator import settings as settings_module
    from eks_ca_remediator.adapters import clients
    from moto import mock_aws

    path = "/eks-ca-remediator/settings/"
    two = make_cert("Example Root CA 1")[0] + make_cert("Example Root CA 2")[0]
    inline = base64.b64encode(two.encode()).decode()
    with mock_aws():
        clients.reset()
        ssm = boto3.client("ssm", region_name=REGION)
        ssm.put_parameter(Name=path + "ENROLLED_CLUSTERS", Value="prod-a,prod-b", Type="String")
        ssm.put_parameter(Name=path + "CA_BUNDLE_SOURCES", Value=json.dumps({"*": ["inline"]}), Type="String")
        ssm.put_parameter(Name=path + "CA_BUNDLE_INLINE", Value=inline, Type="String")
        for key in ("ENROLLED_CLUSTERS", "CA_BUNDLE_SOURCES", "CA_BUNDLE_INLINE"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv("RECORDS_TABLE", "remediation-records")
        monkeypatch.setenv("DOCUMENT_NAME", "eks-ca-remediator-RemediateCa")
        monkeypatch.setenv("SETTINGS_PATH", path)
        settings_module.get_settings.cache_clear()
        ca_sources.clear_cache()
        try:
            settings = settings_module.get_settings()
            assert "CA_BUNDLE_INLINE" not in os.environ  # read from SSM, never from the environment
            assert settings.enrolled_clusters == ("prod-a", "prod-b")
            bundle = current_bundle(settings, "prod-b", datetime.now(UTC).timestamp())
            assert len(bundle.certificates) == 2
            ca_sources.clear_cache()
            ssm.delete_parameter(Name=path + "ENROLLED_CLUSTERS")
            settings_module.get_settings.cache_clear()
            with pytest.raises(ConfigurationError, match="ENROLLED_CLUSTERS"):
                settings_module.get_settings()
        finally:
            settings_module.get_settings.cache_clear()
            ca_sources.clear_cache()
            clients.reset()
