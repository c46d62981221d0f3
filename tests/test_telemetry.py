"""iplap's tools do not opt their users into OpenVINO's and NNCF's usage telemetry."""

from __future__ import annotations

import pytest

from iplap.telemetry import decline_unless_chosen


def test_no_recorded_choice_counts_as_declined_and_a_recorded_one_is_kept(tmp_path, monkeypatch):
    checker = pytest.importorskip("openvino_telemetry.utils.opt_in_checker")
    monkeypatch.setenv("HOME", str(tmp_path))  # the consent file lives in ~/intel
    monkeypatch.delenv("CI", raising=False)
    result = checker.ConsentCheckResult
    decline_unless_chosen()
    decline_unless_chosen()  # idempotent: one wrapper, not two
    check = checker.OptInChecker.check
    assert not getattr(check.__wrapped__, "_iplap_declines_unchosen", False)
    ask = checker.OptInChecker()
    assert check.__wrapped__(ask, False, True) == result.NO_FILE  # as openvino and nncf ask: no dialog
    assert ask.check(False, True) == result.DECLINED
    assert not (tmp_path / "intel" / "openvino_telemetry").exists()  # nothing written for the user
    (tmp_path / "intel").mkdir()
    for recorded, expected in (("1", result.ACCEPTED), ("0", result.DECLINED)):
        (tmp_path / "intel" / "openvino_telemetry").write_text(recorded + "\n")
        assert ask.check(False, True) == expected  # a choice the user made is theirs


_NOTHING_SENT = """
import importlib.util, sys
import openvino_telemetry.utils.sender as sender
sent = []
sender.TelemetrySender.send = lambda self, *a, **k: sent.append(a)
from iplap.runtime.backends import openvino_core
openvino_core()  # imports openvino, whose model converter sends an "import" event at once
if importlib.util.find_spec("nncf"):
    from iplap.telemetry import decline_unless_chosen
    decline_unless_chosen()
    import nncf  # noqa: F401  (asks for consent at import)
    from nncf.telemetry import telemetry
    telemetry.send_event("iplap-test", "test", "test")
print(len(sent))
"""


def test_the_runtime_and_the_tools_send_nothing_unless_the_user_opted_in(tmp_path):
    """In a fresh process (OpenVINO asks once, at import), with no choice recorded: the
    runtime's first OpenVINO use and NNCF send no event."""
    import os
    import subprocess
    import sys

    pytest.importorskip("openvino_telemetry")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NNCF_CI", "NNCF_DEV", "TF_BUILD", "JENKINS_URL")}
    env["HOME"] = str(tmp_path)
    run = subprocess.run([sys.executable, "-c", _NOTHING_SENT], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "0"
    assert not (tmp_path / "intel").exists()  # no consent file, no client id written for the user
