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

Threads and back-pressure. ``LiveSession.frames()`` blocks, so one thread of this service
(``iplap-pipecat``) iterates it, converts each frame (BGR to RGB bytes, float32 to int16)
and hands it to the event loop through a queue of ``queue_frames`` frames; a full queue
blocks that thread (the session's clock then delivers the frames that fell due at once
when it goes on: it does not wait). A task on the loop pushes the frames downstream. With
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
import queue
import threading
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

#: Seconds between checks for a gap in the TTS audio.
_WATCH_SECONDS = 0.05


@dataclass
class _Picture:
    """One live frame, converted on the frames thread: ready to become Pipecat frames."""

    index: int
    turn: int | None
    rgb: bytes
    size: tuple[int, int]  # (width, height)
    audio: bytes  # int16 mono, this frame's 40 ms


@dataclass
class _Reply:
    """A live turn: the TTS frames to push when it starts and ends playing."""

    context_id: str | None
    started: TTSStartedFrame | None = None
    stopped: TTSStoppedFrame | None = None
    played: bool = False


@dataclass
class _Context:
    """The TTS context being received (TTSStartedFrame .. TTSStoppedFrame)."""

    started: TTSStartedFrame | None
    last_reply: _Reply | None = None  # its most recent live turn
    interrupted: bool = False  # its frames still to come are dropped


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
        if sample_rate is not None and not iplap.MIN_SAMPLE_RATE <= int(sample_rate) <= iplap.MAX_SAMPLE_RATE:
            raise iplap.MediaError(f"sample_rate {sample_rate} Hz is outside "
                                   f"{iplap.MIN_SAMPLE_RATE}..{iplap.MAX_SAMPLE_RATE} Hz")
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
        self._thread: threading.Thread | None = None
        self._items: queue.Queue = queue.Queue(maxsize=self._queue_frames)
        self._stopping = threading.Event()  # the frames thread stops handing frames over
        self._thread_done = False
        self._wake: asyncio.Event | None = None
        self._deliver_task: asyncio.Task | None = None
        self._watch_task: asyncio.Task | None = None
        self._push_lock: asyncio.Lock | None = None
        self._closed = False

        # What the event loop knows of the session's turns (it is the only one that pushes).
        self._next_turn = 0  # the number the session gives the next turn it opens
        self._open: int | None = None  # the turn speech is being pushed into
        self._replies: dict[int, _Reply] = {}  # turns pushed and not yet played to their end
        self._cutoff = 0  # pictures of turns below this were interrupted: dropped
        self._context: _Context | None = None
        self._resampler = None  # the open turn's, where the TTS rate differs
        self._resample_from: int | None = None
        self._last_audio = 0.0  # monotonic time of the last TTS audio
        self._showing: int | None = None  # the turn of the last picture pushed
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
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._push_lock = asyncio.Lock()
        self._drained = asyncio.Event()
        try:
            self._live = await asyncio.to_thread(
                self._pipe.open_live, self._avatar, sample_rate=self._sample_rate, channels=1,
                realtime=self._realtime, config=self._live_config)
        except iplap.IplapError as exc:
            await self.push_error(f"iplap live session: {exc}", exception=exc, fatal=True)
            return
        self._thread = threading.Thread(target=self._hand_over, args=(self._live, loop), name="iplap-pipecat",
                                        daemon=True)

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
        if self._thread is None or self._closed:
            return
        self._thread.start()
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
        live = self._live
        if live is None:
            return
        if drain and self._deliver_task is not None:
            await self._end_turn()
            self._drained.clear()
            if self._replies:
                timeout = live.stats().queued_speech_seconds + self._end_timeout
                try:
                    await asyncio.wait_for(self._drained.wait(), timeout)
                except asyncio.TimeoutError:
                    logger.warning(f"{self}: the last reply did not play out in {timeout:.1f} s; closing")
        if self._watch_task is not None:
            await self.cancel_task(self._watch_task)
            self._watch_task = None
        self._stopping.set()
        await asyncio.to_thread(live.close)
        if self._thread is not None and self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)
        self._thread_done = True
        if self._deliver_task is not None:
            if drain:
                self._wake.set()
                await self._deliver_task  # it pushes what is queued, then returns
            else:
                await self.cancel_task(self._deliver_task)
            self._deliver_task = None

    # -- the frames thread ------------------------------------------------------------------
    def _hand_over(self, live: iplap.LiveSession, loop: asyncio.AbstractEventLoop) -> None:
        """Iterate ``live.frames()`` and queue each frame, converted, for the event loop."""
        try:
            for frame in live.frames():
                if not self._put(_convert(frame), loop):
                    return
        except BaseException as exc:  # noqa: BLE001 - reported on the loop, as a fatal error
            self._put(exc, loop)

    def _put(self, item, loop: asyncio.AbstractEventLoop) -> bool:
        """Queue ``item``, waiting while the queue is full; False once the service stops."""
        while not self._stopping.is_set():
            try:
                self._items.put(item, timeout=0.1)
            except queue.Full:
                continue
            try:
                loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                return False
            return True
        return False

    # -- pushing frames downstream (a task on the loop) -------------------------------------
    async def _deliver(self) -> None:
        while True:
            self._wake.clear()
            try:
                item = self._items.get_nowait()
            except queue.Empty:
                if self._thread_done:
                    return
                await self._wake.wait()
                continue
            if isinstance(item, BaseException):
                await self.push_error(f"iplap live session failed: {item}", exception=item, fatal=True)
                return
            async with self._push_lock:
                await self._push_picture(item)

    async def _push_picture(self, p: _Picture) -> None:
        """Push one picture and its audio, with the TTS frames of replies starting or ending."""
        if p.turn is not None and p.turn < self._cutoff:
            return  # made before an interruption
        if p.turn != self._showing:
            if self._showing is not None:
                reply = self._replies.pop(self._showing, None)
                if reply is not None:
                    reply.played = True
                    if reply.stopped is not None:
                        await self.push_frame(reply.stopped)
            reply = self._replies.get(p.turn) if p.turn is not None else None
            if reply is not None and reply.started is not None:
                await self.push_frame(reply.started)
            self._showing = p.turn
        image = OutputImageRawFrame(image=p.rgb, size=p.size, format="RGB")
        image.sync_with_audio = self._sync_with_audio
        await self.push_frame(image)
        if p.turn is not None:
            reply = self._replies.get(p.turn)
            await self.push_frame(TTSAudioRawFrame(audio=p.audio, sample_rate=self._sample_rate, num_channels=1,
                                                   context_id=reply.context_id if reply else None))
        else:
            if self._idle_audio:
                await self.push_frame(OutputAudioRawFrame(audio=p.audio, sample_rate=self._sample_rate,
                                                          num_channels=1))
            if not self._replies and self._open is None:
                self._drained.set()

    # -- speech in (the service's frame task) -----------------------------------------------
    async def _reply_started(self, frame: TTSStartedFrame) -> None:
        await self._end_turn()  # a reply still open (its stopped frame never came) ends here
        self._context = _Context(frame)

    async def _speech(self, frame: TTSAudioRawFrame) -> None:
        if self._live is None or self._closed or self._context is not None and self._context.interrupted:
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
        """Push samples into the open turn, or a new one (the session numbers turns as we do)."""
        if not len(samples):
            return
        if self._open is None:
            if self._context is None:  # audio without a TTSStartedFrame
                self._context = _Context(None)
            context = self._context
            reply = _Reply(context_id, started=context.started if context.last_reply is None else None)
            context.last_reply = reply
            self._open = self._next_turn
            self._next_turn += 1
            self._replies[self._open] = reply
        try:
            self._live.push(samples)
        except iplap.IplapError as exc:
            logger.error(f"{self}: {exc}")

    async def _reply_stopped(self, frame: TTSStoppedFrame) -> None:
        await self._end_turn()
        context, self._context = self._context, None
        reply = context.last_reply if context is not None else None
        if context is not None and context.interrupted:
            return  # the interruption has told the transport
        if reply is None:  # no audio came: nothing plays, so nothing waits for it
            if context is not None and context.started is not None:
                await self.push_frame(context.started)
            await self.push_frame(frame)
        elif reply.played:  # ended by a gap, and played out before this came
            await self.push_frame(frame)
        else:
            reply.stopped = frame

    async def _end_turn(self) -> None:
        """End the open turn (its resampler's tail is pushed first)."""
        if self._open is None:
            return
        await self._flush_resampler()
        self._open = None
        if self._live is not None:
            try:
                self._live.end_of_turn()
            except iplap.IplapError as exc:
                logger.error(f"{self}: {exc}")

    async def _flush_resampler(self) -> None:
        resampler, self._resampler = self._resampler, None
        if resampler is not None and self._open is not None:
            self._push_speech(np.frombuffer(await resampler.flush(), np.int16), None)

    async def _interrupt(self) -> None:
        """Interrupt the session; pictures of the interrupted turns still queued are dropped
        as they come (``_cutoff``), so the next picture pushed is idle."""
        if self._live is None:
            return
        async with self._push_lock:
            self._live.interrupt()
            self._cutoff = self._next_turn
            self._open = None
            self._resampler = None
            self._replies.clear()
            if self._context is not None:
                self._context.interrupted = True

    async def _watch(self) -> None:
        """End the open turn after a gap in the TTS audio, before its speech runs out."""
        while True:
            await asyncio.sleep(_WATCH_SECONDS)
            if self._open is None or time.monotonic() - self._last_audio < self._end_after:
                continue
            if self._live.stats().queued_speech_seconds <= self._end_after:
                await self._end_turn()


def _convert(frame: iplap.LiveFrame) -> _Picture:
    """A live frame as bytes: the picture BGR -> RGB, the audio float32 -> int16 mono."""
    height, width = frame.image.shape[:2]
    rgb = frame.image[:, :, ::-1].tobytes()  # one copy, in RGB order
    audio = np.clip(np.round(frame.audio[:, 0] * 32768.0), -32768, 32767).astype(np.int16).tobytes()
    return _Picture(frame.index, frame.turn, rgb, (width, height), audio)


__all__ = ["IplapVideoService"]
