"""The whole pipeline: face file + speech -> lip-synced frames -> mp4.

Stages, each a function or small class of its own module:

    media (decode, 25 fps) -> face track (runtime.face) -> references (landmarks)
    -> per frame: mel windows (audio) -> landmarks (LandmarkGenerator) -> sketches (sketch)
    -> renderer graphs + warp kernel (renderer, warp) -> blend (compose) -> media (encode)

It follows the original release's procedure (see ``../shared/reference``): a 5-frame
landmark window per output frame, the mel window delayed by two frames, Nl=15 and N=25
references chosen by lip openness, ping-pong frames when the speech outlasts the video,
and the first rendered frame written three times, so there is one frame per mel window.

Objects, shaped for callers on several threads (as sherpa-onnx's recognizer and
streams): a :class:`Pipeline` holds only loaded models and is shared; every render or
stream owns a :class:`StreamSession` with all of its state (audio, mel windows, frame
reader, clock), and every ``prepare`` its own face tracker over the shared face models.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import IplapError, MediaError, NoFaceError
from .audio import MelStream, MelWindows, Speech, count_windows, load_speech, mel_frame_count, min_speech_seconds
from .avatar import Avatar, FaceTrack
from .backends import BackendConfig, InferenceModel
from .bundle import GRAPH_NAMES, Bundle
from .compose import blend_face, face_to_uint8
from .constants import FPS, IMAGE_SIZE, SAMPLE_RATE, T_FRAMES
from .files import sha256_file
from .landmarks import N_POSE, crop_box, lip_openness, pingpong_index, select_references, split_pose_content
from .media import StillFrames, VideoFrames, VideoScan, VideoWriter, check_audio_encoder, check_output_path, \
    is_image_file, read_image
from .renderer import LandmarkGenerator, Renderer
from .resample import KaiserResampler
from .sketch import draw_sketches

log = logging.getLogger(__name__)

FACE_MODES = ("static", "track")
#: What to do with frames of the face video where no face is found.
MISSING_FACE_MODES = ("pass", "fill", "error")


@dataclass(frozen=True)
class PipelineConfig:
    """How a :class:`Pipeline` runs. The model's own constants come from the bundle.

    Attributes:
        backend: inference backend, device, threads and cache (see :class:`BackendConfig`).
        refs: number of reference images N (25 in the original).
        face_mode: ``"static"`` detects the face on every frame, as the original (exact);
            ``"track"`` follows it from the previous frame's landmarks (faster).
        on_missing_face: frames of the face video without a face (fades, cut-aways,
            occlusions): ``"pass"`` leaves them as they are in the output (default);
            ``"fill"`` renders the nearest frame's face track onto them; ``"error"`` refuses
            the video. Either way the landmark windows around them use the nearest face, and
            a video with no face at all is an error.
        smoothing: One-Euro smoothing of the tracked landmarks against jitter (off: faithful).
    """

    backend: BackendConfig = field(default_factory=BackendConfig)
    refs: int = 25
    face_mode: str = "static"
    on_missing_face: str = "pass"
    smoothing: bool = False

    def __post_init__(self):
        if not 1 <= self.refs <= 100:
            raise IplapError(f"refs (the number of reference images) must be between 1 and 100, got {self.refs}")
        if self.face_mode not in FACE_MODES:
            raise IplapError(f"unknown face_mode {self.face_mode!r}: choose one of {', '.join(FACE_MODES)}")
        if self.on_missing_face not in MISSING_FACE_MODES:
            raise IplapError(f"unknown on_missing_face {self.on_missing_face!r}: choose one of "
                             f"{', '.join(MISSING_FACE_MODES)}")


@dataclass
class Frame:
    """One output video frame."""

    index: int  # position in the output video (25 fps)
    image: np.ndarray  # (H, W, 3) uint8 BGR
    rendered: int  # which render produced it (the first one fills indices 0, 1, 2)
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, for this render
    face: np.ndarray | None = None  # (3, 128, 128) float32: the renderer's output before paste-back
    content: np.ndarray | None = None  # (5, 2, 57): the predicted lip and jaw landmarks of the window
    passed_through: bool = False  # no face in this frame of the face video: left as it is

    @property
    def time(self) -> float:
        return self.index / FPS


#: The renderer's graphs, whose times add up to "renderer graphs" in reports.
RENDERER_GRAPHS = ("flow_modulations", "flow_head", "translation")


@dataclass
class RenderReport:
    """What a render did. ``seconds`` covers every stage, the face's preparation included
    (decode, face, references) when it was not an avatar; the stages add up to about
    ``wall_seconds``."""

    path: Path | None
    frames: int
    seconds: dict[str, float]  # total per stage
    wall_seconds: float
    first_frame_seconds: float

    @property
    def stage_summary(self) -> dict[str, float]:
        """Totals per stage, with the renderer's graphs also summed as "renderer graphs"."""
        summary = dict(self.seconds)
        summary["renderer graphs"] = sum(self.seconds.get(g, 0.0) for g in RENDERER_GRAPHS)
        return summary

    @property
    def seconds_per_frame(self) -> float:
        rendered = max(1, self.frames - 2)
        return self.wall_seconds / rendered


