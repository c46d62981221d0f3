"""iplap's always-on avatar as a LiveKit Agents video generator: :class:`IplapVideoGenerator`.

``pip install "iplap[livekit]"``. The generator is a
``livekit.agents.voice.avatar.VideoGenerator`` for ``AvatarRunner``, fed by a
``QueueAudioOutput`` that an ``AgentSession`` speaks into (see
``examples/livekit_worker.py``)::

    pipe = iplap.Pipeline("bundle", iplap.PipelineConfig(refs=2))
    video_gen = IplapVideoGenerator(pipe, "face.png", sample_rate=24000)
    audio = QueueAudioOutput(sample_rate=video_gen.options.audio_sample_rate)
    session.output.audio = audio
    runner = AvatarRunner(ctx.room, audio_recv=audio, video_gen=video_gen, options=video_gen.options)
    await runner.start()
    ...
    await runner.aclose()
    await video_gen.aclose()

It drives one :class:`iplap.LiveSession` (``Pipeline.open_live``) and only that public API.

Contract with ``AvatarRunner`` (livekit-agents 1.x, ``voice/avatar/_runner.py``):

* ``push_audio(frame)`` gets the agent's speech as ``rtc.AudioFrame`` (int16; resampled to
  the generator's rate and mixed to its channels here where they differ) and
  ``AudioSegmentEnd`` when a reply is complete. Frames of one segment are one turn of the
  live session (``push``); ``AudioSegmentEnd`` is ``end_of_turn()``. It never blocks: the
  live session holds the speech until it plays.
* Iterating the generator gives, every 40 ms for as long as it is open, an ``rtc.VideoFrame``
  (RGBA or RGB24, the avatar's full frame size, see :attr:`IplapVideoGenerator.options`),
  followed while a turn plays by the ``rtc.AudioFrame`` of the same 40 ms (int16, exactly
  that frame's samples at the session rate). Idle frames carry no audio: the runner counts
  every audio frame as playback (``notify_playback_started`` at the first, the position is
  their total), so idle silence would start playback early and stretch its position. The
  generator is always on: idle frames flow before, between and after replies.
* After a turn's last frame comes ``AudioSegmentEnd``: the runner then reports playback
  finished (not interrupted), with the turn's length as its position.
* ``clear_buffer()`` (the runner calls it on an interruption) is ``interrupt()``: queued
  speech is dropped, the next frame is idle, and no frame or ``AudioSegmentEnd`` of an
  interrupted turn is yielded after it (those already on their way are discarded), since
  the runner itself reports that playback as interrupted, with what had played.

Threads and back-pressure. ``LiveSession.frames()`` blocks, so an :class:`iplap.LiveBridge`
iterates it on a thread, converts each frame to rtc frames there (off the event loop) and
hands them to the loop, at most ``max_pending_frames`` at a time; when the consumer is
slower, that thread waits, and with it the live session's clock consumer (nothing is
dropped). :meth:`aclose` closes the live session and joins the thread.

Pacing: who keeps time. Both the live session (``realtime=True``, the default) and the
runner's ``rtc.AVSynchronizer`` pace 25 fps frames, each on an absolute schedule of its own
monotonic clock (frame n at start + n / 25), so neither drifts against the other; the
synchronizer's clock starts at the first frame it gets, so its waits are about zero and it
adds no delay of its own. The live session's clock is the one that matters: it decides
each frame at its time from what is rendered, holding pictures when the machine renders
slower than real time, so that audio stays continuous. Where the consumer falls behind
(an event-loop stall, or the runner waiting for the first subscriber before it publishes),
the frames due are decided at once and the synchronizer's bounded queues (two video frames,
100 ms of audio) pace them from then on: the extra latency is bounded by those queues and
``max_pending_frames`` (a few 40 ms frames), and it never grows. ``realtime=False`` leaves
the synchronizer as the only clock and renders every frame, waiting for each: only for a
machine that renders faster than real time (and for tests), since otherwise the audio
waits for the pictures and stutters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarOptions, VideoGenerator

import iplap

#: Video buffer types the generator makes from the avatar's BGR frames.
VIDEO_FORMATS = ("rgba", "rgb24")
DEFAULT_SAMPLE_RATE = 24000  # what LiveKit's TTS plugins and avatar examples use


@dataclass(frozen=True)
class _Item:
    """One live frame as rtc frames, converted on the bridge's thread."""

    turn: int | None
    video: rtc.VideoFrame
    audio: rtc.AudioFrame | None  # None while idle
    segment_end: bool  # the turn's last frame: AudioSegmentEnd follows


