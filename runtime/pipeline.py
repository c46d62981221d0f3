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

Where things live: :class:`PipelineConfig` in :mod:`.config`, :class:`RenderReport`,
:class:`Frame` and :class:`StageClock` in :mod:`.reports`, :class:`StreamSession` in
:mod:`.session`, :class:`LiveSession` in :mod:`.live`, :func:`track_faces` and
:func:`crop_face` in :mod:`.tracking`, and the photo-or-video face file in
:mod:`.face_source`; this module has :class:`Pipeline`, and
imports the others' names for callers that import them from here.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from ..errors import IplapError
from .audio import Speech, count_windows, load_speech, mel_frame_count
from .avatar import Avatar, FaceTrack
from .backends import InferenceModel
from .bundle import GRAPH_NAMES, Bundle
from .config import MISSING_FACE_MODES, PipelineConfig
from .constants import DEFAULT_CRF, FPS, IMAGE_SIZE, SAMPLE_RATE, T_FRAMES
from .face_source import FaceSource, open_face
from .keyframes import keyframed
from ..provenance import sha256_file
from .landmarks import lip_openness, select_references
from .live import LiveConfig, LiveSession
from .media import VideoWriter, check_audio_encoder, check_output_path
from .pcm import AudioFormat
from .renderer import LandmarkGenerator, Models, Renderer
from .progress import CostLine, Progress, frame_bar, reporting
from .reports import Frame, RenderReport, StageClock
from .session import StreamSession, StreamSetup
from .sketch import draw_sketches
from .tracking import crop_face, describe_frames, nearest_good, track_faces

log = logging.getLogger(__name__)