class _StageTimer:
    def __init__(self, clock: StageClock, stage: str):
        self.clock, self.stage = clock, stage

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.clock.add(self.stage, time.perf_counter() - self.start)


class StageClock:
    """Accumulates seconds per named stage (one per render: not shared between threads)."""

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)

    def add(self, stage: str, seconds: float) -> None:
        self.totals[stage] += seconds

    def time(self, stage: str) -> _StageTimer:
        return _StageTimer(self, stage)


# -- stages ---------------------------------------------------------------------------------

def track_faces(frames: Iterable[np.ndarray], tracker, on_missing_face: str = "pass", name: str = "the face video",
                clock: StageClock | None = None) -> FaceTrack:
    """Face landmarks and crop boxes of every frame.

    Frames without a face get the nearest face's track (so that the landmark windows
    around them stay whole) and are marked ``missing``; with ``on_missing_face="pass"``
    they are also marked to pass through the render unchanged, with ``"error"`` they are
    refused. A video without any face is always an error.
    """
    if on_missing_face not in MISSING_FACE_MODES:
        raise IplapError(f"unknown on_missing_face {on_missing_face!r}: choose one of {', '.join(MISSING_FACE_MODES)}")
    landmarks: list[np.ndarray | None] = []
    height = width = 0
    clock = clock or StageClock()
    iterator = iter(frames)
    while True:
        with clock.time("decode"):
            frame = next(iterator, None)
        if frame is None:
            break
        height, width = frame.shape[:2]
        with clock.time("face"):
            face = tracker.process(frame)
        landmarks.append(None if face is None else face.points.astype(np.float32))
    if not landmarks:
        raise MediaError(f"no frames in {name}")
    missing = np.array([lm is None for lm in landmarks])
    if missing.all():
        raise NoFaceError(f"no face found in {name}" + (" (any of its frames)" if len(landmarks) > 1 else ""))
    if missing.any():
        where = describe_frames(np.flatnonzero(missing))
        if on_missing_face == "error":
            raise NoFaceError(f"no face in {where} of {name} (25 fps frame numbers)", setting="on_missing_face",
                              suggestion="pass")
        nearest = nearest_good(missing)
        for k in np.flatnonzero(missing):
            landmarks[k] = landmarks[nearest[k]]
        action = ("pass through unchanged" if on_missing_face == "pass"
                  else "get the face track of the nearest frame with a face")
        log.warning("no face found in %s of %s (25 fps frame numbers): %s %s", where, name,
                    "it will" if missing.sum() == 1 else "they will", action)
    stacked = np.stack(landmarks)
    boxes = np.array([crop_box(lm, height, width) for lm in stacked], np.int32)
    bad = [k for k, (y1, y2, x1, x2) in enumerate(boxes) if y2 - y1 < 8 or x2 - x1 < 8]
    if bad:
        raise NoFaceError(f"the face in frame {bad[0]} of {name} is too small or outside the image to crop")
    passthrough = missing.copy() if on_missing_face == "pass" else np.zeros_like(missing)
    return FaceTrack(stacked, boxes, height, width, missing, passthrough)


