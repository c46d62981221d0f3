"""End to end: iplap run / prepare, streaming, the original procedure, and bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

from conftest import light_copy
from iplap.cli import main
from iplap.runtime.audio import count_windows, load_audio, mel_frame_count, min_speech_seconds
from iplap.runtime.avatar import Avatar, AvatarError
from iplap.runtime.backends import BackendConfig
from iplap.runtime.media import read_video_frames
from iplap.runtime.pipeline import Pipeline, PipelineConfig
from iplap.samples import FACE_IMAGE, SPEECH_16K
from iplap.samples.clip import head_motion_frames, write_clip
from mediautil import decoded_audio, sine, write_audio, write_video

SHORT = 0.35  # seconds of speech: 29 mel frames -> 5 windows -> 3 renders -> 5 frames
FRAMES_03 = count_windows(mel_frame_count(int(0.3 * 16000)))  # 0.3 s of speech: 4 frames (2 renders)
GAP_SPEECH = 0.45  # 7 frames: past the gap of frames 3-5 in the gap tests
REFS = 2  # fewer references keep the default test run short; N=25 is tested in the slow suite


def _speech(tmp_path, seconds=SHORT, name="speech.wav"):
    wav = load_audio(SPEECH_16K)[int(0.8 * 16000):int((0.8 + seconds) * 16000)]
    soundfile.write(tmp_path / name, wav, 16000)
    return tmp_path / name


@pytest.fixture(scope="module")
def pipeline(bundle_dir):
    return Pipeline(bundle_dir, PipelineConfig(backend=BackendConfig(threads=2), refs=REFS))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """One second of the sample photo with small head motion, at 256 px, lossless."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    return write_clip(path, head_motion_frames(1.0, size=256))


def _run(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err


def _assert_clean_error(code, err, *words):
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("iplap: error:")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]


# -- the product --------------------------------------------------------------------------

def test_run_photo_writes_mp4_with_audio(bundle_dir, tmp_path, capsys):
    import av

    out = tmp_path / "out.mp4"
    code, err = _run(["run", "--bundle", str(bundle_dir), "--face", str(FACE_IMAGE), "--audio",
                      str(_speech(tmp_path)), "--out", str(out), "--refs", str(REFS), "--threads", "2"], capsys)
    assert code == 0, err
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        assert (video.width, video.height) == (512, 512)
        frames = sum(1 for _ in container.decode(video))
    assert frames == count_windows(mel_frame_count(5600)) == 5  # one frame per mel window
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's private mode


def test_photo_renders_only_the_face_region(pipeline, tmp_path):
    out = tmp_path / "out.mp4"
    pipeline.render(FACE_IMAGE, _speech(tmp_path, 0.3), out, crf=0)
    frames = read_video_frames(out)
    photo = cv2.imread(str(FACE_IMAGE))
    changed = np.abs(frames[0].astype(int) - photo).max(axis=2) > 0
    ys, xs = np.nonzero(changed)
    assert changed.any() and 60 < ys.min() and ys.max() < 240 and 140 < xs.min() and xs.max() < 340
    assert frames[0].tobytes() == frames[1].tobytes() == frames[2].tobytes()  # the first frame, three times



def test_photo_or_video_is_told_by_content_not_by_name(pipeline, clip, tmp_path):
    """A photo named .mp4 renders as a photo, a video named .png as a video (iplap.face_is_photo)."""
    import iplap

    photo = tmp_path / "photo.mp4"
    shutil.copy(FACE_IMAGE, photo)
    video = tmp_path / "video.png"
    shutil.copy(clip, video)
    assert iplap.face_is_photo(photo) and not iplap.face_is_photo(video)
    assert iplap.face_is_photo(FACE_IMAGE) and not iplap.face_is_photo(clip)
    as_photo, as_video = pipeline.prepare(photo), pipeline.prepare(video)
    assert as_photo.is_image and as_photo.n_frames == 1
    assert not as_video.is_image and as_video.n_frames == pipeline.prepare(clip).n_frames == 25
    for avatar in (as_photo, as_video):
        assert pipeline.render(avatar, _speech(tmp_path, 0.3), tmp_path / "o.mp4").frames == FRAMES_03
    for name in ("notes.png", "notes.txt"):  # FFmpeg's demuxers chosen by these names find "video" in any file
        text = tmp_path / name
        text.write_text("not a face\n" * 50)
        with pytest.raises(iplap.MediaError, match=f"^{name} is neither a photo nor a video$"):
            iplap.face_is_photo(text)
    with pytest.raises(iplap.MediaError, match="face file not found"):
        iplap.face_is_photo(tmp_path / "missing.png")


