"""The node lab's skip policy: skip with a reason locally, fail under CI=true."""

from __future__ import annotations

import pytest

from tests.nodelab.conftest import _lab_unavailable
from tests.nodelab.lab import lab_available


def test_unavailable_lab_skips_locally(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no containerd"):
        _lab_unavailable("no containerd")


def test_unavailable_lab_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true forbids skipping it: no containerd"):
        _lab_unavailable("no containerd")


def test_lab_available_gives_a_one_line_reason():
    ok, reason = lab_available()
    assert isinstance(ok, bool)
    assert (reason == "") if ok else (reason and "\n" not in reason)