def nearest_good(missing: np.ndarray) -> np.ndarray:
    """For every frame, the nearest frame that is not ``missing`` (the earlier one on a tie)."""
    good = np.flatnonzero(~missing)
    frames = np.arange(len(missing))
    after = np.clip(np.searchsorted(good, frames), 0, len(good) - 1)
    before = np.clip(after - 1, 0, len(good) - 1)
    take_before = np.abs(frames - good[before]) <= np.abs(good[after] - frames)
    return np.where(take_before, good[before], good[after])


def describe_frames(indices: Iterable[int], most: int = 6) -> str:
    """``"frames 0-4, 30"``: runs of consecutive frame numbers, the first ``most`` of them."""
    runs: list[list[int]] = []
    for k in indices:
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = int(k)
        else:
            runs.append([int(k), int(k)])
    count = sum(b - a + 1 for a, b in runs)
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:most])
    if len(runs) > most:
        text += f" and {len(runs) - most} more runs"
    return f"frame{'s' if count > 1 else ''} {text}"


def crop_face(frame: np.ndarray, box) -> np.ndarray:
    """The crop box resized to 128x128, (3, 128, 128) float32 in [0, 1], as the original."""
    y1, y2, x1, x2 = (int(v) for v in box)
    crop = cv2.resize(frame[y1:y2, x1:x2], (IMAGE_SIZE, IMAGE_SIZE))
    return (crop.astype(np.float32) / np.float32(255)).transpose(2, 0, 1)


# -- the entry object -----------------------------------------------------------------------

