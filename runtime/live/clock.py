"""The consumer's clock: :class:`Clock` decides every frame at its time from what is ready.

Pacing (this file's part of the contract). ``frames()`` yields frame ``n`` at ``start + n /
25`` s of ``time.monotonic`` with ``realtime=True`` (absolute times: no drift), deciding
each frame at its time from what is ready; it never waits for the producer. A speaking
frame shows the turn's picture made for it, or holds the most recent one made before it
(``held``). Audio never waits for pictures: it plays continuously at the clock, so sound
and picture never drift apart. Only if the speech itself comes slower than real time does
a turn pause (a frame of silence with the picture held, counted as a stall), so that audio
stays whole. With ``realtime=False`` it yields as fast as frames render, waiting for each
(the frames are then those of an ideal machine: for tests and files).

Events. ``on_playback_started()`` and ``on_playback_finished(interrupted)`` are called on
the thread that iterates ``frames()``, just before a turn's first frame and its last frame
(or, interrupted, the first idle frame after it) are yielded: what the user heard. A turn
dropped before it started playing fires neither. The same moments ride on the frame they
come with (``LiveFrame.events``) and are kept as :class:`~.types.LiveEvent` records for
``events()``, an iterator any other thread may read (the last ``EVENTS_KEPT`` are kept for a
reader that falls behind; older ones are dropped).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np

from ..constants import FPS
from ..pcm import AudioFormat
from .turns import LiveState, Turn
from .types import EVENTS_KEPT, LiveEvent, LiveFrame


class Clock:
    """Frames on the session clock (one consumer thread), and the events that come with them."""

    def __init__(self, state: LiveState, audio: AudioFormat, realtime: bool,
                 on_started: Callable[[], None] | None = None, on_finished: Callable[[bool], None] | None = None):
        self.state, self.audio, self.realtime = state, audio, realtime
        self._on_started, self._on_finished = on_started, on_finished
        self._events: deque[LiveEvent] = deque(maxlen=EVENTS_KEPT)
        self._event_count = 0  # events ever recorded (a reader's position counts these)
        self._events_cond = threading.Condition()
        self._index = 0  # the next frame of the clock
        self._start: float | None = None

    # -- frames (one thread) -----------------------------------------------------------------
    def frames(self) -> Iterator[LiveFrame]:
        """Frames for as long as the session is open. The clock starts at the first call and
        goes on across calls: a caller that falls behind gets the frames that are due at once."""
        state = self.state
        if self._start is None:
            self._start = time.monotonic()
        while True:
            with state.cond:
                if self.realtime:
                    self._wait_until(self._start + self._index / FPS)
                else:
                    state.cond.wait_for(self._can_decide)
                if state.error is not None:
                    raise state.error
                if state.closed:
                    return
                frame = self._decide(self._index)
                self._index += 1
            for event in frame.events:
                self._fire(event)
            yield frame

    def _wait_until(self, due: float) -> None:
        state = self.state
        while not state.closed and state.error is None and (left := due - time.monotonic()) > 0:
            state.cond.wait(left)

    def _can_decide(self) -> bool:
        """Without a clock: whether the next frame is ready to be what an ideal machine shows."""
        state = self.state
        if state.closed or state.error is not None or state.interrupted_turn is not None:
            return True
        turn = state.playing or (state.turns[0] if state.turns else None)
        head = state.queue[0] if state.queue else None
        if turn is None:
            return head is not None
        if turn is not state.playing:
            return head is not None and head.turn is turn and head.j == 0
        j = turn.playhead + 1
        if not (turn.play.count >= self.audio.frame_samples(self._index) or turn.ended):
            return False
        if turn.length is not None and j >= turn.length or turn.made > j:  # past its end, or passed over
            return True
        return head is not None and head.turn is turn and head.j <= j

    def _decide(self, n: int) -> LiveFrame:
        """Frame ``n`` from what is ready now (lock held), with the events that come with it."""
        state = self.state
        events: list[LiveEvent] = []
        if state.interrupted_turn is not None:
            events.append(LiveEvent("playback_finished", state.interrupted_turn, n, True))
            state.interrupted_turn = None
            state.stats.interrupted += 1
        turn = state.playing
        head = state.queue[0] if state.queue else None
        if turn is None and head is not None and state.turns and head.turn is state.turns[0] and head.j == 0:
            turn = state.playing = state.turns[0]
        frame = self._speaking_frame(turn, n, events) if turn is not None else self._idle_frame(n)
        frame.events = tuple(events)
        state.stats.frames += 1
        state.stats.speaking_frames += frame.speaking
        return frame

    def _idle_frame(self, n: int) -> LiveFrame:
        state = self.state
        head = state.queue[0] if state.queue else None
        if head is not None and head.turn is None:
            state.last = state.queue.popleft()
            state.show_pos = head.j + 1
            state.cond.notify_all()
        return LiveFrame(n, state.last.image, self._silence(n), False)

    def _silence(self, n: int) -> np.ndarray:
        return np.zeros((self.audio.frame_samples(n), self.audio.channels), np.float32)

    def _speaking_frame(self, turn: Turn, n: int, events: list[LiveEvent]) -> LiveFrame:
        state = self.state
        span = self.audio.frame_samples(n)
        if turn.play.count < span and not turn.ended:  # the speech has not come yet: pause
            state.stats.stalls += 1
            return LiveFrame(n, state.last.image, self._silence(n), True, turn.number, held=True)
        j = turn.playhead + 1
        picture = None
        while state.queue and state.queue[0].turn is turn and state.queue[0].j <= j:
            picture = state.queue.popleft()
        if picture is not None:
            state.last = picture
            state.cond.notify_all()
        held = picture is None or picture.j != j or picture.held
        state.stats.held += held
        if not held and picture.made_by is not None:  # a mouth that follows this frame's own landmarks
            state.stats.keyframes_shown += picture.made_by == "renderer"
            state.stats.inbetween_shown += picture.made_by == "inbetween"
        audio = self._silence(n)
        taken = np.concatenate(turn.play.take(span) or [audio[:0]])
        audio[:len(taken)] = taken
        turn.playhead = j
        if j == 0:
            state.stats.latencies.append(time.monotonic() - turn.pushed_at)
            events.append(LiveEvent("playback_started", turn.number, n))
        if turn.length is not None and j >= turn.length - 1 and turn.play.count == 0:
            self._end_turn(turn)
            events.append(LiveEvent("playback_finished", turn.number, n))
        return LiveFrame(n, state.last.image, audio, True, turn.number, held)

    def _end_turn(self, turn: Turn) -> None:
        state = self.state
        state.turns.popleft()
        state.playing = None
        state.show_pos = turn.end_position
        turn.played = True
        if not turn.rendering_done:
            # The clock got to its end before the producer came back to it after its last
            # picture (a slow host): the idle loop goes on from its end from here, not from
            # where the idle pictures stopped when it began.
            turn.rendering_done = True
            state.idle_next = turn.end_position
        while state.queue and state.queue[0].turn is turn:
            state.queue.popleft()
        state.stats.turns += 1
        state.cond.notify_all()

    # -- events --------------------------------------------------------------------------------
    def _fire(self, event: LiveEvent) -> None:
        """Record a playback event for ``events()`` and call its callback (the consumer's thread)."""
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
        ``timeout``, until none has come for that many seconds). Any thread; several readers
        each see every event."""
        with self._events_cond:
            seen = self._event_count  # at the call, not at the first next()
        return self._events_after(seen, timeout)

    def _events_after(self, seen: int, timeout: float | None) -> Iterator[LiveEvent]:
        while True:
            with self._events_cond:
                if not self._events_cond.wait_for(lambda: self._event_count > seen or self.state.closed, timeout):
                    return
                if self._event_count == seen:  # closed
                    return
                missed = self._event_count - seen
                fresh = list(self._events)[-min(missed, len(self._events)):]
                seen = self._event_count
            yield from fresh

    def wake_readers(self) -> None:
        """Let every ``events()`` reader see that the session closed."""
        with self._events_cond:
            self._events_cond.notify_all()


__all__ = ["Clock"]
