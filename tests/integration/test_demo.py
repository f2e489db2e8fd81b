"""The README's local main job runs end to end (here with the announced fake node)."""

from __future__ import annotations

import demo.__main__ as demo


def test_demo_with_fake_node_completes_every_step(capsys):
    assert demo.main(["--fake-node"]) == 0
    out = capsys.readouterr().out
    assert "node lab unavailable: --fake-node given" in out
    assert "OnLaunch: agent not Online yet -> record PENDING_AGENT" in out
    assert "OnCommandStatus: record SUCCEEDED" in out
    assert "PullFailure: 1,000 x509 lines in 10 log deliveries -> 1 remediation" in out
    assert "every step happened" in out
