"""``iplap batch`` under faults (issue 23, items 7 and 8): two batches on one output folder, a
file it did not write.

A hung worker is made with the batch's test hook (``IPLAP_BATCH_TEST_HANG``, see
``iplap/batch/work.py``): a worker given a file of that name hangs instead of working.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from test_batch import SETTINGS, _records, _summary, _wait_for_child, inputs  # noqa: F401

HANG = "hang.png"
WORK = ".iplap-batch-work"


def _env(hang: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("IPLAP_BATCH_TEST_HANG", None)
    if hang:
        env["IPLAP_BATCH_TEST_HANG"] = HANG
    return env


def _batch(*args: str, hang: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iplap", "batch", *args, "--quiet"], capture_output=True, text=True,
                          timeout=timeout, env=_env(hang))


def _manifest(folder: Path, rows: list[tuple[str, str, str]], inputs: Path) -> Path:
    """A CSV manifest of (face, audio, out) with absolute paths into ``inputs``."""
    if any(face == HANG for face, _, _ in rows):
        shutil.copy(inputs / "photo.png", inputs / HANG)
    path = folder / "jobs.csv"
    path.write_text("face,audio,out\n" + "".join(f"{inputs / f},{inputs / a},{o}\n" for f, a, o in rows))
    return path


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("iplap: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# -- item 7: one run per output folder, and no file overwritten that the batch did not write ---------

def test_a_second_batch_on_the_same_out_is_refused_and_a_dead_ones_lock_does_not_block(inputs, bundle_dir,
                                                                                      tmp_path):
    out = tmp_path / "out"
    manifest = _manifest(tmp_path, [(HANG, "s0.wav", "a.mp4")], inputs)
    first = subprocess.Popen([sys.executable, "-m", "iplap", "batch", str(manifest), "--bundle", str(bundle_dir),
                              "--out", str(out), "--quiet", *SETTINGS], stderr=subprocess.PIPE, text=True,
                             env=_env(hang=True))
    try:
        worker = _wait_for_child(first.pid)  # the first batch is at work (its worker hangs)
        second = _batch(str(manifest), "--bundle", str(bundle_dir), "--out", str(out), *SETTINGS)
        assert second.returncode == 2, second.stderr
        line = _error_line(second.stderr)
        assert f"pid {first.pid}" in line and str(out) in line, line
        assert first.poll() is None and (out / WORK).is_dir(), "the second batch disturbed the first"
    finally:
        first.kill()  # dies holding the lock: the kernel releases it
        try:
            os.kill(worker, signal.SIGKILL)  # (it would leave by itself, its driver gone; sooner)
        except (ProcessLookupError, NameError):
            pass
        first.communicate(timeout=60)
    # The dead batch's lock file is left behind; it does not block the next batch (which here
    # refuses its one job quickly: a file it did not write is in the way).
    (out / "a.mp4").write_bytes(b"not iplap's")
    third = _batch(str(manifest), "--bundle", str(bundle_dir), "--out", str(out), *SETTINGS)
    assert "in use" not in third.stderr and third.returncode == 2, third.stderr
    assert _summary(third.stderr)["failed"] == "1"


def test_a_file_that_no_job_wrote_is_not_overwritten_and_the_other_jobs_go_on(inputs, bundle_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "taken.mp4").write_bytes(b"the user's own file")
    manifest = _manifest(tmp_path, [("photo.png", "s2.wav", "taken.mp4"), ("wall.png", "s3.wav", "wall.mp4")], inputs)
    result = _batch(str(manifest), "--bundle", str(bundle_dir), "--out", str(out), *SETTINGS)
    assert result.returncode == 2, result.stderr
    assert (out / "taken.mp4").read_bytes() == b"the user's own file"
    records = {r["out"]: r for r in _records(out)}
    assert records["taken.mp4"]["state"] == "failed" and records["taken.mp4"]["failure"] == "input"
    message = records["taken.mp4"]["error"]
    assert str(out / "taken.mp4") in message and "not overwritten" in message, message
    assert f"failed: taken.mp4: {message}" in result.stderr
    assert records["wall.mp4"]["error"] == "no face found in wall.png"  # the other job went on


def test_an_output_a_finished_job_wrote_may_be_replaced_and_no_other(tmp_path):
    from iplap import sha256_file
    from iplap.batch.run import RECORDS, Records

    (tmp_path / "ours.mp4").write_bytes(b"rendered by a job")
    (tmp_path / "theirs.mp4").write_bytes(b"put there by someone")
    record = {"out": "ours.mp4", "state": "done", "output_sha256": sha256_file(tmp_path / "ours.mp4")}
    failed = {"out": "ours.mp4", "state": "failed", "error": "a later try failed"}
    (tmp_path / RECORDS).write_text(json.dumps(record) + "\n" + json.dumps(failed) + "\n")
    records = Records(tmp_path / RECORDS)
    assert records.wrote(tmp_path / "ours.mp4")  # a later failure does not disown it
    assert records.wrote(tmp_path / "new.mp4")  # nothing there: nothing to lose
    assert not records.wrote(tmp_path / "theirs.mp4")
    (tmp_path / "ours.mp4").write_bytes(b"edited by the user since")
    assert not records.wrote(tmp_path / "ours.mp4")
