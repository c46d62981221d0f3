"""The whole pipeline: face file + speech -> lip-synced frames -> mp4.

Stages, each a function or small class of its own module:

    media (decode, 25 fps) -> face track (runtime.face) -> references (landmarks)
    -> per frame: mel windows (audio) -> landmarks (LandmarkGenerator) -> sketches (sketch)
    -> renderer graphs + warp kernel (renderer, warp) -> blend (compose) -> media (encode)

It follows the original release's procedure (see ``../shared/reference``): a 5-frame
landmark window per output frame, the mel window delayed by two frames, Nl=15 and N=25
references chosen by lip openness, ping-pong frames when the speech outlasts the video,
and the first rendered frame written three times, so there is one frame per mel window.

Entry object: :class:`Pipeline`. ``prepare`` does the per-face work once (an
:class:`~iplap.runtime.avatar.Avatar`), ``render`` writes an mp4, and ``stream`` yields
frames as soon as their mel window is complete, from audio that arrives in chunks.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import IplapError, MediaError, NoFaceError
from .audio import SAMPLE_RATE, MelConfig, MelStream, load_audio
from .avatar import Avatar, FaceTrack
from .backends import BackendConfig
from .bundle import Bundle
from .files import sha256_file
from .compose import blend_face, face_to_uint8
from .landmarks import N_POSE, crop_box, lip_openness, pingpong_index, select_references, split_pose_content
from .media import FPS, StillFrames, VideoFrames, VideoScan, VideoWriter, is_image_file, read_image
from .renderer import LandmarkGenerator, References, Renderer
from .sketch import draw_sketches

log = logging.getLogger(__name__)

IMAGE_SIZE = 128
T_FRAMES = 5
MEL_WINDOW = 16
#: Peak amplitude below which speech counts as silence (-80 dBFS).
SILENCE_PEAK = 1e-4


@dataclass(frozen=True)
class PipelineConfig:
    """How a :class:`Pipeline` runs. The model's own constants come from the bundle.

    Attributes:
        backend: inference backend, device, threads and cache (see :class:`BackendConfig`).
        refs: number of reference images N (25 in the original).
        face_mode: ``"static"`` detects the face on every frame, as the original (exact);
            ``"track"`` follows it from the previous frame's landmarks (faster).
        fill_gaps: carry the last good face track over at most this many frames without a
            face; 0 makes any frame without a face an error.
        smoothing: One-Euro smoothing of the tracked landmarks against jitter (off: faithful).
    """

    backend: BackendConfig = field(default_factory=BackendConfig)
    refs: int = 25
    face_mode: str = "static"
    fill_gaps: int = 0
    smoothing: bool = False

    def __post_init__(self):
        if not 1 <= self.refs <= 100:
            raise IplapError(f"--refs must be between 1 and 100, got {self.refs}")
        if self.fill_gaps < 0:
            raise IplapError(f"--fill-gaps must be >= 0, got {self.fill_gaps}")


@dataclass
class Frame:
    """One output video frame."""

    index: int  # position in the output video (25 fps)
    image: np.ndarray  # (H, W, 3) uint8 BGR
    rendered: int  # which render produced it (the first one fills indices 0, 1, 2)
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, for this render
    face: np.ndarray | None = None  # (3, 128, 128) float32: the renderer's output before paste-back
    content: np.ndarray | None = None  # (5, 2, 57): the predicted lip and jaw landmarks of the window

    @property
    def time(self) -> float:
        return self.index / FPS


#: The renderer's graphs, whose times add up to "renderer graphs" in reports.
RENDERER_GRAPHS = ("flow_modulations", "flow_head", "translation")


@dataclass
class RenderReport:
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


class StageClock:
    """Accumulates seconds per named stage."""

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)

    def add(self, stage: str, seconds: float) -> None:
        self.totals[stage] += seconds

    def time(self, stage: str):
        clock = self

        class _Timer:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                clock.add(stage, time.perf_counter() - self.start)

        return _Timer()


# -- stages ---------------------------------------------------------------------------------

def track_faces(frames: Iterable[np.ndarray], tracker, fill_gaps: int = 0, name: str = "the face video",
                clock: StageClock | None = None) -> FaceTrack:
    """Face landmarks and crop boxes of every frame; frames without a face are an error
    unless the gap is at most ``fill_gaps`` frames (the nearest good track is carried over)."""
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
    missing = [k for k, lm in enumerate(landmarks) if lm is None]
    if len(missing) == len(landmarks):
        raise NoFaceError(f"no face found in {name}" + (" (any of its frames)" if len(landmarks) > 1 else ""))
    carried = np.zeros(len(landmarks), bool)
    if missing:
        runs = _runs(missing)
        too_long = [r for r in runs if r[1] - r[0] + 1 > fill_gaps]
        if too_long:
            where = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in too_long[:6])
            more = "" if len(too_long) <= 6 else f" and {len(too_long) - 6} more gaps"
            hint = (f"; --fill-gaps {max(b - a + 1 for a, b in too_long)} would carry the last face over"
                    if len(landmarks) > 1 else "")
            raise NoFaceError(f"no face in frame{'s' if len(missing) > 1 else ''} {where}{more} of {name} "
                              f"(25 fps frame numbers){hint}")
        for a, b in runs:
            source = landmarks[a - 1] if a > 0 else landmarks[b + 1]
            for k in range(a, b + 1):
                landmarks[k] = source
                carried[k] = True
        log.info("carried the face track over %d frames without a face", len(missing))
    stacked = np.stack(landmarks)
    boxes = np.array([crop_box(lm, height, width) for lm in stacked], np.int32)
    bad = [k for k, (y1, y2, x1, x2) in enumerate(boxes) if y2 - y1 < 8 or x2 - x1 < 8]
    if bad:
        raise NoFaceError(f"the face in frame {bad[0]} of {name} is too small or outside the image to crop")
    return FaceTrack(stacked, boxes, height, width, carried)


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    runs = []
    for k in indices:
        if runs and k == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], k)
        else:
            runs.append((k, k))
    return runs


def crop_face(frame: np.ndarray, box) -> np.ndarray:
    """The crop box resized to 128x128, (3, 128, 128) float32 in [0, 1], as the original."""
    y1, y2, x1, x2 = (int(v) for v in box)
    crop = cv2.resize(frame[y1:y2, x1:x2], (IMAGE_SIZE, IMAGE_SIZE))
    return (crop.astype(np.float32) / np.float32(255)).transpose(2, 0, 1)


@dataclass
class MelWindows:
    """The mel frames received so far, and the original's 16-frame windows over them."""

    fps: float = FPS
    mel_fps: float = MelConfig().frames_per_second
    frames: np.ndarray = field(default_factory=lambda: np.zeros((80, 0), np.float32))
    offset: int = 0  # absolute index of frames[:, 0]

    def extend(self, new: np.ndarray) -> None:
        if new.shape[1]:
            self.frames = np.concatenate([self.frames, new], axis=1)

    def start(self, w: int) -> int:
        return int(w * (self.mel_fps / self.fps))

    @property
    def available(self) -> int:
        """How many windows are complete."""
        total = self.offset + self.frames.shape[1]
        count = 0 if total < MEL_WINDOW else int((total - MEL_WINDOW) / (self.mel_fps / self.fps)) + 2
        while count > 0 and self.start(count - 1) + MEL_WINDOW > total:
            count -= 1
        return count

    def window(self, w: int) -> np.ndarray:
        s = self.start(w) - self.offset
        if s < 0:
            raise IndexError(f"mel window {w} was already dropped")
        return self.frames[:, s:s + MEL_WINDOW]

    def drop_before(self, w: int) -> None:
        """Forget frames that no window >= w needs (keeps memory flat on long speech)."""
        keep = self.start(max(0, w)) - self.offset
        if keep > 0:
            self.frames = self.frames[:, keep:]
            self.offset += keep