@pytest.mark.slow  # 20-60 s on 2 cores: keeps the default run under 15 minutes
def test_streaming_does_not_depend_on_chunk_size(pipeline, clip):
    avatar = pipeline.prepare(clip)
    wav = load_audio(SPEECH_16K)[8000:8000 + int(0.45 * 16000)]

    def frames(chunk):
        return [f.image for f in pipeline.stream(avatar, (wav[i:i + chunk] for i in range(0, len(wav), chunk)))]

    whole, small, odd = frames(len(wav)), frames(160), frames(1234)
    assert len(whole) == len(small) == len(odd) > 3
    for a, b, c in zip(whole, small, odd):
        assert np.array_equal(a, b) and np.array_equal(a, c)


def test_stream_yields_frames_in_order_with_timestamps(pipeline):
    avatar = pipeline.prepare(FACE_IMAGE)
    wav = load_audio(SPEECH_16K)[:int(0.3 * 16000)]  # 4 frames: the first render's 3, then the next
    frames = list(pipeline.stream(avatar, [wav]))
    assert [f.index for f in frames] == list(range(len(frames)))
    assert [f.rendered for f in frames[:4]] == [0, 0, 0, 1]
    assert frames[3].time == pytest.approx(0.12)


def test_avatar_round_trip_gives_the_same_video(pipeline, bundle_dir, clip, tmp_path, capsys):
    speech = _speech(tmp_path, 0.3)
    avatar_path = tmp_path / "clip.avatar"
    code, err = _run(["prepare", "--bundle", str(bundle_dir), "--face", str(clip), "--out", str(avatar_path),
                      "--refs", str(REFS), "--quiet"], capsys)
    assert code == 0, err
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    for args in (["--face", str(clip)], ["--avatar", str(avatar_path)]):
        out = a if args[0] == "--face" else b
        code, err = _run(["run", "--bundle", str(bundle_dir), *args, "--audio", str(speech), "--out", str(out),
                          "--refs", str(REFS), "--crf", "0", "--quiet"], capsys)
        assert code == 0, err
    fa, fb = read_video_frames(a), read_video_frames(b)
    assert len(fa) == len(fb) and all(np.array_equal(x, y) for x, y in zip(fa, fb))
    loaded = Avatar.load(avatar_path)
    assert loaded.references.count == REFS and loaded.n_frames == 25
    assert avatar_path.stat().st_mode & 0o044 == b.stat().st_mode & 0o044  # readable like other outputs


def test_avatar_from_another_bundle_is_stale(pipeline, tmp_path, bundle_dir):
    avatar = pipeline.prepare(FACE_IMAGE)
    avatar.bundle_id = "0" * 64
    path = avatar.save(tmp_path / "old.avatar")
    with pytest.raises(AvatarError, match="another model bundle"):
        pipeline.load_avatar(path)


def test_avatar_tampered_or_foreign(pipeline, tmp_path):
    path = pipeline.prepare(FACE_IMAGE).save(tmp_path / "a.avatar")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "t.avatar").write_bytes(bytes(data))
    with pytest.raises(AvatarError, match="damaged|not an iplap avatar"):
        pipeline.load_avatar(tmp_path / "t.avatar")
    (tmp_path / "f.avatar").write_bytes(b"hello")
    with pytest.raises(AvatarError, match="not an iplap avatar"):
        pipeline.load_avatar(tmp_path / "f.avatar")


def test_audio_longer_than_video_ping_pongs(pipeline, tmp_path):
    short_clip = write_clip(tmp_path / "c.mp4", head_motion_frames(0.12, size=256))  # 3 frames
    avatar = pipeline.prepare(short_clip)
    assert avatar.n_frames == 3
    out = tmp_path / "o.mp4"
    report = pipeline.render(avatar, _speech(tmp_path, 0.3), out, crf=0)
    assert report.frames == 4  # the audio decides the length


def test_other_frame_rates_are_converted(pipeline, tmp_path):
    frames = head_motion_frames(0.6, fps=30, size=256)
    path = write_video(tmp_path / "c30.mp4", frames, fps=30)
    assert pipeline.prepare(path).n_frames == 15  # 18 frames at 30 fps = 0.6 s = 15 frames at 25 fps


