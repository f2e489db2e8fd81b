"""The node lab's skip policy: skip with a reason locally, fail under CI=true."""

from __future__ import annotations

import pytest

from tests.nodelab.conftest import _lab_unavailable
from tests.nodelab.lab import b64, lab_available


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


@pytest.mark.nodelab
def test_a_reported_success_is_checked_by_a_fresh_cri_pull(make_lab):
    """The lab's assertion, not a convention: a script that claims success where a CRI pull of a
    fresh image fails is caught by run_script itself, whatever the test around it asserts."""
    lab = make_lab("debian", "1.6")
    lab.trust_ca_without_restart()  # containerd keeps its old CA pool: CRI pulls fail
    liar = 'echo \'{"result":"success","strategy_used":"none","canary":"ok"}\'\n'
    env = lab.script_env()
    # A script given as text is a probe (tests of the tool surface), not the product: not checked.
    assert lab.run_script(env, script=liar).result["result"] == "success"
    with pytest.raises(AssertionError, match="reported success .* but a CRI pull of a fresh image fails"):
        lab.assert_success_is_real(env, {"result": "success", "strategy_used": "none", "canary": "ok"})
    # A bundle without the registry's CA says nothing about this registry: not checked.
    lab.assert_success_is_real(lab.script_env(SSM_CaBundle=b64(lab.pki.other_ca_pem)), {"result": "success"})
    assert lab.fresh_pulls == 1
