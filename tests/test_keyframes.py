"""In-between frames (runtime/inbetween.py) and offline keyframes (runtime/keyframes.py,
``--keyframe-every``), and the in-between benchmark's files (``iplap bench --inbetween``).

The stand-in weights' landmarks are noise, so picture quality is not judged here (that is
the benchmark's, on real footage): these tests check the geometry on drawn faces, that K = 1
is exactly today's render, and that K > 1 keeps every keyframe and the frame count."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

import iplap
from iplap.runtime.audio import load_audio
from iplap.metrics import psnr
from iplap.runtime.compose import CONTOUR, blend_face
from iplap.runtime.constants import IMAGE_SIZE
from iplap.runtime.inbetween import INNER_LIPS, JAW, OUTER_LIPS, InbetweenMaker, Keyframe, Mesh, Target
from iplap.runtime.keyframes import keyframed
from iplap.runtime.landmarks import N_POSE
from iplap.runtime.session import StreamSession, StreamSetup
from iplap.samples import FACE_IMAGE, SPEECH_16K
from iplap.samples.clip import head_motion_frames, write_clip

REFS = 2


# -- the in-between geometry on a drawn face ------------------------------------------------------------------

def _landmarks(mouth_open: float = 0.0) -> np.ndarray:
    """(2, 131) landmarks of a drawn face, normalised: pose points on a ring around the eyes
    and nose, the jaw on a half circle, the lips on ellipses (inner lips ``mouth_open`` px apart)."""
    rng = np.random.default_rng(0)
    pose = np.stack([rng.uniform(30, 98, N_POSE), rng.uniform(20, 70, N_POSE)], 1)
    a = np.linspace(0.1, np.pi - 0.1, 17)
    jaw = np.stack([64 - 44 * np.cos(a), 64 + 44 * np.sin(a) * 0.9], 1)
    t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    outer = np.stack([64 + 16 * np.cos(t), 96 + (6 + mouth_open / 2) * np.sin(t)], 1)
    inner = np.stack([64 + 10 * np.cos(t), 96 + (0.5 + mouth_open / 2) * np.sin(t)], 1)
    return (np.concatenate([pose, jaw, outer, inner]) / IMAGE_SIZE).T.astype(np.float32)


def _face(landmarks: np.ndarray) -> np.ndarray:
    """A 128 px face drawn from its landmarks: skin, and the mouth's inside dark."""
    face = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), (120, 150, 200), np.uint8)
    points = (landmarks.T * IMAGE_SIZE).astype(np.float32)
    cv2.fillPoly(face, [np.round(points[OUTER_LIPS]).astype(np.int32)], (90, 90, 180))
    cv2.fillPoly(face, [np.round(points[INNER_LIPS]).astype(np.int32)], (20, 20, 40))
    return face


def _target(landmarks: np.ndarray, box, background: np.ndarray) -> Target:
    h, w = background.shape[:2]
    y1, y2, x1, x2 = box
    track = np.zeros((478, 3), np.float32)  # the blend's contour: the whole box
    corners = np.array([[x1 + 2, y1 + 2], [x2 - 2, y1 + 2], [x2 - 2, y2 - 2], [x1 + 2, y2 - 2]], np.float32)
    ring = [corners[int(4 * k / len(CONTOUR))] for k in range(len(CONTOUR))]
    track[list(CONTOUR), :2] = np.array(ring) / (w, h)
    return Target(landmarks, box, background, track)


def test_a_mesh_moves_nothing_within_the_dead_zone():
    points = (_landmarks().T * IMAGE_SIZE).astype(np.float32)
    mesh = Mesh(points, InbetweenMaker().config)
    assert mesh.target(points) is None
    assert mesh.target(points + 0.3) is None  # jitter below the 0.5 px dead zone
    moved = mesh.target(points + np.float32([0, 2.0]))
    assert moved is not None and np.allclose(moved[:len(points)], points + [0, 2.0])
    assert np.array_equal(moved[len(points):], mesh.anchors)  # the anchors stay