# -- the entry object -----------------------------------------------------------------------

class Pipeline:
    """Lip-synced video from a face (video or photo) and speech, without PyTorch.

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
        self._tracker = None

    # -- per face -------------------------------------------------------------------------
    @property
    def tracker(self):
        if self._tracker is None:
            from .face import FaceTracker, FaceTrackerConfig, OneEuroConfig

            if not self.bundle.manifest.get("face_models"):
                raise IplapError(f"{self.bundle.root} has no face models; export it again without --no-face-models")
            config = FaceTrackerConfig(mode=self.config.face_mode,
                                       smoothing=OneEuroConfig() if self.config.smoothing else None)
            # The face models are small: one thread is fastest, and leaves the rest free.
            backend = dataclasses.replace(self.config.backend, threads=1)
            self._tracker = FaceTracker.from_folder(self.bundle.root / "face", backend, config)
        return self._tracker

    def prepare(self, face: str | Path, progress: bool = False) -> Avatar:
        """Decode, track, choose references and compute their features: an avatar."""
        face = Path(face)
        if not face.is_file():
            raise MediaError(f"face file not found: {face}")
        if face.stat().st_size == 0:
            raise MediaError(f"face file is empty: {face}")
        clock = StageClock()
        is_image = is_image_file(face)
        self.tracker.reset()
        if is_image:
            with clock.time("decode"):
                image = read_image(face)
            frames: Iterable[np.ndarray] = [image]
            timeline = StillFrames(image).timeline
        else:
            scan = VideoScan(face)
            frames = _progress(scan, progress, "tracking the face", unit="frame")
        track = track_faces(frames, self.tracker, self.config.fill_gaps, face.name, clock)
        if not is_image:
            timeline = scan.timeline
        openness = np.array([lip_openness(lm) for lm in track.landmarks])
        ref_frames = select_references(openness, self.config.refs)
        landmark_ref_frames = select_references(openness, self.n_landmark_refs)
        with clock.time("references"):
            references = self._encode_references(face, track, timeline, ref_frames, is_image)
        digest = sha256_file(face)
        options = {"refs": self.config.refs, "landmark_refs": self.n_landmark_refs, "face_mode": self.config.face_mode,
                   "fill_gaps": self.config.fill_gaps, "smoothing": self.config.smoothing, "is_image": is_image}
        log.debug("prepared %s: %d frames, stages %s", face.name, len(track), dict(clock.totals))
        return Avatar(track, timeline, ref_frames, landmark_ref_frames, references, face.name, digest,
                      self.bundle.bundle_id, options, source_path=face)

    def _encode_references(self, face: Path, track: FaceTrack, timeline, ref_frames: np.ndarray,
                           is_image: bool) -> References:
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
        avatar = Avatar.load(path, self.bundle.bundle_id)
        if int(avatar.options.get("refs", -1)) != self.config.refs:
            raise IplapError(f"{path} was prepared with {avatar.options.get('refs')} references, not "
                             f"{self.config.refs}; prepare it again or pass --refs {avatar.options.get('refs')}")
        return avatar

    # -- per speech -----------------------------------------------------------------------
    def render(self, face: str | Path | Avatar, audio: str | Path, out: str | Path, crf: int = 18,
               progress: bool = False) -> RenderReport:
        """Render ``face`` (a face file or an avatar) speaking ``audio`` into the mp4 ``out``."""
        start = time.perf_counter()
        wav = load_audio(audio)
        check_speech(wav)
        avatar = face if isinstance(face, Avatar) else self.prepare(face, progress=progress)
        stream = MelStream()
        mel = np.concatenate([stream.push(wav), stream.finish()], axis=1)
        windows = MelWindows()
        total = max(0, _count_windows(mel.shape[1]))
        first = None
        clock = StageClock()
        with VideoWriter(Path(out), avatar.track.width, avatar.track.height, crf=crf, audio_path=Path(audio)) as writer:
            frames = self._frames(avatar, iter([mel]), windows, clock)
            for frame in _progress(frames, progress, "rendering", total=total, unit="frame"):
                if first is None:
                    first = time.perf_counter() - start
                with clock.time("encode"):
                    writer.write(frame.image)
        return RenderReport(Path(out), writer.frames, dict(clock.totals), time.perf_counter() - start, first or 0.0)

    def stream(self, face: str | Path | Avatar, chunks: Iterable[np.ndarray]) -> Iterator[Frame]:
        """Frames for speech arriving in chunks of 16 kHz mono float32 samples.

        Each frame is yielded as soon as its mel window is complete; the frames do not
        depend on how the audio is cut into chunks.
        """
        avatar = face if isinstance(face, Avatar) else self.prepare(face)
        mel_stream = MelStream()
        total_samples = [0]

        def mel_chunks():
            # Silence is not an error here: a live stream has pauses, and renders them.
            for chunk in chunks:
                chunk = np.asarray(chunk, np.float32).reshape(-1)
                total_samples[0] += chunk.size
                yield mel_stream.push(chunk)
            if total_samples[0] == 0:
                raise MediaError("no audio samples were streamed")
            yield mel_stream.finish()

        produced = 0
        for frame in self._frames(avatar, mel_chunks(), MelWindows(), StageClock()):
            produced += 1
            yield frame
        if produced == 0:
            raise MediaError(f"the audio is too short: {total_samples[0] / SAMPLE_RATE:.2f} s; at least "
                             f"{min_speech_seconds():.2f} s are needed for one output frame")

    # -- the frame loop -------------------------------------------------------------------
    def _frames(self, avatar: Avatar, mel_chunks: Iterator[np.ndarray], windows: MelWindows,
                clock: StageClock) -> Iterator[Frame]:
        n_video = avatar.n_frames
        track = avatar.track
        ref_pose, ref_content = split_pose_content(np.stack([track.normalised(int(k))
                                                             for k in avatar.landmark_ref_frames]))
        ref_pose, ref_content = ref_pose[None], ref_content[None]
        normalised_cache: dict[int, np.ndarray] = {}

        def normalised(k: int) -> np.ndarray:
            if k not in normalised_cache:
                if len(normalised_cache) > 64:
                    normalised_cache.clear()
                normalised_cache[k] = track.normalised(k)
            return normalised_cache[k]

        frames = (StillFrames(read_image_source(avatar)) if avatar.is_image
                  else VideoFrames(avatar.source_path or avatar.open_source, avatar.timeline))
        i = 0
        with frames:
            for new in mel_chunks:
                windows.extend(new)
                while windows.available >= i + 3:  # window i + 2 is the last the landmark window needs
                    seconds_before = dict(clock.totals)
                    image, face, content = self._render_one(i, avatar, frames, windows, ref_pose, ref_content,
                                                            normalised, n_video, clock)
                    seconds = {k: v - seconds_before.get(k, 0.0) for k, v in clock.totals.items()}
                    for index in ((0, 1, 2) if i == 0 else (i + 2,)):
                        yield Frame(index, image, i, seconds, face, content)
                    i += 1
                    windows.drop_before(i - 2)

    def _render_one(self, i: int, avatar: Avatar, frames, windows: MelWindows, ref_pose, ref_content, normalised,
                    n_video: int, clock: StageClock) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        track = avatar.track
        seq = [pingpong_index(i + k, n_video) for k in range(T_FRAMES)]
        with clock.time("landmarks"):
            mels = np.stack([windows.window(max(0, i + k - 2)) for k in range(T_FRAMES)])[None, :, None]
            pose = np.stack([normalised(k)[:, :N_POSE] for k in seq])[None]
            content = self.landmark_generator.predict(mels, pose, ref_pose, ref_content)
        with clock.time("sketches"):
            full = np.concatenate([pose[0], content], axis=2)
            sketches = draw_sketches(full, np.array([track.crop_hw(k) for k in seq]))
        centre = seq[2]
        with clock.time("decode"):
            background = frames[centre]
        face = crop_face(background, track.boxes[centre])
        result = self.renderer.render(avatar.references, face, sketches, windows.window(i))
        for stage, seconds in result.seconds.items():  # flow_modulations, flow_head, warp, translation
            clock.add(stage, seconds)
        with clock.time("blend"):
            box = tuple(int(v) for v in track.boxes[centre])
            image = blend_face(background, face_to_uint8(result.face), box, track.landmarks[centre])
        return image, result.face, content


def read_image_source(avatar: Avatar) -> np.ndarray:
    if avatar.source_path is not None:
        return read_image(avatar.source_path)
    with avatar.open_source() as f:
        data = np.frombuffer(f.read(), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise MediaError("the avatar's face image cannot be decoded")
    from .media import as_bgr

    return as_bgr(image)


def _count_windows(n_mel: int) -> int:
    """Rendered frames + 2 = windows; the video has one frame per window."""
    windows = MelWindows()
    windows.frames = np.zeros((80, n_mel), np.float32)
    return windows.available


def min_speech_seconds() -> float:
    """The shortest speech that gives one output frame (three mel windows)."""
    n_mel = MelWindows().start(2) + MEL_WINDOW
    return ((n_mel - 1) * MelConfig().hop + 1) / SAMPLE_RATE


def check_speech(wav: np.ndarray) -> None:
    if wav.size == 0 or float(np.abs(wav).max()) < SILENCE_PEAK:
        raise MediaError("the audio is silent (peak below -80 dBFS): there is no speech to lip-sync")
    n_mel = 1 + wav.size // MelConfig().hop
    if _count_windows(n_mel) < 3:
        raise MediaError(f"the audio is too short: {wav.size / SAMPLE_RATE:.2f} s; at least "
                         f"{min_speech_seconds():.2f} s are needed for one output frame")


def _progress(iterable, enabled: bool, description: str, total: int | None = None, unit: str = "it"):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=description, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True)
