"""A Pipecat video service: iplap's always-on, lip-synced avatar after the TTS.

:class:`IplapVideoService` goes where Pipecat's own avatar services (Simli, Tavus, HeyGen)
go, between the TTS and the output transport::

    pipeline = Pipeline([transport.input(), stt, user_agg, llm, tts,
                         IplapVideoService(bundle="bundle", face="face.png"),
                         transport.output(), assistant_agg])

It drives one :class:`iplap.LiveSession` (``Pipeline.open_live``) for as long as the
pipeline runs; nothing in it renders a face. The contract:

Frames in. ``TTSAudioRawFrame`` (int16, any rate, mono or stereo: stereo is averaged to
mono) is pushed into the live session and *not* passed on: the speech reaches the
transport again as the audio of the pictures it is lip-synced to, so it never plays
twice. ``TTSStartedFrame`` and ``TTSStoppedFrame`` are held back and pushed in step with
playback: the started frame just before the reply's first picture, the stopped frame just
after its last, so the output transport's "bot speaking" state follows what is heard
(a reply without audio has both passed on when its stopped frame comes). A
``TTSStoppedFrame`` ends the live turn (its last frames flush and fade out); so does a gap
in the TTS audio of ``end_of_turn_after_s`` while less than that much speech is left to
play (a TTS that pushes its stopped frame seconds after its last audio would otherwise
freeze the picture at the end of the reply). An ``InterruptionFrame`` (from either
direction) interrupts the session: queued speech is dropped, pictures of the interrupted
reply that are not yet pushed are discarded, the held stopped frame is dropped (the
interruption tells the transport), and the next pictures are idle; the frame itself is
passed on. Every other frame passes through unchanged and at once (text frames are not
delayed to the pictures).

Frames out, 25 per second of the session clock, always (idle while the bot is silent):
for each :class:`iplap.LiveFrame`, an ``OutputImageRawFrame`` (RGB, the face file's full
size, :attr:`IplapVideoService.frame_size`), then the audio that plays with it, exactly
its 40 ms at the session rate, int16 mono: a ``TTSAudioRawFrame`` (with the reply's
``context_id``) while speaking, a plain ``OutputAudioRawFrame`` of silence while idle
(``idle_audio=False`` leaves those out). Pictures are marked ``sync_with_audio``, so that
Pipecat's output transport shows each one only once the audio before it has been sent: a
picture appears as its own audio starts. That routing feeds the transport's non-live
video path, so use ``TransportParams(video_out_is_live=False, video_out_framerate=25,
video_out_width/height=frame_size)``; pass ``sync_with_audio=False`` for a transport with
``video_out_is_live=True`` (pictures are then shown as they arrive, audio as it plays).

Sample rate. The session runs at ``sample_rate`` if given (the output transport's rate,
so that it does not resample again), else at the pipeline's ``audio_out_sample_rate``
(``PipelineParams``, given to every processor's ``setup``; Pipecat's TTS services and
output transports use it unless told otherwise, so it is the first TTS frame's rate in
the usual pipeline). It has to be fixed when the pipeline starts,
since idle frames (and their audio) flow from then on, before any TTS frame. TTS audio at
another rate is resampled to it with Pipecat's stream resampler, one per reply, flushed at
its end; at the session rate it is pushed as it is, and the audio that comes out is then
the TTS samples bit for bit.

Threads and back-pressure. ``LiveSession.frames()`` blocks, so an :class:`iplap.LiveBridge`
iterates it on a thread, converts each frame there (BGR to RGB bytes, float32 to int16)
and hands it to the event loop, ``queue_frames`` at most; a full queue blocks that thread
(the session's clock then delivers the frames that fell due at once when it goes on: it
does not wait). A task on the loop pushes the frames downstream; which TTS frames go with
them is :class:`~.pipecat_replies.Replies`' to say. With
``realtime=True`` (the default) frames come at 25 fps of the wall clock; ``realtime=False``
makes them as fast as they render (files and tests: the pipeline then runs as fast as its
slowest stage takes frames).

Lifetime. The face is prepared and the bundle opened in the constructor, so a bad bundle
or face fails there, with the runtime's one-line :class:`iplap.IplapError`
(``BundleError``, ``MediaError``, ``NoFaceError``, ``AvatarError``). The live session opens
on ``StartFrame``. ``EndFrame`` ends it gracefully: an open reply is ended, the service
waits (up to the speech still queued plus ``end_timeout_s``) until the last reply has
played and an idle frame followed, closes the session, joins the thread and pushes the
frames still queued before the ``EndFrame``. ``CancelFrame`` closes at once and drops the
queued frames. A failure of the live session is pushed upstream as a fatal error.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from loguru import logger
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.services.ai_service import AIService
from pipecat.services.settings import ServiceSettings

import iplap

from .pipecat_replies import Replies

#: Seconds between checks for a gap in the TTS audio.
_WATCH_SECONDS = 0.05


@dataclass
class _Picture:
    """One live frame, converted on the bridge's thread: ready to become Pipecat frames."""

    index: int
    turn: int | None
    rgb: bytes
    size: tuple[int, int]  # (width, height)
    audio: bytes  # int16 mono, this frame's 40 ms