class _FaceModels:
    """The loaded face detector and mesh (or None until first needed), and the lock that loads them once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.models = None


class Pipeline:
    """Lip-synced video from a face (video or photo) and speech, without PyTorch.

    A pipeline holds the loaded models and nothing of any one render, so one pipeline
    serves several threads at once (``prepare``, ``render`` and ``stream`` each keep their
    state in objects of their own).

    >>> pipe = Pipeline("bundle/")                      # doctest: +SKIP
    >>> pipe.render("face.mp4", "speech.wav", "out.mp4")  # doctest: +SKIP
    """

    def __init__(self, bundle: str | Path | Bundle, config: PipelineConfig | None = None):
        config = config or PipelineConfig()
        bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        bundle.require(config.backend.backend)
        constants = bundle.constants
        if int(constants["T"]) != T_FRAMES or int(constants["image_size"]) != IMAGE_SIZE:
            raise IplapError(f"{bundle.root}: model constants {constants} are not IP_LAP's")
        self._set_parts(config=config, bundle=bundle,
                        landmark_generator=LandmarkGenerator(bundle, config.backend),
                        renderer=Renderer(bundle, config.backend), faces=_FaceModels())

    def _set_parts(self, *, config: PipelineConfig, bundle: Bundle, landmark_generator: LandmarkGenerator,
                   renderer: Renderer, faces: _FaceModels) -> None:
        """Every attribute of a pipeline, set in one place: ``__init__`` and copies both come here."""
        self.config = config
        self.bundle = bundle
        self.n_landmark_refs = int(bundle.constants["Nl"])
        self.landmark_generator = landmark_generator
        self.renderer = renderer
        self.models = Models(landmark_generator, renderer)  # what its streams render with
        self._faces = faces  # loaded on first use; shared with with_config/with_graphs copies

    def _copy(self, *, config: PipelineConfig | None = None, landmark_generator: LandmarkGenerator | None = None,
              renderer: Renderer | None = None) -> Pipeline:
        """A pipeline sharing this one's bundle and face models, with the parts given replaced."""
        other = Pipeline.__new__(Pipeline)
        other._set_parts(config=config or self.config, bundle=self.bundle,
                         landmark_generator=landmark_generator or self.landmark_generator,
                         renderer=renderer or self.renderer, faces=self._faces)
        return other

    # -- graphs ---------------------------------------------------------------------------
    @property
    def graphs(self) -> dict[str, InferenceModel]:
        """Every graph model by name (``iplap.runtime.bundle.GRAPH_NAMES``)."""
        renderer = self.renderer
        return {**self.landmark_generator.models, **{name: getattr(renderer, name) for name in renderer.GRAPH_NAMES}}

    def with_graphs(self, models: Mapping[str, InferenceModel]) -> Pipeline:
        """A pipeline that runs ``models`` (by graph name) in place of this one's graphs.

        The hook through which calibration and benchmarks run candidate graphs (quantized,
        other precisions) inside the real pipeline. Everything else (config, the other
        graphs, the face models) is shared with this pipeline, which is not changed.
        """
        unknown = sorted(set(models) - set(GRAPH_NAMES))
        if unknown:
            raise KeyError(f"no graph named {unknown[0]!r}; graphs are {', '.join(GRAPH_NAMES)}")
        names = LandmarkGenerator.GRAPH_NAMES
        generator = self.landmark_generator.with_models({k: v for k, v in models.items() if k in names})
        renderer = self.renderer.with_models({k: v for k, v in models.items() if k not in names})
        return self._copy(landmark_generator=generator, renderer=renderer)

    def with_config(self, **changes) -> Pipeline:
        """A pipeline with other per-face or per-render settings (``refs``, ``face_mode``,
        ``on_missing_face``, ``smoothing``, ``keyframe_every``), sharing this one's loaded
        models; this one is unchanged. The backend cannot change this way (its graphs would
        have to be loaded again)."""
        allowed = {"refs", "face_mode", "on_missing_face", "smoothing", "keyframe_every"}
        unknown = sorted(set(changes) - allowed)
        if unknown:
            raise IplapError(f"with_config changes only {', '.join(sorted(allowed))}, not {unknown[0]}")
        return self._copy(config=dataclasses.replace(self.config, **changes))

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

    def prepare(self, face: str | Path, show_progress: bool = False, on_progress: Progress | None = None) -> Avatar:
        """Decode, track, choose references and compute their features: an avatar.

        ``face`` is a photo or a video, told apart by its content (:func:`~iplap.face_is_photo`).
        ``show_progress``: a progress bar on stderr. ``on_progress(done, total)`` is called as
        the face video's frames are tracked (``total`` is an estimate from the video's
        duration, ``None`` where unknown); raise from it to stop.
        """
        return self._prepare(Path(face), show_progress, StageClock(), on_progress)

    def _prepare(self, face_path: Path, show_progress: bool, clock: StageClock,
                 on_progress: Progress | None = None) -> Avatar:
        source = open_face(face_path)
        tracker = self.new_tracker()
        frames = source.track_frames(clock)
        if source.shows_tracking_bar:
            log.info("tracking the face in %s (%s frames at 25 fps)", source.name, source.progress_total() or "its")
            frames = frame_bar(frames, show_progress, "tracking the face", total=source.progress_total())
        if on_progress is not None:
            frames = reporting(frames, on_progress, source.progress_total)
        track = track_faces(frames, tracker, self.config.on_missing_face, source.name, clock)
        # References come from frames with a face (all of them, unless some have none).
        good = np.flatnonzero(~track.missing)
        openness = np.array([lip_openness(track.landmarks[k]) for k in good])
        ref_frames = good[select_references(openness, self.config.refs)]
        landmark_ref_frames = good[select_references(openness, self.n_landmark_refs)]
        with clock.time("references"):
            log.info("encoding %d references (%d distinct)", len(ref_frames), len(np.unique(ref_frames)))
            references = self._encode_references(source, track, ref_frames)
            digest = sha256_file(face_path)
        options = {"refs": self.config.refs, "landmark_refs": self.n_landmark_refs, "face_mode": self.config.face_mode,
                   "on_missing_face": self.config.on_missing_face, "smoothing": self.config.smoothing,
                   "is_image": source.is_photo}
        log.debug("prepared %s: %d frames, stages %s", source.name, len(track), dict(clock.totals))
        return Avatar(track, source.timeline, ref_frames, landmark_ref_frames, references, source.name, digest,
                      self.bundle.bundle_id, options, source_path=face_path)

    def _encode_references(self, source: FaceSource, track: FaceTrack, ref_frames: np.ndarray):
        distinct, index = np.unique(ref_frames, return_inverse=True)
        with source.frames() as frames:
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
    def render(self, face: str | Path | Avatar, audio: str | Path | Speech, out_path: str | Path, crf: int = DEFAULT_CRF,
               show_progress: bool = False, on_progress: Progress | None = None) -> RenderReport:
        """Render ``face`` (a face file or an avatar) speaking ``audio`` into the mp4 ``out_path``.

        The speech (a file, or :class:`Speech` from :func:`load_speech`) is decoded once: the
        model hears it as the original reads it (mono, 16 kHz), and the output's audio track
        is encoded from the same samples at their own rate. Audio that cannot be read or
        encoded fails before any face work starts. ``show_progress``: a progress bar on
        stderr. ``on_progress(done, total)`` is called after each written frame; raise from
        it to stop (nothing is written then).
        """
        start = time.perf_counter()
        clock = StageClock()
        out_path = Path(out_path)
        check_output_path(out_path)
        with clock.time("audio"):
            speech = audio if isinstance(audio, Speech) else load_speech(audio)
            check_audio_encoder(speech)
            speech.check()
            wav = speech.for_model()
        avatar = face if isinstance(face, Avatar) else self._prepare(Path(face), show_progress, clock)
        self._announce_compile(avatar)
        with StreamSession(StreamSetup(self.models, avatar), clock=clock) as session:
            with clock.time("mel"):
                session.accept(wav)
                session.finish()
            total = count_windows(mel_frame_count(wav.size))
            with clock.time("encode"):
                writer = VideoWriter(out_path, avatar.track.width, avatar.track.height, crf=crf, speech=speech)
            every = self.config.keyframe_every
            what = f"{avatar.references.count} references, {avatar.references.distinct} distinct"
            cost = CostLine(total, what + (f", a keyframe every {every}" if every > 1 else ""),
                            span=max(2, 2 * every))  # over whole keyframe spans: frames come in bursts
            frames = keyframed(session, self.config.keyframe_every)
            try:
                first = _write_frames(frames, writer, clock, start, total, show_progress, on_progress, cost)
            except BaseException:
                writer.abort()
                raise
        return RenderReport(out_path, writer.frames, dict(clock.totals), time.perf_counter() - start, first)

    def open_stream(self, face: str | Path | Avatar, sample_rate: int = SAMPLE_RATE,
                    channels: int = 1) -> StreamSession:
        """A live render: push speech in chunks, take frames as soon as their audio is complete.

        See :class:`StreamSession` for the audio it takes. Use it as a context manager (or
        call ``close``) so that the face video it reads is closed.
        """
        return StreamSession(self._setup(face, sample_rate, channels))

    def open_live(self, face: str | Path | Avatar, sample_rate: int = SAMPLE_RATE, channels: int = 1, *,
                  realtime: bool = True, on_playback_started: Callable[[], None] | None = None,
                  on_playback_finished: Callable[[bool], None] | None = None,
                  config: LiveConfig | None = None) -> LiveSession:
        """An always-on avatar: frames at 25 fps while it is open, idle until speech is pushed.

        See :class:`~iplap.runtime.live.LiveSession` (``push``, ``end_of_turn``, ``interrupt``,
        ``frames``, ``stats``); close it (or use it as a context manager) to stop its worker.
        ``config.workers`` (renders in flight) defaults to the backend's ``streams``.
        """
        config = config or LiveConfig()
        workers = config.workers or self.config.backend.streams
        return LiveSession(self._setup(face, sample_rate, channels), realtime=realtime,
                           on_playback_started=on_playback_started, on_playback_finished=on_playback_finished,
                           config=config, workers=workers)

    def _announce_compile(self, avatar: Avatar) -> None:
        """Say that OpenVINO compiles the renderer for this avatar's number of distinct
        references, where it has not yet (seconds; cached for the next start)."""
        distinct = avatar.references.distinct
        if self.renderer.fused_for(distinct) and not self.renderer.flow.is_compiled_for(distinct):
            log.info("compiling the renderer's flow for %d distinct references (OpenVINO; once per number)", distinct)

    def _setup(self, face: str | Path | Avatar, sample_rate: int, channels: int) -> StreamSetup:
        """What a stream of ``face`` renders with (the format is checked before any face work)."""
        audio = AudioFormat(sample_rate, channels)
        avatar = face if isinstance(face, Avatar) else self.prepare(face)
        return StreamSetup(self.models, avatar, audio)

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


def _write_frames(frames: Iterator[Frame], writer: VideoWriter, clock: StageClock, start: float, total: int,
                  show_progress: bool, on_progress: Progress | None, cost: CostLine) -> float:
    """Write a session's ``frames`` into ``writer`` and close it; the seconds to the first frame."""
    first = None
    for frame in frame_bar(frames, show_progress, "rendering", total=total):
        if first is None:
            first = time.perf_counter() - start
        with clock.time("encode"):
            writer.write(frame.image)
        cost.frame_done(writer.frames)
        if on_progress is not None:
            on_progress(writer.frames, total)
    with clock.time("encode"):
        writer.close()
    return first or 0.0


# The names this module has always offered (they now live in config, reports, session and tracking).
__all__ = ["Frame", "MISSING_FACE_MODES", "Pipeline", "PipelineConfig", "RenderReport", "Speech", "StageClock",
           "StreamSession", "crop_face", "describe_frames", "nearest_good", "track_faces"]