def test_timeline_matches_ffmpeg_fps_filter(tmp_path):
    """Our 25 fps conversion picks the frames libavfilter's fps filter picks."""
    import av

    from iplap.runtime.media import VideoScan

    frames = [np.full((32, 32, 3), i, np.uint8) for i in range(40)]
    path = write_video(tmp_path / "v.mp4", frames, fps=30, codec="ffv1")
    ours = [int(f[0, 0, 0]) for f in VideoScan(path)]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        graph = av.filter.Graph()
        src = graph.add_buffer(template=stream)
        fps = graph.add("fps", "25")
        sink = graph.add("buffersink")
        src.link_to(fps)
        fps.link_to(sink)
        graph.configure()
        theirs = []
        for frame in container.decode(stream):
            graph.push(frame)
            while True:
                try:
                    theirs.append(int(graph.pull().to_ndarray(format="bgr24")[0, 0, 0]))
                except (av.BlockingIOError, av.EOFError):
                    break
        graph.push(None)
        while True:
            try:
                theirs.append(int(graph.pull().to_ndarray(format="bgr24")[0, 0, 0]))
            except (av.BlockingIOError, av.EOFError):
                break
    assert ours == theirs


# -- fidelity -------------------------------------------------------------------------------

def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _fidelity(bundle_dir, standin_checkpoints, tmp_path, refs, seconds):
    torch = pytest.importorskip("torch")
    from iplap.models import load_landmark_generator, load_renderer
    from reference_pipeline import original_procedure

    torch.set_num_threads(2)
    clip_frames = head_motion_frames(1.0, size=256)
    clip = write_clip(tmp_path / "clip.mp4", clip_frames)
    speech = _speech(tmp_path, seconds)
    pipe = Pipeline(bundle_dir, PipelineConfig(backend=BackendConfig(threads=2), refs=refs))
    avatar = pipe.prepare(clip)
    out = tmp_path / "ours.mp4"
    pipe.render(avatar, speech, out, crf=0)
    ours = read_video_frames(out)
    theirs = original_procedure(clip_frames, list(avatar.track.landmarks), load_audio(speech),
                                load_landmark_generator(standin_checkpoints["landmark_generator"]),
                                load_renderer(standin_checkpoints["renderer"]), ref_n=refs)
    assert len(ours) == len(theirs)
    worst = min(_psnr(a, b) for a, b in zip(ours, theirs))
    print(f"fidelity, N={refs}, {len(ours)} frames: worst-frame PSNR {worst:.2f} dB")  # shown by pytest -s
    return worst


def test_fidelity_against_the_original_procedure(bundle_dir, standin_checkpoints, tmp_path):
    """N=3 and 5 frames (3 renders): the torch reference costs seconds per render and per
    reference; N=25 over more frames is the slow suite's."""
    assert _fidelity(bundle_dir, standin_checkpoints, tmp_path, refs=3, seconds=0.35) >= 45.0


@pytest.mark.slow
def test_fidelity_against_the_original_procedure_n25(bundle_dir, standin_checkpoints, tmp_path):
    assert _fidelity(bundle_dir, standin_checkpoints, tmp_path, refs=25, seconds=0.6) >= 45.0


# -- bad input: one line, exit code 2, no output file ---------------------------------------------

def _bad_run(bundle_dir, tmp_path, capsys, face=None, audio=None, extra=(), bundle=None):
    out = tmp_path / "out.mp4"
    args = ["run", "--bundle", str(bundle or bundle_dir), "--face", str(face or FACE_IMAGE), "--audio",
            str(audio or _speech(tmp_path)), "--out", str(out), "--refs", str(REFS), "--quiet", *extra]
    code, err = _run(args, capsys)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    return code, err


@pytest.mark.parametrize("kind", ["missing", "empty", "not_media", "truncated"])
def test_bad_audio(bundle_dir, tmp_path, capsys, kind):
    audio = tmp_path / "speech.m4a"
    if kind == "empty":
        audio.write_bytes(b"")
    elif kind == "not_media":
        audio.write_bytes(b"this is a text file, not speech\n" * 50)
    elif kind == "truncated":
        full = write_audio(tmp_path / "full.m4a", sine(300, 1.0, 44100), 44100, "aac")
        audio.write_bytes(full.read_bytes()[:300])
    code, err = _bad_run(bundle_dir, tmp_path, capsys, audio=audio)
    _assert_clean_error(code, err, str(audio.name))


