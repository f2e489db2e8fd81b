"""Node lab: a real containerd + TLS registry on this machine, isolated in mount namespaces.

It reproduces the EKS bug the product fixes: containerd's CRI plugin loads the system CA pool
once per process, so a CA trusted after containerd started is ignored by image pulls until
containerd restarts. The machine needs root (CAP_SYS_ADMIN), util-linux `unshare`/`nsenter`,
overlayfs, and the Debian packages containerd (1.6), runc, docker-registry, openssl,
ca-certificates, plus the Python packages grpcio, grpcio-tools and cryptography. containerd 2.x
1.7 and 2.x come from Debian trixie and sid, fetched once into .nodelab/ (fetched_containerd.py),
never installed.

What it builds (all under one temporary directory, all stopped by PID in `stop()`):
- `Registry`: a private CA, a server certificate for `registry.nodelab.test`, `docker-registry`
  serving TLS on 127.0.0.1:<free port>, and a tiny image pushed with the standard library.
  One registry can be shared by many labs (pass it to `NodeLab(registry=...)`).
- `NodeLab(profile, containerd=...)`: one node of an image profile (PROFILES: debian, ubuntu,
  al2, al2023, bottlerocket) on containerd "1.6", "1.7" or "2". A long-lived `unshare -m` holder
  process whose mount namespace has overlayfs over /etc and /usr/local/share/ca-certificates
  (the machine's trust store, /etc/hosts and /etc/containerd are never written), the lab's
  /run bound over /run (containerd's socket at its real path, /run/containerd/containerd.sock),
  a private /etc/hosts resolving `registry.nodelab.test` to 127.0.0.1, and
  /etc/containerd/config.toml as the image writes it (AL2's version 2 for 1.6, nodeadm's
  version 3 for 2.x; both import /etc/containerd/config.d/*.toml). The Amazon Linux layout
  (AL2, AL2023, Bottlerocket's host) has a faked /etc/os-release and /etc/pki tree where
  /etc/ssl/certs is a link to /etc/pki/tls/certs, so Go finds no
  /etc/ssl/certs/ca-certificates.crt and falls through to /etc/pki/tls/certs/ca-bundle.crt.
  containerd runs inside the namespace with a clean environment (`env -i`, no SSL_CERT_*).
  After every start the lab makes one CRI pull, as kubelet does early on a node: Go loads the
  system CA pool at the first TLS verification of the process (not at process start) and keeps
  it, so that first pull is what makes a later trust-store change invisible to containerd.
- Stand-ins on PATH inside the node (standins.py), each refusing what the real tool of the
  image's version refuses: `systemctl` (systemd 219 on AL2: no --value, no -P), `crictl` (only
  with an explicit endpoint; absent on AL2023), `update-ca-trust` (AL), `sh` (bash in POSIX
  mode on AL, with BASH_COMPAT=42 on AL2), `openssl` (AL2: the 1.0.2 option surface). Both
  refresh tools fail after writing when /etc/nodelab-fail-refresh exists (fault injection).
  Everything else is the machine's real tool; the Debian lab feeds the real
  update-ca-certificates a short /etc/ca-certificates.conf (8 distribution roots) so that a
  refresh takes ~0.1 s instead of 1-2 s.
- Bottlerocket: the script runs in a control-container stand-in, a chroot in a mount namespace
  below the node's, with /.bottlerocket, an amzn os-release, no systemctl/ctr/crictl/openssl
  (overlay whiteouts) and no containerd socket; its `apiclient` reaches apiclient.py, which
  validates and applies settings.pki on the node as Bottlerocket does.

API (importable; the product's local demo can drive it):

    from tests.nodelab.lab import NodeLab, Registry, lab_available

    ok, why = lab_available()           # (False, "one-line reason") where the lab cannot run
    with NodeLab("al2023") as lab:      # any of PROFILES; containerd="1.6"|"1.7"|"2"
        lab.cri_pull()                  # -> (False, "... x509: certificate signed by unknown authority")
        lab.trust_ca_without_restart()  # what userdata does on EKS: trust store only
        pid = lab.containerd_pid()      # containerd keeps running: pulls still fail
        run = lab.run_script(lab.script_env(SSM_Strategy="auto"))
        run.exit_code, run.result, run.stderr   # result = the parsed JSON line (or None)
        lab.cri_pull()                  # -> (True, "sha256:...")

`run_script` runs the script exactly as embedded in template.yaml (tools/ssm_document.py
`extract_script`), written to a file and run with `sh` inside the node (on Bottlerocket, inside
its control container) with the given SSM_* variables only (plus PATH/HOME/LANG), like SSM Run
Command with ENV_VAR interpolation. Other helpers: script_env(**overrides) (the five SSM_*
variables for a normal run), start_containerd(), stop_containerd(), restart_containerd(),
remove_cri_socket(), cri_version(), sh(command, *args), read_file(path), write_file(path, text),
snapshot(content_only=False) (equal snapshots = trust store, /etc/containerd and Bottlerocket
settings unchanged), bottlerocket_settings(), last_script_seconds, last_stdout,
trust_bundle_path, anchor_dir, pki (CA, other CA, non-CA, expired CA, key PEMs), ca_pem /
ca_b64 (the registry's CA), registry_host, image, containerd_log().

Several labs can run at once (own temporary directory, namespace and containerd each; the
registry port is picked free), also next to other processes using this module.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import gzip
import hashlib
import http.client
import io
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from tests.nodelab import fetched_containerd, standins

ROOT = Path(__file__).resolve().parents[2]
LAB_DIR = Path(__file__).resolve().parent
REGISTRY_NAME = "registry.nodelab.test"
IMAGE_REPO = "nodelab/hello"
IMAGE_TAG = "1"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CONFIG_FILE = "/etc/containerd/config.toml"
# containerd configs the lab can run: "image" = the one the profile's image writes (lab.py
# _containerd_config); "v2-transfer" = containerd 2.x with an older version 2 config whose CRI
# pulls through the Transfer service (discard_unpacked_layers = false) with a colon-separated
# config_path, where a hosts.toml is ignored (containerd issues #12415, #12808).
CONFIGS = ("image", "v2-transfer")
REQUIRED_TOOLS = (
    "unshare",
    "nsenter",
    "mount",
    "containerd",
    "runc",
    "docker-registry",
    "openssl",
    "update-ca-certificates",
    "timeout",
    "flock",
    "sh",
    "bash",
)

# --------------------------------------------------------------------------------------------
# Image profiles: the tool surface one EKS node image gives the node script
# --------------------------------------------------------------------------------------------
AL2_OS_RELEASE = (
    'NAME="Amazon Linux"\nVERSION="2"\nID="amzn"\nID_LIKE="centos rhel fedora"\n'
    'VERSION_ID="2"\nPRETTY_NAME="Amazon Linux 2 (node lab)"\n'
)


@dataclass(frozen=True)
class Profile:
    """One node image as the node script sees it.

    containerd: the versions the lab runs for it, the image's own first ("1.6" = Debian 12's
    package, "1.7" = Debian trixie's 1.7.x, "2" = Debian sid's 2.1.x; see fetched_containerd.py). systemd: the version whose
    `systemctl` options the stand-in accepts. crictl: on PATH or not. sh: what `sh` is (SSM runs
    `sh _script.sh`): "dash" (Debian, Ubuntu) or "bash" (Amazon Linux: bash in POSIX mode), with
    bash_compat for AL2's bash 4.2. openssl_102: AL2's OpenSSL 1.0.2k option surface.
    bottlerocket: the script runs in a control-container stand-in and reaches the host only
    through `apiclient`.
    """

    name: str
    os_release: str | None  # None: the machine's own (Debian 12)
    al_trust: bool  # /etc/pki/ca-trust + update-ca-trust + /etc/pki/tls/certs/ca-bundle.crt
    containerd: tuple[str, ...]
    systemd: int = 252
    crictl: bool = True
    sh: str = "dash"
    bash_compat: str = ""
    openssl_102: bool = False
    bottlerocket: bool = False


PROFILES = {
    # Debian 12 / Ubuntu nodes set up with Kubernetes' own packages: kubeadm depends on cri-tools,
    # so crictl is there.
    "debian": Profile("debian", None, al_trust=False, containerd=("1.6", "2")),
    "ubuntu": Profile(
        "ubuntu",
        'NAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\nID_LIKE=debian\nPRETTY_NAME="Ubuntu 22.04.5 LTS (node lab)"\n',
        al_trust=False,
        containerd=("1.7", "2"),  # Ubuntu 22.04/24.04 package containerd 1.7
        systemd=249,
    ),
    # AL2 EKS AMI: systemd 219, bash 4.2, OpenSSL 1.0.2k; containerd 1.7 ("containerd_version":
    # "1.7.*"); cri-tools installed (awslabs/amazon-eks-ami commit 7fa037a, "Use crictl to pull
    # sandbox image (#1605)": `sudo yum install -y cri-tools`), no /etc/crictl.yaml.
    "al2": Profile(
        "al2",
        AL2_OS_RELEASE,
        al_trust=True,
        containerd=("1.7",),
        systemd=219,
        sh="bash",
        bash_compat="42",
        openssl_102=True,
    ),
    # AL2023 EKS AMI: containerd 2.x with nodeadm's version 3 config, no crictl
    # (awslabs/amazon-eks-ami issue #2163: cri-tools is not in the AMI).
    "al2023": Profile(
        "al2023",
        'NAME="Amazon Linux"\nVERSION="2023"\nID="amzn"\nID_LIKE="fedora"\nVERSION_ID="2023"\n'
        'PLATFORM_ID="platform:al2023"\nPRETTY_NAME="Amazon Linux 2023 (node lab)"\n',
        al_trust=True,
        containerd=("2",),
        crictl=False,
        sh="bash",
    ),
    # Bottlerocket: Run Command runs in the control container (built on amazonlinux:2, so its
    # os-release says amzn 2), which has /.bottlerocket and apiclient but no systemctl, ctr,
    # crictl or containerd socket of the host. The host keeps its trust bundle at
    # /etc/pki/tls/certs/ca-bundle.crt, as the lab's AL layout does.
    "bottlerocket": Profile(
        "bottlerocket",
        AL2_OS_RELEASE,
        al_trust=True,
        containerd=("2", "1.7"),  # Bottlerocket: 1.7 before its k8s-1.33 variants, then 2.x
        crictl=False,
        sh="bash",
        bash_compat="42",
        bottlerocket=True,
    ),
}
OS_FAMILIES = tuple(PROFILES)
# Every (profile, containerd) node the lab runs: each image on the versions it ships.
NODES = tuple((name, version) for name, profile in PROFILES.items() for version in profile.containerd)
# What the control container lacks (overlay whiteouts over its /usr/bin): its image installs only
# jq, screen, shadow-utils and the SSM agent on amazonlinux (bottlerocket-control-container
# Dockerfile), so no openssl CLI and no systemd; the host's containerd tools are not mounted in.
CONTROL_CONTAINER_HIDDEN = ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "systemctl", "crictl", "openssl")


def _which_all(names: tuple[str, ...]) -> list[str]:
    path = os.pathsep.join([os.environ.get("PATH", ""), SYSTEM_PATH])
    return [n for n in names if shutil.which(n, path=path) is None]


def lab_available() -> tuple[bool, str]:
    """Can the lab run here? Returns (True, "") or (False, one-line reason)."""
    if not sys.platform.startswith("linux"):
        return False, "node lab needs Linux"
    if os.geteuid() != 0:
        return False, "node lab needs root (mount namespaces, overlayfs, containerd)"
    missing = _which_all(REQUIRED_TOOLS)
    if missing:
        return False, f"node lab needs these commands on PATH: {', '.join(missing)}"
    for module in ("grpc", "grpc_tools", "cryptography"):
        try:
            __import__(module)
        except ImportError:
            return False, f"node lab needs the Python package {module}"
    try:
        if "overlay" not in Path("/proc/filesystems").read_text():
            return False, "node lab needs overlayfs (not in /proc/filesystems)"
    except OSError as exc:
        return False, f"cannot read /proc/filesystems: {exc}"
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "true"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if probe.returncode != 0:
        return False, f"cannot create a mount namespace (unshare -m): {probe.stderr.strip()[:200]}"
    return True, ""


def clean_env(**extra: str) -> dict[str, str]:
    """A minimal environment: no SSL_CERT_*, REQUESTS_CA_BUNDLE, proxies, ... from this shell."""
    env = {"PATH": SYSTEM_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie (PID 1 here may not reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, wait up to timeout, then SIGKILL. For processes that are not our children."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# PKI
# --------------------------------------------------------------------------------------------
@dataclass
class Pki:
    """PEM texts: the registry's CA and server pair, plus bad material for negative tests."""

    ca_pem: str
    server_cert_pem: str
    server_key_pem: str
    other_ca_pem: str  # a valid CA that did NOT sign the registry certificate
    leaf_pem: str  # a certificate with basicConstraints CA:FALSE
    expired_ca_pem: str
    key_pem: str  # a private key (must never be accepted in a bundle)