class Pipeline:
    """Lip-synced video from a face (video or photo) and speech, without PyTorch.

    A pipeline holds the loaded models and nothing of any one render, so one pipeline
    serves several threads at once (``prepare``, ``render`` and ``stream`` each keep their
    state in objects of their own).

    >>> pipe = Pipeline("bundle/")                      # doctest: +SKIP
    >>> pipe.render("face.mp4", "speech.wav", "out.mp4")  # doctest: +SKIP
    """

    def __init__(self, bundle: str | Path | Bundle, config: PipelineConfig | None = None):
        self.config = config or PipelineConfig()
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        constants = self.bundle.constants
        self.n_landmark_refs = int(constants["Nl"])
        if int(constants["T"]) != T_FRAMES or int(constants["image_size"]) != IMAGE_SIZE:
            raise IplapError(f"{self.bundle.root}: model constants {constants} are not IP_LAP's")
        backend = self.config.backend
        self.landmark_generator = LandmarkGenerator(self.bundle, backend)
        self.renderer = Renderer(self.bundle, backend)
        self._faces = _FaceModels()  # loaded on first use; shared with with_config/with_graphs copies

    # -- graphs ---------------------------------------------------------------------------
    @property
    def graphs(self) -> dict[str, InferenceModel]:
        """The five graph models by name (``iplap.runtime.bundle.GRAPH_NAMES``)."""
        renderer = self.renderer
        return {"landmark_generator": self.landmark_generator.model, "reference_encoder": renderer.reference_encoder,
                "flow_modulations": renderer.flow_modulations, "flow_head": renderer.flow_head,
                "translation": renderer.translation}

    def with_graphs(self, models: Mapping[str, InferenceModel]) -> Pipeline:
        """A pipeline that runs ``models`` (by graph name) in place of this one's graphs.

        The hook through which calibration and benchmarks run candidate graphs (quantized,
        other precisions) inside the real pipeline. Everything else (config, the other
        graphs, the face models) is shared with this pipeline, which is not changed.
        """
        unknown = sorted(set(models) - set(GRAPH_NAMES))
        if unknown:
            raise KeyError(f"no graph named {unknown[0]!r}; graphs are {', '.join(GRAPH_NAMES)}")
        other = object.__new__(Pipeline)
        other.__dict__.update(self.__dict__)
        other.landmark_generator = LandmarkGenerator.from_model(models.get("landmark_generator",
                                                                           self.landmark_generator.model))
        other.renderer = self.renderer.with_models({k: v for k, v in models.items() if k != "landmark_generator"})
        return other

    # -- per face -------------------------------------------------------------------------
    def new_tracker(self):
        """A face tracker of this pipeline's settings (its own tracking state, shared models)."""
        from .face import FaceTracker, FaceTrackerConfig, OneEuroConfig

        faces = self._faces
        with faces.lock:
            if faces.models is None:
                if not self.bundle.manifest.get("face_models"):
                    raise IplapError(f"{self.bundle.root} has no face models; export it again with them")
                # The face models are small: one thread is fastest, and leaves the rest free.
                backend = dataclasses.replace(self.config.backend, threads=1)
                loaded = FaceTracker.from_folder(self.bundle.root / "face", backend)
                faces.models = (loaded.detector, loaded.mesh, loaded.full_range)
        config = FaceTrackerConfig(mode=self.config.face_mode,
                                   smoothing=OneEuroConfig() if self.config.smoothing else None, fps=FPS)
        return FaceTracker.from_models(*faces.models, config=config)

    def with_config(self, **changes) -> Pipeline:
        """A pipeline with other per-face settings (``refs``, ``face_mode``, ``on_missing_face``,
        ``smoothing``), sharing this one's loaded models; this one is unchanged. The backend
        cannot change this way (its graphs would have to be loaded again)."""
        allowed = {"refs", "face_mode", "on_missing_face", "smoothing"}
        unknown = sorted(set(changes) - allowed)
        if unknown:
            raise IplapError(f"with_config changes only {', '.join(sorted(allowed))}, not {unknown[0]}")
        other = object.__new__(Pipeline)
        other.__dict__.update(self.__dict__)
        other.config = dataclasses.replace(self.config, **changes)
        return other

    def prepare(self, face: str | Path, progress: bool = False,
                on_progress: Callable[[int, int | None], None] | None = None) -> Avatar:
        """Decode, track, choose references and compute their features: an avatar.

        ``progress``: a progress bar on stderr. ``on_progress(done, total)`` is called as
        the face video's frames are tracked (``total`` is an estimate from the video's
        duration, ``None`` where unknown); raise from it to stop.
        """
        return self._prepare(Path(face), progress, StageClock(), on_progress)

    def _prepare(self, face: Path, progress: bool, clock: StageClock,
                 on_progress: Callable[[int, int | None], None] | None = None) -> Avatar:
        if face.is_dir():
            raise MediaError(f"face path is a folder: {face}")
        if not face.is_file():
            raise MediaError(f"face file not found: {face}")
        if face.stat().st_size == 0:
            raise MediaError(f"face file is empty: {face}")
        tracker = self.new_tracker()
        is_image = is_image_file(face)
        if is_image:
            with clock.time("decode"):
                image = read_image(face)
            frames: Iterable[np.ndarray] = [image]
            timeline = StillFrames(image).timeline
        else:
            scan = VideoScan(face)
            frames = _progress(scan, progress, "tracking the face", unit="frame")
        if on_progress is not None:
            frames = _reporting(frames, on_progress, lambda: 1 if is_image else scan.estimated_frames)
        track = track_faces(frames, tracker, self.config.on_missing_face, face.name, clock)
        if not is_image:
            timeline = scan.timeline
        # References come from frames with a face (all of them, unless some have none).
        good = np.flatnonzero(~track.missing)
        openness = np.array([lip_openness(track.landmarks[k]) for k in good])
        ref_frames = good[select_references(openness, self.config.refs)]
        landmark_ref_frames = good[select_references(openness, self.n_landmark_refs)]
        with clock.time("references"):
            references = self._encode_references(face, track, timeline, ref_frames, is_image)
            digest = sha256_file(face)
        options = {"refs": self.config.refs, "landmark_refs": self.n_landmark_refs, "face_mode": self.config.face_mode,
                   "on_missing_face": self.config.on_missing_face, "smoothing": self.config.smoothing,
                   "is_image": is_image}
        log.debug("prepared %s: %d frames, stages %s", face.name, len(track), dict(clock.totals))
        return Avatar(track, timeline, ref_frames, landmark_ref_frames, references, face.name, digest,
                      self.bundle.bundle_id, options, source_path=face)

    def _encode_references(self, face: Path, track: FaceTrack, timeline, ref_frames: np.ndarray, is_image: bool):
        distinct, index = np.unique(ref_frames, return_inverse=True)
        frames = StillFrames(read_image(face)) if is_image else VideoFrames(face, timeline)
        with frames:
            # Visit the distinct reference frames in time order (cheap forward decoding).
            crops = {int(k): crop_face(frames[int(k)], track.boxes[k]) for k in sorted(distinct)}
        images = np.stack([crops[int(k)] for k in distinct])
        sketches = draw_sketches(np.stack([track.normalised(int(k)) for k in distinct]),
                                 np.stack([track.crop_hw(int(k)) for k in distinct]))
        return self.renderer.encode_references(images, sketches, index.reshape(-1))

    def load_avatar(self, path: str | Path) -> Avatar:
        """Read an avatar file made with this bundle and this number of references."""
        avatar = Avatar.load(path, self.bundle.bundle_id)
        refs = avatar.options.get("refs")
        if refs != self.config.refs:
            raise IplapError(f"{Path(path).name} was prepared with {refs} references, not {self.config.refs}; "
                             "prepare it again, or render with its number", setting="refs", suggestion=refs)
        return avatar

    # -- per speech -----------------------------------------------------------------------
    def render(self, face: str | Path | Avatar, audio: str | Path | Speech, out: str | Path, crf: int = 18,
               progress: bool = False, on_frame: Callable[[int, int], None] | None = None) -> RenderReport:
        """Render ``face`` (a face file or an avatar) speaking ``audio`` into the mp4 ``out``.

        The speech (a file, or :class:`Speech` from :func:`load_speech`) is decoded once: the
        model hears it as the original reads it (mono, 16 kHz), and the output's audio track
        is encoded from the same samples at their own rate. Audio that cannot be read or
        encoded fails before any face work starts. ``on_frame(done, total)`` is called after
        each written frame; raise from it to stop (nothing is written then).
        """
        start = time.perf_counter()
        clock = StageClock()
        out = Path(out)
        check_output_path(out)
        with clock.time("audio"):
            speech = audio if isinstance(audio, Speech) else load_speech(audio)
            check_audio_encoder(speech)
            speech.check()
            wav = speech.for_model()
        avatar = face if isinstance(face, Avatar) else self._prepare(Path(face), progress, clock)
        session = StreamSession(self, avatar, clock=clock)
        with session:
            with clock.time("mel"):
                session.accept(wav)
                session.finish()
            total = count_windows(mel_frame_count(wav.size))
            first = None
            with clock.time("encode"):
                writer = VideoWriter(out, avatar.track.width, avatar.track.height, crf=crf, speech=speech)
            try:
                for frame in _progress(session.frames(), progress, "rendering", total=total, unit="frame"):
                    if first is None:
                        first = time.perf_counter() - start
                    with clock.time("encode"):
                        writer.write(frame.image)
                    if on_frame is not None:
                        on_frame(writer.frames, total)
                with clock.time("encode"):
                    writer.close()
            except BaseException:
                writer.abort()
                raise
        return RenderReport(out, writer.frames, dict(clock.totals), time.perf_counter() - start, first or 0.0)

    def open_stream(self, face: str | Path | Avatar, sample_rate: int = SAMPLE_RATE,
                    channels: int = 1) -> StreamSession:
        """A live render: push speech in chunks, take frames as soon as their audio is complete.

        See :class:`StreamSession` for the audio it takes. Use it as a context manager (or
        call ``close``) so that the face video it reads is closed.
        """
        avatar = face if isinstance(face, Avatar) else self.prepare(face)
        return StreamSession(self, avatar, sample_rate, channels)

    def stream(self, face: str | Path | Avatar, chunks: Iterable[np.ndarray], sample_rate: int = SAMPLE_RATE,
               channels: int = 1) -> Iterator[Frame]:
        """Frames for speech arriving in chunks; each is yielded as soon as its mel window is
        complete, and the frames do not depend on how the audio is cut into chunks.

        ``chunks``: float32/float64 samples in [-1, 1] or int16, at ``sample_rate`` (resampled
        to 16 kHz as the original does where it differs), mono, or stereo (``channels=2``:
        interleaved, or shaped (n, 2)). Anything else is refused with a :class:`MediaError`.
        """
        with self.open_stream(face, sample_rate, channels) as session:
            for chunk in chunks:
                session.accept(chunk)
                yield from session.frames()
            session.finish()
            yield from session.frames()