@pytest.mark.parametrize("kind", ["missing", "empty", "not_media", "truncated"])
def test_bad_face_video(bundle_dir, tmp_path, capsys, kind, clip):
    face = tmp_path / "face.mp4"
    if kind == "empty":
        face.write_bytes(b"")
    elif kind == "not_media":
        face.write_bytes(os.urandom(5000))
    elif kind == "truncated":
        face.write_bytes(clip.read_bytes()[:2000])
    code, err = _bad_run(bundle_dir, tmp_path, capsys, face=face)
    _assert_clean_error(code, err, "face")


def test_bad_face_image(bundle_dir, tmp_path, capsys):
    face = tmp_path / "face.png"
    face.write_bytes(FACE_IMAGE.read_bytes()[:3000])
    code, err = _bad_run(bundle_dir, tmp_path, capsys, face=face)
    _assert_clean_error(code, err, "face.png")


def test_silence(bundle_dir, tmp_path, capsys):
    soundfile.write(tmp_path / "silence.wav", np.zeros(16000, np.float32), 16000)
    code, err = _bad_run(bundle_dir, tmp_path, capsys, audio=tmp_path / "silence.wav")
    _assert_clean_error(code, err, "silent")


def test_audio_shorter_than_one_frame(bundle_dir, tmp_path, capsys):
    soundfile.write(tmp_path / "short.wav", sine(300, min_speech_seconds() - 0.02, 16000), 16000)
    code, err = _bad_run(bundle_dir, tmp_path, capsys, audio=tmp_path / "short.wav")
    _assert_clean_error(code, err, "too short")


def test_no_face_in_the_image(bundle_dir, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "wall.png"), np.full((240, 320, 3), 128, np.uint8))
    code, err = _bad_run(bundle_dir, tmp_path, capsys, face=tmp_path / "wall.png")
    _assert_clean_error(code, err, "no face", "wall.png")


def _clip_with_gap(tmp_path, gap, value=128):
    frames = head_motion_frames(0.6, size=256)
    for k in gap:
        frames[k] = np.full_like(frames[k], value)
    return write_clip(tmp_path / "gap.mp4", frames), frames


def _run_gap(bundle_dir, tmp_path, capsys, face, *extra):
    out = tmp_path / "out.mp4"
    code, err = _run(["run", "--bundle", str(bundle_dir), "--face", str(face), "--audio",
                      str(_speech(tmp_path, GAP_SPEECH)), "--out", str(out), "--refs", str(REFS), "--crf", "0",
                      "--quiet", *extra], capsys)
    assert code == 0, err
    assert out.exists()
    return read_video_frames(out), err


def test_frames_without_a_face_pass_through_unchanged(bundle_dir, tmp_path, capsys, caplog):
    """The default: frames 3-5 (no face) are the source's pixels; the rest are rendered.
    Output frame j >= 2 shows source frame j (no ping-pong within the first 15)."""
    clip, source = _clip_with_gap(tmp_path, [3, 4, 5])
    with caplog.at_level("WARNING"):
        frames, err = _run_gap(bundle_dir, tmp_path, capsys, clip)
    assert len(frames) == 7
    for j in (3, 4, 5):
        assert np.array_equal(frames[j], source[j]), j
    for j in (2, 6):
        assert not np.array_equal(frames[j], source[j]), j
    assert "no face found in frames 3-5 of gap.mp4" in caplog.text and "pass through unchanged" in caplog.text


def test_fade_in_passes_through_and_references_skip_it(pipeline, tmp_path):
    """A clip whose first frames are black (a fade-in): they pass through, and references
    and landmark references come only from frames with a face."""
    clip, source = _clip_with_gap(tmp_path, [0, 1, 2, 3], value=0)
    pipeline = pipeline.with_config(refs=5)  # five references, each of which could be a black frame
    avatar = pipeline.prepare(clip)
    assert avatar.track.missing[:4].all() and not avatar.track.missing[4:].any()
    assert avatar.track.passthrough[:4].all()
    assert (avatar.ref_frames >= 4).all() and (avatar.landmark_ref_frames >= 4).all()
    # The missing frames' tracks are the nearest face's (frame 4), so windows over them stay whole.
    assert np.array_equal(avatar.track.landmarks[0], avatar.track.landmarks[4])
    frames = list(pipeline.stream(avatar, [load_audio(_speech(tmp_path))]))
    assert all(f.passed_through and np.array_equal(f.image, source[2]) for f in frames[:3])  # render 0 = frame 2
    assert frames[3].passed_through and not frames[4].passed_through


