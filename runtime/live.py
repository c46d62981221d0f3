"""An always-on live session: :class:`LiveSession` (speech pushed at any time, frames at 25 fps).

``Pipeline.open_live(avatar, sample_rate, channels)`` gives one. It yields a
:class:`LiveFrame` every 40 ms for as long as it is open: the avatar idling (a photo
shown as it is; a face video playing forward and back, as renders ping-pong it) until
speech is pushed, then lip-synced frames, then idle again.

Stages (each the pipeline's own; nothing here renders a face):

    push(samples) -> turn (its samples, held once) -> StreamSession of the turn (mel windows,
    landmarks, renderer, blend) -> picture queue (a few frames ahead) -> frames() on the clock

Turns. Speech pushed while no turn is open starts one; ``end_of_turn()`` closes it (its
last frames flush). Speech pushed after that starts the next turn, which plays once the
current one has. Each turn renders with a :class:`~.session.StreamSession` of its own that
starts at the idle loop's current position (``loop_start``), so head motion never jumps.
A turn's frame ``j`` shows loop position ``start + max(0, j - 2)`` (the model's first
render fills frames 0..2), and the idle loop goes on after the turn's last frame.

Frames and audio. Frame ``n`` of the session clock covers samples
``[round(n * rate / 25), round((n + 1) * rate / 25))``, so the frames' audio adds up to the
clock exactly; its ``audio`` is float32 shaped (samples, channels) (int16 speech is scaled
by 1/32768, as the audio contract reads it): the playing turn's own next samples, taken in
order (zero-padded at the turn's end), or silence while idle. A turn lasts as many frames
as its audio covers (the model gives about three frames fewer: those tail frames show the
last rendered face pasted on the idle frames of their positions).

Cross-fade. A turn's frame ``j`` of ``length`` blends the rendered face over the idle frame
of the same loop position with alpha ``min(1, (j + 1) / (fade + 1), (length - j) / (fade +
1))``: it ramps up over the first ``fade_frames`` and down over the last, so that there is
no pop where the rendered face meets the original. The length is known once the turn's
speech has all been pushed and ended; frames rendered before that (speech trickling in
slower than the model renders) fade out over the rest only.

Threads, queues and pacing. A worker thread of the session (the producer) feeds the turn's
speech to its StreamSession in short pieces, renders, blends and puts pictures into a
bounded queue (``queue_frames``, plus the two extra of the first render); while idle it
decodes idle frames (next to free). ``frames()`` is the consumer: with ``realtime=True`` it
yields frame ``n`` at ``start + n / 25`` s of ``time.monotonic`` (absolute times: no drift),
deciding each frame at its time from what is ready; it never waits for the producer. With
``realtime=False`` it yields as fast as frames render, waiting for each (the frames are
then those of an ideal machine: for tests and files).

Renders in flight. With ``workers`` > 1 (by default the pipeline's ``BackendConfig.streams``,
whose graphs are then built for that many calls at once) the producer plans renders in
order (``StreamSession.plan_next``: the audio windows, poses and face frame) and executes
up to ``workers`` of them at once on a small pool (``StreamSession.execute``), taking
their pictures in order; on two cores two renders of one thread each keep both busy
where one render's intra-op threads wait on each other. The pictures are the same.

Slower than real time. The producer measures each render step (an exponential average,
``ema_weight``; with renders in flight, the time between their pictures) and renders every
k-th frame of a turn, ``k = ceil(seconds per picture * 25)``, aimed at a frame at least k
(and a render's latency) ahead of the one showing, so that it is ready in time;
the consumer holds the last picture between them (``LiveConfig.render_every`` fixes k
instead, for a machine known to be slow, and for tests without a clock). Audio never waits for pictures: it
plays continuously at the clock, so sound and picture never drift apart (a held picture
is the most recent rendered one). ``stats()`` reports the real-time factor and k. Only if
the speech itself comes slower than real time does a turn pause (a frame of silence with
the picture held, counted as a stall), so that audio stays whole.

Interruption. ``interrupt()`` drops all queued speech and turns; the next frame is the idle
frame of the loop position last shown (within one frame time), and the idle loop goes on
from there.

Events. ``on_playback_started()`` and ``on_playback_finished(interrupted)`` are called on the
thread that iterates ``frames()``, just before a turn's first frame and its last frame
(or, interrupted, the first idle frame after it) are yielded: what the user heard. A turn
dropped before it started playing fires neither. The same moments are also kept as
:class:`LiveEvent` records for ``events()``, an iterator any other thread may read (the
last ``EVENTS_KEPT`` are kept for a reader that falls behind; older ones are dropped).

Memory. Pushed speech is held once (float32), shared by the feed and the playback queues
and dropped as it is used; the StreamSession gets it a short piece at a time (its mel
windows stay small), and rendered pictures are a bounded queue. So memory is the pushed,
not yet played speech plus a constant.

Thread contract as for :class:`~.session.StreamSession`: one thread iterates ``frames()``;
``push``, ``end_of_turn``, ``interrupt``, ``stats`` and ``close`` may be called from any
thread; many live sessions share one :class:`~.pipeline.Pipeline`.

Why one module of over 450 lines: the clock (``frames()``), the worker and the turns share
one state under one lock, and the contract above is theirs together. Its plain parts (the
config, frame and stats types) are the first to move out when it grows.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..errors import IplapError, MediaError
from .audio import min_speech_seconds
from .avatar import Avatar
from .compose import blend_face, face_to_uint8
from .constants import FPS, SAMPLE_RATE
from .face_source import avatar_face
from .landmarks import pingpong_index
from .session import StreamSession, check_stream_format, sample_frames

if TYPE_CHECKING:
    from .pipeline import Pipeline


@dataclass(frozen=True)
class LiveConfig:
    """How a live session fades, buffers and measures."""

    #: Frames of cross-fade at each edge of a turn (0.32 s: with fewer, the stand-in
    #: bundle's step into and out of the rendered face outdoes its change within a turn;
    #: a bundle whose mouth moves more may take fewer).
    fade_frames: int = 8
    #: Pictures the producer may render ahead of the clock (the first render adds two).
    queue_frames: int = 3
    #: Weight of the newest render time in the average that sets k.
    ema_weight: float = 0.3
    #: Render every k-th frame of a turn with this k, whatever the render time (a machine
    #: known to be slow; tests); None: k from the measured render time, with a clock.
    render_every: int | None = None
    #: Seconds of speech given to a turn's StreamSession at a time (its mel stays small).
    feed_seconds: float = 0.5
    #: Seconds past the shortest renderable speech a turn waits for before it starts
    #: (the resampler holds a few samples back); the idle loop goes on meanwhile.
    start_margin_seconds: float = 0.04
    #: Renders in flight at once, each on a thread of its own (None: the pipeline's
    #: ``BackendConfig.streams``, whose graphs are built for as many calls at once). The
    #: pictures are the same whatever the number; only the frame rate changes.
    workers: int | None = None


@dataclass
class LiveFrame:
    """One frame of a live session, with the audio that plays with it."""

    index: int  # frame of the session clock (25 fps from the first frames() call)
    image: np.ndarray  # (H, W, 3) uint8 BGR, the full frame; read-only where it is the face video's own
    audio: np.ndarray  # (samples, channels) float32: this frame's 40 ms, silence while idle
    speaking: bool  # a turn is playing
    turn: int | None = None  # which turn (0, 1, ...), None while idle
    held: bool = False  # the picture was not made for this frame (an earlier one held)

    @property
    def time(self) -> float:
        return self.index / FPS


@dataclass(frozen=True)
class LiveEvent:
    """A moment of playback: a turn's first frame shown, or its last (or it was cut off)."""

    kind: str  # "playback_started" or "playback_finished"
    turn: int
    index: int  # the frame of the session clock it came with
    interrupted: bool = False  # playback_finished: the turn was cut off by interrupt()

    @property
    def time(self) -> float:
        return self.index / FPS