def test_a_still_frame_is_the_keyframe_pasted():
    """Target = the keyframe's own landmarks and box: the in-between is the keyframe blended as a
    rendered face is (one resampling either way, so nearly the same pixels)."""
    box, background = (20, 148, 30, 158), np.full((180, 200, 3), 60, np.uint8)
    landmarks = _landmarks(4.0)
    key = Keyframe(_face(landmarks), landmarks, box, 0)
    target = _target(landmarks, box, background)
    made = InbetweenMaker().frame(target, key)
    pasted = blend_face(background, key.face, box, target.track_landmarks)
    assert psnr(made, pasted) > 35


def test_warp_opens_the_mouth_to_the_frames_landmarks():
    """A closed keyframe mouth warped to open landmarks: the dark inside grows, where the
    target's inner lips are; an open mouth in the bank gives its inside."""
    box, background = (0, 128, 0, 128), np.full((128, 128, 3), 60, np.uint8)
    closed, open_ = _landmarks(1.0), _landmarks(10.0)
    key = Keyframe(_face(closed), closed, box, 0)
    maker = InbetweenMaker()
    maker.bank.add(key)
    maker.bank.add(Keyframe(_face(open_), open_, box, 5))
    made = maker.frame(_target(open_, box, background), key)
    dark = lambda image: int((image.max(axis=2) < 60).sum())  # noqa: E731
    assert dark(made) > 3 * dark(key.face)
    inner = np.zeros((128, 128), np.uint8)
    cv2.fillPoly(inner, [np.round(open_.T[INNER_LIPS] * IMAGE_SIZE).astype(np.int32)], 1)
    assert made[inner.astype(bool)].mean() < 70  # the inside of the open mouth is dark


def test_morph_mixes_by_time():
    box, background = (0, 128, 0, 128), np.full((128, 128, 3), 60, np.uint8)
    landmarks = _landmarks(2.0)
    a = Keyframe(np.full((128, 128, 3), 100, np.uint8), landmarks, box, 0)
    b = Keyframe(np.full((128, 128, 3), 200, np.uint8), landmarks, box, 4)
    maker, target = InbetweenMaker(), _target(landmarks, box, background)
    centre = lambda image: float(image[40:90, 40:90].mean())  # noqa: E731
    values = [centre(maker.frame(target, a, b, t)) for t in (0.0, 0.25, 0.5, 1.0)]
    assert values == sorted(values) and abs(values[0] - 100) < 2 and abs(values[-1] - 200) < 2
    assert abs(values[2] - 150) < 2


def test_the_parts_are_the_models_points():
    assert (JAW.stop - JAW.start, OUTER_LIPS.stop - OUTER_LIPS.start, INNER_LIPS.stop - INNER_LIPS.start) == (17, 20, 20)
    assert INNER_LIPS.stop == N_POSE + 57


# -- offline keyframes --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pipeline(bundle_dir):
    return iplap.Pipeline(bundle_dir, iplap.PipelineConfig(refs=REFS))


@pytest.fixture(scope="module")
def moving_avatar(pipeline, tmp_path_factory):
    clip = write_clip(tmp_path_factory.mktemp("keyframes") / "clip.mp4", head_motion_frames(1.0, size=256))
    return pipeline.prepare(clip)


def _frames(pipeline, avatar, every: int, seconds: float = 0.4):
    wav = load_audio(SPEECH_16K)[16000:16000 + int(seconds * 16000)]
    with StreamSession(StreamSetup(pipeline.models, avatar)) as session:
        session.accept(wav)
        session.finish()
        return list(keyframed(session, every)), dict(session.clock.totals)