def test_fill_renders_the_nearest_face_over_the_gap(bundle_dir, tmp_path, capsys, caplog):
    clip, source = _clip_with_gap(tmp_path, [3, 4, 5])
    with caplog.at_level("WARNING"):
        frames, err = _run_gap(bundle_dir, tmp_path, capsys, clip, "--on-missing-face", "fill")
    for j in (3, 4, 5):
        assert not np.array_equal(frames[j], source[j]), j
    assert "nearest frame with a face" in caplog.text


def test_on_missing_face_error_names_the_frames(bundle_dir, tmp_path, capsys):
    clip, _ = _clip_with_gap(tmp_path, [5, 6, 7])
    code, err = _bad_run(bundle_dir, tmp_path, capsys, face=clip, extra=("--on-missing-face", "error"))
    _assert_clean_error(code, err, "no face in frames 5-7 of gap.mp4", "--on-missing-face pass")


def test_video_without_any_face_is_an_error(bundle_dir, tmp_path, capsys):
    clip, _ = _clip_with_gap(tmp_path, range(15))
    code, err = _bad_run(bundle_dir, tmp_path, capsys, face=clip)
    _assert_clean_error(code, err, "no face found in gap.mp4")


def test_nearest_good_frame():
    from iplap.runtime.pipeline import describe_frames, nearest_good

    missing = np.array([1, 1, 0, 0, 1, 1, 1, 0, 1], bool)
    assert nearest_good(missing).tolist() == [2, 2, 2, 3, 3, 3, 7, 7, 7]  # ties go to the earlier frame
    assert describe_frames(np.flatnonzero(missing)) == "frames 0-1, 4-6, 8"
    assert describe_frames([3]) == "frame 3"


def test_two_faces_takes_one_and_logs(pipeline, tmp_path, caplog):
    photo = cv2.imread(str(FACE_IMAGE))
    small = cv2.resize(photo, (256, 256))
    wide = np.concatenate([small, cv2.flip(small, 1)], axis=1)
    cv2.imwrite(str(tmp_path / "two.png"), wide)
    with caplog.at_level("INFO"):
        report = pipeline.render(tmp_path / "two.png", _speech(tmp_path, 0.3), tmp_path / "o.mp4")
    assert report.frames == FRAMES_03
    assert "2 faces found" in caplog.text


def test_face_at_the_edge(pipeline, tmp_path):
    """The face's crop box runs past the top-left corner and is clipped to the image."""
    edge = cv2.imread(str(FACE_IMAGE))[80:, 165:]
    cv2.imwrite(str(tmp_path / "edge.png"), edge)
    avatar = pipeline.prepare(tmp_path / "edge.png")
    y1, _, x1, _ = avatar.track.boxes[0]
    assert y1 == 0 and x1 == 0
    assert pipeline.render(avatar, _speech(tmp_path, 0.3), tmp_path / "o.mp4").frames == FRAMES_03


def test_4k_and_grayscale(pipeline, tmp_path):
    photo = cv2.imread(str(FACE_IMAGE))
    big = cv2.resize(photo, (2160, 2160), interpolation=cv2.INTER_CUBIC)
    canvas = np.full((2160, 3840, 3), 90, np.uint8)
    canvas[:, 840:3000] = big
    cv2.imwrite(str(tmp_path / "4k.jpg"), canvas)
    cv2.imwrite(str(tmp_path / "gray.png"), cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY))
    speech = _speech(tmp_path, 0.3)
    assert pipeline.render(tmp_path / "4k.jpg", speech, tmp_path / "4k.mp4").frames == FRAMES_03
    assert read_video_frames(tmp_path / "4k.mp4")[0].shape == (2160, 3840, 3)
    assert pipeline.render(tmp_path / "gray.png", speech, tmp_path / "g.mp4").frames == FRAMES_03


def test_missing_bundle(tmp_path, capsys):
    code, err = _bad_run(None, tmp_path, capsys, bundle=tmp_path / "nope")
    _assert_clean_error(code, err, "bundle not found")


