"""A minimal CRI (runtime.v1) gRPC client: Version, Status and PullImage over a unix socket.

The pull is daemon-side (containerd's CRI plugin does it), like kubelet's; `ctr image pull`
pulls in the client process and would not reproduce the cached-CA-pool bug.

The stubs are generated from runtime.proto with grpcio-tools on first use into a temporary
directory (removed at interpreter exit), or taken from NODELAB_CRI_GENERATED when set.

Also a tiny crictl look-alike for the lab's `crictl` stand-in:
    python client.py [--runtime-endpoint unix:///path] info|version|pull IMAGE
Without --runtime-endpoint it reads `runtime-endpoint:` from /etc/crictl.yaml, like crictl.
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import grpc

PROTO = Path(__file__).resolve().with_name("runtime.proto")
CRICTL_CONFIG = Path("/etc/crictl.yaml")
_CHANNEL_OPTIONS = [
    # Reconnect quickly after a containerd restart (the default backoff starts at 1 s).
    ("grpc.initial_reconnect_backoff_ms", 10),
    ("grpc.min_reconnect_backoff_ms", 10),
    ("grpc.max_reconnect_backoff_ms", 100),
]
_stubs: tuple[ModuleType, ModuleType] | None = None


def generate(out_dir: Path) -> None:
    """Compile runtime.proto into out_dir (runtime_pb2.py, runtime_pb2_grpc.py)."""
    from grpc_tools import protoc  # noqa: PLC0415 - only needed when generating

    include = Path(protoc.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "protoc",
            f"-I{PROTO.parent}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO),
        ]
    )
    if rc != 0:
        raise RuntimeError(f"grpc_tools.protoc failed on {PROTO} (exit {rc})")


def generated_dir() -> Path:
    """Directory holding the generated stubs (generated once per process when needed)."""
    env = os.environ.get("NODELAB_CRI_GENERATED")
    if env:
        return Path(env)
    global _gen_dir
    if _gen_dir is None:
        _gen_dir = Path(tempfile.mkdtemp(prefix="nodelab-cri-"))
        atexit.register(shutil.rmtree, _gen_dir, True)
        generate(_gen_dir)
    return _gen_dir


_gen_dir: Path | None = None


def stubs() -> tuple[ModuleType, ModuleType]:
    global _stubs
    if _stubs is None:
        gen = str(generated_dir())
        if gen not in sys.path:
            sys.path.insert(0, gen)
        _stubs = (importlib.import_module("runtime_pb2"), importlib.import_module("runtime_pb2_grpc"))
    return _stubs


def _rpc_error(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"rpc error: code = {code.name if code else 'Unknown'} desc = {details}"


class CriClient:
    """Blocking CRI client for one endpoint (`unix:///absolute/path` or a bare socket path)."""

    def __init__(self, endpoint: str) -> None:
        if endpoint.startswith("/"):
            endpoint = f"unix://{endpoint}"
        self.endpoint = endpoint
        pb2, pb2_grpc = stubs()
        self._pb2 = pb2
        self._channel = grpc.insecure_channel(endpoint, options=_CHANNEL_OPTIONS)
        self._runtime = pb2_grpc.RuntimeServiceStub(self._channel)
        self._images = pb2_grpc.ImageServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CriClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def version(self, timeout: float = 2.0) -> tuple[bool, str]:
        try:
            resp = self._runtime.Version(self._pb2.VersionRequest(version="v1"), timeout=timeout)
        except grpc.RpcError as exc:
            return False, _rpc_error(exc)
        return True, f"{resp.runtime_name} {resp.runtime_version} (CRI {resp.runtime_api_version})"

    def status(self, timeout: float = 5.0) -> tuple[bool, str]:
        try:
            resp = self._runtime.Status(self._pb2.StatusRequest(verbose=False), timeout=timeout)
        except grpc.RpcError as exc:
            return False, _rpc_error(exc)
        conditions = [
            {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
            for c in resp.status.conditions
        ]
        return True, json.dumps({"status": {"conditions": conditions}}, indent=2)

    def pull(self, image: str, timeout: float = 60.0) -> tuple[bool, str]:
        """Pull through containerd's CRI plugin. Returns (ok, image ref or error message)."""
        req = self._pb2.PullImageRequest(image=self._pb2.ImageSpec(image=image))
        try:
            resp = self._images.PullImage(req, timeout=timeout)
        except grpc.RpcError as exc:
            return False, _rpc_error(exc)
        return True, resp.image_ref


def _endpoint_from_config() -> str | None:
    try:
        text = CRICTL_CONFIG.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "runtime-endpoint":
            return value.strip().strip("\"'")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crictl", description="node lab crictl stand-in")
    parser.add_argument("--runtime-endpoint", "-r")
    parser.add_argument("--timeout", "-t", type=float, default=60.0)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info")
    sub.add_parser("version")
    pull = sub.add_parser("pull")
    pull.add_argument("image")
    args = parser.parse_args(argv)
    endpoint = args.runtime_endpoint or _endpoint_from_config()
    if not endpoint:
        print("crictl: no runtime endpoint (--runtime-endpoint or /etc/crictl.yaml)", file=sys.stderr)
        return 1
    with CriClient(endpoint) as client:
        if args.command == "pull":
            ok, msg = client.pull(args.image, timeout=args.timeout)
            if ok:
                print(f"Image is up to date for {msg}")
                return 0
            print(f"FATA pulling image: {msg}", file=sys.stderr)
            return 1
        if args.command == "version":
            ok, msg = client.version(timeout=min(args.timeout, 10.0))
        else:
            ok, msg = client.status(timeout=min(args.timeout, 10.0))
        if ok:
            print(msg)
            return 0
        print(f"FATA getting status of runtime: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