def test_keyframes_every_k_keep_the_rendered_frames_and_make_the_rest(pipeline, moving_avatar):
    every_frame, _ = _frames(pipeline, moving_avatar, 1)
    assert not any(f.inbetween for f in every_frame)
    keyed, seconds = _frames(pipeline, moving_avatar, 3)
    assert [f.index for f in keyed] == [f.index for f in every_frame]  # in order, none lost
    rendered = [f.index for f in keyed if not f.inbetween]
    assert rendered == [f.index for f in every_frame if f.rendered % 3 == 0]  # renders 0, 3, 6, ...
    for a, b in zip(every_frame, keyed):
        if not b.inbetween:
            assert np.array_equal(a.image, b.image), a.index  # a keyframe is the render itself
        else:
            assert b.image.shape == a.image.shape and b.image.dtype == np.uint8
            assert not np.array_equal(b.image, every_frame[0].image)  # its own frame of the moving video
    assert "inbetween" in seconds


def test_keyframe_every_1_renders_as_before(pipeline, moving_avatar, tmp_path):
    speech = tmp_path / "s.wav"
    import soundfile

    soundfile.write(speech, load_audio(SPEECH_16K)[16000:16000 + 4800], 16000)
    a = pipeline.render(moving_avatar, speech, tmp_path / "a.mp4", crf=0)
    keyed = iplap.Pipeline(pipeline.bundle, iplap.PipelineConfig(refs=REFS, keyframe_every=1))
    b = keyed.render(moving_avatar, speech, tmp_path / "b.mp4", crf=0)
    assert a.frames == b.frames and (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


@pytest.mark.parametrize("value", [0, 26, 2.5, True])
def test_keyframe_every_out_of_range_is_refused(value):
    with pytest.raises(iplap.IplapError, match="keyframe_every must be a whole number from 1"):
        iplap.PipelineConfig(keyframe_every=value)


def test_the_cli_names_the_flag(bundle_dir, tmp_path):
    result = subprocess.run([sys.executable, "-m", "iplap", "run", "--bundle", str(bundle_dir), "--face",
                             str(FACE_IMAGE), "--audio", str(SPEECH_16K), "--out", str(tmp_path / "o.mp4"),
                             "--keyframe-every", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--keyframe-every" in result.stderr.strip().splitlines()[-1], result.stderr
    assert not list(tmp_path.iterdir())


# -- the benchmark ------------------------------------------------------------------------------------------

def test_the_inbetween_bench_writes_its_records(bundle_dir, tmp_path):
    clip = write_clip(tmp_path / "talk.mp4", head_motion_frames(1.0, size=256))
    out = tmp_path / "bench"
    result = subprocess.run([sys.executable, "-m", "iplap", "bench", "--inbetween", "--bundle", str(bundle_dir),
                             "--video", str(clip), "--keyframe-every", "2,5", "--seconds", "1", "--out", str(out),
                             "-q"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    records = json.loads((out / "inbetween.json").read_text())
    assert {(r["k"], r["method"]) for r in records} == {(k, m) for k in (2, 5) for m in ("hold", "warp", "morph")}
    keys = {"clip", "k", "method", "mouth_psnr", "mouth_ssim", "lower_psnr", "temporal_error", "frames", "ms_per_frame"}
    for r in records:
        assert set(r) == keys and r["clip"] == "talk" and r["frames"] > 0
        assert 0 < r["mouth_ssim"] <= 1 and r["mouth_psnr"] > 10 and r["temporal_error"] >= 0
    k2 = {r["method"]: r for r in records if r["k"] == 2}
    assert k2["hold"]["frames"] == k2["warp"]["frames"] == k2["morph"]["frames"]
    assert "| k | method |" in (out / "inbetween.md").read_text()
    assert (out / "inbetween.png").stat().st_size > 0


def test_the_inbetween_bench_refuses_a_missing_clip(bundle_dir, tmp_path):
    result = subprocess.run([sys.executable, "-m", "iplap", "bench", "--inbetween", "--bundle", str(bundle_dir),
                             "--video", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "video not found" in result.stderr and "Traceback" not in result.stderr
