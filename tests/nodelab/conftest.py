"""Fixtures for the node lab: one registry (CA, image) per session, one fresh node per test.

Where the lab cannot run (not root, no unshare/containerd/docker-registry, ...) the tests skip
with a one-line reason, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.nodelab.lab import NodeLab, Registry, lab_available


def _lab_unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"node lab cannot run here, and CI=true forbids skipping it: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def lab_registry() -> Iterator[Registry]:
    ok, reason = lab_available()
    if not ok:
        _lab_unavailable(reason)
    registry = Registry().start()
    try:
        yield registry
    finally:
        registry.stop()


@pytest.fixture
def make_lab(lab_registry: Registry) -> Iterator[Callable[[str], NodeLab]]:
    """Factory: make_lab("debian" | "ubuntu" | "al2" | "al2023") -> a started NodeLab whose
    containerd, namespace and files are all gone after the test (also when it fails)."""
    labs: list[NodeLab] = []

    def factory(os_family: str = "debian") -> NodeLab:
        lab = NodeLab(os_family, registry=lab_registry)
        labs.append(lab)
        return lab.start()

    try:
        yield factory
    finally:
        for lab in labs:
            lab.stop()


@pytest.fixture
def lab(make_lab: Callable[[str], NodeLab]) -> NodeLab:
    return make_lab("debian")


@pytest.fixture(scope="module")
def shared_lab(lab_registry: Registry) -> Iterator[NodeLab]:
    """One Debian node shared by the tests of a module that must change nothing (rejections):
    each of them checks that the trust store, /etc/containerd and containerd's PID are unchanged,
    so a test that does change something fails itself."""
    lab = NodeLab("debian", registry=lab_registry)
    try:
        yield lab.start()
    finally:
        lab.stop()