#: Playback events kept for ``LiveSession.events()`` (a reader that falls behind loses the oldest).
EVENTS_KEPT = 256


@dataclass
class LiveStats:
    """What a live session has done so far (a snapshot)."""

    frames: int = 0  # yielded
    speaking_frames: int = 0
    rendered: int = 0  # pictures rendered by the model
    held: int = 0  # speaking frames that held an earlier picture
    stalls: int = 0  # frames a turn paused for speech that had not come yet
    turns: int = 0  # turns played to their end
    interrupted: int = 0
    k: int = 1  # a picture rendered every k-th frame of a turn
    workers: int = 1  # renders in flight at once
    real_time_factor: float = 0.0  # measured seconds per render * 25 (above 1: slower than real time)
    #: Per turn: seconds from its first sample pushed to its first frame yielded.
    latencies: list[float] = field(default_factory=list)
    queued_speech_seconds: float = 0.0  # pushed, not yet played
    renders: int = 0  # model renders (the first of a turn makes three pictures, the others one)
    #: Seconds per stage (decode, landmarks, sketches, crop, the graphs, warp, blend), summed
    #: over the renders: where a render's time goes.
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def slower_than_real_time(self) -> bool:
        return self.real_time_factor > 1.0


class _Samples:
    """Sample frames (n, channels) in arrival order, taken from the front."""

    def __init__(self):
        self._chunks: deque[np.ndarray] = deque()
        self.count = 0

    def put(self, x: np.ndarray) -> None:
        self._chunks.append(x)
        self.count += len(x)

    def take(self, n: int) -> list[np.ndarray]:
        out, left = [], n
        while left > 0 and self._chunks:
            chunk = self._chunks[0]
            if len(chunk) <= left:
                out.append(self._chunks.popleft())
            else:
                out.append(chunk[:left])
                self._chunks[0] = chunk[left:]
            left -= len(out[-1])
        self.count -= n - left
        return out