def test_tampered_bundle(bundle_dir, tmp_path, capsys):
    copy = light_copy(bundle_dir, tmp_path / "b")
    target = copy / "translation.onnx"
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01
    target.unlink()
    target.write_bytes(bytes(data))
    code, err = _bad_run(bundle_dir, tmp_path, capsys, bundle=copy)
    _assert_clean_error(code, err, "translation.onnx has changed")


def test_mismatched_bundle(bundle_dir, tmp_path, capsys):
    copy = light_copy(bundle_dir, tmp_path / "b")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (copy / "manifest.json").unlink()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    code, err = _bad_run(bundle_dir, tmp_path, capsys, bundle=copy)
    _assert_clean_error(code, err, "version 99")


def test_unwritable_output(bundle_dir, tmp_path, capsys):
    code, err = _run(["run", "--bundle", str(bundle_dir), "--face", str(FACE_IMAGE), "--audio",
                      str(_speech(tmp_path)), "--out", str(tmp_path / "no" / "such" / "dir" / "o.mp4")], capsys)
    _assert_clean_error(code, err, "does not exist")
    # A folder this process cannot create files in (root writes anywhere but /proc).
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    target = locked if not os.access(locked, os.W_OK) else Path("/proc")
    try:
        code, err = _run(["run", "--bundle", str(bundle_dir), "--face", str(FACE_IMAGE), "--audio",
                          str(_speech(tmp_path)), "--out", str(target / "o.mp4"), "--refs", str(REFS), "--quiet"],
                         capsys)
        _assert_clean_error(code, err, str(target))
        assert not (target / "o.mp4").exists()
    finally:
        locked.chmod(0o700)
    shutil.rmtree(locked)


def test_output_path_is_a_folder(bundle_dir, tmp_path, capsys):
    code, err = _run(["run", "--bundle", str(bundle_dir), "--face", str(FACE_IMAGE), "--audio",
                      str(_speech(tmp_path)), "--out", str(tmp_path)], capsys)
    _assert_clean_error(code, err, "is a folder")


def test_small_face_in_a_1080p_frame_renders(pipeline, tmp_path):
    """A 180 px face in a 1920x1080 image: the short-range detector alone finds no face here."""
    photo = cv2.imread(str(FACE_IMAGE))  # its face is about 100 px wide
    scaled = cv2.resize(photo, (922, 922), interpolation=cv2.INTER_AREA)
    frame = np.full((1080, 1920, 3), 60, np.uint8)
    frame[79:1001, 499:1421] = scaled
    cv2.imwrite(str(tmp_path / "hd.png"), frame)
    avatar = pipeline.prepare(tmp_path / "hd.png")
    y1, y2, x1, x2 = avatar.track.boxes[0]
    assert 150 < x2 - x1 - 50 < 260  # the landmarks' extent (plus 2 x 25 px margin) is about the face
    out = tmp_path / "hd.mp4"
    assert pipeline.render(avatar, _speech(tmp_path, 0.3), out).frames == FRAMES_03
    assert read_video_frames(out)[0].shape == (1080, 1920, 3)


# -- speech in other formats, end to end ------------------------------------------------------------

def test_mp3_speech_renders_and_is_muxed(bundle_dir, tmp_path, capsys):
    """A 16 kHz mono MP3 (PyAV's mp3 encoder) used to fail after rendering, in muxing its audio:
    mp3 frames (1152 samples) were fed to the AAC encoder (1024). 0.4 s: 6400 samples, a whole
    number of neither."""
    wav = load_audio(SPEECH_16K)[8000:14400]
    mp3 = write_audio(tmp_path / "speech.mp3", wav, 16000, "libmp3lame")
    out = tmp_path / "out.mp4"
    code, err = _run(["run", "--bundle", str(bundle_dir), "--face", str(FACE_IMAGE), "--audio", str(mp3), "--out",
                      str(out), "--refs", str(REFS), "--quiet"], capsys)
    assert code == 0, err
    samples, rate, start, video_start = decoded_audio(out)
    assert rate == 16000 and abs(start - video_start) < 1 / 25
    assert abs(len(samples) / rate - 0.4) < 1 / 25 + 1024 / rate


def test_audio_that_cannot_be_decoded_fails_before_the_face_work(bundle_dir, tmp_path, capsys, monkeypatch):
    """Audio problems are found before any face tracking starts (not minutes later)."""
    calls = []
    monkeypatch.setattr(Pipeline, "_prepare", lambda *a, **k: calls.append(a) or pytest.fail("prepared"))
    bad = tmp_path / "speech.mp3"
    bad.write_bytes(b"ID3" + os.urandom(3000))
    code, err = _bad_run(bundle_dir, tmp_path, capsys, audio=bad)
    _assert_clean_error(code, err, "speech.mp3")
    assert calls == []


