"""``iplap batch``: the manifest, local workers and a Ray cluster give ``iplap run``'s outputs,
resuming after a crash, a dead worker or Ctrl-C without losing or repeating anything."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

from iplap.samples import FACE_IMAGE, SPEECH_16K
from iplap.samples.clip import head_motion_frames, write_clip

REFS = 2
#: The same settings for every render, batch or run: one inference thread (so the numbers
#: cannot depend on how work is split between threads).
SETTINGS = ["--refs", str(REFS), "--threads", "1"]
#: Where the jobs' speech is cut from the sample: 0.3 s each, 4 frames (2 renders) a job.
SEGMENTS = [(0.8, 1.1), (1.5, 1.8), (2.0, 2.3), (2.6, 2.9), (3.0, 3.3)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Five jobs: two share a face video, two a photo (one with N=3), one face has no face."""
    import iplap

    folder = tmp_path_factory.mktemp("batch_inputs")
    write_clip(folder / "clip.mp4", head_motion_frames(0.6, size=256))
    cv2.imwrite(str(folder / "photo.png"), cv2.resize(cv2.imread(str(FACE_IMAGE)), (256, 256)))
    cv2.imwrite(str(folder / "wall.png"), np.full((200, 200, 3), 128, np.uint8))
    wav = iplap.load_speech(SPEECH_16K).samples[:, 0]
    for k, (a, b) in enumerate(SEGMENTS):
        soundfile.write(folder / f"s{k}.wav", wav[int(a * 16000):int(b * 16000)], 16000)
    (folder / "jobs.csv").write_text("face,audio,out,refs\nclip.mp4,s0.wav,,\nclip.mp4,s1.wav,,\n"
                                     "photo.png,s2.wav,photo.mp4,\nwall.png,s3.wav,,\nphoto.png,s4.wav,,3\n")
    return folder


GOOD = {"s0.mp4": ("clip.mp4", "s0.wav", REFS), "s1.mp4": ("clip.mp4", "s1.wav", REFS),
        "photo.mp4": ("photo.png", "s2.wav", REFS), "s4.mp4": ("photo.png", "s4.wav", 3)}


@pytest.fixture(scope="module")
def expected(inputs, bundle_dir, tmp_path_factory) -> dict[str, bytes]:
    """The four good jobs, each rendered by its own ``iplap run`` with the same settings: the
    four processes at once (each renders on one thread: together they use the cores)."""
    folder = tmp_path_factory.mktemp("batch_expected")
    runs = {name: subprocess.Popen([sys.executable, "-m", "iplap", "run", "--bundle", str(bundle_dir), "--face",
                                    str(inputs / face), "--audio", str(inputs / audio), "--out", str(folder / name),
                                    "--refs", str(refs), "--threads", "1", "--quiet"],
                                   stderr=subprocess.PIPE, text=True)
            for name, (face, audio, refs) in GOOD.items()}
    out = {}
    try:
        for name, process in runs.items():
            err = process.communicate(timeout=900)[1]
            assert process.returncode == 0, err
            out[name] = (folder / name).read_bytes()
    finally:
        for process in runs.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return out


def _batch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iplap", "batch", *args, "--quiet"], capture_output=True, text=True,
                          timeout=900)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "batch.jsonl").read_text().splitlines()]


def _assert_outputs(out: Path, expected: dict[str, bytes]) -> None:
    """Byte-identical mp4s (the encoder is deterministic for the same frames and settings)."""
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".mp4") == sorted(expected)
    for name, data in expected.items():
        assert (out / name).read_bytes() == data, name
    assert not [p for p in out.rglob(".*") if p.name != ".iplap-batch-work"] and not (out / ".iplap-batch-work").exists()