@dataclass(eq=False)
class _Turn:
    """One reply: its speech, its StreamSession, and where producer and consumer are in it."""

    number: int
    pushed_at: float
    feed: _Samples = field(default_factory=_Samples)  # not yet given to the StreamSession
    play: _Samples = field(default_factory=_Samples)  # not yet played
    pushed: int = 0  # sample frames
    ended: bool = False
    dropped: bool = False
    starved: bool = False  # the producer waits for more of its speech
    session: StreamSession | None = None
    start: int = 0  # loop position of its frame 0
    video_frames: int | None = None  # frames the model gives, known once finished
    length: int | None = None  # frames it plays, known once finished
    made: int = 0  # the next frame the producer may make
    last_face: np.ndarray | None = None
    playhead: int = -1  # the frame showing
    in_tail: bool = False  # the producer makes the frames past the model's last
    rendering_done: bool = False
    played: bool = False  # played to its end: pictures made for it afterwards are not wanted
    inflight: deque = field(default_factory=deque)  # (future, started, target, made): renders running, in order
    planned: int = 0  # the next frame the producer may plan (past those in flight; >= made)

    def position(self, j: int) -> int:
        return self.start + max(0, j - 2)

    @property
    def end_position(self) -> int:
        """The loop position after its last frame."""
        return self.position(self.length)


@dataclass(eq=False)
class _Picture:
    turn: _Turn | None  # None: an idle picture
    j: int  # the turn's frame (idle: the loop position)
    image: np.ndarray
    background: np.ndarray  # the idle frame of the same loop position
    held: bool = False  # a face rendered for an earlier frame (its render was passed over)


