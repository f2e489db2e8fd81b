"""Node lab stand-in for Bottlerocket's API as `apiclient` reaches it: `set` and `get` of
`settings.pki`, validated and applied the way Bottlerocket does.

Modeled on upstream:
- settings.pki.<bundle-name>.data: "A Base64-encoded PEM-formatted certificate bundle";
  .trusted: boolean, default false (https://bottlerocket.dev/en/os/1.20.x/api/settings/pki).
  `apiclient set pki.NAME.data="..." pki.NAME.trusted=true` is the documented form; the
  `settings.` prefix is optional, and the server types each value as a number, then a boolean,
  then a string (bottlerocket-core-kit sources/api/apiclient/README.md and
  sources/api/apiserver/src/server/mod.rs `massage_set_input`). `--json` may wrap the settings
  in a "settings" object or not (apiclient/src/main.rs `parse_set_args`).
- `apiclient get PREFIX` prints pretty JSON of every setting whose name starts with PREFIX, as
  {"settings": {...}} (apiclient/src/get.rs: `/?prefix=`).
- The bundle name is a modeled `Identifier` and the data a `PemCertificateString`
  (bottlerocket-os/bottlerocket-settings-sdk, bottlerocket-settings-models/modeled-types/src/
  shared.rs): base64 STANDARD alphabet with padding; every PEM block must parse as an X.509
  certificate; at least one certificate; an empty string is allowed (it removes the bundle).
- A change to settings.pki affects the services `pki` and `containerd` (bottlerocket-os/
  bottlerocket sources/shared-defaults/containerd-cri-pki.toml: affected-services = ["pki",
  "containerd"]). pki's restart command is certdog, which rewrites /etc/pki/tls/certs/
  ca-bundle.crt from the distribution roots plus every trusted bundle (core-kit sources/api/
  certdog); containerd's is `/bin/systemctl try-restart containerd.service`
  (shared-defaults/defaults.toml).
- `set` returns once the settings are committed: the API server starts thar-be-settings with
  --daemon and waits only for its fork ("this is just checking that it was able to fork, not
  checking its work": core-kit sources/api/apiserver/src/server/controller.rs apply_changes).
  So here too the application runs in a detached process after `set` has returned, after a
  short random delay, with the affected services' restart commands in random order; it records
  the settings generation it applied in STATE.applied (what the lab, not the control
  container, can observe). NODELAB_APPLY_DELAY (seconds) fixes the delay for a test.
Anything else the real API would accept but this lab does not model is refused with a clear
message, never silently accepted.

State lives in a JSON file given by --state (one per lab node).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

# modeled-types shared.rs: `.all(|c| (c.is_ascii() && c.is_alphanumeric()) || c == '-')
# && input.len() <= CONTAINERD_ID_LENGTH` (76); "hello_world" is an error in its tests.
IDENTIFIER_RE = re.compile(r"^[A-Za-z0-9-]{1,76}$")
PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.S)
TRUST_BUNDLE = Path("/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem")
TRUST_LINK = Path("/etc/pki/tls/certs/ca-bundle.crt")
ROOTS = Path("/usr/share/ca-certificates/mozilla")


class ApiError(Exception):
    pass


def validate_name(name: str) -> str:
    if not IDENTIFIER_RE.fullmatch(name):
        raise ApiError(f"Invalid Identifier '{name}': only ASCII letters, digits and '-', at most 76")
    return name


def validate_data(value: object) -> str:
    if not isinstance(value, str):
        raise ApiError(f"invalid type for settings.pki.*.data: expected a string, got {type(value).__name__}")
    if not value.strip():
        return value
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(f"Invalid base64 input: {exc}") from exc
    from cryptography import x509  # noqa: PLC0415 - the lab checks it is installed

    blocks = list(PEM_RE.finditer(decoded))
    if not blocks:
        raise ApiError("No valid certificate found in the bundle")
    for match in blocks:
        if match.group(1) != b"CERTIFICATE":
            raise ApiError(f"Invalid PEM: block of type {match.group(1).decode()} is not a certificate")
        try:
            x509.load_pem_x509_certificate(match.group(0))
        except ValueError as exc:
            raise ApiError(f"Invalid x509 certificate in PEM: {exc}") from exc
    return value


def validate_trusted(value: object, from_text: bool) -> bool:
    """A JSON boolean; from `key=value` text, the words true/false."""
    if isinstance(value, bool):
        return value
    if from_text and value in ("true", "false"):
        return value == "true"
    raise ApiError(f"invalid type for settings.pki.*.trusted: expected a boolean, got {value!r}")


def parse_assignments(pairs: list[str]) -> dict[str, dict[str, object]]:
    """`pki.NAME.data=...` / `settings.pki.NAME.trusted=true` -> {NAME: {field: value}}."""
    changes: dict[str, dict[str, object]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ApiError(f"Invalid key=value: '{pair}'")
        parts = key.removeprefix("settings.").split(".")
        if parts[0] != "pki":
            raise ApiError(f"node lab apiclient models settings.pki only, not '{key}'")
        if len(parts) != 3:
            raise ApiError(f"Unknown key '{key}': expected pki.<bundle-name>.data or .trusted")
        _, name, field = parts
        changes.setdefault(validate_name(name), {})[field] = value
    return changes


def apply_changes(state: dict, changes: dict[str, dict[str, object]], from_text: bool) -> dict:
    pki = {name: dict(bundle) for name, bundle in state.get("pki", {}).items()}
    for name, fields in changes.items():
        bundle = pki.setdefault(name, {"data": "", "trusted": False})
        for field, value in fields.items():
            if field == "data":
                bundle["data"] = validate_data(value)
            elif field == "trusted":
                bundle["trusted"] = validate_trusted(value, from_text)
            else:
                raise ApiError(f"unknown field '{field}' in settings.pki.{name}")
    return {**state, "pki": pki}


def regenerate_trust_bundle(state: dict) -> None:
    """What Bottlerocket's pki service does: distribution roots plus every trusted bundle."""
    parts = [p.read_bytes() for p in sorted(ROOTS.glob("*.crt"))[:8]]
    for name, bundle in sorted(state.get("pki", {}).items()):
        if bundle.get("trusted") and bundle.get("data", "").strip():
            parts.append(f"# settings.pki.{name}\n".encode() + base64.b64decode(bundle["data"]))
    TRUST_BUNDLE.parent.mkdir(parents=True, exist_ok=True)
    tmp = TRUST_BUNDLE.with_suffix(".tmp")
    tmp.write_bytes(b"\n".join(p.rstrip(b"\n") for p in parts) + b"\n")
    tmp.replace(TRUST_BUNDLE)
    TRUST_LINK.parent.mkdir(parents=True, exist_ok=True)
    if not TRUST_LINK.is_symlink():
        TRUST_LINK.unlink(missing_ok=True)
        TRUST_LINK.symlink_to(TRUST_BUNDLE)


