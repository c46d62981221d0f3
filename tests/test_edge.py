"""Fit for an edge box: a read-only install with a read-only home, a fast `iplap --help`,
OpenVINO's model cache on by default, messages that say what is wrong with a file, one-format
bundles and `iplap bundle info`, and a live session that is warm before its first turn."""

from __future__ import annotations

import json
import os
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import iplap
from conftest import light_copy
from iplap.cli import main
from iplap.errors import BundleError, MediaError
from iplap.samples import FACE_IMAGE, SPEECH_16K

ROOT = Path(__file__).resolve().parents[1]


# -- a read-only install with a read-only home ----------------------------------------------------

_READ_ONLY = """
set -e
for folder in "$@"; do mount --bind "$folder" "$folder"; mount -o remount,bind,ro "$folder"; done
exec "$PYTHON" -c "$CODE"
"""

_PROBE = """
import sys, logging
logging.basicConfig(level=logging.WARNING, format="WARNING %(message)s")
import iplap.runtime.resample, iplap.runtime.warp, iplap.runtime.face.geometry  # Numba kernels are defined
from iplap.runtime import jit
import numpy as np
from iplap.runtime.face.geometry import fixed_point_maps
fixed_point_maps(np.eye(3), 8, 8)  # one (small) kernel compiled and cached where the rule says
print("CACHE", jit.caching()[0], jit.cache_location())
"""


def _read_only(folders: list[Path], code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``code`` with ``folders`` read-only for this process alone (a private mount
    namespace: read-only even for root), or skip where that cannot be made here."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to make folders read-only for one process")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")
    return subprocess.run(["unshare", "-m", "sh", "-c", _READ_ONLY, "sh", *map(str, folders)], capture_output=True,
                          text=True, timeout=300, env={**env, "PYTHON": sys.executable, "CODE": code})


def _clean_env(home: Path, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "IPLAP_CACHE", "XDG_CACHE_HOME")}
    return {**env, "HOME": str(home), "TMPDIR": str(tmp)}


def test_the_runtime_starts_from_a_read_only_install_and_a_read_only_home(tmp_path):
    """Numba cannot cache beside the sources nor in the home: the kernels cache in a folder of
    the user's in the temporary folder, said in no warning (it works)."""
    package, home, tmp = Path(iplap.__file__).resolve().parent, tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    result = _read_only([package, home], _PROBE, _clean_env(home, tmp))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("CACHE"))
    assert line.startswith("CACHE True") and str(tmp) in line, line
    assert any((tmp / f"iplap-numba-{os.getuid()}").rglob("*.nbi"))
    help_run = _read_only([package, home], "import sys; from iplap.cli import main; sys.exit(main(['--help']))",
                          _clean_env(home, tmp))
    assert help_run.returncode == 0 and "usage: iplap" in help_run.stdout, help_run.stderr


def test_with_nowhere_to_write_the_kernels_compile_uncached_and_say_so_once(tmp_path):
    package, home, tmp = Path(iplap.__file__).resolve().parent, tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    temporary = [Path(p) for p in ("/tmp", "/var/tmp") if Path(p).is_dir()]
    result = _read_only([package, home, tmp, *temporary], _PROBE, _clean_env(home, tmp))
    assert result.returncode == 0, result.stderr
    assert "CACHE False not cached" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "NUMBA_CACHE_DIR" in warnings[0], result.stderr


