"""The live session itself: :class:`LiveSession`, the clock, the producer and the turns together.

Thread contract (this file's part of the contract, as for :class:`~..session.StreamSession`):
one thread iterates ``frames()``; ``push``, ``end_of_turn``, ``interrupt``, ``stats`` and
``close`` may be called from any thread; many live sessions share one pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from ..face_source import avatar_face
from ..session import StreamSetup
from .clock import Clock
from .pictures import PictureMaker
from .producer import Producer
from .turns import LiveState
from .types import LiveConfig, LiveEvent, LiveFrame, LiveStats


class LiveSession:
    """An always-on avatar: frames at 25 fps, lip-synced while pushed speech plays.

    Made by :meth:`Pipeline.open_live` from a :class:`~..session.StreamSetup` (the graphs,
    the avatar and the audio format); see :mod:`iplap.runtime.live` for the contract.
    """

    def __init__(self, setup: StreamSetup, *, realtime: bool = True,
                 on_playback_started: Callable[[], None] | None = None,
                 on_playback_finished: Callable[[bool], None] | None = None, config: LiveConfig | None = None,
                 workers: int = 1):
        self.setup, self.avatar, self.format = setup, setup.avatar, setup.audio
        self.sample_rate, self.channels = setup.audio.sample_rate, setup.audio.channels
        self.realtime = realtime
        self.config = config or LiveConfig()
        reader = avatar_face(setup.avatar).frames()  # the producer's
        self._pictures = PictureMaker(setup.avatar, reader, self.config.fade_frames)
        self._state = LiveState(self._pictures.idle(0))
        self._clock = Clock(self._state, setup.audio, realtime, on_playback_started, on_playback_finished)
        self._producer = Producer(self._state, setup, self.config, realtime, self._pictures, workers)
        self._producer.start()

    # -- speech in (any thread) -----------------------------------------------------------------
    def push(self, samples) -> int:
        """Add speech (the audio contract of :class:`~..pcm.AudioFormat`) to the open turn, or
        start a new one; returns the number of the turn it joined (0, 1, ...). Empty speech
        joins no turn: it returns the turn it would have joined, opening none."""
        x = self.format.frames(samples)
        if np.shares_memory(x, np.asarray(samples)):  # the caller may reuse its buffer
            x = x.copy()
        if not len(x):
            with self._state.cond:
                self._state.check_open()
                turns = self._state.turns
                return turns[-1].number if turns and not turns[-1].ended else self._state.turn_count
        return self._state.push(x)

    def end_of_turn(self) -> None:
        """The reply pushed so far is complete: its last frames flush; later speech is a new turn."""
        self._state.end_of_turn()

    def interrupt(self) -> None:
        """Drop all queued speech; the next frame is idle, and a playing turn reports it."""
        self._state.interrupt()

    # -- frames and events out ------------------------------------------------------------------
    def frames(self) -> Iterator[LiveFrame]:
        """Frames for as long as the session is open (one thread; see :mod:`.clock` for pacing)."""
        return self._clock.frames()

    def events(self, timeout: float | None = None) -> Iterator[LiveEvent]:
        """Playback events from now on, as they happen (any thread; see :meth:`.clock.Clock.events`)."""
        return self._clock.events(timeout)

    # -- what it has done -----------------------------------------------------------------------
    def stats(self) -> LiveStats:
        """A snapshot of what the session has done, its real-time factor and its k."""
        state = self._state
        with state.cond:
            stats = LiveStats(**{**state.stats.__dict__, "latencies": list(state.stats.latencies),
                                 "stage_seconds": dict(state.stats.stage_seconds)})
            schedule = self._producer.schedule
            stats.k = schedule.k()
            stats.workers = self._producer.workers
            stats.real_time_factor = schedule.real_time_factor
            stats.queued_speech_seconds = state.queued_speech_samples() / self.sample_rate
            return stats

    @property
    def warming(self) -> bool:
        """Whether the session's warm-up (``LiveConfig.warm_up``) still runs: the first turn
        starts once it is done, about two renders after opening."""
        return not self._producer.warm.is_set()

    @property
    def queued_speech_seconds(self) -> float:
        """Seconds of pushed speech not yet played (cheap: for a check at every push)."""
        with self._state.cond:
            return self._state.queued_speech_samples() / self.sample_rate

    @property
    def queued_pictures(self) -> int:
        """Pictures rendered ahead of the clock (bounded by ``config.queue_frames`` + 2)."""
        with self._state.cond:
            return len(self._state.queue)

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the worker and close the face video; the frames end. Safe to call again."""
        if not self._state.close():
            return
        self._clock.wake_readers()
        self._producer.join()
        self._pictures.reader.close()

    def __enter__(self) -> LiveSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["LiveSession"]
