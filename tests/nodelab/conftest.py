"""Fixtures for the node lab: one registry (CA, image) per session, one fresh node per test.

Where the lab cannot run (not root, no unshare/containerd/docker-registry, ...) the tests skip
with a one-line reason, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests.nodelab import fetched_containerd
from tests.nodelab.lab import NodeLab, Registry, lab_available


def _lab_unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"node lab cannot run here, and CI=true forbids skipping it: {reason}", pytrace=False)
    pytest.skip(reason)


def _need_containerd(lab: NodeLab) -> None:
    """containerd 1.7 and 2.x are fetched from Debian on first use: where that cannot happen,
    the lab is unavailable (a skip with the reason; a failure under CI=true)."""
    if lab.containerd_version in fetched_containerd.SUITES:
        directory, why = fetched_containerd.ensure(lab.containerd_version)
        if directory is None:
            _lab_unavailable(why)


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
def make_lab(lab_registry: Registry) -> Iterator[Callable[..., NodeLab]]:
    """Factory: make_lab(profile, containerd=None, crictl=None, config=..., config_file=...) -> a
    started NodeLab (profile one of lab.PROFILES; containerd "1.6", "1.7" or "2", default the
    image's own; config one of lab.CONFIGS; config_file where containerd's config is) whose containerd,
    namespaces and files are all gone after the test (also when it fails)."""
    labs: list[NodeLab] = []

    def factory(
        os_family: str = "debian", containerd: str | None = None, crictl: bool | None = None, **options: str
    ) -> NodeLab:
        lab = NodeLab(os_family, registry=lab_registry, containerd=containerd, crictl=crictl, **options)
        _need_containerd(lab)
        labs.append(lab)
        return lab.start()

    try:
        yield factory
    finally:
        for lab in labs:
            lab.stop()


@pytest.fixture
def lab(make_lab: Callable[..., NodeLab]) -> NodeLab:
    return make_lab("debian")


@pytest.fixture(scope="module")
def node_lab(lab_registry: Registry) -> Iterator[Callable[[str, str], NodeLab]]:
    """One node per (profile, containerd) shared by the tests of a module that must change
    nothing (rejections): each of them checks that the trust store, settings, /etc/containerd
    and containerd's PID are unchanged, so a test that does change something fails itself."""
    labs: dict[tuple[str, str], NodeLab] = {}

    def get(os_family: str, containerd: str) -> NodeLab:
        if (os_family, containerd) not in labs:
            lab = NodeLab(os_family, registry=lab_registry, containerd=containerd)
            _need_containerd(lab)
            labs[os_family, containerd] = lab
            lab.start()
        return labs[os_family, containerd]

    try:
        yield get
    finally:
        for lab in labs.values():
            lab.stop()


@pytest.fixture(scope="module")
def shared_lab(node_lab: Callable[[str, str], NodeLab]) -> NodeLab:
    """The shared Debian node (containerd 1.6)."""
    return node_lab("debian", "1.6")