def test_help_imports_neither_numba_nor_the_engines():
    code = ("import sys; from iplap.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('numba', 'onnxruntime', 'openvino', 'torch', 'cv2', 'av', 'numpy') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# -- OpenVINO's model cache -------------------------------------------------------------------------

def test_openvino_model_cache_is_on_by_default_in_the_cache_folder(tmp_path, monkeypatch):
    from iplap.runtime.backends import BackendConfig, model_cache_dir, openvino_properties

    monkeypatch.setenv("IPLAP_CACHE", str(tmp_path / "cache"))
    assert model_cache_dir(BackendConfig("openvino")) == tmp_path / "cache" / "openvino"
    assert openvino_properties(BackendConfig("openvino"))["CACHE_DIR"] == str(tmp_path / "cache" / "openvino")
    assert model_cache_dir(BackendConfig("openvino", cache_dir=tmp_path / "mine")) == tmp_path / "mine"
    assert "CACHE_DIR" not in openvino_properties(BackendConfig("openvino", model_cache=False))


def test_an_unwritable_cache_folder_turns_the_model_cache_off_with_a_warning(tmp_path, monkeypatch, caplog):
    from iplap.runtime.backends import BackendConfig, model_cache_dir

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("IPLAP_CACHE", str(blocker))
    with caplog.at_level("WARNING"):
        assert model_cache_dir(BackendConfig("openvino")) is None
    assert "model cache is off" in caplog.text


# -- what a bad file is called ------------------------------------------------------------------------

def test_a_text_file_given_as_speech_is_said_not_to_be_audio(tmp_path):
    text = tmp_path / "text.wav"
    text.write_text("these are words, not sound\n" * 40)
    with pytest.raises(MediaError) as info:
        iplap.load_speech(text)
    assert str(info.value) == ("text.wav is not an audio file that FFmpeg can read (invalid data found when "
                               "processing input)")
    riff = tmp_path / "cut.wav"
    riff.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")  # a WAV header cut short
    with pytest.raises(MediaError, match=r"^cut\.wav is a damaged or truncated RIFF \(WAV/AVI\) file \("):
        iplap.load_speech(riff)


def test_a_video_cut_short_is_said_to_be_damaged(tmp_path):
    from iplap.samples.clip import head_motion_frames, write_clip

    clip = write_clip(tmp_path / "clip.mp4", head_motion_frames(0.4, size=128))
    cut = tmp_path / "trunc.mp4"
    cut.write_bytes(clip.read_bytes()[:2000])
    with pytest.raises(MediaError, match=r"^trunc\.mp4 is a damaged or truncated MP4/MOV file \("):
        iplap.face_is_photo(cut)


# -- one-format bundles, and what a bundle holds ----------------------------------------------------

def _openvino_only(bundle_dir: Path, dst: Path) -> Path:
    """``bundle_dir`` with its ONNX files taken out, as ``iplap export --formats openvino`` writes it."""
    copy = light_copy(bundle_dir, dst)
    manifest = json.loads((copy / "manifest.json").read_text())
    for entry in manifest["graphs"].values():
        (copy / entry.pop("onnx")).unlink()
    face = manifest["face_models"]
    for name in [n for n, rel in face.items() if rel.endswith(".onnx")]:
        (copy / face.pop(name)).unlink()
    manifest["files"] = {k: v for k, v in manifest["files"].items() if (copy / k).is_file()}
    (copy / "manifest.json").unlink()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_a_one_format_bundle_runs_its_backend_and_refuses_the_other_in_one_line(bundle_dir, tmp_path, capsys):
    bundle = iplap.Bundle.load(_openvino_only(bundle_dir, tmp_path / "ov"))
    assert bundle.backends == (iplap.Backend.OPENVINO,)
    with pytest.raises(BundleError, match="holds no onnx graphs .* exported for openvino"):
        iplap.Pipeline(bundle, iplap.PipelineConfig(backend=iplap.BackendConfig("onnxruntime")))
    code = main(["run", "--bundle", str(bundle.root), "--face", str(FACE_IMAGE), "--audio", str(SPEECH_16K),
                 "--out", str(tmp_path / "o.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and "(use --backend openvino)" in err and "Traceback" not in err, err
    assert not (tmp_path / "o.mp4").exists()


def test_keep_formats_removes_the_other_formats_files(tmp_path):
    from iplap.export.bundle_writer import _keep_formats

    for rel in ("g.onnx", "openvino/g.xml", "openvino/g.bin", "face/f.onnx", "face/openvino/f.xml",
                "face/openvino/f.bin"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    graphs = {"g": {"onnx": "g.onnx", "openvino": "openvino/g.xml"}}
    face = {"f.onnx": "face/f.onnx", "openvino/f.xml": "face/openvino/f.xml", "openvino/f.bin": "face/openvino/f.bin"}
    _keep_formats(tmp_path, graphs, face, ("openvino",))
    assert graphs == {"g": {"openvino": "openvino/g.xml"}} and set(face) == {"openvino/f.xml", "openvino/f.bin"}
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == \
        ["face/openvino/f.bin", "face/openvino/f.xml", "openvino/g.bin", "openvino/g.xml"]


def test_bundle_info_says_what_a_bundle_holds(bundle_dir, capsys):
    assert main(["bundle", "info", str(bundle_dir)]) == 0
    out = capsys.readouterr().out
    assert "fp32" in out and "backends: onnxruntime, openvino" in out and "translation" in out
    assert main(["bundle", "info", str(bundle_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backends"] == ["onnxruntime", "openvino"] and info["precision"] == "fp32"
    assert set(info["graphs"]) == set(iplap.Bundle.load(bundle_dir).manifest["graphs"])
    assert all(g["bytes"]["onnxruntime"] > 0 and g["bytes"]["openvino"] > 0 for g in info["graphs"].values())
    assert info["gate"] is None and info["bytes"] > sum(sum(g["bytes"].values()) for g in info["graphs"].values())


# -- a live session is warm before its first turn ----------------------------------------------------

def test_a_live_session_warms_up_while_idle_and_its_k_starts_from_a_warm_render(bundle_dir):
    pipe = iplap.Pipeline(bundle_dir, iplap.PipelineConfig(backend=iplap.BackendConfig(threads=2), refs=1))
    photo = pipe.prepare(FACE_IMAGE)
    with pipe.open_live(photo) as live:
        frames = live.frames()
        deadline = time.monotonic() + 120
        while live.stats().real_time_factor == 0 and time.monotonic() < deadline:
            next(frames)  # idle frames go on meanwhile, on the clock
        stats = live.stats()
    assert stats.real_time_factor > 0 and stats.renders == 0 and stats.speaking_frames == 0
    assert stats.frames > 0


def test_without_warm_up_nothing_is_rendered_before_the_first_turn(bundle_dir):
    pipe = iplap.Pipeline(bundle_dir, iplap.PipelineConfig(backend=iplap.BackendConfig(threads=2), refs=1))
    photo = pipe.prepare(FACE_IMAGE)
    with pipe.open_live(photo, config=iplap.LiveConfig(warm_up=False)) as live:
        frames = live.frames()
        for _ in range(5):
            next(frames)
        assert live.stats().real_time_factor == 0


# -- Ctrl-C and SIGTERM stop a render at once, leaving nothing behind ---------------------------------

@pytest.mark.parametrize("signum,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_stops_a_render_from_a_video_avatar_at_once_and_leaves_no_file(bundle_dir, tmp_path, signum, code,
                                                                                 word):
    """With a prepared face video (read through Python from inside the avatar file, where PyAV
    swallows a KeyboardInterrupt), and with SIGTERM (whose default would kill the process before
    it removes its temporary output)."""

    from iplap.samples.clip import head_motion_frames, write_clip

    clip = write_clip(tmp_path / "clip.mp4", head_motion_frames(0.5, size=256))
    avatar = tmp_path / "clip.avatar"
    assert main(["prepare", "--bundle", str(bundle_dir), "--face", str(clip), "--out", str(avatar), "--refs", "2",
                 "-q"]) == 0
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "iplap", "run", "--bundle", str(bundle_dir), "--avatar",
                                str(avatar), "--audio", str(SPEECH_16K), "--out", str(out / "o.mp4"), "--refs", "2",
                                "--threads", "1"], stderr=subprocess.PIPE, text=True)
    seen = ""
    while "rendering" not in seen:
        line = process.stderr.readline()
        assert line, f"the render ended first: {seen}"
        seen += line
    time.sleep(1.0)  # within the render, between frames or inside one
    sent = time.monotonic()
    process.send_signal(signum)
    _, rest = process.communicate(timeout=60)
    assert process.returncode == code, seen + rest
    assert time.monotonic() - sent < 15  # within a frame or two, not at the end of 100 frames
    assert f"iplap: {word}" in rest and "Traceback" not in rest and "Exception ignored" not in rest, rest
    assert list(out.iterdir()) == []