# -- streaming: the audio contract, and several streams at once ----------------------------------------

def test_stream_takes_44k_stereo_int16_chunks_as_the_file_would_be_read(pipeline, tmp_path):
    """Interleaved stereo int16 at 44.1 kHz, in uneven chunks, gives the frames of the same
    audio read from a WAV file (channels averaged, resampled as the original)."""
    avatar = pipeline.prepare(FACE_IMAGE)
    speech = load_audio(SPEECH_16K)[8000:8000 + int(0.3 * 16000)]
    from iplap.runtime.resample import resample_like_librosa

    stereo = np.stack([speech, 0.5 * speech], axis=1)
    pcm = (resample_like_librosa(stereo[:, 0], 16000, 44100)[:, None] * [1.0, 0.5] * 20000).astype(np.int16)
    soundfile.write(tmp_path / "s.wav", pcm, 44100, subtype="PCM_16")
    from_file = [f.image for f in pipeline.stream(avatar, [load_audio(tmp_path / "s.wav")])]
    flat = pcm.reshape(-1)
    chunks = [flat[i:i + 2 * 777] for i in range(0, flat.size, 2 * 777)]
    streamed = [f.image for f in pipeline.stream(avatar, chunks, sample_rate=44100, channels=2)]
    assert len(streamed) == len(from_file) > 3
    assert all(np.array_equal(a, b) for a, b in zip(streamed, from_file))
    shaped = [f.image for f in pipeline.stream(avatar, [pcm], sample_rate=44100, channels=2)]
    assert all(np.array_equal(a, b) for a, b in zip(shaped, from_file))


@pytest.mark.parametrize("kwargs,chunk,message", [
    ({}, np.zeros(100, np.int32), "float32 or float64"),
    ({}, np.zeros((100, 2), np.float32), "shaped"),
    ({"channels": 2}, np.zeros(101, np.float32), "whole frames"),
    ({}, np.full(100, np.nan, np.float32), "NaN"),
    ({"channels": 3}, np.zeros(100, np.float32), "channels must be 1"),
    ({"sample_rate": 0}, np.zeros(100, np.float32), "sample_rate"),
    ({"sample_rate": 44100.5}, np.zeros(100, np.float32), "sample_rate"),
    ({"sample_rate": 1_000_000}, np.zeros(100, np.float32), "sample_rate"),
])
def test_stream_refuses_audio_outside_its_contract(pipeline, kwargs, chunk, message):
    from iplap.errors import MediaError

    avatar = pipeline.prepare(FACE_IMAGE)
    with pytest.raises(MediaError, match=message):
        list(pipeline.stream(avatar, [chunk], **kwargs))


@pytest.mark.slow  # 20-60 s on 2 cores: keeps the default run under 15 minutes
def test_three_streams_at_once_equal_three_in_turn(bundle_dir, clip):
    """One pipeline, three threads, three streams (each tracking its own face, in track mode
    where the tracker keeps state from frame to frame): the frames of sequential runs."""
    import threading

    pipe = Pipeline(bundle_dir, PipelineConfig(backend=BackendConfig(threads=2), refs=REFS, face_mode="track"))
    full = load_audio(SPEECH_16K)
    speeches = [full[k * 8000:k * 8000 + int(0.36 * 16000)] for k in (1, 3, 5)]

    def run(k):
        return [f.image for f in pipe.stream(clip, [speeches[k][i:i + 999] for i in range(0, len(speeches[k]), 999)])]

    sequential = [run(k) for k in range(3)]
    results, errors = [None] * 3, []

    def worker(k):
        try:
            results[k] = run(k)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k in range(3):
        assert len(results[k]) == len(sequential[k]) > 3
        assert all(np.array_equal(a, b) for a, b in zip(results[k], sequential[k])), k


# -- the command line ----------------------------------------------------------------------------------

def _stage_sum(err):
    import re

    found = re.search(r"frames in ([\d.]+) s \([\d.]+ s/frame; (.*)\); models loaded", err)
    assert found, err
    stages = {name: float(value) for name, value in re.findall(r"([\w ]+?) ([\d.]+)s(?:, |$)", found.group(2))}
    return float(found.group(1)), stages


