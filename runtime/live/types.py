"""What a live session is configured with and gives: :class:`LiveConfig`, :class:`LiveFrame`,
:class:`LiveEvent` and :class:`LiveStats`.

Frames and audio (this file's part of the contract). Frame ``n`` of the session clock
covers samples ``AudioFormat.frame_span(n)``, so the frames' audio adds up to the clock
exactly; its ``audio`` is float32 shaped (samples, channels) (int16 speech is scaled by
1/32768, as the audio contract reads it, and :meth:`LiveFrame.pcm16` gives it back bit for
bit): the playing turn's own next samples, taken in order (zero-padded at the turn's end),
or silence while idle. Each frame also carries the playback events that happen with it
(:attr:`LiveFrame.events`): what a front end tells its client as it shows the frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..constants import FPS
from ..pcm import to_pcm16

#: Playback events kept for ``LiveSession.events()`` (a reader that falls behind loses the oldest).
EVENTS_KEPT = 256


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
    #: Render silence twice when the session opens, on a thread of its own while the idle
    #: loop goes on: the graphs, the kernels and the avatar's compiled flow are warm before
    #: the first turn, and k starts from the second (warm) render's time, so the first reply
    #: moves like the tenth. The first turn waits for it to end. (With a clock only: without
    #: one, nothing waits for a render.)
    warm_up: bool = True
    #: What a frame between two renders shows (see :mod:`.gaps`): ``"warp"`` (the render
    #: before it, its face moved to the frame's own landmarks: no look-ahead), ``"morph"``
    #: (both renders' faces moved and mixed; warp where the render after it would be late)
    #: or ``"hold"`` (the last picture, unchanged). Warp by default: on 2 cores both give 25
    #: distinct pictures a second, and warp costs the renderer 8-14 % of its pictures, morph
    #: 12-17 % (``iplap bench --live --live-modes hold,warp,morph``, docs/benchmarks.md);
    #: morph is 1.9 dB closer to real footage at k = 5 (``iplap bench --inbetween``).
    inbetween: str = "warp"
    #: The longest gap between renders given in-between pictures; a longer one (a machine
    #: more than this many times slower than real time) holds, as ``"hold"`` does. It bounds
    #: the pictures made ahead of the clock (at most ``queue_frames + 2 + 2 * max_gap``; on
    #: real footage in-betweens still beat holding by 3.5-7 dB at k = 8, ``iplap bench
    #: --inbetween``, but a warped mouth drifts further from the truth the longer the gap).
    max_gap: int = 16

    def __post_init__(self):
        from ..inbetween import MODES  # numpy and OpenCV only

        if self.inbetween not in MODES:
            raise ValueError(f"unknown in-between mode {self.inbetween!r}: choose {', '.join(MODES)}")


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

    @property
    def before_frame(self) -> bool:
        """Whether the event happens before its frame is shown: a start (just before the turn's
        first frame) and an interruption (just before the first idle frame); a turn that plays
        to its end finishes after its last frame."""
        return self.kind == "playback_started" or self.interrupted


@dataclass
class LiveFrame:
    """One frame of a live session, with the audio that plays with it."""

    index: int  # frame of the session clock (25 fps from the first frames() call)
    image: np.ndarray  # (H, W, 3) uint8 BGR, the full frame; read-only where it is the face video's own
    audio: np.ndarray  # (samples, channels) float32: this frame's 40 ms, silence while idle
    speaking: bool  # a turn is playing
    turn: int | None = None  # which turn (0, 1, ...), None while idle
    held: bool = False  # the picture was not made for this frame (an earlier one held)
    #: The playback events that happen with this frame, in order (see ``LiveEvent.before_frame``).
    events: tuple[LiveEvent, ...] = ()

    @property
    def time(self) -> float:
        return self.index / FPS

    def pcm16(self) -> np.ndarray:
        """This frame's audio as int16 (samples, channels), the inverse of how int16 is read."""
        return to_pcm16(self.audio)


@dataclass
class LiveStats:
    """What a live session has done so far (a snapshot); :meth:`as_dict` is how every front
    end (the service, the benchmark, the adapters) reports it."""

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
    keyframes_shown: int = 0  # speaking frames that showed a picture the renderer made for them
    inbetween_shown: int = 0  # speaking frames that showed an in-between made for them (LiveConfig.inbetween)

    def per_second(self, count: int) -> float:
        """``count`` per second of speaking frames shown."""
        return count * FPS / self.speaking_frames if self.speaking_frames else 0.0

    @property
    def distinct_shown(self) -> int:
        """Speaking frames whose mouth followed their own landmarks (rendered or in-between)."""
        return self.keyframes_shown + self.inbetween_shown

    @property
    def slower_than_real_time(self) -> bool:
        return self.real_time_factor > 1.0

    def as_dict(self) -> dict:
        """The snapshot as JSON-ready values, seconds in keys ending ``_s`` (rounded to 0.1 ms)."""
        latencies = [round(x, 4) for x in self.latencies]
        return {"frames": self.frames, "speaking_frames": self.speaking_frames, "rendered": self.rendered,
                "renders": self.renders, "held_frames": self.held, "stalls": self.stalls, "turns": self.turns,
                "interrupted": self.interrupted, "k": self.k, "workers": self.workers,
                "real_time_factor": round(self.real_time_factor, 3), "latencies_s": latencies,
                "mean_latency_s": round(sum(latencies) / len(latencies), 4) if latencies else None,
                "queued_speech_s": round(self.queued_speech_seconds, 3),
                "keyframes_shown": self.keyframes_shown, "inbetween_shown": self.inbetween_shown,
                "keyframes_per_s": round(self.per_second(self.keyframes_shown), 2),
                "inbetween_per_s": round(self.per_second(self.inbetween_shown), 2),
                "distinct_per_s": round(self.per_second(self.distinct_shown), 2),
                "stage_s": {k: round(v, 4) for k, v in self.stage_seconds.items()}}


__all__ = ["EVENTS_KEPT", "LiveConfig", "LiveEvent", "LiveFrame", "LiveStats"]
