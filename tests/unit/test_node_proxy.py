"""containerd's own proxy settings, as the node script reads them (node/lib/verify.sh): from the
running process's environment, HTTPS_PROXY before https_proxy, and NO_PROXY matched as Go's
golang.org/x/net/http/httpproxy does."""

from __future__ import annotations

import os
import shlex

import pytest

from tests.node_shell import run_modules, running


def bash(code: str) -> str:
    return run_modules(("result.sh", "verify.sh"), code)


@pytest.mark.parametrize(
    ("no_proxy", "hostport", "proxied"),
    [
        ("", "registry.example.com:443", True),
        ("*", "registry.example.com:443", False),
        ("example.com", "registry.example.com:443", False),
        ("example.com", "example.com:5000", False),
        (".example.com", "example.com:443", True),
        (".example.com", "registry.example.com:443", False),
        ("*.example.com", "registry.example.com:443", False),
        ("other.com, registry.example.com:5000", "registry.example.com:443", True),
        ("other.com, registry.example.com:5000", "registry.example.com:5000", False),
        ("EXAMPLE.COM", "registry.example.com:443", False),
        ("", "localhost:5000", False),
        ("", "127.0.0.1:5000", False),
    ],
)
def test_proxy_for_follows_gos_no_proxy_rules(no_proxy, hostport, proxied):
    out = bash(f"PROXY_HTTPS=http://proxy.internal:3128 PROXY_NO={shlex.quote(no_proxy)}; proxy_for {hostport}")
    assert out == ("http://proxy.internal:3128" if proxied else "")


def test_containerd_proxy_reads_the_running_process_environment(tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "https_proxy": "http://lower:1",
        "HTTPS_PROXY": "http://upper:2",
        "no_proxy": "a.b",
    }
    with running(["sleep", "30"], b"sleep", env=env) as pid:  # env: its environment once exec'd
        out = bash(f'containerd_proxy {pid} 2>/dev/null; printf "%s|%s" "$PROXY_HTTPS" "$PROXY_NO"')
    assert out == "http://upper:2|a.b"


def test_no_proxy_setting_means_direct():
    assert bash("PROXY_HTTPS=''; PROXY_NO=''; proxy_for registry.example.com:443") == ""
