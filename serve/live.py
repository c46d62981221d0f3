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
    * text ``{"type": "error", "message": ...}`` on bad input, then the server closes.

A client that reads more slowly than frames are rendered: at most ``live_pending_frames``
messages wait to be sent; beyond that the oldest waiting frame's picture is dropped and its
audio is carried by the next message, so the sound stays whole and memory stays bounded.
The closing message counts the dropped pictures. Rendering itself never waits for the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np
from aiohttp import WSMsgType, web

from .. import Avatar, IplapError, Pipeline
from .errors import ApiError
from .jobs import Slots

log = logging.getLogger(__name__)

FORMATS = {"f32le": np.dtype("<f4"), "s16le": np.dtype("<i2")}
START_TIMEOUT_S = 30.0
SEND_BUFFER_BYTES = 64 * 1024
_END, _ABORT = object(), object()


@dataclass
class StartMessage:
    sample_rate: int
    channels: int
    format: str

    @property
    def frame_bytes(self) -> int:
        return FORMATS[self.format].itemsize * self.channels

    @classmethod
    def parse(cls, text: str) -> StartMessage:
        try:
            data = json.loads(text)
        except ValueError:
            raise ApiError(400, "the first message must be JSON: {\"type\": \"start\", \"sample_rate\", "
                                "\"channels\", \"format\"}") from None
        if not isinstance(data, dict) or data.get("type") != "start":
            raise ApiError(400, "the first message must be {\"type\": \"start\", ...}")
        rate, channels, fmt = data.get("sample_rate"), data.get("channels", 1), data.get("format", "f32le")
        if not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 192000:
            raise ApiError(400, f"sample_rate must be a whole number from 8000 to 192000, got {rate!r}")
        if channels not in (1, 2):
            raise ApiError(400, f"channels must be 1 or 2 (interleaved), got {channels!r}")
        if fmt not in FORMATS:
            raise ApiError(400, f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        return cls(rate, channels, fmt)


@dataclass
class Outgoing:
    """A message waiting to be sent: a frame's picture (or none) and the audio from ``audio_time``."""

    kind: str
    index: int | None
    time: float | None
    jpeg: bytes
    audio: bytes
    audio_time: float

    def encode(self) -> bytes:
        header = json.dumps({"type": self.kind, "index": self.index, "time": self.time, "jpeg": len(self.jpeg),
                             "audio": len(self.audio), "audio_time": round(self.audio_time, 6)}).encode()
        return struct.pack(">I", len(header)) + header + self.jpeg + self.audio


@dataclass
class LiveStats:
    frames: int = 0
    dropped_frames: int = 0
    max_pending_frames: int = 0
    first_audio: float | None = None
    first_frame: float | None = None
    last_frame: float | None = None

    def summary(self) -> dict:
        latency = None if self.first_frame is None or self.first_audio is None else self.first_frame - self.first_audio
        span = None if self.first_frame is None or self.last_frame is None else self.last_frame - self.first_frame
        fps = (self.frames - 1) / span if span and self.frames > 1 else None
        return {"type": "end", "frames": self.frames, "dropped_frames": self.dropped_frames,
                "first_frame_latency_s": None if latency is None else round(latency, 4),
                "fps": None if fps is None else round(fps, 3), "max_pending_frames": self.max_pending_frames}


@dataclass
class LiveSession:
    """One live render: the client's audio, the rendering thread, and what waits to be sent."""

    pipeline: Pipeline
    avatar: Avatar
    start: StartMessage
    max_pending: int
    jpeg_quality: int
    max_seconds: float
    loop: asyncio.AbstractEventLoop
    stats: LiveStats = field(default_factory=LiveStats)

    def __post_init__(self):
        self.inbox: queue.Queue = queue.Queue()
        self.pending: deque[Outgoing] = deque()
        self.wakeup = asyncio.Event()
        self.done = False  # the render thread has finished (normally or not)
        self.error: str | None = None
        self.received = 0  # bytes of audio
        self._audio = bytearray()  # the client's audio not yet sent with a frame
        self._audio_offset = 0  # sample frames before _audio[0]
        self._sent_until = 0  # sample frames handed to messages

    # -- on the event loop ---------------------------------------------------------------------
    def accept(self, data: bytes) -> None:
        if len(data) % self.start.frame_bytes:
            raise ApiError(400, f"an audio message must hold whole sample frames ({self.start.frame_bytes} bytes "
                                f"each for {self.start.channels} channel(s) of {self.start.format}); got {len(data)}")
        self.received += len(data)
        if self.received / self.start.frame_bytes / self.start.sample_rate > self.max_seconds:
            raise ApiError(400, f"a live session takes at most {self.max_seconds:g} s of speech")
        if self.stats.first_audio is None and data:
            self.stats.first_audio = time.perf_counter()
        self.inbox.put(bytes(data))

    def _push(self, message: Outgoing | None) -> None:
        """Queue a message (None: the render is over); drop the oldest picture beyond the bound."""
        if message is not None:
            self.pending.append(message)
            while len(self.pending) > self.max_pending:
                oldest, following = self.pending.popleft(), self.pending[0]
                if oldest.jpeg:
                    self.stats.dropped_frames += 1
                following.audio = oldest.audio + following.audio
                following.audio_time = oldest.audio_time
            self.stats.max_pending_frames = max(self.stats.max_pending_frames, len(self.pending))
        self.wakeup.set()

    async def send_loop(self, ws: web.WebSocketResponse) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.pending:
                message = self.pending.popleft()
                await ws.send_bytes(message.encode())
                if message.kind == "frame":
                    now = time.perf_counter()
                    self.stats.frames += 1
                    self.stats.first_frame = self.stats.first_frame or now
                    self.stats.last_frame = now
            if self.done:
                return

    # -- on the render thread --------------------------------------------------------------------
    def render(self) -> None:
        try:
            with self.pipeline.open_stream(self.avatar, self.start.sample_rate, self.start.channels) as session:
                while True:
                    item = self.inbox.get()
                    if item is _ABORT:
                        return
                    if item is _END:
                        session.finish()
                        self._emit(session)
                        self._emit_tail()
                        return
                    self._audio += item
                    session.accept(np.frombuffer(item, FORMATS[self.start.format]))
                    self._emit(session)
        except IplapError as exc:
            self.error = exc.message
        except Exception as exc:  # noqa: BLE001 - reported to the client; the service goes on
            log.exception("live session failed")
            self.error = f"internal error ({type(exc).__name__})"
        finally:
            self.done = True
            self.loop.call_soon_threadsafe(self._push, None)

    def _emit(self, session) -> None:
        params = [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]
        for frame in session.frames():
            ok, jpeg = cv2.imencode(".jpg", frame.image, params)
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            start, stop = self._frame_span(frame.index)
            message = Outgoing("frame", frame.index, round(frame.time, 6), jpeg.tobytes(), self._take_audio(start, stop),
                               start / self.start.sample_rate)
            self.loop.call_soon_threadsafe(self._push, message)

    def _frame_span(self, index: int) -> tuple[int, int]:
        rate, fps = self.start.sample_rate, self.pipeline.bundle.constants.get("fps", 25)
        return max(self._sent_until, round(index * rate / fps)), round((index + 1) * rate / fps)

    def _take_audio(self, start: int, stop: int) -> bytes:
        size = self.start.frame_bytes
        available = self._audio_offset + len(self._audio) // size
        stop = min(stop, available)
        if stop <= start:
            return b""
        chunk = bytes(self._audio[(start - self._audio_offset) * size:(stop - self._audio_offset) * size])
        del self._audio[:(stop - self._audio_offset) * size]
        self._audio_offset = stop
        self._sent_until = stop
        return chunk

    def _emit_tail(self) -> None:
        """The speech after the last frame's span, so that the client hears all of it."""
        size = self.start.frame_bytes
        available = self._audio_offset + len(self._audio) // size
        if available > self._sent_until:
            start = self._sent_until
            audio = self._take_audio(start, available)
            self.loop.call_soon_threadsafe(self._push, Outgoing("audio", None, None, b"", audio,
                                                                start / self.start.sample_rate))


async def serve_live(request: web.Request, pipeline: Pipeline, avatar_loader, slots: Slots, settings) -> \
        web.WebSocketResponse:
    """The WebSocket handler's body, after the avatar was checked (see ``app.py``)."""
    ws = web.WebSocketResponse(heartbeat=30.0, compress=False, max_msg_size=4 * 2**20)
    await ws.prepare(request)
    _small_send_buffer(request)
    try:
        try:
            first = await ws.receive(timeout=START_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise ApiError(400, f"no start message within {START_TIMEOUT_S:g} s") from None
        if first.type != WSMsgType.TEXT:
            raise ApiError(400, "the first message must be a text message: {\"type\": \"start\", ...}")
        start = StartMessage.parse(first.data)
        if not await slots.try_acquire():
            raise ApiError(503, f"all {slots.count} render slots are busy; try again later")
        try:
            await _run_session(ws, pipeline, await slots.call(avatar_loader), start, slots, settings)
        finally:
            slots.release()
    except ApiError as exc:
        await _send_error(ws, exc.message)
    except IplapError as exc:
        await _send_error(ws, exc.message)
    return ws


async def _run_session(ws, pipeline: Pipeline, avatar: Avatar, start: StartMessage, slots: Slots, settings) -> None:
    session = LiveSession(pipeline, avatar, start, settings.live_pending_frames, settings.jpeg_quality,
                          settings.max_live_seconds, asyncio.get_running_loop())
    await ws.send_str(json.dumps({"type": "ready", "fps": pipeline.bundle.constants.get("fps", 25),
                                  "width": avatar.track.width, "height": avatar.track.height,
                                  "sample_rate": start.sample_rate, "channels": start.channels,
                                  "format": start.format}))
    render = asyncio.ensure_future(slots.call(session.render))
    sender = asyncio.ensure_future(session.send_loop(ws))
    try:
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                session.accept(message.data)
            elif message.type == WSMsgType.TEXT:
                if _message_type(message.data) != "end":
                    raise ApiError(400, "after start, send binary audio and then {\"type\": \"end\"}")
                session.inbox.put(_END)
                break
            else:
                break
        else:  # the client went away without "end"
            session.inbox.put(_ABORT)
        await render
        await sender
        if session.error is not None:
            raise ApiError(422, session.error)
        if not ws.closed:
            await ws.send_str(json.dumps(session.stats.summary()))
            await ws.close()
        log.info("live session: %s", session.stats.summary())
    except BaseException:
        session.inbox.put(_ABORT)
        sender.cancel()
        await asyncio.wait([render])  # the render thread ends before its slot is given back
        raise


def _small_send_buffer(request: web.Request) -> None:
    """Keep the kernel's send buffer small: frames waiting for a slow client then wait here, where
    the drop policy bounds them, not in a socket buffer of several MB that only adds latency."""
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        except OSError:
            log.debug("cannot set the live socket's send buffer", exc_info=True)


def _message_type(text: str) -> str | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data.get("type") if isinstance(data, dict) else None


async def _send_error(ws: web.WebSocketResponse, message: str) -> None:
    if not ws.closed:
        await ws.send_str(json.dumps({"type": "error", "message": " ".join(message.split())}))
        await ws.close(code=1008)
