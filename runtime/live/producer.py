"""The producer: a worker thread that renders the turns ahead of the clock, and its schedule.

Threads and queues (this file's part of the contract). The producer feeds a turn's speech
to its StreamSession in short pieces, renders, blends and puts pictures into a bounded
queue (``queue_frames``, plus the two extra of the first render); while idle it decodes
idle frames (next to free).

Renders in flight. With ``workers`` > 1 (by default the pipeline's ``BackendConfig.streams``,
whose graphs are then built for that many calls at once) the producer plans renders in
order (``StreamSession.plan_next``: the audio windows, poses and face frame) and executes
up to ``workers`` of them at once on a small pool (``StreamSession.execute``), taking their
pictures in order; on two cores two renders of one thread each keep both busy where one
render's intra-op threads wait on each other. The pictures are the same.

Warm-up. A session renders half a second of silence as it opens (``LiveConfig.warm_up``),
on a thread of its own while the producer makes idle pictures: the first render of anything
pays for compiles and first allocations (seconds, more on OpenVINO), and would otherwise
be the first reply's. The first turn starts once it is done, and k starts from its second,
warm render.

Slower than real time (the schedule). The producer measures each render step (an
exponential average, ``ema_weight``; with renders in flight, the time between their
pictures) and renders every k-th frame of a turn, ``k = ceil(seconds per picture * 25)``,
aimed at a frame at least k (and a render's latency) ahead of the one showing, so that it
is ready in time (``LiveConfig.render_every`` fixes k instead, for a machine known to be
slow, and for tests without a clock). The frames between two renders get in-between pictures
(:mod:`.gaps`; ``LiveConfig.inbetween``), made on this thread while the next render runs on
the pool, or, with ``hold``, the clock holds the last picture.
``LiveSession.stats()`` reports the real-time factor and k.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ...errors import MediaError
from ..audio import min_speech_seconds
from ..constants import FIRST_RENDER_FRAMES, FPS, render_of_frame
from ..session import StreamSession, StreamSetup
from .gaps import Gaps
from .pictures import PictureMaker
from .turns import LiveState, Picture, Turn
from .types import LiveConfig

log = logging.getLogger(__name__)


#: Seconds of silence the warm-up renders (a few renders' worth).
WARM_UP_SECONDS = 0.5


class Schedule:
    """k and a render's latency in frames, from measured render times (lock held to read)."""

    def __init__(self, config: LiveConfig, realtime: bool):
        self.config, self.realtime = config, realtime
        self.seconds_per_picture: float | None = None  # average
        self.latency: float | None = None  # average seconds from a render's start to its pictures

    def k(self) -> int:
        if self.config.render_every is not None:
            return max(1, int(self.config.render_every))
        if not self.realtime or self.seconds_per_picture is None:
            return 1
        return max(1, math.ceil(self.seconds_per_picture * FPS - 1e-9))

    def ahead(self) -> int:
        """Frames a render takes from its start to its pictures: with several in flight, more
        than the k between pictures."""
        if self.latency is None or not self.realtime:
            return 0
        return math.ceil(self.latency * FPS - 1e-9)

    def lead(self) -> int:
        """Frames a render is aimed past the one showing: a render's time, and for ``morph``
        one gap more (its pictures are made once the render after it is done)."""
        k = self.k()
        return max(k, self.ahead()) + (k - 1 if self.config.inbetween == "morph" else 0)

    def measured(self, seconds: float, latency: float) -> None:
        weight = self.config.ema_weight
        old = self.seconds_per_picture
        self.seconds_per_picture = seconds if old is None else weight * seconds + (1 - weight) * old
        self.latency = latency if self.latency is None else weight * latency + (1 - weight) * self.latency

    @property
    def real_time_factor(self) -> float:
        return (self.seconds_per_picture or 0.0) * FPS