class _FaceModels:
    """The loaded face detector and mesh (or None until first needed), and the lock that loads them once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.models = None


class StreamSession:
    """Everything one render or stream owns: its audio, mel windows, frame reader and clock.

    Made by :meth:`Pipeline.open_stream` (and used by ``render`` and ``stream``). Use one
    session from one thread at a time; any number of sessions of one pipeline may run at
    once on other threads.

    Audio contract of :meth:`accept`: float32 or float64 samples in [-1, 1], or int16
    (scaled by 1/32768, as a 16-bit WAV is read), at the session's ``sample_rate`` (8 kHz to
    192 kHz; resampled to 16 kHz with the original's filter), mono or stereo: stereo is
    ``channels=2``, either interleaved in a flat array (whole frames: an even length) or
    shaped (n, 2); the channels are averaged as the original does.
    """

    MIN_RATE, MAX_RATE = 8000, 192000

    def __init__(self, pipeline: Pipeline, avatar: Avatar, sample_rate: int = SAMPLE_RATE, channels: int = 1,
                 clock: StageClock | None = None):
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) \
                or not self.MIN_RATE <= sample_rate <= self.MAX_RATE:
            raise MediaError(f"sample_rate must be a whole number of Hz from {self.MIN_RATE} to {self.MAX_RATE}, "
                             f"got {sample_rate!r}")
        if channels not in (1, 2):
            raise MediaError(f"channels must be 1 (mono) or 2 (stereo), got {channels!r}")
        self.pipeline, self.avatar = pipeline, avatar
        self.sample_rate, self.channels = int(sample_rate), channels
        self.clock = clock or StageClock()
        self._resampler = KaiserResampler(self.sample_rate, SAMPLE_RATE) if self.sample_rate != SAMPLE_RATE else None
        self._mel = MelStream()
        self._windows = MelWindows()
        self._samples = 0  # samples (per channel) accepted
        self._finished = False
        self._next = 0  # the next render
        track = avatar.track
        pose, content = split_pose_content(np.stack([track.normalised(int(k)) for k in avatar.landmark_ref_frames]))
        self._ref_pose, self._ref_content = pose[None], content[None]
        self._normalised: dict[int, np.ndarray] = {}
        self._source = None

    # -- audio in -------------------------------------------------------------------------
    def accept(self, samples) -> None:
        """Add speech (see the class's audio contract); nothing is rendered here."""
        if self._finished:
            raise MediaError("the stream is finished: no more audio can be added")
        mono = self._to_mono(samples)
        self._samples += mono.size
        if self._resampler is not None:
            mono = self._resampler.push(mono)
        self._windows.extend(self._mel.push(mono))

    def finish(self) -> None:
        """End of speech: the last frames become available."""
        if self._finished:
            return
        if self._samples == 0:
            raise MediaError("no audio samples were streamed")
        if self._resampler is not None:
            self._windows.extend(self._mel.push(self._resampler.flush()))
        if self._mel.samples <= self._mel.config.n_fft // 2:
            raise self._too_short()
        self._windows.extend(self._mel.finish())
        self._finished = True

    def _to_mono(self, samples) -> np.ndarray:
        x = np.asarray(samples)
        if x.dtype == np.int16:
            x = x.astype(np.float32) / np.float32(32768)
        elif x.dtype in (np.float32, np.float64):
            x = x.astype(np.float32, copy=False)
        else:
            raise MediaError(f"audio samples must be float32 or float64 in [-1, 1], or int16; got {x.dtype}")
        if x.ndim == 1:
            if x.size % self.channels:
                raise MediaError(f"an interleaved stereo chunk must hold whole frames (an even number of samples); "
                                 f"got {x.size}")
            x = x.reshape(-1, self.channels)
        elif x.ndim != 2 or x.shape[1] != self.channels:
            raise MediaError(f"audio samples must be a flat array or shaped (n, {self.channels}) for "
                             f"{self.channels} channel{'s' if self.channels > 1 else ''}; got shape {x.shape}")
        if not np.isfinite(x).all():
            raise MediaError("audio samples hold NaN or infinite values")
        return np.ascontiguousarray(x[:, 0]) if self.channels == 1 else np.mean(x, axis=1, dtype=np.float32)

    def _too_short(self) -> MediaError:
        return MediaError(f"the audio is too short: {self._samples / self.sample_rate:.2f} s; at least "
                          f"{min_speech_seconds():.2f} s are needed for one output frame")

    # -- frames out -----------------------------------------------------------------------
    @property
    def frames_done(self) -> int:
        """Output frames produced so far."""
        return 0 if self._next == 0 else self._next + 2

    def frames(self) -> Iterator[Frame]:
        """Render and yield every frame whose audio is complete (lazily: one render per step)."""
        while self._windows.available >= self._next + 3:  # window i + 2 is the last render i needs
            i = self._next
            produced = self._render(i)
            self._next += 1  # before yielding: a caller that stops early does not get them twice
            self._windows.drop_before(self._next - 2)
            yield from produced
        if self._finished and self._next == 0:
            raise self._too_short()

    def _frame_source(self):
        if self._source is None:
            avatar = self.avatar
            self._source = (StillFrames(_read_avatar_image(avatar)) if avatar.is_image
                            else VideoFrames(avatar.source_path or avatar.open_source, avatar.timeline))
        return self._source

    def _pose(self, k: int) -> np.ndarray:
        if k not in self._normalised:
            if len(self._normalised) > 64:
                self._normalised.clear()
            self._normalised[k] = self.avatar.track.normalised(k)
        return self._normalised[k][:, :N_POSE]

    def _render(self, i: int) -> list[Frame]:
        pipeline, avatar, clock = self.pipeline, self.avatar, self.clock
        track = avatar.track
        before = dict(clock.totals)
        seq = [pingpong_index(i + k, avatar.n_frames) for k in range(T_FRAMES)]
        centre = seq[2]
        indices = (0, 1, 2) if i == 0 else (i + 2,)
        with clock.time("decode"):
            background = self._frame_source()[centre]
        if track.passthrough[centre]:
            seconds = _since(before, clock)
            return [Frame(index, background, i, seconds, passed_through=True) for index in indices]
        with clock.time("landmarks"):
            mels = np.stack([self._windows.window(max(0, i + k - 2)) for k in range(T_FRAMES)])[None, :, None]
            pose = np.stack([self._pose(k) for k in seq])[None]
            content = pipeline.landmark_generator.predict(mels, pose, self._ref_pose, self._ref_content)
        with clock.time("sketches"):
            full = np.concatenate([pose[0], content], axis=2)
            sketches = draw_sketches(full, np.array([track.crop_hw(k) for k in seq]))
        with clock.time("crop"):
            face = crop_face(background, track.boxes[centre])
        result = pipeline.renderer.render(avatar.references, face, sketches, self._windows.window(i))
        for stage, seconds in result.seconds.items():  # flow_modulations, flow_head, warp, translation
            clock.add(stage, seconds)
        with clock.time("blend"):
            box = tuple(int(v) for v in track.boxes[centre])
            image = blend_face(background, face_to_uint8(result.face), box, track.landmarks[centre])
        seconds = _since(before, clock)
        return [Frame(index, image, i, seconds, result.face, content) for index in indices]

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def __enter__(self) -> StreamSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _since(before: dict[str, float], clock: StageClock) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in clock.totals.items() if v - before.get(k, 0.0) > 0}


def _read_avatar_image(avatar: Avatar) -> np.ndarray:
    if avatar.source_path is not None:
        return read_image(avatar.source_path)
    with avatar.open_source() as f:
        data = np.frombuffer(f.read(), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise MediaError("the avatar's face image cannot be decoded")
    from .media import as_bgr

    return as_bgr(image)


def _reporting(frames: Iterable[np.ndarray], on_progress: Callable[[int, int | None], None],
               total: Callable[[], int | None]) -> Iterator[np.ndarray]:
    done = 0
    for frame in frames:
        yield frame
        done += 1
        on_progress(done, total())


def _progress(iterable, enabled: bool, description: str, total: int | None = None, unit: str = "it"):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=description, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True)


__all__ = ["Frame", "MISSING_FACE_MODES", "Pipeline", "PipelineConfig", "RenderReport", "Speech", "StageClock",
           "StreamSession", "crop_face", "describe_frames", "nearest_good", "track_faces"]