class IplapVideoGenerator(VideoGenerator):
    """A LiveKit ``VideoGenerator`` showing an iplap avatar, lip-synced to the agent's speech.

    ``pipeline``: an :class:`iplap.Pipeline`; ``face``: a photo or face video path, or an
    :class:`iplap.Avatar` already prepared with it (preparing takes seconds: do it once).
    ``sample_rate``/``channels``: the audio the generator plays (and the runner's
    ``AvatarOptions``); speech pushed at another rate is resampled. ``realtime``: whose clock
    paces frames (see the module docstring). ``video_format``: ``"rgba"`` or ``"rgb24"``.
    ``live_config``: an ``iplap.LiveConfig`` for the live session (fade, queue; None: defaults).
    ``max_pending_frames``: frames converted ahead of the consumer.

    Errors a caller can cause are :class:`iplap.IplapError` (one line).
    """

    def __init__(self, pipeline: iplap.Pipeline, face: str | Path | iplap.Avatar, *,
                 sample_rate: int = DEFAULT_SAMPLE_RATE, channels: int = 1, realtime: bool = True,
                 video_format: str = "rgba", live_config: iplap.LiveConfig | None = None,
                 max_pending_frames: int = 2):
        if video_format not in VIDEO_FORMATS:
            raise iplap.IplapError(f"video_format must be one of {', '.join(VIDEO_FORMATS)}, not {video_format!r}")
        if int(max_pending_frames) < 1:
            raise iplap.IplapError(f"max_pending_frames must be at least 1, not {max_pending_frames!r}")
        avatar = face if isinstance(face, iplap.Avatar) else pipeline.prepare(face)
        self._format = video_format
        self._width, self._height = avatar.frame_size
        self._live = pipeline.open_live(avatar, sample_rate, channels, realtime=realtime, config=live_config)
        self.sample_rate, self.channels = self._live.sample_rate, self._live.channels
        self._bridge = iplap.LiveBridge(self._live, self._convert, int(max_pending_frames))
        self._iterating = False
        self._started = False
        self._closed = False
        # Frames of turns below the floor were interrupted (the session numbers its turns;
        # push() says which one the speech joined).
        self._last_turn: int | None = None
        self._turn_floor = 0
        self._resampler: rtc.AudioResampler | None = None
        self._resampler_key: tuple[int, int] | None = None

    # -- what the runner needs ------------------------------------------------------------
    @property
    def options(self) -> AvatarOptions:
        """``AvatarOptions`` for ``AvatarRunner``: the avatar's frame size, 25 fps, the audio format."""
        return AvatarOptions(video_width=self._width, video_height=self._height, video_fps=float(iplap.FPS),
                             audio_sample_rate=self.sample_rate, audio_channels=self.channels)

    @property
    def session(self) -> iplap.LiveSession:
        """The live session behind the generator (for its ``stats()`` and ``queued_pictures``)."""
        return self._live

    def stats(self):
        """The live session's ``LiveStats`` (frames, turns played, interrupted, real-time factor)."""
        return self._live.stats()

    # -- speech in ------------------------------------------------------------------------
    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        """Queue a frame of the agent's speech, or end the reply (``AudioSegmentEnd``)."""
        self._check_open()
        if isinstance(frame, AudioSegmentEnd):
            if self._resampler is not None:
                for tail in self._resampler.flush():
                    self._push(self._mixed(tail))
                self._resampler = self._resampler_key = None
            self._live.end_of_turn()  # nothing to end after an interruption: a no-op
            return
        if not isinstance(frame, rtc.AudioFrame):
            raise iplap.IplapError(f"push_audio takes an rtc.AudioFrame or AudioSegmentEnd, not {type(frame).__name__}")
        if frame.sample_rate == self.sample_rate:
            self._push(self._mixed(frame))
            return
        key = (frame.sample_rate, frame.num_channels)
        if self._resampler_key != key:
            if self._resampler is not None:  # the format changed mid-reply: play what it holds
                for tail in self._resampler.flush():
                    self._push(self._mixed(tail))
            self._resampler = rtc.AudioResampler(frame.sample_rate, self.sample_rate, num_channels=frame.num_channels)
            self._resampler_key = key
        for resampled in self._resampler.push(frame):
            self._push(self._mixed(resampled))

    def _mixed(self, frame: rtc.AudioFrame) -> np.ndarray:
        """The frame's int16 samples shaped (n, self.channels): averaged to mono, or mono copied."""
        samples = np.frombuffer(frame.data, dtype=np.int16).reshape(-1, frame.num_channels)
        if frame.num_channels == self.channels:
            return samples
        if self.channels == 1:
            return np.round(samples.mean(axis=1, keepdims=True)).astype(np.int16)
        if frame.num_channels == 1:
            return np.repeat(samples, self.channels, axis=1)
        raise iplap.MediaError(f"cannot play {frame.num_channels}-channel speech on {self.channels} channels")

    def _push(self, samples: np.ndarray) -> None:
        if len(samples):
            self._last_turn = self._live.push(samples)

    def clear_buffer(self) -> None:
        """Stop the reply now: drop its queued speech; the next frames are idle.

        The runner reports the interrupted playback itself; no frame of the interrupted
        turns, nor their ``AudioSegmentEnd``, comes after this call."""
        if self._closed:
            return
        if self._last_turn is not None:
            self._turn_floor = self._last_turn + 1
        self._resampler = self._resampler_key = None
        self._live.interrupt()

    # -- frames out -----------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        self._check_open()
        if self._iterating:
            raise iplap.IplapError("an IplapVideoGenerator is iterated by one consumer at a time")
        self._iterating = True
        try:
            if not self._started:
                self._started = True
                self._bridge.start()
            async for item in self._bridge:
                if self._cut(item):
                    continue  # interrupted on its way here
                yield item.video
                # The runner may call clear_buffer() while the picture is with it: then neither
                # the picture's audio nor the turn's end follows (it would start a new playback).
                if item.audio is not None and not self._cut(item):
                    yield item.audio
                if item.segment_end and not self._cut(item):
                    yield AudioSegmentEnd()
        finally:
            self._iterating = False

    def _cut(self, item: _Item) -> bool:
        """The item belongs to a turn that clear_buffer() interrupted."""
        return item.turn is not None and item.turn < self._turn_floor

    def _convert(self, frame: iplap.LiveFrame) -> _Item:
        """A live frame as rtc frames (on the bridge's thread)."""
        finished = any(e.kind == "playback_finished" and not e.interrupted for e in frame.events)
        audio = self._audio_frame(frame.pcm16()) if frame.speaking else None
        return _Item(frame.turn, self._video_frame(frame.image), audio, finished)

    def _video_frame(self, image: np.ndarray) -> rtc.VideoFrame:
        height, width = image.shape[:2]
        if (height, width) != (self._height, self._width):
            raise iplap.IplapError(f"the live session gave a {width}x{height} frame; "
                                   f"the avatar's tracks are {self._width}x{self._height}")
        if self._format == "rgba":
            pixels = np.empty((height, width, 4), np.uint8)
            pixels[..., :3] = image[..., ::-1]
            pixels[..., 3] = 255
            kind = rtc.VideoBufferType.RGBA
        else:
            pixels = np.ascontiguousarray(image[..., ::-1])
            kind = rtc.VideoBufferType.RGB24
        return rtc.VideoFrame(width, height, kind, pixels.tobytes())

    def _audio_frame(self, pcm: np.ndarray) -> rtc.AudioFrame:
        return rtc.AudioFrame(pcm.tobytes(), self.sample_rate, self.channels, len(pcm))

    # -- lifetime -------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise iplap.IplapError("the iplap video generator is closed")

    async def aclose(self) -> None:
        """Close the live session and join its threads; the iteration ends. Safe to call again."""
        if self._closed:
            return
        self._closed = True
        await self._bridge.aclose()  # waits for the render step under way


__all__ = ["DEFAULT_SAMPLE_RATE", "VIDEO_FORMATS", "IplapVideoGenerator"]