def make_pki(hostname: str = REGISTRY_NAME) -> Pki:
    from cryptography import x509  # noqa: PLC0415 - imported lazily: lab_available checks it
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    now = dt.datetime.now(dt.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def pem(cert: x509.Certificate) -> str:
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    def ca(cn: str, k: ec.EllipticCurvePrivateKey, start: dt.datetime, end: dt.datetime) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
            .sign(k, hashes.SHA256())
        )

    def leaf(
        cn: str, k: ec.EllipticCurvePrivateKey, issuer: x509.Certificate, issuer_key: ec.EllipticCurvePrivateKey
    ) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(issuer.subject)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(cn), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
            .sign(issuer_key, hashes.SHA256())
        )

    ca_key, other_key, expired_key, server_key, leaf_key = key(), key(), key(), key(), key()
    ca_cert = ca("nodelab private CA", ca_key, now - dt.timedelta(hours=1), now + dt.timedelta(days=365))
    server = leaf(hostname, server_key, ca_cert, ca_key)
    other = ca("nodelab other CA", other_key, now - dt.timedelta(hours=1), now + dt.timedelta(days=365))
    expired = ca("nodelab expired CA", expired_key, now - dt.timedelta(days=30), now - dt.timedelta(days=1))
    non_ca = leaf("not-a-ca.nodelab.test", leaf_key, ca_cert, ca_key)
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return Pki(
        ca_pem=pem(ca_cert),
        server_cert_pem=pem(server),
        server_key_pem=key_pem,
        other_ca_pem=pem(other),
        leaf_pem=pem(non_ca),
        expired_ca_pem=pem(expired),
        key_pem=leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )


def b64(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.b64encode(data).decode()


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------
def _go_arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def build_image(label: str = "") -> tuple[bytes, bytes, bytes]:
    """(layer tar.gz, config JSON, schema2 manifest JSON) of a one-file image; a label makes the
    config (and so the image) a different one."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        data = b"hello from the eks-ca-remediator node lab\n"
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    layer = gzip.compress(tar_bytes, mtime=0)
    config = json.dumps(
        {
            "architecture": _go_arch(),
            "os": "linux",
            "config": {"Cmd": ["/hello.txt"], **({"Labels": {"nodelab": label}} if label else {})},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar_bytes).hexdigest()]},
            "history": [{"created_by": "nodelab"}],
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer),
                    "digest": "sha256:" + hashlib.sha256(layer).hexdigest(),
                }
            ],
        }
    ).encode()
    return layer, config, manifest


class Registry:
    """docker-registry with TLS on 127.0.0.1:<port>, reached as registry.nodelab.test:<port>."""

    def __init__(self, workdir: Path | None = None) -> None:
        self._own_dir = workdir is None
        self.dir = Path(tempfile.mkdtemp(prefix="nodelab-registry-")) if workdir is None else workdir
        self.port = 0
        self.pki: Pki | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._fresh = 0

    @property
    def host(self) -> str:
        return f"{REGISTRY_NAME}:{self.port}"

    @property
    def image(self) -> str:
        return f"{self.host}/{IMAGE_REPO}:{IMAGE_TAG}"

    def start(self) -> Registry:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Registry:
        self.pki = make_pki()
        (self.dir / "certs").mkdir(parents=True, exist_ok=True)
        (self.dir / "certs" / "server.crt").write_text(self.pki.server_cert_pem)
        key = self.dir / "certs" / "server.key"
        key.write_text(self.pki.server_key_pem)
        key.chmod(0o600)
        for attempt in range(5):
            self.port = free_port()
            config = self.dir / "config.yml"
            config.write_text(
                "version: 0.1\n"
                "log:\n  level: error\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {self.dir / 'data'}\n"
                f"http:\n  addr: 127.0.0.1:{self.port}\n"
                f"  tls:\n    certificate: {self.dir / 'certs' / 'server.crt'}\n"
                f"    key: {key}\n"
            )
            log = (self.dir / "registry.log").open("ab")
            self.proc = subprocess.Popen(
                ["docker-registry", "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=clean_env(),
            )
            log.close()
            if self._wait_ready():
                break
            self._kill()
            if attempt == 4:
                raise RuntimeError(f"docker-registry did not start: {self.log_tail()}")
        self.push()
        return self

    def log_tail(self) -> str:
        try:
            return (self.dir / "registry.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _ssl_context(self) -> ssl.SSLContext:
        assert self.pki is not None
        return ssl.create_default_context(cadata=self.pki.ca_pem)

    def _conn(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self._ssl_context(), timeout=10)

    def _wait_ready(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            try:
                conn = self._conn()
                conn.request("GET", "/v2/", headers={"Host": self.host})
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def _request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
        conn = self._conn()
        conn.request(method, path, body=body, headers={"Host": self.host, **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp, data

    def _push_blob(self, blob: bytes) -> None:
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        resp, data = self._request("POST", f"/v2/{IMAGE_REPO}/blobs/uploads/")
        if resp.status != 202:
            raise RuntimeError(f"registry upload start: HTTP {resp.status} {data[:200]!r}")
        location = resp.getheader("Location") or ""
        path = location.split(self.host, 1)[-1] if "://" in location else location
        sep = "&" if "?" in path else "?"
        resp, data = self._request(
            "PUT",
            f"{path}{sep}digest={digest}",
            blob,
            {"Content-Type": "application/octet-stream", "Content-Length": str(len(blob))},
        )
        if resp.status != 201:
            raise RuntimeError(f"registry blob upload: HTTP {resp.status} {data[:200]!r}")

    def fresh_image(self) -> str:
        """Push an image this registry never served before (own config, own tag) and name it: a
        pull of it cannot be answered from anything containerd holds."""
        self._fresh += 1
        tag = f"fresh-{os.getpid()}-{self._fresh}"
        self.push(tag)
        return f"{self.host}/{IMAGE_REPO}:{tag}"

    def push(self, tag: str = IMAGE_TAG) -> None:
        layer, config, manifest = build_image("" if tag == IMAGE_TAG else tag)
        self._push_blob(layer)
        self._push_blob(config)
        resp, data = self._request(
            "PUT",
            f"/v2/{IMAGE_REPO}/manifests/{tag}",
            manifest,
            {"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        if resp.status != 201:
            raise RuntimeError(f"registry manifest upload: HTTP {resp.status} {data[:200]!r}")

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def stop(self) -> None:
        self._kill()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ConnectProxy:
    """An HTTP CONNECT proxy on 127.0.0.1:<free port>, served by threads of this process. It
    resolves the registry's name itself (to 127.0.0.1), so a node whose /etc/hosts points that
    name nowhere reaches the registry only through it. `targets` records each CONNECT target."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.port = 0
        self.targets: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ConnectProxy:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, args=(self.sock,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def _serve(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(conn,), daemon=True).start()

    def _tunnel(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 8192:
                chunk = conn.recv(1024)
                if not chunk:
                    return
                head += chunk
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(parts) < 2 or parts[0] != "CONNECT":
                conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            target = parts[1]
            self.targets.append(target)
            host, _, port = target.rpartition(":")
            if host == REGISTRY_NAME:
                host = "127.0.0.1"
            with socket.create_connection((host, int(port)), timeout=10) as upstream:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                upstream.settimeout(None)
                conn.settimeout(None)
                threading.Thread(target=self._pipe, args=(upstream, conn), daemon=True).start()
                self._pipe(conn, upstream)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)


def _short_ca_conf(keep: int = 8) -> str:
    """/etc/ca-certificates.conf of this machine, with only its first `keep` active roots."""
    try:
        lines = Path("/etc/ca-certificates.conf").read_text().splitlines()
    except OSError:
        return ""
    active = [line for line in lines if line and not line.startswith(("#", "!"))]
    return "# node lab: a short list of roots (see lab.py)\n" + "".join(f"{line}\n" for line in active[:keep])


class ScriptRun(NamedTuple):
    exit_code: int
    result: dict | None  # the JSON line from stdout, parsed; None if stdout held no JSON line
    stderr: str


# --------------------------------------------------------------------------------------------
# NodeLab
# --------------------------------------------------------------------------------------------
class NodeLab:
    """One node: a mount namespace with its own trust store, /etc/hosts, /etc/containerd and a
    running containerd. Give it a shared `Registry` or let it start (and stop) its own."""

    def __init__(
        self,
        os_family: str = "debian",
        registry: Registry | None = None,
        template: Path | None = None,
        containerd: str | None = None,
        crictl: bool | None = None,
        config: str = "image",
        config_file: str = DEFAULT_CONFIG_FILE,
        proxy: bool = False,
    ) -> None:
        if os_family not in PROFILES:
            raise ValueError(f"os_family must be one of {OS_FAMILIES}")
        self.profile = PROFILES[os_family]
        self.os_family = os_family
        self.containerd_version = containerd or self.profile.containerd[0]
        if self.containerd_version not in ("1.6", *fetched_containerd.SUITES):
            raise ValueError("containerd must be '1.6' (Debian 12), '1.7' (Debian trixie) or '2' (Debian sid)")
        self.has_crictl = self.profile.crictl if crictl is None else crictl
        if config not in CONFIGS:
            raise ValueError(f"config must be one of {CONFIGS}")
        if config == "v2-transfer" and self.containerd_version != "2":
            raise ValueError("config 'v2-transfer' is containerd 2.x's (Transfer-service pulls)")
        self.config = config
        # Where containerd's config lives: /etc/containerd/config.toml as on every image, or
        # another file given to containerd with --config (the node script reads its command line).
        if not config_file.startswith("/etc/containerd/"):
            raise ValueError("config_file must be under /etc/containerd/ (the lab's overlay)")
        self.config_file = config_file
        # proxy: containerd runs with HTTPS_PROXY (as a systemd drop-in would set it) pointing at
        # a CONNECT proxy, the node's /etc/hosts sends the registry's name nowhere (127.0.0.2,
        # where nothing listens): the proxy is the only way to the registry.
        self.proxy = ConnectProxy() if proxy else None
        self.control: subprocess.Popen[bytes] | None = None  # Bottlerocket: the control container
        self._registry = registry
        self._own_registry = registry is None
        self.template = template or (ROOT / "template.yaml")
        self.dir: Path | None = None
        self.holder: subprocess.Popen[bytes] | None = None
        self._cri = None
        self.last_script_seconds = 0.0
        self.last_stdout = ""
        self.fresh_pulls = 0  # CRI pulls of fresh images that checked a reported success

    # ---- properties --------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        assert self._registry is not None, "lab not started"
        return self._registry

    @property
    def registry_host(self) -> str:
        return self.registry.host

    @property
    def image(self) -> str:
        return self.registry.image

    @property
    def pki(self) -> Pki:
        assert self.registry.pki is not None
        return self.registry.pki

    @property
    def ca_pem(self) -> str:
        return self.pki.ca_pem

    @property
    def ca_b64(self) -> str:
        return b64(self.pki.ca_pem)

    @property
    def is_al(self) -> bool:
        """The node's trust store has the Amazon Linux layout (AL2, AL2023, Bottlerocket's host)."""
        return self.profile.al_trust

    @property
    def is_bottlerocket(self) -> bool:
        return self.profile.bottlerocket

    @property
    def anchor_dir(self) -> str:
        return "/etc/pki/ca-trust/source/anchors" if self.is_al else "/usr/local/share/ca-certificates"

    @property
    def trust_bundle_path(self) -> str:
        if self.is_al:
            return "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"
        return "/etc/ssl/certs/ca-certificates.crt"

    @property
    def socket_path(self) -> Path:
        """containerd's socket as seen from outside: /run/containerd/containerd.sock inside the
        node (the lab binds <dir>/run over /run there)."""
        assert self.dir is not None
        return self.dir / "run" / "containerd" / "containerd.sock"

    @property
    def bin_dir(self) -> Path:
        assert self.dir is not None
        return self.dir / "bin"

    # ---- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> NodeLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> NodeLab:
        ok, why = lab_available()
        if not ok:
            raise RuntimeError(f"node lab unavailable: {why}")
        try:
            if self._registry is None:
                self._registry = Registry().start()
            self.containerd_dir = self._containerd_binaries()
            if self.proxy is not None:
                self.proxy.start()
            self.dir = Path(tempfile.mkdtemp(prefix="nodelab-"))
            self._prepare_files()
            self._start_namespace()
            self.start_containerd()
            if self.is_bottlerocket:
                self._start_control_container()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything this lab started, by PID, and remove its directory."""
        if self._cri is not None:
            self._cri.close()
            self._cri = None
        if self.dir is not None and self.is_bottlerocket:
            self.wait_bottlerocket_applied(timeout=10)  # no thar-be-settings left to restart containerd
        if self.dir is not None:
            pid = self._read_pid()
            if pid:
                stop_pid(pid)
        for proc in (self.control, self.holder):
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=10)
        self.control = self.holder = None
        if self.proxy is not None:
            self.proxy.stop()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        if self._own_registry and self._registry is not None:
            self._registry.stop()
            self._registry = None

    def _containerd_binaries(self) -> Path | None:
        """Directory of the fetched binaries (1.7, 2.x), or None for the system's 1.6."""
        if self.containerd_version == "1.6":
            return None
        directory, why = fetched_containerd.ensure(self.containerd_version)
        if directory is None:
            raise RuntimeError(f"node lab containerd {self.containerd_version} unavailable: {why}")
        return directory

    def _prepare_files(self) -> None:
        from tests.nodelab.cri import client as cri_client  # noqa: PLC0415

        d = self.dir
        assert d is not None
        for sub in ("etc-upper", "etc-work", "lsc-upper", "lsc-work", "bin", "cni/bin", "cni/conf", "opt"):
            (d / sub).mkdir(parents=True)
        (d / "containerd").mkdir(mode=0o711)
        (d / "run" / "containerd").mkdir(parents=True, mode=0o711)
        up = d / "etc-upper"
        registry_ip = "127.0.0.2" if self.proxy is not None else "127.0.0.1"
        (up / "hosts").write_text(
            f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n{registry_ip}\t{REGISTRY_NAME}\n"
        )
        (up / "containerd" / "certs.d").mkdir(parents=True)
        (up / "containerd" / "config.d").mkdir(parents=True)
        config_file = up / self.config_file.removeprefix("/etc/")
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(self._containerd_config())
        if self.profile.os_release is not None:
            (up / "os-release").write_text(self.profile.os_release)
        if not self.is_al:
            # The real update-ca-certificates, fed a shorter list of distribution roots: it
            # forks per listed certificate, and 140 roots made every refresh take 1-2 s.
            (up / "ca-certificates.conf").write_text(_short_ca_conf())
        if self.is_al:
            # As on AL2/AL2023: /etc/ssl/certs -> ../pki/tls/certs, no ca-certificates.crt.
            (up / "ssl").mkdir()
            (up / "ssl" / "certs").symlink_to("../pki/tls/certs")
            (up / "pki" / "ca-trust" / "source" / "anchors").mkdir(parents=True)
            (up / "pki" / "ca-trust" / "extracted" / "pem").mkdir(parents=True)
            (up / "pki" / "tls" / "certs").mkdir(parents=True)
        containerd_path = SYSTEM_PATH if self.containerd_dir is None else f"{self.containerd_dir}:{SYSTEM_PATH}"
        subst = {
            "@PIDFILE@": str(d / "containerd.pid"),
            "@CONFIG@": self.config_file,
            "@CONTAINERD_ENV@": (
                "" if self.proxy is None else f"HTTPS_PROXY={self.proxy.url} NO_PROXY=localhost,.cluster.local"
            ),
            "@LOG@": str(d / "containerd.log"),
            "@SYSTEM_PATH@": SYSTEM_PATH,
            "@CONTAINERD_PATH@": containerd_path,
            "@SYSTEMD@": str(self.profile.systemd),
            "@GENERATED@": str(cri_client.generated_dir()),
            "@PYTHON@": sys.executable,
            "@CLIENT@": str(Path(cri_client.__file__).resolve()),
            "@COMPAT@": f"BASH_COMPAT={self.profile.bash_compat} " if self.profile.bash_compat else "",
        }
        stand_ins = {"systemctl": standins.SYSTEMCTL}
        if self.has_crictl:
            stand_ins["crictl"] = standins.CRICTL
        if self.is_al:
            stand_ins["update-ca-trust"] = standins.UPDATE_CA_TRUST
        else:
            stand_ins["update-ca-certificates"] = standins.UPDATE_CA_CERTIFICATES
        if self.profile.sh == "bash":
            stand_ins["sh"] = standins.SH_BASH
        if self.profile.openssl_102:
            stand_ins["openssl"] = standins.OPENSSL_102
        self._write_stand_ins(self.bin_dir, stand_ins, subst)
        if self.containerd_dir is not None:
            for name in fetched_containerd.BINARIES:
                (self.bin_dir / name).symlink_to(self.containerd_dir / name)

    @staticmethod
    def _write_stand_ins(directory: Path, stand_ins: dict[str, str], subst: dict[str, str]) -> None:
        for name, text in stand_ins.items():
            for key, value in subst.items():
                text = text.replace(key, value)
            path = directory / name
            path.write_text(text)
            path.chmod(0o755)

    def _containerd_config(self) -> str:
        """The config an EKS image writes, moved into the lab: AL2's version 2 config
        (imports config.d, CRI registry config_path certs.d:docker/certs.d) for 1.x, and the
        version 3 config AL2023's nodeadm writes for 2.x (awslabs/amazon-eks-ami,
        nodeadm/internal/containerd/config.template.toml: discard_unpacked_layers = true,
        config_path = "/etc/containerd/certs.d:/etc/docker/certs.d")."""
        d = self.dir
        assert d is not None
        common = (
            f'root = "{d}/containerd/root"\n'
            f'state = "{d}/containerd/state"\n'
            'imports = ["/etc/containerd/config.d/*.toml"]\n'
            '[grpc]\n  address = "/run/containerd/containerd.sock"\n'
            f'[ttrpc]\n  address = "{d}/containerd/ttrpc.sock"\n'
            '[metrics]\n  address = ""\n'
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{d}/opt"\n'
        )
        snapshotters = [f"io.containerd.snapshotter.v1.{n}" for n in ("btrfs", "zfs", "devmapper", "aufs")]
        if self.config == "v2-transfer":
            # containerd 2.1 accepts a version 2 config and migrates it (plugins/cri/images/
            # plugin.go configMigration); discard_unpacked_layers = false leaves CRI on the
            # Transfer service (internal/cri/config/config.go CheckLocalImagePullConfigs).
            cri = 'plugins."io.containerd.grpc.v1.cri"'
            disabled = [*snapshotters[:3], "io.containerd.snapshotter.v1.blockfile", "io.containerd.nri.v1.nri"]
            return (
                "version = 2\n" + f"disabled_plugins = {json.dumps(disabled)}\n" + common + f"[{cri}]\n"
                '  stream_server_address = "127.0.0.1"\n  stream_server_port = "0"\n'
                f"[{cri}.containerd]\n"
                f'  snapshotter = "{self._snapshotter()}"\n  discard_unpacked_layers = false\n'
                f"[{cri}.cni]\n"
                f'  bin_dir = "{d}/cni/bin"\n  conf_dir = "{d}/cni/conf"\n'
                f"[{cri}.registry]\n"
                '  config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"\n'
            )
        if self.containerd_version != "2":
            cri = 'plugins."io.containerd.grpc.v1.cri"'
            return (
                "version = 2\n" + f"disabled_plugins = {json.dumps(snapshotters)}\n" + common + f"[{cri}]\n"
                '  stream_server_address = "127.0.0.1"\n  stream_server_port = "0"\n'
                f"[{cri}.containerd]\n"
                f'  snapshotter = "{self._snapshotter()}"\n  discard_unpacked_layers = true\n'
                f"[{cri}.cni]\n"
                f'  bin_dir = "{d}/cni/bin"\n  conf_dir = "{d}/cni/conf"\n'
                f"[{cri}.registry]\n"
                '  config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"\n'
            )
        # 2.x: NRI would open a socket under /var/run/nri on the real host; blockfile writes
        # under root (harmless) but is not what EKS runs.
        disabled = [*snapshotters[:3], "io.containerd.snapshotter.v1.blockfile", "io.containerd.nri.v1.nri"]
        return (
            "version = 3\n"
            + f"disabled_plugins = {json.dumps(disabled)}\n"
            + common
            + "[plugins.'io.containerd.cri.v1.images']\n"
            "  discard_unpacked_layers = true\n"
            f'  snapshotter = "{self._snapshotter()}"\n'
            '[plugins."io.containerd.cri.v1.images".registry]\n'
            '  config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"\n'
            "[plugins.'io.containerd.cri.v1.runtime'.cni]\n"
            f'  bin_dir = "{d}/cni/bin"\n  conf_dir = "{d}/cni/conf"\n'
            "[plugins.'io.containerd.grpc.v1.cri']\n"
            '  stream_server_address = "127.0.0.1"\n  stream_server_port = "0"\n'
        )

    @staticmethod
    def _snapshotter() -> str:
        return os.environ.get("NODELAB_SNAPSHOTTER", "overlayfs")

    def _start_holder(self, enter: list[str]) -> subprocess.Popen[bytes]:
        """A `sleep infinity` in a new private mount namespace (entered through `enter` first)."""
        mine = os.readlink("/proc/self/ns/mnt")
        outer = os.readlink(f"/proc/{self.holder.pid}/ns/mnt") if self.holder is not None else mine
        holder = subprocess.Popen(
            [*enter, "unshare", "-m", "--propagation", "private", "sleep", "infinity"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=clean_env(),
        )
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                ns = os.readlink(f"/proc/{holder.pid}/ns/mnt")
                if ns not in (mine, outer) and Path(f"/proc/{holder.pid}/comm").read_text().strip() == "sleep":
                    return holder
            if holder.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("unshare -m holder did not start")
            time.sleep(0.005)

    def _start_namespace(self) -> None:
        d = self.dir
        assert d is not None
        self.holder = self._start_holder([])
        setup = (
            "set -e\n"
            'mount -t overlay nodelab-etc -o "lowerdir=/etc,upperdir=$1/etc-upper,workdir=$1/etc-work" /etc\n'
            "mount -t overlay nodelab-lsc -o "
            '"lowerdir=/usr/local/share/ca-certificates,upperdir=$1/lsc-upper,workdir=$1/lsc-work" '
            "/usr/local/share/ca-certificates\n"
            # containerd's socket at its real path, /run/containerd/containerd.sock, in the node.
            'mount --bind "$1/run" /run\n'
            # The machine's update-ca-certificates hooks (a Java keystore) are slow and irrelevant.
            "rm -f /etc/ca-certificates/update.d/*\n"
        )
        # Start from a trust store its own refresh tool wrote, as on a booted node.
        setup += "update-ca-trust extract\n" if self.is_al else "update-ca-certificates --fresh >/dev/null\n"
        result = self.sh(setup, str(d), check=False)
        if result.returncode != 0:
            raise RuntimeError(f"namespace setup failed: {result.stderr.strip()}")

    @property
    def control_root(self) -> Path:
        assert self.dir is not None
        return self.dir / "cc-root"

    def _start_control_container(self) -> None:
        """Bottlerocket's control container: a chroot in its own mount namespace below the
        node's. Its /usr is the machine's minus the host tools it lacks (overlay whiteouts), its
        /etc says amzn 2 and has no /etc/containerd, /run is empty (no containerd socket), and
        /.bottlerocket exists. `apiclient` on its PATH reaches the node's API stand-in."""
        d = self.dir
        assert d is not None
        root = self.control_root
        for sub in ("proc", "dev", "tmp", "usr", "etc", "run", "root", ".bottlerocket"):
            (root / sub).mkdir(parents=True)
        for link in ("bin", "sbin", "lib", "lib64"):
            target = Path("/") / link
            if target.is_symlink():
                (root / link).symlink_to(os.readlink(target))
        usr_up, etc_up = d / "cc-usr-upper", d / "cc-etc-upper"
        (usr_up / "bin").mkdir(parents=True)
        (usr_up / "sbin").mkdir(parents=True)
        for sub in ("cc-usr-work", "cc-etc-work", "cc-bin", "bottlerocket"):
            (d / sub).mkdir()
        etc_up.mkdir()
        (etc_up / "os-release").write_text(self.profile.os_release or "")
        # host-ctr bind-mounts the host's os-release here (core-kit sources/host-ctr withDefaultMounts);
        # the SSM agent reads the platform from it (amazon-ssm-agent agent/platform/platform_unix.go).
        (etc_up / "bottlerocket-release").write_text('NAME=Bottlerocket\nID=bottlerocket\nVERSION_ID="1.53.0"\n')
        for name in CONTROL_CONTAINER_HIDDEN:  # whiteouts: these do not exist in the container
            for sub in ("bin", "sbin"):
                os.mknod(usr_up / sub / name, 0o600 | stat.S_IFCHR, os.makedev(0, 0))
        os.mknod(etc_up / "containerd", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
        self.control = self._start_holder(["nsenter", "-t", str(self.holder.pid), "-m", "--"])
        setup = (
            "set -e\n"
            'r="$1"\n'
            'mount --bind /proc "$r/proc"\nmount --bind /dev "$r/dev"\nmount --bind /tmp "$r/tmp"\n'
            'mount -t tmpfs cc-run "$r/run"\n'
            'mount -t overlay cc-usr -o "lowerdir=/usr,upperdir=$2/cc-usr-upper,workdir=$2/cc-usr-work" "$r/usr"\n'
            'mount -t overlay cc-etc -o "lowerdir=/etc,upperdir=$2/cc-etc-upper,workdir=$2/cc-etc-work" "$r/etc"\n'
        )
        result = subprocess.run(
            ["nsenter", "-t", str(self.control.pid), "-m", "--", "sh", "-c", setup, "cc", str(root), str(d)],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"control container setup failed: {result.stderr.strip()}")
        subst = {
            "@HOLDER@": str(self.holder.pid),
            "@HOST_PATH@": self._path(),
            "@PYTHON@": sys.executable,
            "@APICLIENT_PY@": str(LAB_DIR / "apiclient.py"),
            "@STATE@": str(d / "bottlerocket" / "settings.json"),
            "@COMPAT@": f"BASH_COMPAT={self.profile.bash_compat} " if self.profile.bash_compat else "",
        }
        self._write_stand_ins(d / "cc-bin", {"apiclient": standins.APICLIENT, "sh": standins.SH_BASH}, subst)

    # ---- running things inside the namespace -------------------------------------------------
    def _ns_cmd(self, argv: list[str]) -> list[str]:
        assert self.holder is not None, "lab not started"
        return ["nsenter", "-t", str(self.holder.pid), "-m", "--", *argv]

    def _path(self) -> str:
        return f"{self.bin_dir}:{SYSTEM_PATH}"

    def sh(
        self, script: str, *args: str, check: bool = True, input_data: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a /bin/sh script inside the namespace (lab stand-ins first on PATH)."""
        result = subprocess.run(
            self._ns_cmd(["sh", "-c", script, "nodelab", *args]),
            input=input_data.decode() if input_data is not None else None,
            capture_output=True,
            text=True,
            env=clean_env(PATH=self._path()),
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"lab command failed ({result.returncode}): {script!r}: {result.stderr.strip()}")
        return result

    def read_file(self, path: str) -> bytes | None:
        """A file's bytes as seen inside the namespace, None when missing."""
        result = subprocess.run(
            self._ns_cmd(["sh", "-c", 'test -f "$1" && exec cat -- "$1"', "nodelab", path]),
            capture_output=True,
            env=clean_env(),
            timeout=30,
            check=False,
        )
        return result.stdout if result.returncode == 0 else None

    def write_file(self, path: str, data: str) -> None:
        self.sh('mkdir -p "$(dirname "$1")" && cat >"$1"', path, input_data=data.encode())

    def wait_bottlerocket_applied(self, timeout: float = 30.0) -> bool:
        """Until the API stand-in's thar-be-settings has applied the latest committed settings
        (the lab can see its STATE.applied; the control container cannot). False on timeout."""
        assert self.dir is not None
        state = self.dir / "bottlerocket" / "settings.json"
        applied = state.with_name(state.name + ".applied")
        deadline = time.monotonic() + timeout
        while True:
            wanted = json.loads(state.read_text()).get("generation", 0) if state.exists() else 0
            done = int(applied.read_text() or 0) if applied.exists() else 0
            if done >= wanted:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def bottlerocket_settings(self) -> dict:
        """What the Bottlerocket API stand-in holds (settings.* without the prefix)."""
        assert self.dir is not None
        assert self.is_bottlerocket
        path = self.dir / "bottlerocket" / "settings.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def snapshot(self, content_only: bool = False) -> str:
        """Paths, types, mtimes, sizes and hashes under the trust store and /etc/containerd,
        as seen inside the namespace: equal snapshots = nothing changed there. content_only
        leaves mtimes out (a file rewritten with the same bytes compares equal)."""
        dirs = [self.anchor_dir, "/etc/containerd", "/etc/ssl/certs"]
        if self.is_al:
            dirs += ["/etc/pki"]
        if self.is_bottlerocket:
            # The API's settings and whatever the control container wrote into its own /etc.
            assert self.dir is not None
            dirs += [str(self.dir / "bottlerocket"), str(self.dir / "cc-etc-upper")]
        # content_only: no mtimes, and no directory sizes (an overlay copy-up changes those).
        listing = (
            'find "$d" -type d -printf "%p d\\n" -o -printf "%p %y %s %l\\n"'
            if content_only
            else 'find "$d" -printf "%p %y %T@ %s %l\\n"'
        )
        out = self.sh(
            f'for d in "$@"; do {listing}; find -L "$d" -type f -exec sha256sum {{}} + 2>/dev/null; done | sort',
            *dirs,
        )
        return out.stdout

    # ---- containerd --------------------------------------------------------------------------
    def _read_pid(self) -> int | None:
        assert self.dir is not None
        try:
            pid = int((self.dir / "containerd.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def containerd_pid(self) -> int | None:
        """The running containerd's PID (None if it is not running)."""
        return self._read_pid()

    def containerd_log(self) -> str:
        assert self.dir is not None
        try:
            return (self.dir / "containerd.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def _wait_cri(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.cri_version(timeout=1)[0]:
                return
            time.sleep(0.02)
        raise RuntimeError(f"containerd CRI did not answer within {timeout} s: {self.containerd_log()}")

    def _prime(self) -> None:
        """One CRI pull right after containerd starts, like kubelet's early pulls (pause image).
        Go loads the system CA pool lazily, at the first TLS verification in the process, and
        caches it from then on: without this first pull a CA trusted a moment later would still
        be picked up and the bug would not show."""
        self.cri_pull()

    def start_containerd(self, prime: bool = True) -> int:
        return self._systemctl_containerd("start", prime)

    def stop_containerd(self) -> None:
        self.sh("systemctl stop containerd")

    def restart_containerd(self, prime: bool = True) -> int:
        return self._systemctl_containerd("restart", prime)

    def _systemctl_containerd(self, verb: str, prime: bool) -> int:
        """start/restart through the systemctl stand-in, wait for CRI, prime the CA cache; the new PID."""
        self.sh(f"systemctl {verb} containerd")
        self._wait_cri()
        if prime:
            self._prime()
        pid = self.containerd_pid()
        assert pid is not None
        return pid

    def remove_cri_socket(self) -> None:
        """containerd keeps running, but its CRI socket is gone (clients get ENOENT)."""
        self.socket_path.unlink()

    def _client(self):
        from tests.nodelab.cri.client import CriClient  # noqa: PLC0415

        if self._cri is None:
            self._cri = CriClient(str(self.socket_path))
        return self._cri

    def cri_version(self, timeout: float = 2.0) -> tuple[bool, str]:
        return self._client().version(timeout=timeout)

    def cri_pull(self, image: str | None = None, timeout: float = 60.0) -> tuple[bool, str]:
        """Daemon-side pull through containerd's CRI ImageService (what kubelet does)."""
        return self._client().pull(image or self.image, timeout=timeout)

    # ---- trust store -------------------------------------------------------------------------
    def trust_ca_without_restart(self, pem: str | None = None, name: str = "userdata-private-ca") -> None:
        """What EKS userdata does: put the CA in the OS trust store and refresh it, while
        containerd keeps running."""
        pem = pem or self.ca_pem
        if self.is_al:
            self.write_file(f"/etc/pki/ca-trust/source/anchors/{name}.pem", pem)
            self.sh("update-ca-trust extract")
        else:
            self.write_file(f"/usr/local/share/ca-certificates/{name}.crt", pem)
            self.sh("update-ca-certificates >/dev/null")

    # ---- the node script ---------------------------------------------------------------------
    def script_text(self) -> str:
        from ssm_document import extract_script  # noqa: PLC0415 - tools/ is on the path

        return extract_script(self.template.read_text())

    def run_script(self, env: dict[str, str], timeout: float = 240, script: str | None = None) -> ScriptRun:
        """Run the node script (as embedded in template.yaml) with `sh`, as SSM does, inside the
        namespace, with only the given SSM_* variables plus PATH/HOME/LANG."""
        assert self.dir is not None
        path = self.dir / "_script.sh"
        path.write_text(script if script is not None else self.script_text())
        if self.is_bottlerocket:
            # Run Command on Bottlerocket: inside the control container.
            assert self.control is not None
            argv = ["nsenter", "-t", str(self.control.pid), "-m", "--", "chroot", str(self.control_root)]
            search = f"{self.dir / 'cc-bin'}:{SYSTEM_PATH}"
        else:
            argv, search = self._ns_cmd([]), self._path()
        started = time.monotonic()
        proc = subprocess.run(
            [*argv, "sh", str(path)],
            capture_output=True,
            text=True,
            env=clean_env(PATH=search, **env),
            timeout=timeout,
            check=False,
        )
        self.last_script_seconds = time.monotonic() - started
        self.last_stdout = proc.stdout
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        result = None
        if lines:
            with contextlib.suppress(json.JSONDecodeError):
                result = json.loads(lines[-1])
        if script is None and result is not None and result.get("result") == "success":
            self.assert_success_is_real(env, result)
        return ScriptRun(proc.returncode, result, proc.stderr)

    def assert_success_is_real(self, env: dict[str, str], result: dict) -> None:
        """The lab's own check after every run the script reports as a success: when the bundle
        it installed holds the registry's CA, a CRI pull (what kubelet does) of an image never
        pulled before works. A success where that pull fails is a false report, whatever the
        test around it asserts. On Bottlerocket the lab observes the host's containerd
        directly (the script cannot)."""
        try:
            bundle = base64.b64decode(env.get("SSM_CaBundle", ""), validate=True).decode("ascii", "replace")
        except ValueError:
            return
        ca_body = "".join(self.ca_pem.strip().splitlines()[1:-1])
        if ca_body not in bundle.replace("\r", "").replace("\n", ""):
            return
        if self.is_bottlerocket and not self.wait_bottlerocket_applied():
            raise AssertionError("the script reported success but Bottlerocket did not apply settings.pki within 30 s")
        image = self.registry.fresh_image()
        ok, msg = self.cri_pull(image)
        self.fresh_pulls += 1
        if not ok:
            raise AssertionError(
                f"the script reported success ({result.get('strategy_used')}, verification "
                f"{result.get('verification_level')}, canary {result.get('canary')!r}) but a CRI pull of "
                f"a fresh image fails: {msg}\nwarnings: {result.get('warnings')}"
            )

    def script_env(self, **overrides: str) -> dict[str, str]:
        """SSM_* variables for a normal run against this lab's registry (override any)."""
        env = {
            "SSM_CaBundle": self.ca_b64,
            "SSM_Strategy": "auto",
            "SSM_RegistryHosts": self.registry_host,
            "SSM_CanaryImage": self.image,
            "SSM_DryRun": "false",
        }
        env.update(overrides)
        return env