class Producer:
    """The worker thread: turns' renders and tail pictures, and idle pictures in between."""

    def __init__(self, state: LiveState, setup: StreamSetup, config: LiveConfig, realtime: bool,
                 pictures: PictureMaker, workers: int):
        self.state, self.setup, self.config, self.realtime = state, setup, config, realtime
        self.pictures = pictures
        self.gaps = Gaps(config.inbetween, pictures, config.max_gap)
        self.schedule = Schedule(config, realtime)
        rate = setup.audio.sample_rate
        self.start_samples = math.ceil((min_speech_seconds() + config.start_margin_seconds) * rate)
        self.workers = max(1, int(workers))
        # With in-between pictures a render always runs on the pool: the producer makes them meanwhile.
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="iplap-live-render") \
            if self.workers > 1 or config.inbetween != "hold" else None
        self._collected_at = 0.0  # when the last render's pictures were taken
        self.thread = threading.Thread(target=self._produce, name="iplap-live", daemon=True)
        self.warm = threading.Event()
        # Without a clock nothing waits for a render, so nothing gains from a warm one.
        self._warmer = threading.Thread(target=self._warm_up, name="iplap-live-warm-up", daemon=True) \
            if config.warm_up and realtime else None

    def start(self) -> None:
        if self._warmer is not None:
            self._warmer.start()
        else:
            self.warm.set()
        self.thread.start()

    def _warm_up(self) -> None:
        """Two renders of silence (see the module docstring); the second one's time seeds k."""
        times = []
        try:
            audio = self.setup.audio
            with StreamSession(self.setup) as session:
                session.accept(np.zeros((int(WARM_UP_SECONDS * audio.sample_rate), audio.channels), np.float32))
                session.finish()
                while len(times) < 2 and not self.state.closed and (plan := session.plan_next()) is not None:
                    started = time.perf_counter()
                    session.execute(plan)
                    times.append(time.perf_counter() - started)
        except Exception:  # noqa: BLE001 - the turns' own renders report whatever is wrong
            log.debug("live warm-up failed", exc_info=True)
        with self.state.cond:
            if len(times) == 2 and self.schedule.seconds_per_picture is None:
                self.schedule.measured(times[1], times[1])
            self.warm.set()
            self.state.cond.notify_all()

    def join(self) -> None:
        if threading.current_thread() is not self.thread:
            self.thread.join()
        if self._warmer is not None and self._warmer.is_alive():
            self._warmer.join()  # within one render: it looks at ``closed`` between them
        if self.pool is not None:
            self.pool.shutdown(wait=True)  # renders in flight finish (within one render's time)

    # -- the loop ------------------------------------------------------------------------------
    def _produce(self) -> None:
        state = self.state
        try:
            while True:
                with state.cond:
                    while (job := self._next_job()) is None:
                        if state.closed:
                            return
                        state.cond.wait()
                job()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            with state.cond:
                state.error = exc
                state.cond.notify_all()

    def _next_job(self) -> Callable[[], None] | None:
        """What the producer does next (lock held), or None to wait."""
        state = self.state
        if state.closed:
            return None
        turn = next((t for t in state.turns if not t.rendering_done), None)
        if turn is not None and turn.session is None and not self.warm.is_set():
            turn = None  # the first turn starts once the warm-up is done: idle until then
        if turn is not None and turn.session is None and (turn.ended or turn.pushed >= self.start_samples):
            self._start_turn(turn)  # first: it drops the idle pictures that fill the queue
        # In-between pictures do not count: a gap's come at once, and the next render must not
        # wait for the clock to show them (they are bounded by LiveConfig.max_gap).
        if sum(p.made_by != "inbetween" for p in state.queue) >= self.config.queue_frames:
            return None
        if turn is not None and turn.session is not None:
            if turn.starved and not turn.inflight and not self.gaps.pending(turn):  # the rest goes on meanwhile
                return None
            return lambda: self._work_turn(turn)
        pos, epoch = state.idle_next, state.epoch  # nothing to render: the idle loop goes on
        state.idle_next += 1
        return lambda: self._make_idle(pos, epoch)

    def _start_turn(self, turn: Turn) -> None:
        """Begin rendering ``turn`` where the loop will be when it plays (lock held)."""
        state = self.state
        index = state.turns.index(turn)
        if index:
            turn.start = state.turns[index - 1].end_position
            state.queue = deque(p for p in state.queue if p.turn is not None)  # idle after the previous turn
            state.epoch += 1
        else:
            state.drop_queue()
            turn.start = state.show_pos
        turn.session = StreamSession(self.setup, loop_start=turn.start - (FIRST_RENDER_FRAMES - 1),
                                     reader=self.pictures.reader)

    def _make_idle(self, pos: int, epoch: int) -> None:
        picture = self.pictures.idle(pos)
        with self.state.cond:
            if epoch == self.state.epoch:
                self.state.queue.append(picture)
                self.state.cond.notify_all()

    # -- a turn's renders ----------------------------------------------------------------------
    def _work_turn(self, turn: Turn) -> None:
        """One step of a turn: render one picture, make one tail picture, or wait for speech."""
        with self.state.cond:
            k, playhead, lead = self.schedule.k(), turn.playhead, self.schedule.lead()
        # Behind the clock, aim past the one showing by a render's time: ready when it is due.
        start = max(turn.made, turn.planned)
        target = max(start, playhead + lead) if self.realtime and playhead >= 0 else start
        if turn.video_frames is None or target < turn.video_frames:
            if len(turn.inflight) >= self.workers:
                self._collect(turn)
            else:
                self._render_step(turn, target, k)
        elif turn.inflight or self.gaps.pending(turn):
            self._collect(turn)
        elif self.gaps.mode != "hold" and turn.made < turn.video_frames and turn.session.renders_ready:
            self._last_gap(turn, playhead)
        else:
            self._tail_step(turn, playhead)

    def _render_step(self, turn: Turn, target: int, k: int) -> None:
        session = turn.session
        started = time.perf_counter()
        render = render_of_frame(target)
        need = render - render_of_frame(session.frames_done) + 1
        self._feed(turn, need)
        if turn.video_frames is not None and target >= turn.video_frames:
            return  # the speech ended before the target: the tail comes next
        if session.renders_ready < need:
            if turn.inflight or self.gaps.pending(turn):  # take what runs while the speech comes
                self._collect(turn)
                return
            with self.state.cond:
                turn.starved = turn.feed.count == 0 and not turn.ended  # until more speech comes
            return
        with self.state.cond:
            playhead, ahead = turn.playhead, self.schedule.ahead()
        # a morphed gap's first frame must be due after the render that ends it is ready
        # (without a clock the clock waits for it)
        lead_ok = not self.realtime or target - need + 1 > playhead + ahead + 1
        self.gaps.plan(turn, session, need - 1, lead_ok=lead_ok, playhead=playhead)
        self.gaps.warp_ready(turn)
        plan = session.plan_next()
        last = plan.indices[-1]
        made = last + k
        if turn.video_frames is not None:
            made = min(made, max(turn.video_frames, last + 1))  # k does not pass over the cheap tail
        turn.planned = made  # the next render aims past this one (while it runs)
        if self.gaps.mode != "hold":
            made = last + 1  # the frames up to the next render get pictures of their own
        if self.pool is None:
            self._take(turn, plan, session.execute(plan), target, started, made)
            return
        turn.inflight.append((self.pool.submit(session.execute, plan), plan, started, target, made))

    def _last_gap(self, turn: Turn, playhead: int) -> None:
        """The model's frames after the last render (k passed over them): warped from it."""
        session = turn.session
        self.gaps.plan(turn, session, session.renders_ready, lead_ok=False, playhead=playhead)
        self.gaps.warp_ready(turn)

    def _collect(self, turn: Turn) -> None:
        """Queue the next due picture (an in-between made now, while renders run), or else wait
        for the oldest render in flight and queue its pictures (in order); only then do the
        frames before its ``made`` count as made (the clock reads it)."""
        if self.gaps.pending(turn):
            picture = self.gaps.next_picture(turn, turn.session)
            if picture is not None:
                self.put(turn, [picture], turn.made)
            return
        future, plan, started, target, made = turn.inflight.popleft()
        self._take(turn, plan, future.result(), target, started, made)

    def _take(self, turn: Turn, plan, frames, target: int, started: float, made: int) -> None:
        """A render's frames -> pictures queued (with the gaps it completes, see :mod:`.gaps`);
        its times into the averages that set k."""
        rendered = [self.pictures.rendered(turn, f) for f in frames if f.index >= target]
        now = time.perf_counter()
        # Seconds per picture: the time since the last pictures were taken, or since this
        # render started if the renders were not all busy meanwhile.
        seconds = now - max(started, self._collected_at)
        self._collected_at = now
        with self.state.cond:
            self.schedule.measured(seconds, now - started)
            stats = self.state.stats
            stats.rendered += len(rendered)
            if frames:
                stats.renders += 1
                for stage, spent in frames[0].seconds.items():  # one render's, on each of its frames
                    stats.stage_seconds[stage] = stats.stage_seconds.get(stage, 0.0) + spent
        if self.gaps.mode == "hold":
            self.put(turn, rendered, made)
        else:  # due with the gaps it completes; queued one at a time by _collect
            self.gaps.around(turn, turn.session, plan, frames, rendered)

    def _tail_step(self, turn: Turn, playhead: int) -> None:
        j = max(turn.made if turn.in_tail else min(turn.made, turn.video_frames), playhead + 1)
        turn.in_tail = True
        if j < turn.length:
            self.put(turn, [self.pictures.tail(turn, j)], j + 1)
            return
        with self.state.cond:
            turn.rendering_done = True
            if not turn.dropped and not turn.played:  # played: the clock has set the idle loop's position
                self.state.idle_next = turn.end_position
            self.state.cond.notify_all()

    def _feed(self, turn: Turn, need: int) -> None:
        """Give the StreamSession speech until ``need`` renders are ready, a short piece at a
        time; finish it as soon as all of an ended turn's speech is in (its length is then
        known, and the fade-out can begin in rendered frames)."""
        session = turn.session
        piece = max(1, int(self.config.feed_seconds * self.setup.audio.sample_rate))
        while turn.video_frames is None:
            with self.state.cond:
                chunks = turn.feed.take(piece) if session.renders_ready < need else []
                ended = turn.ended and turn.feed.count == 0
            if chunks:
                session.accept(np.concatenate(chunks))
            elif ended:
                self._finish(turn)
            else:
                return

    def _finish(self, turn: Turn) -> None:
        try:
            turn.session.finish()
            frames = turn.session.frames_ready
        except MediaError:  # too short for one frame: its audio plays over the idle loop
            frames = 0
        with self.state.cond:
            turn.video_frames = frames
            turn.length = max(math.ceil(turn.pushed * FPS / self.setup.audio.sample_rate), frames)

    def put(self, turn: Turn, pictures: list[Picture], made: int) -> None:
        """Queue a turn's pictures; frames before ``made`` are then made or passed over."""
        state = self.state
        with state.cond:
            turn.made = max([made] + [p.j + 1 for p in pictures])  # a gap's pictures may reach past it
            if turn.wanted and not state.closed:
                state.queue.extend(pictures)
                state.cond.notify_all()


__all__ = ["Producer", "Schedule"]