def _summary(err: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+(jobs|done|skipped \(done before\)|failed|frames rendered)\s+(\S+)", err, re.M))


# -- the manifest -------------------------------------------------------------------------------------

@pytest.mark.parametrize("content,suffix,words", [
    ("face,audio\nclip.mp4,s0.wav\nclip.mp4\n", ".csv", ["line 3: 1 values for 2 columns"]),
    ("face,audio,speed\nclip.mp4,s0.wav,2\n", ".csv", ["line 1: unknown column 'speed'"]),
    ("face,audio\nclip.mp4,missing.wav\nnope.png,s1.wav\n", ".csv",
     ["line 2: audio file not found: missing.wav", "line 3: face file not found: nope.png"]),
    ("face,audio,out\nclip.mp4,s0.wav,a.mp4\nphoto.png,s1.wav,A.mp4\n", ".csv",
     ["line 3: output A.mp4 is also the output of line 2"]),
    ("face,audio,out\nclip.mp4,s0.wav,../x.mp4\nclip.mp4,s1.wav,x.avi\n", ".csv",
     ["line 2: out must be a plain file name", "line 3: out must end in .mp4"]),
    ("face,audio,refs,crf,backend,keyframe_every\nclip.mp4,s0.wav,0,60,tensorrt,0\n", ".csv",
     ["refs must be a whole number from 1 to 100", "crf must be a whole number from 0 to 51", "unknown backend 'tensorrt': choose one of",
      "keyframe_every must be a whole number from 1"]),
    ('{"face": "clip.mp4", "audio": "s0.wav"}\n{"face": "clip.mp4", "audio": "s0.wav"\n', ".jsonl",
     ["line 2: not JSON"]),
    ('{"face": "clip.mp4", "audio": "s0.wav"}\n{"face": "clip.mp4", "audio": "s0.wav"}\n', ".jsonl",
     ["line 2: output s0.mp4 is also the output of line 1"]),
    ("", ".csv", ["no jobs"]),
])
def test_a_bad_manifest_stops_everything_before_it_starts(inputs, bundle_dir, tmp_path, content, suffix, words):
    manifest = inputs / f"bad{suffix}"
    manifest.write_text(content)
    out = tmp_path / "out"
    result = _batch(str(manifest), "--bundle", str(bundle_dir), "--out", str(out), *SETTINGS)
    assert result.returncode == 2, result.stderr
    line = [l for l in result.stderr.splitlines() if l.startswith("iplap: error:")]
    assert len(line) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in line[0], line[0]
    assert not out.exists()


# -- local workers ------------------------------------------------------------------------------------------

def test_local_batch_gives_iplap_runs_outputs_and_resumes(inputs, bundle_dir, expected, tmp_path):
    out = tmp_path / "out"
    result = _batch(str(inputs / "jobs.csv"), "--bundle", str(bundle_dir), "--out", str(out), "--workers", "2",
                    *SETTINGS)
    assert result.returncode == 2, result.stderr  # one job failed on bad input
    _assert_outputs(out, expected)
    records = {r["out"]: r for r in _records(out)}
    assert records["s3.mp4"]["state"] == "failed" and records["s3.mp4"]["error"] == "no face found in wall.png"
    assert all(records[name]["state"] == "done" for name in GOOD)
    assert _summary(result.stderr)["done"] == "4" and _summary(result.stderr)["failed"] == "1"
    again = _batch(str(inputs / "jobs.csv"), "--bundle", str(bundle_dir), "--out", str(out), "--workers", "2",
                   *SETTINGS)
    assert _summary(again.stderr)["skipped (done before)"] == "4" and _summary(again.stderr)["frames rendered"] == "0"
    _assert_outputs(out, expected)


@pytest.mark.slow  # 20-60 s on 2 cores: keeps the default run under 15 minutes
def test_ctrl_c_leaves_no_partial_output_and_the_rerun_completes(inputs, bundle_dir, expected, tmp_path):
    out = tmp_path / "out"
    manifest = inputs / "good.csv"
    manifest.write_text("face,audio,out,refs\n" + "".join(f"{f},{a},{n},{r}\n" for n, (f, a, r) in GOOD.items()))
    process = subprocess.Popen([sys.executable, "-m", "iplap", "batch", str(manifest), "--bundle", str(bundle_dir),
                                "--out", str(out), "--quiet", *SETTINGS], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (out / "batch.jsonl").is_file():
        time.sleep(0.1)  # the first job is done; the second is being rendered
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    err = process.communicate(timeout=120)[1]
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    done = {r["out"] for r in _records(out) if r["state"] == "done"}
    assert 1 <= len(done) < len(GOOD), done
    for path in out.iterdir():  # whatever is there is whole, and recorded
        if path.name != "batch.jsonl":
            assert path.name in done and path.read_bytes() == expected[path.name], path.name
    again = _batch(str(manifest), "--bundle", str(bundle_dir), "--out", str(out), *SETTINGS)
    assert again.returncode == 0, again.stderr
    assert _summary(again.stderr)["skipped (done before)"] == str(len(done))
    _assert_outputs(out, expected)


def test_a_dead_local_worker_is_replaced_and_its_job_retried(inputs, bundle_dir, expected, tmp_path):
    out = tmp_path / "out"
    manifest = inputs / "clips.csv"
    manifest.write_text("face,audio\nclip.mp4,s0.wav\nclip.mp4,s1.wav\n")
    process = subprocess.Popen([sys.executable, "-m", "iplap", "batch", str(manifest), "--bundle", str(bundle_dir),
                                "--out", str(out), "--quiet", *SETTINGS], stderr=subprocess.PIPE, text=True)
    victim = _wait_for_child(process.pid)
    time.sleep(2.0)  # into its work (its job is sent at its start; it is loading, preparing the face or rendering)
    os.kill(victim, signal.SIGKILL)
    err = process.communicate(timeout=600)[1]
    assert process.returncode == 0, err
    assert "a worker died" in err and "retrying it on another worker" in err
    assert (out / "s0.mp4").read_bytes() == expected["s0.mp4"]
    assert (out / "s1.mp4").read_bytes() == expected["s1.mp4"]


def _wait_for_child(pid: int, timeout: float = 120) -> int:
    """The first worker process of a batch driver (from /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children")
        found = [int(c) for c in children.read_text().split()] if children.exists() else []
        workers = [c for c in found if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        if workers:
            return workers[0]
        time.sleep(0.1)
    raise TimeoutError("no worker process appeared")


# -- Ray ----------------------------------------------------------------------------------------------------

@pytest.mark.slow  # 20-60 s on 2 cores: keeps the default run under 15 minutes
def test_ray_batch_survives_a_killed_worker_with_the_same_outputs(inputs, bundle_dir, expected, ray_cluster,
                                                                  tmp_path):
    """The same five jobs as Ray tasks (on the run's cluster, see conftest.ray_cluster); a worker
    is killed in the middle of a job (fault injection), Ray retries the task on another worker,
    and the outputs are still iplap run's; a rerun renders nothing."""
    out = tmp_path / "out"
    address = ray_cluster.address
    process = subprocess.Popen([sys.executable, "-m", "iplap", "batch", str(inputs / "jobs.csv"), "--bundle",
                                str(bundle_dir), "--out", str(out), "--ray", address, "--quiet", *SETTINGS],
                               stderr=subprocess.PIPE, text=True)
    killed = _kill_first("ray::iplap-render", timeout=300)
    err = process.communicate(timeout=900)[1]
    assert killed, "no render task was seen running"
    assert process.returncode == 2, err
    _assert_outputs(out, expected)
    again = _batch(str(inputs / "jobs.csv"), "--bundle", str(bundle_dir), "--out", str(out), "--ray", address,
                   *SETTINGS)
    assert _summary(again.stderr)["skipped (done before)"] == "4" and _summary(again.stderr)["frames rendered"] == "0"


def _kill_first(title: str, timeout: float) -> bool:
    """SIGKILL the first process whose title (Ray names a worker by the task it runs) is ``title``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(title.encode()):
                time.sleep(0.5)  # into the render
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                except ProcessLookupError:
                    continue
                return True
        time.sleep(0.05)
    return False