class LiveSession:
    """An always-on avatar: frames at 25 fps, lip-synced while pushed speech plays.

    Made by :meth:`Pipeline.open_live`; see this module's docstring for the contract.
    """

    def __init__(self, pipeline: Pipeline, avatar: Avatar, sample_rate: int = SAMPLE_RATE, channels: int = 1, *,
                 realtime: bool = True, on_playback_started: Callable[[], None] | None = None,
                 on_playback_finished: Callable[[bool], None] | None = None, config: LiveConfig | None = None):
        check_stream_format(sample_rate, channels)
        self.pipeline, self.avatar = pipeline, avatar
        self.sample_rate, self.channels = int(sample_rate), channels
        self.realtime = realtime
        self.config = config or LiveConfig()
        self._on_started, self._on_finished = on_playback_started, on_playback_finished
        self._events: deque[LiveEvent] = deque(maxlen=EVENTS_KEPT)
        self._event_count = 0  # events ever recorded (the reader's position counts these)
        self._events_cond = threading.Condition()
        self._cond = threading.Condition()
        self._turns: deque[_Turn] = deque()  # pushed and not yet played to their end, in order
        self._queue: deque[_Picture] = deque()  # pictures ahead of the clock
        self._playing: _Turn | None = None
        self._show_pos = 0  # loop position of the next idle frame shown
        self._idle_next = 0  # loop position of the next idle picture made
        self._epoch = 0  # changes whenever queued idle pictures are dropped
        self._interrupted = False  # the next frame reports an interrupted turn
        self._interrupted_turn = -1
        self._closed = False
        self._error: BaseException | None = None
        self._turn_count = 0
        self._ema: float | None = None
        self._stats = LiveStats()
        self._index = 0  # the next frame of the clock
        self._clock_start: float | None = None
        self._reader = avatar_face(avatar).frames()  # the producer's (after this first picture)
        first = self._source_frame(0)
        self._last = _Picture(None, 0, first, first)
        self._start_samples = math.ceil((min_speech_seconds() + self.config.start_margin_seconds) * self.sample_rate)
        workers = self.config.workers or pipeline.config.backend.streams
        self._workers = max(1, int(workers))
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="iplap-live-render") \
            if self._workers > 1 else None
        self._latency: float | None = None  # average seconds from a render's start to its pictures
        self._collected_at = 0.0  # when the last render's pictures were taken
        self._worker = threading.Thread(target=self._produce, name="iplap-live", daemon=True)
        self._worker.start()

    # -- speech in (any thread) -----------------------------------------------------------
    def push(self, samples) -> None:
        """Add speech (``StreamSession.accept``'s audio contract), to the open turn or a new one."""
        x = sample_frames(samples, self.channels)
        if np.shares_memory(x, np.asarray(samples)):  # the caller may reuse its buffer
            x = x.copy()
        if not len(x):
            return
        with self._cond:
            self._check_open()
            if not self._turns or self._turns[-1].ended:
                self._turns.append(_Turn(self._turn_count, time.monotonic()))
                self._turn_count += 1
            turn = self._turns[-1]
            turn.feed.put(x)
            turn.play.put(x)
            turn.pushed += len(x)
            turn.starved = False
            self._cond.notify_all()

    def end_of_turn(self) -> None:
        """The reply pushed so far is complete: its last frames flush; later speech is a new turn."""
        with self._cond:
            self._check_open()
            if self._turns and not self._turns[-1].ended:
                self._turns[-1].ended = True
                self._turns[-1].starved = False
                self._cond.notify_all()

    def interrupt(self) -> None:
        """Drop all queued speech; the next frame is idle, and a playing turn reports it."""
        with self._cond:
            playing = self._playing
            if playing is not None and playing.playhead >= 0:
                self._interrupted = True
                self._interrupted_turn = playing.number
                self._show_pos = playing.position(playing.playhead) + 1
                self._last = _Picture(None, self._show_pos - 1, self._last.background, self._last.background)
            for turn in self._turns:
                turn.dropped = True
            self._turns.clear()
            self._playing = None
            self._drop_queue()
            self._cond.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise IplapError("the live session is closed")

    def _drop_queue(self) -> None:
        """Forget every queued picture (lock held); idle pictures start again where the clock is."""
        self._queue.clear()
        self._epoch += 1
        self._idle_next = self._show_pos

    # -- frames out (one thread) ----------------------------------------------------------
    def frames(self) -> Iterator[LiveFrame]:
        """Frames for as long as the session is open (see the module docstring for pacing).

        The clock starts at the first call and goes on across calls: a caller that falls
        behind gets the frames that are due at once (the clock does not wait for it)."""
        if self._clock_start is None:
            self._clock_start = time.monotonic()
        while True:
            with self._cond:
                if self.realtime:
                    self._wait_until(self._clock_start + self._index / FPS)
                else:
                    self._cond.wait_for(self._can_decide)
                if self._error is not None:
                    raise self._error
                if self._closed:
                    return
                frame, events = self._decide(self._index)
                self._index += 1
            for event in events:
                self._fire(event, frame.index)
            yield frame

    def _fire(self, event: LiveEvent, index: int) -> None:
        """Record a playback event for ``events()`` (at frame ``index``, the one it is yielded
        with) and call its callback (the consumer's thread)."""
        event = LiveEvent(event.kind, event.turn, index, event.interrupted)
        with self._events_cond:
            self._events.append(event)
            self._event_count += 1
            self._events_cond.notify_all()
        if event.kind == "playback_started":
            if self._on_started is not None:
                self._on_started()
        elif self._on_finished is not None:
            self._on_finished(event.interrupted)

    def events(self, timeout: float | None = None) -> Iterator[LiveEvent]:
        """Playback events from now on, as they happen, until the session closes (or, with a
        ``timeout``, until none has come for that many seconds). Any thread; several
        readers each see every event."""
        with self._events_cond:
            seen = self._event_count  # at the call, not at the first next()
        return self._events_after(seen, timeout)

    def _events_after(self, seen: int, timeout: float | None) -> Iterator[LiveEvent]:
        while True:
            with self._events_cond:
                if not self._events_cond.wait_for(lambda: self._event_count > seen or self._closed, timeout):
                    return
                if self._event_count == seen:  # closed
                    return
                missed = self._event_count - seen
                fresh = list(self._events)[-min(missed, len(self._events)):]
                seen = self._event_count
            yield from fresh

    def _wait_until(self, due: float) -> None:
        while not self._closed and self._error is None and (left := due - time.monotonic()) > 0:
            self._cond.wait(left)

    def _span(self, n: int) -> int:
        rate = self.sample_rate
        return round((n + 1) * rate / FPS) - round(n * rate / FPS)

    def _can_decide(self) -> bool:
        """Without a clock: whether the next frame is ready to be what an ideal machine shows."""
        if self._closed or self._error is not None or self._interrupted:
            return True
        turn = self._playing or (self._turns[0] if self._turns else None)
        head = self._queue[0] if self._queue else None
        if turn is None:
            return head is not None
        if turn is not self._playing:
            return head is not None and head.turn is turn and head.j == 0
        j = turn.playhead + 1
        if not (turn.play.count >= self._span(self._index) or turn.ended):
            return False
        if turn.length is not None and j >= turn.length or turn.made > j:  # past its end, or passed over
            return True
        return head is not None and head.turn is turn and head.j <= j

    def _decide(self, n: int) -> tuple[LiveFrame, list[LiveEvent]]:
        """Frame ``n`` from what is ready now (lock held), and the events to fire with it."""
        events: list[LiveEvent] = []
        if self._interrupted:
            self._interrupted = False
            self._stats.interrupted += 1
            events.append(LiveEvent("playback_finished", self._interrupted_turn, n, True))
        turn = self._playing
        if turn is None and self._queue and self._turns and self._queue[0].turn is self._turns[0] \
                and self._queue[0].j == 0:
            turn = self._playing = self._turns[0]
        frame = self._speaking_frame(turn, n, events) if turn is not None else self._idle_frame(n)
        stats = self._stats
        stats.frames += 1
        stats.speaking_frames += frame.speaking
        return frame, events

    def _idle_frame(self, n: int) -> LiveFrame:
        head = self._queue[0] if self._queue else None
        if head is not None and head.turn is None:
            self._last = self._queue.popleft()
            self._show_pos = head.j + 1
            self._cond.notify_all()
        return LiveFrame(n, self._last.image, self._silence(n), False)

    def _silence(self, n: int) -> np.ndarray:
        return np.zeros((self._span(n), self.channels), np.float32)

    def _speaking_frame(self, turn: _Turn, n: int, events: list) -> LiveFrame:
        span = self._span(n)
        if turn.play.count < span and not turn.ended:  # the speech has not come yet: pause
            self._stats.stalls += 1
            return LiveFrame(n, self._last.image, self._silence(n), True, turn.number, held=True)
        j = turn.playhead + 1
        picture = None
        while self._queue and self._queue[0].turn is turn and self._queue[0].j <= j:
            picture = self._queue.popleft()
        if picture is not None:
            self._last = picture
            self._cond.notify_all()
        held = picture is None or picture.j != j or picture.held
        self._stats.held += held
        audio = self._silence(n)
        taken = np.concatenate(turn.play.take(span) or [audio[:0]])
        audio[:len(taken)] = taken
        turn.playhead = j
        if j == 0:
            self._stats.latencies.append(time.monotonic() - turn.pushed_at)
            events.append(LiveEvent("playback_started", turn.number, n))
        if turn.length is not None and j >= turn.length - 1 and turn.play.count == 0:
            self._end_turn(turn, events)
        return LiveFrame(n, self._last.image, audio, True, turn.number, held)

    def _end_turn(self, turn: _Turn, events: list) -> None:
        self._turns.popleft()
        self._playing = None
        self._show_pos = turn.end_position
        turn.played = True
        if not turn.rendering_done:
            # The clock got to its end before the producer came back to it after its last
            # picture (a slow host): the idle loop goes on from its end from here, not from
            # where the idle pictures stopped when it began.
            turn.rendering_done = True
            self._idle_next = turn.end_position
        while self._queue and self._queue[0].turn is turn:
            self._queue.popleft()
        self._stats.turns += 1
        events.append(LiveEvent("playback_finished", turn.number, -1))
        self._cond.notify_all()

    def stats(self) -> LiveStats:
        """A snapshot of what the session has done, its real-time factor and its k."""
        with self._cond:
            stats = LiveStats(**{**self._stats.__dict__, "latencies": list(self._stats.latencies),
                                 "stage_seconds": dict(self._stats.stage_seconds)})
            stats.k = self._k()
            stats.workers = self._workers
            stats.real_time_factor = (self._ema or 0.0) * FPS
            stats.queued_speech_seconds = self.queued_speech_seconds  # the condition's lock is reentrant
            return stats

    @property
    def queued_speech_seconds(self) -> float:
        """Seconds of pushed speech not yet played (cheap: for a check at every push)."""
        with self._cond:
            return sum(t.play.count for t in self._turns) / self.sample_rate

    @property
    def queued_pictures(self) -> int:
        """Pictures rendered ahead of the clock (bounded by ``config.queue_frames`` + 2)."""
        with self._cond:
            return len(self._queue)

    def _k(self) -> int:
        if self.config.render_every is not None:
            return max(1, int(self.config.render_every))
        if not self.realtime or self._ema is None:
            return 1
        return max(1, math.ceil(self._ema * FPS - 1e-9))

    # -- the producer (the worker thread) -------------------------------------------------
    def _produce(self) -> None:
        try:
            while True:
                with self._cond:
                    while (job := self._next_job()) is None:
                        if self._closed:
                            return
                        self._cond.wait()
                job()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def _next_job(self) -> Callable[[], None] | None:
        """What the producer does next (lock held), or None to wait."""
        if self._closed:
            return None
        turn = next((t for t in self._turns if not t.rendering_done), None)
        if turn is not None and turn.session is None and (turn.ended or turn.pushed >= self._start_samples):
            self._start_turn(turn)  # first: it drops the idle pictures that fill the queue
        if len(self._queue) >= self.config.queue_frames:
            return None
        if turn is not None and turn.session is not None:
            if turn.starved and not turn.inflight:  # renders in flight are taken meanwhile
                return None
            return lambda: self._work_turn(turn)
        pos, epoch = self._idle_next, self._epoch  # nothing to render: the idle loop goes on
        self._idle_next += 1
        return lambda: self._make_idle(pos, epoch)

    def _start_turn(self, turn: _Turn) -> None:
        """Begin rendering ``turn`` where the loop will be when it plays (lock held)."""
        index = self._turns.index(turn)
        if index:
            turn.start = self._turns[index - 1].end_position
            self._queue = deque(p for p in self._queue if p.turn is not None)  # idle after the previous turn
            self._epoch += 1
        else:
            self._drop_queue()
            turn.start = self._show_pos
        turn.session = StreamSession(self.pipeline, self.avatar, self.sample_rate, self.channels,
                                     loop_start=turn.start - 2, reader=self._reader)

    def _source_frame(self, pos: int) -> np.ndarray:
        """The face video's frame at loop position ``pos``, read-only: it is the reader's own
        (cached) array, shown as it is by idle frames, so no caller may draw into it."""
        image = self._reader[pingpong_index(pos, self.avatar.n_frames)]
        image.flags.writeable = False
        return image

    def _make_idle(self, pos: int, epoch: int) -> None:
        image = self._source_frame(pos)
        with self._cond:
            if epoch == self._epoch:
                self._queue.append(_Picture(None, pos, image, image))
                self._cond.notify_all()

    def _work_turn(self, turn: _Turn) -> None:
        """One step of a turn: render one picture, make one tail picture, or wait for speech."""
        with self._cond:
            k, playhead, ahead = self._k(), turn.playhead, self._ahead()
        # Behind the clock, aim past the one showing by a render's time: ready when it is due.
        start = max(turn.made, turn.planned)
        target = max(start, playhead + max(k, ahead)) if self.realtime and playhead >= 0 else start
        if turn.video_frames is None or target < turn.video_frames:
            if len(turn.inflight) >= self._workers:
                self._collect(turn)
            else:
                self._render_step(turn, target, k)
        elif turn.inflight:
            self._collect(turn)
        else:
            self._tail_step(turn, playhead)

    def _ahead(self) -> int:
        """Frames a render takes from its start to its pictures (lock held): with several in
        flight, more than the k between pictures."""
        if self._latency is None or not self.realtime:
            return 0
        return math.ceil(self._latency * FPS - 1e-9)

    def _render_step(self, turn: _Turn, target: int, k: int) -> None:
        session = turn.session
        started = time.perf_counter()
        render = max(0, target - 2)  # render i makes frame i + 2 (render 0: frames 0..2)
        need = render - max(0, session.frames_done - 2) + 1
        self._feed(turn, need)
        if turn.video_frames is not None and target >= turn.video_frames:
            return  # the speech ended before the target: the tail comes next
        if session.renders_ready < need:
            if turn.inflight:  # take what runs while the speech comes
                self._collect(turn)
                return
            with self._cond:
                turn.starved = turn.feed.count == 0 and not turn.ended  # until more speech comes
            return
        session.skip(need - 1)
        plan = session.plan_next()
        last = plan.indices[-1]
        made = last + k
        if turn.video_frames is not None:
            made = min(made, max(turn.video_frames, last + 1))  # k does not pass over the cheap tail
        if self._pool is None:
            self._take(turn, session.execute(plan), target, started, made)
            return
        turn.planned = made  # the next render aims past this one while it runs
        turn.inflight.append((self._pool.submit(session.execute, plan), started, target, made))

    def _collect(self, turn: _Turn) -> None:
        """Wait for the oldest render in flight and queue its pictures (in order); only then
        do the frames before its ``made`` count as made (the clock's consumer reads it)."""
        future, started, target, made = turn.inflight.popleft()
        self._take(turn, future.result(), target, started, made)

    def _take(self, turn: _Turn, frames, target: int, started: float, made: int) -> None:
        """A render's frames -> pictures queued; its times into the averages that set k."""
        pictures = [self._rendered_picture(turn, f) for f in frames if f.index >= target]
        now = time.perf_counter()
        # Seconds per picture: the time since the last pictures were taken, or since this
        # render started if the renders were not all busy meanwhile.
        seconds = now - max(started, self._collected_at)
        latency = now - started
        self._collected_at = now
        with self._cond:
            weight = self.config.ema_weight
            self._ema = seconds if self._ema is None else weight * seconds + (1 - weight) * self._ema
            self._latency = latency if self._latency is None else weight * latency + (1 - weight) * self._latency
            self._stats.rendered += len(pictures)
            if frames:
                self._stats.renders += 1
                totals = self._stats.stage_seconds
                for stage, spent in frames[0].seconds.items():  # one render's, on each of its frames
                    totals[stage] = totals.get(stage, 0.0) + spent
        self._put(turn, pictures, made)

    def _tail_step(self, turn: _Turn, playhead: int) -> None:
        j = max(turn.made if turn.in_tail else min(turn.made, turn.video_frames), playhead + 1)
        turn.in_tail = True
        if j < turn.length:
            self._put(turn, [self._tail_picture(turn, j)], j + 1)
            return
        with self._cond:
            turn.rendering_done = True
            if not turn.dropped and not turn.played:  # played: _end_turn has set the idle loop's position
                self._idle_next = turn.end_position
            self._cond.notify_all()

    def _feed(self, turn: _Turn, need: int) -> None:
        """Give the StreamSession speech until ``need`` renders are ready, a short piece at a
        time; finish it as soon as all of an ended turn's speech is in (its length is then
        known, and the fade-out can begin in rendered frames)."""
        session = turn.session
        piece = max(1, int(self.config.feed_seconds * self.sample_rate))
        while turn.video_frames is None:
            with self._cond:
                chunks = turn.feed.take(piece) if session.renders_ready < need else []
                ended = turn.ended and turn.feed.count == 0
            if chunks:
                session.accept(np.concatenate(chunks))
            elif ended:
                self._finish(turn)
            else:
                return

    def _finish(self, turn: _Turn) -> None:
        try:
            turn.session.finish()
            frames = turn.session.frames_ready
        except MediaError:  # too short for one frame: its audio plays over the idle loop
            frames = 0
        with self._cond:
            turn.video_frames = frames
            turn.length = max(math.ceil(turn.pushed * FPS / self.sample_rate), frames)

    def _put(self, turn: _Turn, pictures: list[_Picture], made: int) -> None:
        """Queue a turn's pictures; frames before ``made`` are then made or passed over."""
        with self._cond:
            turn.made = made
            if not turn.dropped and not turn.played and not self._closed:
                self._queue.extend(pictures)
                self._cond.notify_all()

    def _background(self, turn: _Turn, j: int) -> tuple[int, np.ndarray]:
        return pingpong_index(turn.position(j), self.avatar.n_frames), self._source_frame(turn.position(j))

    def _alpha(self, turn: _Turn, j: int) -> float:
        """How much of the rendered face frame ``j`` shows: ramps up over the first
        ``fade_frames`` and down over the last (where the turn's length is known by then)."""
        steps = self.config.fade_frames + 1
        fade_out = 1.0 if turn.length is None else (turn.length - j) / steps
        return min(1.0, (j + 1) / steps, fade_out)

    def _rendered_picture(self, turn: _Turn, frame) -> _Picture:
        j = frame.index
        _, background = self._background(turn, j)
        if frame.face is not None:
            turn.last_face = frame.face
        return _Picture(turn, j, _mix(frame.image, background, self._alpha(turn, j)), background)

    def _tail_picture(self, turn: _Turn, j: int) -> _Picture:
        """A frame past the model's last (its audio goes on for about three), or one whose
        render was passed over after the last one made: the last rendered face on the idle
        frame of its position, fading out at the end."""
        index, background = self._background(turn, j)
        track = self.avatar.track
        if turn.last_face is None or track.passthrough[index]:
            return _Picture(turn, j, background, background, held=j < turn.video_frames)
        box = tuple(int(v) for v in track.boxes[index])
        pasted = blend_face(background, face_to_uint8(turn.last_face), box, track.landmarks[index])
        return _Picture(turn, j, _mix(pasted, background, self._alpha(turn, j)), background,
                        held=j < turn.video_frames)

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the worker and close the face video; the frames end. Safe to call again."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            for turn in self._turns:
                turn.dropped = True
            self._cond.notify_all()
        with self._events_cond:
            self._events_cond.notify_all()
        if threading.current_thread() is not self._worker:
            self._worker.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # renders in flight finish (within one render's time)
        self._reader.close()

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _mix(front: np.ndarray, back: np.ndarray, alpha: float) -> np.ndarray:
    """``front * alpha + back * (1 - alpha)``, rounded, as uint8."""
    if alpha >= 1.0:
        return front
    return cv2.addWeighted(front, alpha, back, 1.0 - alpha, 0.0)


__all__ = ["EVENTS_KEPT", "LiveConfig", "LiveEvent", "LiveFrame", "LiveSession", "LiveStats"]