class IplapVideoService(AIService):
    """A lip-synced, always-on avatar for a Pipecat pipeline, placed after the TTS.

    See the module docstring for the frames it takes and gives, the sample rate, the
    threads and the lifetime.
    """

    def __init__(self, *, face: str | Path | iplap.Avatar, bundle: str | Path | iplap.Bundle | None = None,
                 pipeline: iplap.Pipeline | None = None, pipeline_config: iplap.PipelineConfig | None = None,
                 sample_rate: int | None = None, realtime: bool = True, live_config: iplap.LiveConfig | None = None,
                 end_of_turn_after_s: float = 0.5, queue_frames: int = 4, sync_with_audio: bool = True,
                 idle_audio: bool = True, end_timeout_s: float = 5.0, **kwargs):
        """Open the bundle and prepare the face (seconds; errors are :class:`iplap.IplapError`).

        Args:
            face: the face, a photo or a video file, or an :class:`iplap.Avatar` prepared
                (or loaded) by the same pipeline.
            bundle: the model bundle (a folder or an :class:`iplap.Bundle`); or give
                ``pipeline`` instead, to share one pipeline between services.
            pipeline: an :class:`iplap.Pipeline` to use instead of opening ``bundle``.
            pipeline_config: the :class:`iplap.PipelineConfig` for ``bundle``.
            sample_rate: the session's rate (the output transport's); None: the
                ``StartFrame``'s ``audio_out_sample_rate``.
            realtime: frames at 25 fps of the wall clock (False: as fast as they render).
            live_config: an ``iplap.LiveConfig`` for the session: fades,
                render queue, a fixed ``render_every``.
            end_of_turn_after_s: a gap in the TTS audio this long ends the reply when
                less than this much of it is left to play.
            queue_frames: frames the frames thread may have ready ahead of the event loop.
            sync_with_audio: mark pictures ``sync_with_audio`` (see the module docstring).
            idle_audio: push 40 ms of silence with each idle picture.
            end_timeout_s: on ``EndFrame``, how long past the queued speech to wait for the
                last reply to play before closing anyway.
            **kwargs: passed to :class:`AIService`.
        """
        super().__init__(settings=ServiceSettings(model=None), **kwargs)
        if (bundle is None) == (pipeline is None):
            raise iplap.IplapError("IplapVideoService needs a bundle or a pipeline (one of the two)")
        if sample_rate is not None:
            iplap.AudioFormat(sample_rate)  # the audio contract's check, before anything is loaded
        if queue_frames < 1:
            raise iplap.IplapError(f"queue_frames must be at least 1, not {queue_frames}")
        self._pipe = pipeline if pipeline is not None else iplap.Pipeline(bundle, pipeline_config)
        self._avatar = face if isinstance(face, iplap.Avatar) else self._pipe.prepare(face)
        self._sample_rate = int(sample_rate) if sample_rate is not None else None
        self._realtime = realtime
        self._live_config = live_config
        self._end_after = float(end_of_turn_after_s)
        self._queue_frames = int(queue_frames)
        self._sync_with_audio = sync_with_audio
        self._idle_audio = idle_audio
        self._end_timeout = float(end_timeout_s)

        self._live: iplap.LiveSession | None = None
        self._bridge: iplap.LiveBridge | None = None
        self._deliver_task: asyncio.Task | None = None
        self._watch_task: asyncio.Task | None = None
        self._push_lock: asyncio.Lock | None = None
        self._closed = False
        self._replies = Replies()  # the TTS frames to push with the pictures
        self._resampler = None  # the open turn's, where the TTS rate differs
        self._resample_from: int | None = None
        self._last_audio = 0.0  # monotonic time of the last TTS audio
        self._drained: asyncio.Event | None = None  # set by an idle picture with no reply pending

    # -- what a bot needs to know -----------------------------------------------------------
    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of the pictures: set the output transport's video size to it."""
        return self._avatar.frame_size

    @property
    def sample_rate(self) -> int | None:
        """The live session's rate (None until the pipeline starts, unless given)."""
        return self._sample_rate

    @property
    def avatar(self) -> iplap.Avatar:
        return self._avatar

    def live_stats(self):
        """The live session's ``LiveStats`` (real-time factor, k, latencies), or None before start."""
        return self._live.stats() if self._live is not None else None

    def can_generate_metrics(self) -> bool:
        return False

    # -- lifetime ---------------------------------------------------------------------------
    async def setup(self, setup: FrameProcessorSetup):
        await super().setup(setup)
        if self._sample_rate is None:
            self._sample_rate = int(setup.audio_out_sample_rate)

    async def start(self, frame: StartFrame):
        await super().start(frame)
        self._push_lock = asyncio.Lock()
        self._drained = asyncio.Event()
        try:
            self._live = await asyncio.to_thread(
                self._pipe.open_live, self._avatar, sample_rate=self._sample_rate, channels=1,
                realtime=self._realtime, config=self._live_config)
        except iplap.IplapError as exc:
            await self.push_error(f"iplap live session: {exc}", exception=exc, fatal=True)
            return
        self._bridge = iplap.LiveBridge(self._live, _convert, self._queue_frames)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._begin()  # after the StartFrame: nothing may overtake it downstream
        elif isinstance(frame, InterruptionFrame):
            await self._interrupt()
            await self.push_frame(frame, direction)
        elif direction != FrameDirection.DOWNSTREAM:
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSAudioRawFrame):
            await self._speech(frame)
        elif isinstance(frame, TTSStartedFrame):
            await self._reply_started(frame)
        elif isinstance(frame, TTSStoppedFrame):
            await self._reply_stopped(frame)
        else:
            await self.push_frame(frame, direction)

    def _begin(self) -> None:
        if self._bridge is None or self._closed:
            return
        self._bridge.start()
        self._deliver_task = self.create_task(self._deliver(), name="iplap-deliver")
        self._watch_task = self.create_task(self._watch(), name="iplap-watch")

    async def stop(self, frame: EndFrame):
        await super().stop(frame)
        await self._shutdown(drain=True)

    async def cancel(self, frame: CancelFrame):
        await super().cancel(frame)
        await self._shutdown(drain=False)

    async def cleanup(self):
        await super().cleanup()
        await self._shutdown(drain=False)

    async def _shutdown(self, drain: bool) -> None:
        """Close the session and join the frames thread; with ``drain``, play the last reply
        out first and push the frames still queued. Safe to call again."""
        if self._closed:
            return
        self._closed = True
        if self._live is None:
            return
        if drain and self._deliver_task is not None:
            await self._end_turn()
            self._drained.clear()
            if self._replies.pending:
                timeout = self._live.stats().queued_speech_seconds + self._end_timeout
                if self._live.warming:  # the reply waits for the session's warm-up (two renders) to start
                    timeout += self._end_timeout
                try:
                    await asyncio.wait_for(self._drained.wait(), timeout)
                except asyncio.TimeoutError:
                    logger.warning(f"{self}: the last reply did not play out in {timeout:.1f} s; closing")
        if self._watch_task is not None:
            await self.cancel_task(self._watch_task)
            self._watch_task = None
        await self._bridge.aclose(drain=drain)
        if self._deliver_task is not None:
            if drain:
                await self._deliver_task  # it pushes what is queued, then returns
            else:
                await self.cancel_task(self._deliver_task)
            self._deliver_task = None

    # -- pushing frames downstream (a task on the loop) -------------------------------------
    async def _deliver(self) -> None:
        try:
            async for picture in self._bridge:
                async with self._push_lock:
                    await self._push_picture(picture)
        except Exception as exc:  # noqa: BLE001 - the live session failed: a fatal error upstream
            await self.push_error(f"iplap live session failed: {exc}", exception=exc, fatal=True)

    async def _push_picture(self, p: _Picture) -> None:
        """Push one picture and its audio, with the TTS frames of replies starting or ending."""
        replies = self._replies
        if not replies.wanted(p.turn):
            return  # made before an interruption
        for frame in replies.before_picture(p.turn):
            await self.push_frame(frame)
        image = OutputImageRawFrame(image=p.rgb, size=p.size, format="RGB")
        image.sync_with_audio = self._sync_with_audio
        await self.push_frame(image)
        if p.turn is not None:
            await self.push_frame(TTSAudioRawFrame(audio=p.audio, sample_rate=self._sample_rate, num_channels=1,
                                                   context_id=replies.context_id(p.turn)))
        else:
            if self._idle_audio:
                await self.push_frame(OutputAudioRawFrame(audio=p.audio, sample_rate=self._sample_rate,
                                                          num_channels=1))
            if replies.drained:
                self._drained.set()

    # -- speech in (the service's frame task) -----------------------------------------------
    async def _reply_started(self, frame: TTSStartedFrame) -> None:
        await self._end_turn()  # a reply still open (its stopped frame never came) ends here
        self._replies.context_started(frame)

    async def _speech(self, frame: TTSAudioRawFrame) -> None:
        if self._live is None or self._closed or not self._replies.accepting:
            return
        audio = frame.audio
        if frame.num_channels > 1:
            stereo = np.frombuffer(audio, np.int16).reshape(-1, frame.num_channels)
            audio = np.round(stereo.mean(axis=1)).astype(np.int16).tobytes()
        if frame.sample_rate != self._sample_rate:
            if self._resampler is None or self._resample_from != frame.sample_rate:
                await self._flush_resampler()
                self._resampler, self._resample_from = create_stream_resampler(), frame.sample_rate
            audio = await self._resampler.resample(audio, frame.sample_rate, self._sample_rate)
        self._last_audio = time.monotonic()
        self._push_speech(np.frombuffer(audio, np.int16), frame.context_id)

    def _push_speech(self, samples: np.ndarray, context_id: str | None) -> None:
        """Push samples into the open turn, or a new one (the session says which)."""
        if not len(samples):
            return
        try:
            turn = self._live.push(samples)
        except iplap.IplapError as exc:
            logger.error(f"{self}: {exc}")
            return
        self._replies.speech_joined(turn, context_id)

    async def _reply_stopped(self, frame: TTSStoppedFrame) -> None:
        await self._end_turn()
        for passed in self._replies.context_stopped(frame):
            await self.push_frame(passed)

    async def _end_turn(self) -> None:
        """End the open turn (its resampler's tail is pushed first)."""
        if self._replies.open is None:
            return
        await self._flush_resampler()
        self._replies.open = None
        if self._live is not None:
            try:
                self._live.end_of_turn()
            except iplap.IplapError as exc:
                logger.error(f"{self}: {exc}")

    async def _flush_resampler(self) -> None:
        resampler, self._resampler = self._resampler, None
        if resampler is not None and self._replies.open is not None:
            self._push_speech(np.frombuffer(await resampler.flush(), np.int16), None)

    async def _interrupt(self) -> None:
        """Interrupt the session; pictures of the interrupted turns still queued are dropped
        as they come, so the next picture pushed is idle."""
        if self._live is None:
            return
        async with self._push_lock:
            self._live.interrupt()
            self._resampler = None
            self._replies.interrupted()

    async def _watch(self) -> None:
        """End the open turn after a gap in the TTS audio, before its speech runs out."""
        while True:
            await asyncio.sleep(_WATCH_SECONDS)
            if self._replies.open is None or time.monotonic() - self._last_audio < self._end_after:
                continue
            if self._live.stats().queued_speech_seconds <= self._end_after:
                await self._end_turn()


def _convert(frame: iplap.LiveFrame) -> _Picture:
    """A live frame as bytes (on the bridge's thread): the picture BGR -> RGB, the audio int16 mono."""
    height, width = frame.image.shape[:2]
    rgb = frame.image[:, :, ::-1].tobytes()  # one copy, in RGB order
    audio = frame.pcm16()[:, 0].tobytes()
    return _Picture(frame.index, frame.turn, rgb, (width, height), audio)


__all__ = ["IplapVideoService"]
