"""Live sessions over a WebSocket: speech in as PCM chunks, each frame out as soon as it is rendered.

Protocol of ``/api/live?avatar=ID`` (optional ``refs=N``, and ``token=T`` where the service
has a token and the client cannot send headers, as browsers cannot on a WebSocket):

client -> server
    1. text ``{"type": "start", "sample_rate": 48000, "channels": 1, "format": "f32le"}``:
       the speech's rate (8000..192000 Hz), channels (1, or 2 interleaved) and sample type
       (``f32le``: float32 in [-1, 1]; ``s16le``: int16), little-endian.
    2. binary messages: the PCM, whole sample frames per message, in real time or faster.
    3. text ``{"type": "end"}`` when the speech is over.

server -> client
    * text ``{"type": "ready", "fps": 25, "width": W, "height": H, ...}`` after ``start``;
    * one binary message per frame: a 4-byte big-endian length N, N bytes of JSON header
      ``{"type": "frame", "index": i, "time": s, "jpeg": J, "audio": A, "audio_time": t}``,
      then J bytes of JPEG and A bytes of the client's own audio (its format, rate and
      channels) that plays from ``audio_time``: with the frame's picture, the sound it was
      rendered from. An ``"audio"`` message (``jpeg`` 0) carries the speech after the last frame;
    * text ``{"type": "end", "frames", "dropped_frames", "first_frame_latency_s", "fps",
      "max_pending_frames"}``, then the server closes;
    * text ``{"type": "error", "message": ...}`` on bad input or a limit reached, then the
      server closes.

Limits (:class:`LiveLimits`, from the service's settings): the speech a session may send; the
longest wait for the client's next message (the start message too); the session's whole
wall-clock time; the audio waiting to be rendered (a client that sends faster than frames are
rendered is slowed down, so memory stays flat however fast it sends); and the frames waiting
for a client that reads slowly (:class:`~.outbox.Outbox`: older pictures are dropped, never
sound). However a session ends (``end``, an error, a limit, the client going away, an
oversized message, a missed heartbeat, the server shutting down), its render thread stops
within a frame and its render slot is given back.

``?mode=continuous`` gives an always-on session instead (:mod:`.live_continuous`: idle frames
from ``ready`` on, speech in turns, interrupts); both modes share :class:`Session`'s
lifecycle and :func:`serve_live`'s one slot per session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from dataclasses import dataclass

import cv2
import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from .. import FPS, Avatar, IplapError, Pipeline
from ..errors import Failure, Fault, first_line
from .errors import ApiError
from .live_audio import Aborted, ClientAudio, Inbox
from .outbox import Outbox
from .protocol import SentStats, Outgoing, StartMessage, error_message, message_type, ready_message
from .slots import Slots

log = logging.getLogger(__name__)

SEND_BUFFER_BYTES = 64 * 1024
#: The largest WebSocket message a client may send (aiohttp closes the session beyond it).
MAX_MESSAGE_BYTES = 4 * 2**20
#: Seconds of the client's audio that may wait for the render thread (then reading pauses).
INBOX_SECONDS = 4.0


class ClientGone(Exception):
    """The client closed the connection or stopped answering: nobody to tell."""


@dataclass(frozen=True)
class LiveLimits:
    """What one live session may take (see the module's docstring)."""

    max_speech_seconds: float
    idle_seconds: float
    wall_seconds: float
    pending_frames: int
    jpeg_quality: int
    heartbeat_seconds: float
    inbox_seconds: float = INBOX_SECONDS
    #: Continuous mode: the most speech that may wait to play (pushed ahead of playback).
    queue_seconds: float = 60.0

    @classmethod
    def of(cls, config) -> LiveLimits:
        return cls(config.max_live_seconds, config.idle_timeout_s, config.live_timeout_s, config.live_pending_frames,
                   config.jpeg_quality, config.live_heartbeat_s, queue_seconds=config.live_queue_s)


class Deadline:
    """The end of a session's wall-clock time."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def error(self) -> ApiError:
        return ApiError(408, f"the live session reached its time limit of {self.seconds:g} s")


class Session:
    """What every live session shares: the lifecycle of its render thread, its sender and its
    receiver, one error for the client, and the frames waiting for the client. A mode says
    what ``ready`` holds (:meth:`ready`), reads the client (:meth:`_receive`), renders on its
    slot's thread (:meth:`_render`, or :meth:`_rendering` on the loop), stops it (:meth:`abort`)
    and sums up (:meth:`summary`)."""

    def __init__(self, pipeline: Pipeline, avatar: Avatar, start: StartMessage, limits: LiveLimits, slots: Slots,
                 loop: asyncio.AbstractEventLoop):
        self.pipeline, self.avatar, self.start, self.limits, self.slots = pipeline, avatar, start, limits, slots
        self.loop = loop
        self.stats = SentStats()
        self.outbox = Outbox(limits.pending_frames, self.stats)
        self.received = 0  # bytes of audio
        self.error: str | None = None
        self.error_status = 422

    async def open(self) -> None:
        """Make what the session renders with (on a render thread, the slot held)."""

    async def close(self) -> None:
        """Free what :meth:`open` made, however far :meth:`run` got (the slot still held)."""

    def abort(self, reason: str | None = None) -> None:
        """Stop now (from anywhere): the render thread ends within a frame; ``reason``, when
        given, is what the client is told (503)."""
        if reason is not None and self.error is None:
            self.error, self.error_status = reason, 503

    def ready(self) -> str:
        return ready_message(FPS, self.avatar.track.width, self.avatar.track.height, self.start)

    def summary(self) -> dict:
        return self.stats.summary()

    # -- on the event loop ---------------------------------------------------------------------
    async def run(self, ws: web.WebSocketResponse, deadline: Deadline) -> None:
        await ws.send_str(self.ready())
        render = asyncio.ensure_future(self._rendering())
        sender = asyncio.ensure_future(self.outbox.send_all(ws))
        receiver = asyncio.ensure_future(self._receive(ws, deadline))
        try:
            await _until_rendered(render, (receiver, sender), deadline)
            try:
                await asyncio.wait_for(sender, deadline.left())
            except asyncio.TimeoutError:
                raise deadline.error() from None
        finally:
            self.abort()  # nothing, once the render thread is done
            for task in (receiver, sender):
                task.cancel()
            await asyncio.wait([render])  # the render thread ends before its slot is given back
        if self.error is not None:
            raise ApiError(self.error_status, self.error)
        summary = self.summary()
        await ws.send_str(json.dumps(summary))
        await ws.close()
        log.info("live session: %s", summary)

    async def _rendering(self) -> None:
        """The render: :meth:`_render` on a slot's thread (the session holds the slot)."""
        await self.slots.call(self._render)

    async def _receive(self, ws: web.WebSocketResponse, deadline: Deadline) -> None:
        raise NotImplementedError

    def _render(self) -> None:
        raise NotImplementedError

    def _count(self, data: bytes) -> None:
        """Check an audio message (whole sample frames, within the session's speech limit)."""
        size = self.start.frame_bytes
        if len(data) % size:
            raise ApiError(400, f"an audio message must hold whole sample frames ({size} bytes each for "
                                f"{self.start.channels} channel(s) of {self.start.format}); got {len(data)}")
        self.received += len(data)
        if self.received / self.start.bytes_per_second > self.limits.max_speech_seconds:
            raise ApiError(413, f"a live session takes at most {self.limits.max_speech_seconds:g} s of speech")

    def _failed(self, exc: Exception) -> None:
        """The render thread failed: the client is told in one line, the log gets a bug's trace."""
        failure = Failure.of(exc, details=False)
        if failure.fault is Fault.INTERNAL:
            log.exception("live session failed")
        self.error = failure.message

    def _send(self, message: Outgoing | str) -> None:
        """Queue a message for the client (from the render thread)."""
        self.loop.call_soon_threadsafe(self.outbox.push, message)


class OneShotSession(Session):
    """One live render (``mode=oneshot``): the client's audio in, the render thread, the frames out."""

    def __init__(self, pipeline: Pipeline, avatar: Avatar, start: StartMessage, limits: LiveLimits, slots: Slots,
                 loop: asyncio.AbstractEventLoop):
        super().__init__(pipeline, avatar, start, limits, slots, loop)
        self.inbox = Inbox(int(limits.inbox_seconds * start.bytes_per_second), loop)
        self.audio = ClientAudio(start, FPS)

    def abort(self, reason: str | None = None) -> None:
        super().abort(reason)
        self.inbox.abort()

    async def _receive(self, ws: web.WebSocketResponse, deadline: Deadline) -> None:
        """Read the client's audio until ``end``; raise on bad input, a limit, or the client gone."""
        while True:
            timeout = min(self.limits.idle_seconds, deadline.left())
            try:
                message = await ws.receive(timeout=timeout)
            except asyncio.TimeoutError:
                if deadline.left() <= 0:
                    raise deadline.error() from None
                raise ApiError(408, f"no message from the client for {self.limits.idle_seconds:g} s") from None
            if message.type == WSMsgType.BINARY:
                try:
                    await self._accept(message.data)
                except Aborted:
                    return  # the render thread is over (its error, if any, is reported)
            elif message.type == WSMsgType.TEXT:
                if message_type(message.data) != "end":
                    raise ApiError(400, "after start, send binary audio and then {\"type\": \"end\"}")
                self.inbox.end()
                await _until_closed(ws, deadline)
                return
            elif message.type == WSMsgType.ERROR:
                raise ApiError(400, f"bad WebSocket message: {_ws_error(message.data)}")
            else:  # CLOSE, CLOSING, CLOSED: gone without "end"
                raise ClientGone

    async def _accept(self, data: bytes) -> None:
        self._count(data)
        if self.stats.first_audio is None and data:
            self.stats.first_audio = time.perf_counter()
        await self.inbox.put(bytes(data))

    # -- on the render thread --------------------------------------------------------------------
    def _render(self) -> None:
        try:
            with self.pipeline.open_stream(self.avatar, self.start.sample_rate, self.start.channels) as stream:
                while (data := self.inbox.get()) is not None:
                    self.audio.add(data)
                    stream.accept(np.frombuffer(data, self.start.dtype))
                    self._emit(stream)
                stream.finish()
                self._emit(stream)
                audio, audio_time = self.audio.tail()
                if audio:
                    self._send(Outgoing("audio", None, None, b"", audio, audio_time))
        except Aborted:
            pass
        except Exception as exc:  # noqa: BLE001 - reported to the client; the service goes on
            self._failed(exc)
        finally:
            self.inbox.abort()  # a client still sending learns that the render is over
            self.loop.call_soon_threadsafe(self.outbox.close)

    def _emit(self, stream) -> None:
        params = [cv2.IMWRITE_JPEG_QUALITY, self.limits.jpeg_quality]
        for frame in stream.frames():
            if self.inbox.aborted:
                raise Aborted
            ok, jpeg = cv2.imencode(".jpg", frame.image, params)
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            audio, audio_time = self.audio.for_frame(frame.index)
            self._send(Outgoing("frame", frame.index, round(frame.time, 6), jpeg.tobytes(), audio, audio_time))


async def _until_closed(ws: web.WebSocketResponse, deadline: Deadline) -> None:
    """After ``end`` the client only waits for its frames, or leaves: keep reading, so that a
    close (polite or not) is seen at once and the render stops, instead of running on for
    nobody with its slot held. Anything else from the client is refused."""
    try:
        message = await ws.receive(timeout=max(deadline.left(), 0.001))
    except asyncio.TimeoutError:
        raise deadline.error() from None
    if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
        raise ClientGone
    raise ApiError(400, "after {\"type\": \"end\"} the session only sends its last frames; send nothing more")


async def _until_rendered(render: asyncio.Future, watched: tuple[asyncio.Future, ...], deadline: Deadline) -> None:
    """Wait for the render to end; raise what a watched task (receiver, sender) raises first,
    or the deadline's error."""
    waiting = {render, *watched}
    while render in waiting:
        done, waiting = await asyncio.wait(waiting, timeout=deadline.left(), return_when=asyncio.FIRST_COMPLETED)
        if not done:
            raise deadline.error()
        for task in done:
            if task is not render and not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                if isinstance(exc, (ApiError, ClientGone)):
                    raise exc
                raise ClientGone from exc  # the sender's connection failed


def _ws_error(exc) -> str:
    if getattr(exc, "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
        return f"a message is larger than {MAX_MESSAGE_BYTES // 2**20} MB"
    return first_line(exc) if isinstance(exc, BaseException) else "the connection failed"


async def serve_live(request: web.Request, pipeline: Pipeline, avatar_loader, slots: Slots, limits: LiveLimits,
                     sessions: set, mode: type[Session] = OneShotSession) -> web.WebSocketResponse:
    """The WebSocket handler's body, after the avatar was checked (see ``app.py``). ``sessions``
    holds the running sessions, for the server to abort them when it shuts down; ``mode`` is
    the session's class (:class:`OneShotSession`, or the continuous one)."""
    ws = web.WebSocketResponse(heartbeat=limits.heartbeat_seconds, compress=False, max_msg_size=MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    _small_send_buffer(request)
    deadline = Deadline(limits.wall_seconds)
    try:
        start = await _receive_start(ws, limits)
        if not await slots.try_acquire():
            raise ApiError(503, f"all {slots.count} render slots are busy; try again later")
        try:
            session = mode(pipeline, await slots.call(avatar_loader), start, limits, slots,
                           asyncio.get_running_loop())
            sessions.add(session)
            try:
                await session.open()
                await session.run(ws, deadline)
            finally:
                sessions.discard(session)
                await session.close()
        finally:
            slots.release()
    except (ApiError, IplapError) as exc:
        await _send_error(ws, exc.message)
    except ClientGone:
        pass
    return ws


async def _receive_start(ws: web.WebSocketResponse, limits: LiveLimits) -> StartMessage:
    try:
        first = await ws.receive(timeout=limits.idle_seconds)
    except asyncio.TimeoutError:
        raise ApiError(408, f"no start message within {limits.idle_seconds:g} s") from None
    if first.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
        raise ClientGone
    if first.type == WSMsgType.ERROR:
        raise ApiError(400, f"bad WebSocket message: {_ws_error(first.data)}")
    if first.type != WSMsgType.TEXT:
        raise ApiError(400, "the first message must be a text message: {\"type\": \"start\", ...}")
    return StartMessage.parse(first.data)


def _small_send_buffer(request: web.Request) -> None:
    """Keep the kernel's send buffer small: frames waiting for a slow client then wait here, where
    the drop policy bounds them, not in a socket buffer of several MB that only adds latency."""
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        except OSError:
            log.debug("cannot set the live socket's send buffer", exc_info=True)


async def _send_error(ws: web.WebSocketResponse, message: str) -> None:
    if not ws.closed:
        try:
            await ws.send_str(error_message(message))
            await ws.close(code=WSCloseCode.POLICY_VIOLATION)
        except (ConnectionError, RuntimeError):
            pass  # the client is gone already