def cmd_set(state_path: Path, pairs: list[str], json_text: str | None) -> int:
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if json_text is not None:
        doc = json.loads(json_text)
        doc = doc.get("settings", doc) if isinstance(doc, dict) else doc
        if not isinstance(doc, dict) or set(doc) != {"pki"} or not isinstance(doc["pki"], dict):
            raise ApiError("node lab apiclient models settings.pki only")
        changes = {validate_name(n): dict(f) for n, f in doc["pki"].items()}
    else:
        changes = parse_assignments(pairs)
    if not changes:
        raise ApiError("Must specify at least one key=value or --json")
    new = apply_changes(state, changes, from_text=json_text is None)
    new["generation"] = int(state.get("generation", 0)) + 1
    tmp = state_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(new))
    tmp.replace(state_path)
    # Committed: thar-be-settings applies it in the background (see the module docstring).
    subprocess.Popen(
        [sys.executable, __file__, "--state", str(state_path), "_apply", str(new["generation"])],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return 0


CONTAINERD_SOCKET = "/run/containerd/containerd.sock"


def wait_containerd_ready(timeout: float = 30.0) -> None:
    """containerd's unit is Type=notify (containerd.service in containerd's repository), so
    systemd's try-restart returns once the new process has reported ready; the lab's systemctl
    stand-in returns at once: wait until the socket accepts, as thar-be-settings would."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(CONTAINERD_SOCKET)
                return
            except OSError:
                pass
        time.sleep(0.02)


def cmd_apply(state_path: Path, generation: int) -> int:
    """thar-be-settings for settings.pki: certdog and containerd's try-restart, in random order."""
    delay = os.environ.get("NODELAB_APPLY_DELAY")
    time.sleep(float(delay) if delay else random.uniform(0.2, 1.0))
    steps = ["pki", "containerd"]
    random.shuffle(steps)
    for step in steps:
        if step == "pki":
            regenerate_trust_bundle(json.loads(state_path.read_text()))
        else:
            subprocess.run(["systemctl", "try-restart", "containerd.service"], check=True, timeout=120)
            wait_containerd_ready()
        time.sleep(random.uniform(0.0, 0.3))
    applied = state_path.with_name(state_path.name + ".applied")
    done = int(applied.read_text()) if applied.exists() else 0
    applied.write_text(str(max(done, generation)))
    return 0


def cmd_get(state_path: Path, prefixes: list[str]) -> int:
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    out: dict = {}
    for prefix in prefixes or ["settings"]:
        parts = prefix.split(".")
        if parts[0] != "settings":
            raise ApiError(f"node lab apiclient get models settings.* only, not '{prefix}'")
        node: object = {"settings": {"pki": state.get("pki", {})}}
        picked: object = node
        for part in parts:
            if not isinstance(picked, dict) or part not in picked:
                picked = None
                break
            picked = picked[part]
        if picked is None:
            continue
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = picked
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="apiclient")
    parser.add_argument("--state", required=True)
    sub = parser.add_subparsers(dest="command", required=True)
    set_parser = sub.add_parser("set")
    set_parser.add_argument("--json", "-j")
    set_parser.add_argument("pairs", nargs="*")
    get_parser = sub.add_parser("get")
    get_parser.add_argument("prefixes", nargs="*")
    apply_parser = sub.add_parser("_apply")  # the lab's thar-be-settings, started by `set`
    apply_parser.add_argument("generation", type=int)
    args = parser.parse_args(argv)
    state = Path(args.state)
    if args.command == "_apply":
        return cmd_apply(state, args.generation)
    try:
        if args.command == "set":
            return cmd_set(state, args.pairs, args.json)
        return cmd_get(state, args.prefixes)
    except ApiError as exc:
        print(f"Failed to change settings: {exc}" if args.command == "set" else str(exc), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