@pytest.mark.slow  # 20-60 s on 2 cores: keeps the default run under 15 minutes
def test_printed_timing_adds_up_and_verbose_goes_anywhere(bundle_dir, clip, tmp_path, capsys):
    """-v after the subcommand works; the stages (the face's preparation included) add up to
    the printed wall time within 5%."""
    out = tmp_path / "out.mp4"
    code, err = _run(["run", "--bundle", str(bundle_dir), "--face", str(clip), "--audio", str(_speech(tmp_path)),
                      "--out", str(out), "--refs", str(REFS), "--quiet", "-v"], capsys)
    assert code == 0, err
    wall, stages = _stage_sum(err)
    assert {"audio", "decode", "face", "references", "flow_head", "encode"} <= set(stages)
    assert abs(sum(stages.values()) - wall) <= 0.05 * wall, (wall, stages)
    code, err = _run(["-v", "run", "--bundle", str(bundle_dir), "--face", str(FACE_IMAGE), "--audio",
                      str(_speech(tmp_path)), "--out", str(out), "--refs", str(REFS), "--quiet"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("option", [["--track"], ["--static"], ["--smooth"], ["--on-missing-face", "fill"]])
def test_run_with_an_avatar_refuses_prepare_options(bundle_dir, tmp_path, capsys, option):
    avatar = tmp_path / "a.avatar"
    avatar.write_bytes(b"not read: refused before")
    code, err = _run(["run", "--bundle", str(bundle_dir), "--avatar", str(avatar), "--audio",
                      str(_speech(tmp_path)), "--out", str(tmp_path / "o.mp4"), *option], capsys)
    _assert_clean_error(code, err, option[0], "only change how a face is prepared")


def test_crf_help_says_lossless_is_not_for_browsers(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "browsers" in " ".join(capsys.readouterr().out.split())


def test_library_errors_name_settings_and_the_cli_names_flags(pipeline, tmp_path, capsys, bundle_dir):
    from iplap.errors import IplapError

    path = pipeline.prepare(FACE_IMAGE).save(tmp_path / "a.avatar")
    other = Pipeline(bundle_dir, PipelineConfig(backend=BackendConfig(threads=2), refs=REFS + 1))
    with pytest.raises(IplapError) as caught:
        other.load_avatar(path)
    assert "--" not in str(caught.value) and caught.value.setting == "refs" and caught.value.suggestion == REFS
    code, err = _run(["run", "--bundle", str(bundle_dir), "--avatar", str(path), "--audio", str(_speech(tmp_path)),
                      "--out", str(tmp_path / "o.mp4"), "--refs", str(REFS + 1)], capsys)
    _assert_clean_error(code, err, f"--refs {REFS}")


# -- hooks for front ends: progress, stopping, per-face settings ------------------------------------

def test_prepare_reports_progress_and_render_can_be_stopped(pipeline, clip, tmp_path):
    seen = []
    avatar = pipeline.prepare(clip, on_progress=lambda done, total: seen.append((done, total)))
    assert [d for d, _ in seen] == list(range(1, 26)) and seen[-1][1] == 25

    class Stop(Exception):
        pass

    def stop_at_four(done, total):
        assert total == 5
        if done == 4:
            raise Stop

    out = tmp_path / "o.mp4"
    with pytest.raises(Stop):
        pipeline.render(avatar, _speech(tmp_path), out, on_progress=stop_at_four)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.suffix == ".mp4"]
    done = []
    report = pipeline.render(avatar, iplap_speech(_speech(tmp_path)), out, on_progress=lambda d, t: done.append(d))
    assert done == list(range(1, 6)) and report.frames == 5 and out.exists()


def iplap_speech(path):
    import iplap

    return iplap.load_speech(path)


def test_with_config_shares_the_models(pipeline):
    other = pipeline.with_config(refs=3, on_missing_face="error")
    assert other.renderer is pipeline.renderer and other.config.refs == 3 and pipeline.config.refs == REFS
    assert other.prepare(FACE_IMAGE).references.count == 3
    # The face models are loaded once, whichever copy loads them first.
    assert pipeline.new_tracker().mesh is other.new_tracker().mesh is pipeline.with_config(refs=4).new_tracker().mesh
    from iplap.errors import IplapError

    with pytest.raises(IplapError, match="backend"):
        pipeline.with_config(backend=BackendConfig("openvino"))
