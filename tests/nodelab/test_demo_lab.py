"""The README's local main job on the node lab: a real x509 failure turns into a successful pull."""

from __future__ import annotations

import pytest

import demo.__main__ as demo

pytestmark = pytest.mark.nodelab


def test_demo_on_the_node_lab_turns_x509_into_a_good_pull(lab_registry, capsys):
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    assert "node: node lab (real containerd" in out
    assert "x509: certificate signed by unknown authority" in out
    assert "pull STILL fails" in out
    assert "result=success restarted=True" in out
    assert "after: CRI pull OK" in out
    assert "PullFailure: 1,000 x509 lines in 10 log deliveries -> 1 remediation" in out
    assert "pull-failure record SUCCEEDED" in out
    assert "every step happened" in out
