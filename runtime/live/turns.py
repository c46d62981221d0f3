"""Turns and their speech, and the state the clock and the producer share: :class:`LiveState`.

Turns (this file's part of the contract). Speech pushed while no turn is open starts one;
``end_of_turn()`` closes it (its last frames flush). Speech pushed after that starts the
next turn, which plays once the current one has. ``push`` says which turn the speech
joined. Each turn renders with a :class:`~..session.StreamSession` of its own that starts
at the idle loop's current position (``start``), so head motion never jumps. A turn's
frame ``j`` shows loop position ``start + render_of_frame(j)`` (the model's first render
fills frames 0..2), and the idle loop goes on after the turn's last frame. A turn lasts as
many frames as its audio covers (the model gives about three frames fewer: the producer
makes those tail frames itself).

Interruption. ``interrupt()`` drops all queued speech and turns; the next frame is the idle
frame of the loop position last shown (within one frame time), and the idle loop goes on
from there.

Memory. Pushed speech is held once (float32), shared by the feed and the playback queues
and dropped as it is used; the StreamSession gets it a short piece at a time (its mel
windows stay small), and rendered pictures are a bounded queue. So memory is the pushed,
not yet played speech plus a constant.

Everything here is read and changed under ``LiveState.cond``'s lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ...errors import IplapError
from ..constants import render_of_frame
from ..session import StreamSession
from .types import LiveStats


class SampleQueue:
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
class Turn:
    """One reply: its speech, its StreamSession, and where producer and consumer are in it."""

    number: int
    pushed_at: float
    feed: SampleQueue = field(default_factory=SampleQueue)  # not yet given to the StreamSession
    play: SampleQueue = field(default_factory=SampleQueue)  # not yet played
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
    keys: object | None = None  # its keyframes and gaps (.gaps.TurnKeys), made by the producer

    def position(self, j: int) -> int:
        return self.start + render_of_frame(j)

    @property
    def end_position(self) -> int:
        """The loop position after its last frame."""
        return self.position(self.length)

    @property
    def wanted(self) -> bool:
        """Pictures made for it may still be shown (not dropped, not played to its end)."""
        return not self.dropped and not self.played


@dataclass(eq=False)
class Picture:
    """A picture queued for the clock: a turn's frame ``j``, or an idle loop position."""

    turn: Turn | None  # None: an idle picture
    j: int  # the turn's frame (idle: the loop position)
    image: np.ndarray
    background: np.ndarray  # the idle frame of the same loop position
    held: bool = False  # a face rendered for an earlier frame (its render was passed over)
    #: What made its face: "renderer", "inbetween" (its own landmarks), or None (idle, tail, no face).
    made_by: str | None = None


class LiveState:
    """The turns, the pictures ahead of the clock and the counts, under one lock (``cond``),
    shared by the clock (the consumer), the producer and the callers of ``push``."""

    def __init__(self, first: Picture):
        self.cond = threading.Condition()
        self.turns: deque[Turn] = deque()  # pushed and not yet played to their end, in order
        self.queue: deque[Picture] = deque()  # pictures ahead of the clock
        self.playing: Turn | None = None
        self.last = first  # the picture showing
        self.show_pos = 0  # loop position of the next idle frame shown
        self.idle_next = 0  # loop position of the next idle picture made
        self.epoch = 0  # changes whenever queued idle pictures are dropped
        self.interrupted_turn: int | None = None  # the next frame reports this turn interrupted
        self.closed = False
        self.error: BaseException | None = None
        self.turn_count = 0
        self.stats = LiveStats()

    # -- speech in (any thread) --------------------------------------------------------------
    def push(self, x: np.ndarray) -> int:
        """Queue sample frames ``x`` in the open turn, or a new one; the turn's number."""
        with self.cond:
            self.check_open()
            if not self.turns or self.turns[-1].ended:
                self.turns.append(Turn(self.turn_count, time.monotonic()))
                self.turn_count += 1
            turn = self.turns[-1]
            turn.feed.put(x)
            turn.play.put(x)
            turn.pushed += len(x)
            turn.starved = False
            self.cond.notify_all()
            return turn.number

    def end_of_turn(self) -> None:
        with self.cond:
            self.check_open()
            if self.turns and not self.turns[-1].ended:
                self.turns[-1].ended = True
                self.turns[-1].starved = False
                self.cond.notify_all()

    def interrupt(self) -> None:
        with self.cond:
            playing = self.playing
            if playing is not None and playing.playhead >= 0:
                self.interrupted_turn = playing.number
                self.show_pos = playing.position(playing.playhead) + 1
                background = self.last.background
                self.last = Picture(None, self.show_pos - 1, background, background)
            for turn in self.turns:
                turn.dropped = True
            self.turns.clear()
            self.playing = None
            self.drop_queue()
            self.cond.notify_all()

    def close(self) -> bool:
        """Mark the session closed (its turns dropped); False if it was already."""
        with self.cond:
            if self.closed:
                return False
            self.closed = True
            for turn in self.turns:
                turn.dropped = True
            self.cond.notify_all()
            return True

    # -- shared rules (lock held) -------------------------------------------------------------
    def check_open(self) -> None:
        if self.closed:
            raise IplapError("the live session is closed")

    def drop_queue(self) -> None:
        """Forget every queued picture; idle pictures start again where the clock is."""
        self.queue.clear()
        self.epoch += 1
        self.idle_next = self.show_pos

    def queued_speech_samples(self) -> int:
        return sum(t.play.count for t in self.turns)


__all__ = ["LiveState", "Picture", "SampleQueue", "Turn"]
