"""One render's or stream's state: :class:`StreamSession` (audio in, frames out).

What a session renders with is a :class:`StreamSetup` of its own: the loaded graphs
(:class:`~.renderer.Models`, shared by every session of a pipeline), the avatar, and the
audio format it is fed in (:class:`~.pcm.AudioFormat`). The :class:`~.pipeline.Pipeline`
makes both; the session owns its audio, mel windows, face frame reader (from
:mod:`~.face_source`) and :class:`~.reports.StageClock`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import MediaError
from .audio import MelStream, MelWindows, min_speech_seconds
from .avatar import Avatar
from .compose import blend_face, face_to_uint8
from .constants import FIRST_RENDER_FRAMES, SAMPLE_RATE, T_FRAMES, frames_of_render
from .face_source import avatar_face
from .landmark_generator import Encodings
from .landmarks import N_POSE, pingpong_index, split_pose_content
from .pcm import AudioFormat
from .renderer import Models
from .reports import Frame, StageClock
from .resample import KaiserResampler
from .sketch import draw_sketches
from .tracking import crop_face

#: Mel windows a render's landmark window reaches ahead of its first frame (window i + 2 is
#: the last that render i needs).
_LEAD = FIRST_RENDER_FRAMES - 1


@dataclass(frozen=True)
class StreamSetup:
    """What a stream renders with: the loaded graphs, the avatar, and the audio it is fed.

    The pipeline makes one per stream (``Pipeline.open_stream``, ``open_live``); a live
    session gives the same one to each of its turns."""

    models: Models
    avatar: Avatar
    audio: AudioFormat = AudioFormat()
    #: What its streams share of the avatar's landmark encodings (the references', each face
    #: frame's pose): a live session's turns encode them once (see :class:`Encodings`).
    avatar_encodings: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass
class RenderPlan:
    """One render's inputs, taken in order by :meth:`StreamSession.plan_next`."""

    render: int  # which render (constants.frames_of_render: the first fills frames 0..2)
    seq: list[int]  # the face video frames of its 5-frame window
    background: np.ndarray  # the centre frame (the one it is pasted on)
    mels: np.ndarray  # (1, 5, 1, 80, 16): the window's mel windows
    mel_windows: tuple[int, ...]  # which mel windows those are (the landmark encodings' keys)
    pose: np.ndarray  # (1, 5, ...): the window's pose landmarks
    mel: np.ndarray  # (80, 16): the centre frame's mel window, for the renderer
    clock: StageClock = field(default_factory=StageClock)  # this render's stage times

    @property
    def indices(self) -> tuple[int, ...]:
        """The output frames it makes."""
        return frames_of_render(self.render)


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

    ``loop_start``: where in the face video's ping-pong loop the first landmark window
    starts (0 for renders and streams). Output frame ``j`` shows loop position
    ``loop_start + 2 + constants.render_of_frame(j)``; a live session starts each turn where its idle
    loop is, so that head motion goes on without a jump. ``reader``: a frame reader of the
    avatar's face to share (a live session's, used on the same thread); the session does
    not close it.
    """

    def __init__(self, setup: StreamSetup, clock: StageClock | None = None, loop_start: int = 0, reader=None):
        self.setup = setup
        self.models, self.avatar, self.format = setup.models, setup.avatar, setup.audio
        self.loop_start = int(loop_start)
        self.sample_rate, self.channels = self.format.sample_rate, self.format.channels
        self.clock = clock or StageClock()
        self._resampler = KaiserResampler(self.sample_rate, SAMPLE_RATE) if self.sample_rate != SAMPLE_RATE else None
        self._mel = MelStream()
        self._windows = MelWindows()
        self._samples = 0  # samples (per channel) accepted
        self._finished = False
        self._next = 0  # the next render
        avatar, track = setup.avatar, setup.avatar.track
        pose, content = split_pose_content(np.stack([track.normalised(int(k)) for k in avatar.landmark_ref_frames]))
        self._ref_pose, self._ref_content = pose[None], content[None]
        self._normalised: dict[int, np.ndarray] = {}
        self._encoded: Encodings | None = None  # see _encodings
        self._reader = reader  # the face's frames by index, opened on the first render
        self._owns_reader = reader is None
        self._clock_lock = threading.Lock()
        self.models.renderer.prepare(avatar.references)  # compile per-avatar models now, not on the first frame

    @property
    def landmark_references(self) -> tuple[np.ndarray, np.ndarray]:
        """The landmark generator's reference inputs: pose (1, Nl, 2, 74) and content (1, Nl, 2, 57)."""
        return self._ref_pose, self._ref_content

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
        return self.format.mono(samples)

    def _too_short(self) -> MediaError:
        return MediaError(f"the audio is too short: {self._samples / self.sample_rate:.2f} s; at least "
                          f"{min_speech_seconds():.2f} s are needed for one output frame")

    # -- frames out -----------------------------------------------------------------------
    @property
    def frames_done(self) -> int:
        """Output frames produced (or passed over by :meth:`skip`) so far: the index of the next one."""
        return 0 if self._next == 0 else frames_of_render(self._next - 1)[-1] + 1

    @property
    def renders_ready(self) -> int:
        """Renders whose audio is complete and that are not yet done (or skipped)."""
        return max(0, self._windows.available - _LEAD - self._next)

    @property
    def frames_ready(self) -> int:
        """Output frames whose audio is complete, rendered or not: once finished, all the
        frames this speech gives (none for speech too short for one)."""
        count = self._windows.available
        return count if count >= FIRST_RENDER_FRAMES else 0

    def frames(self) -> Iterator[Frame]:
        """Render and yield every frame whose audio is complete (lazily: one render per step)."""
        for plan in self.plans():
            yield from self.execute(plan)

    def plans(self) -> Iterator[RenderPlan]:
        """:meth:`plan_next` for every render whose audio is complete; speech too short for
        any frame is an error once finished."""
        while (plan := self.plan_next()) is not None:
            yield plan
        if self._finished and self._next == 0:
            raise self._too_short()

    def render_next(self) -> list[Frame] | None:
        """The next render's frames (three for the first, one after), or None until its audio is complete."""
        plan = self.plan_next()
        return None if plan is None else self.execute(plan)

    def plan_next(self) -> RenderPlan | None:
        """Take the next render's inputs (its audio windows, poses and face frame), or None
        until its audio is complete; :meth:`execute` renders it.

        The two halves let a live session keep several renders in flight: ``plan_next`` is
        this session's (one thread, in order, cheap), ``execute`` only reads the pipeline
        and the avatar, so plans may be executed on other threads at once, in any order."""
        if not self.renders_ready:
            return None
        plan = self._plan(self._next)
        self._next += 1  # before rendering: a caller that stops early does not get them twice
        self._windows.drop_before(self._next - _LEAD)
        return plan

    def skip(self, renders: int) -> int:
        """Pass over up to ``renders`` renders without rendering them; how many were passed.

        A live session behind real time renders every k-th frame and holds the picture
        between them. Only renders whose audio is complete can be passed (their mel
        windows are dropped as rendering would drop them)."""
        count = min(max(0, int(renders)), self.renders_ready)
        if count:
            self._next += count
            self._windows.drop_before(self._next - _LEAD)
        return count

    def _encodings(self) -> Encodings:
        """The stream's landmark encodings, made on first use (the references encoded then)."""
        with self._clock_lock:
            if self._encoded is None:
                self._encoded = Encodings(self.models.landmark_generator, self._ref_pose, self._ref_content,
                                          self.setup.avatar_encodings)
            return self._encoded

    def _frame_reader(self):
        if self._reader is None:
            self._reader = avatar_face(self.avatar).frames()
        return self._reader

    def _pose(self, k: int) -> np.ndarray:
        if k not in self._normalised:
            if len(self._normalised) > 64:
                self._normalised.clear()
            self._normalised[k] = self.avatar.track.normalised(k)
        return self._normalised[k][:, :N_POSE]

    def _plan(self, i: int) -> RenderPlan:
        avatar = self.avatar
        clock = StageClock()
        seq = [pingpong_index(self.loop_start + i + k, avatar.n_frames) for k in range(T_FRAMES)]
        with clock.time("decode"):
            background = self._frame_reader()[seq[_LEAD]]
        with clock.time("landmarks"):
            windows = tuple(max(0, i + k - _LEAD) for k in range(T_FRAMES))
            mels = np.stack([self._windows.window(w) for w in windows])[None, :, None]
            pose = np.stack([self._pose(k) for k in seq])[None]
        return RenderPlan(i, seq, background, mels, windows, pose, np.array(self._windows.window(i)), clock)

    def execute(self, plan: RenderPlan) -> list[Frame]:
        """Render a plan of :meth:`plan_next` (any thread; see there). Its stage times are
        added to this session's clock, under a lock: several plans may run at once."""
        frames = self._render(plan)
        self.account(plan)
        return frames

    def account(self, plan: RenderPlan) -> None:
        """Add a plan's stage times to this session's clock (under a lock: plans may run at once)."""
        with self._clock_lock:
            for stage, seconds in plan.clock.totals.items():
                self.clock.add(stage, seconds)

    def predict(self, plan: RenderPlan) -> np.ndarray:
        """The landmarks of the plan's window, as the renderer draws them: (5, 2, 131), pose
        then the predicted content, each frame's normalised to its crop box (the landmark
        generator alone: what an in-between frame needs, see :mod:`.keyframes`)."""
        return self.predict_many([plan])[0]

    def predict_many(self, plans: list[RenderPlan]) -> list[np.ndarray]:
        """:meth:`predict` of several plans in one call of each landmark graph (cheaper per
        plan: the frames between two keyframes come together); the time goes to the first
        plan's clock."""
        if not plans:
            return []
        with plans[0].clock.time("landmarks"):
            contents = self._encodings().contents([(p.mel_windows, p.mels[0], p.seq, p.pose[0]) for p in plans])
        return [np.concatenate([p.pose[0], c], axis=2) for p, c in zip(plans, contents)]

    def passed_through(self, plan: RenderPlan) -> bool:
        """Whether the plan's frame is left as it is (no face there, ``on_missing_face="pass"``)."""
        return bool(self.avatar.track.passthrough[plan.seq[_LEAD]])

    def _render(self, plan: RenderPlan) -> list[Frame]:
        models, avatar, clock = self.models, self.avatar, plan.clock
        track = avatar.track
        i, seq, background = plan.render, plan.seq, plan.background
        centre = seq[_LEAD]
        indices = plan.indices
        if track.passthrough[centre]:
            return [Frame(index, background, i, dict(clock.totals), passed_through=True) for index in indices]
        full = self.predict(plan)
        content = full[:, :, N_POSE:]
        with clock.time("sketches"):
            sketches = draw_sketches(full, np.array([track.crop_hw(k) for k in seq]))
        with clock.time("crop"):
            face = crop_face(background, track.boxes[centre])
        result = models.renderer.render(avatar.references, face, sketches, plan.mel)
        for stage, seconds in result.seconds.items():  # flow_modulations, flow_head, warp, translation
            clock.add(stage, seconds)
        with clock.time("blend"):
            box = tuple(int(v) for v in track.boxes[centre])
            image = blend_face(background, face_to_uint8(result.face), box, track.landmarks[centre])
        seconds = dict(clock.totals)
        return [Frame(index, image, i, seconds, result.face, content) for index in indices]

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        if self._reader is not None and self._owns_reader:
            self._reader.close()
        self._reader = None

    def __enter__(self) -> StreamSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["RenderPlan", "StreamSession", "StreamSetup"]
