"""A continuous live session over the WebSocket: an always-on avatar that speaks in turns.

Protocol of ``/api/live?avatar=ID&mode=continuous`` (and ``refs=N``, ``token=T`` as in
:mod:`.live`):

client -> server
    1. text ``{"type": "start", "sample_rate", "channels", "format"}``, as in one-shot mode;
    2. at any time after ``ready``, in any order:

       * binary messages: PCM of the current turn (whole sample frames; the first after a
         ``turn_end`` starts the next turn, which plays once the one before has);
       * ``{"type": "turn_end"}``: the turn's speech is complete (its last frames flush);
       * ``{"type": "interrupt"}``: drop every queued turn; the next frame is idle;
       * ``{"type": "end"}``: close the session now (speech not yet played is dropped).

server -> client
    * ``{"type": "ready", ..., "mode": "continuous", "max_queued_speech_s": Q}``, then frames
      from then on, 25 per second by the wall clock, idle frames of the avatar while no turn
      plays. Each is the one-shot binary message, its header also holding ``speaking``,
      ``turn`` (the turn playing, or null) and ``held`` (the picture is an earlier frame's,
      rendering being slower than real time). A speaking frame carries the 40 ms of the
      turn's own speech that plays with it (in the client's format, zero-padded at the turn's
      end); an idle frame carries no audio (silence);
    * ``{"type": "playback_started", "turn", "latency_s"}`` just before a turn's first frame
      (``latency_s``: from its first sample received to that frame);
      ``{"type": "playback_finished", "turn", "interrupted"}`` just after its last frame, or,
      interrupted, just before the first idle frame; each finish is followed by
      ``{"type": "stats", ...}``, the closing message's fields so far;
    * ``{"type": "end", "mode": "continuous", "frames", "dropped_frames", "max_pending_frames",
      "fps", "max_queued_speech_s", ...}`` when the session ends well, then the server closes:
      the frames sent, dropped and waiting at most, and the rest of ``iplap.LiveStats.as_dict()``
      (``speaking_frames``, ``held_frames``, ``rendered``, ``renders``, ``stalls``, ``turns``,
      ``interrupted``, ``k``, ``workers``, ``real_time_factor``, ``latencies_s``,
      ``mean_latency_s``, ``queued_speech_s``, ``stage_s``);
    * ``{"type": "error", "message"}`` on bad input or a limit, then the server closes.

Limits. As in one-shot mode: the start message within ``idle_seconds``, the session's speech
(``max_speech_seconds``), its wall-clock time, the heartbeat, the frames waiting for a slow
client (older pictures dropped, never sound; events are never dropped). Two differ, because
an always-on avatar is quiet most of the time and an interrupt must not wait behind speech:
after ``start`` the idle limit no longer applies (a client that shows the idle avatar for
minutes sends nothing, and the heartbeat finds one that is gone), and speech is never held
back by TCP: the runtime holds pushed speech in memory until it plays, so a chunk that would
make more than ``queue_seconds`` of speech wait to play is refused with a 413 error (the
``stats`` messages say how much waits).

Threads. The runtime's :class:`iplap.LiveSession` renders on a worker thread of its own; an
:class:`iplap.LiveBridge` iterates its paced ``frames()`` on this session's slot thread,
encodes each picture there (once: a held or idle picture reuses its JPEG) with its events,
and hands the messages to the event loop, which queues them for the client. The receiver
pushes speech, ends turns and interrupts on the event loop (each a short lock). However
the session ends, the frames stop within a frame, and the runtime session is closed (its
worker joined) before the slot is given back.
"""

from __future__ import annotations

import asyncio
import json

import cv2
import numpy as np
from aiohttp import WSMsgType, web

from .. import FPS, IplapError, LiveBridge
from .errors import ApiError
from .live import ClientGone, Deadline, Session, _ws_error
from .protocol import Outgoing, continuous_summary, event_message, message_type, ready_message

COMMANDS = ("turn_end", "interrupt", "end")


class ContinuousSession(Session):
    """An always-on avatar (``mode=continuous``): idle frames, lip-synced turns, interrupts."""

    def __init__(self, *args):
        super().__init__(*args)
        self.live = None  # the runtime's LiveSession, made by open()
        self.bridge: LiveBridge | None = None
        self._turn: int | None = None  # the last turn a frame showed
        self._jpeg: tuple[np.ndarray | None, bytes] = (None, b"")  # the last picture and its JPEG

    async def open(self) -> None:
        self.live = await self.slots.call(lambda: self.pipeline.open_live(
            self.avatar, self.start.sample_rate, self.start.channels, realtime=True))
        self.bridge = LiveBridge(self.live, self._messages)
        self.bridge.bind(self.loop)

    async def close(self) -> None:
        if self.live is None:
            return
        try:
            await self.slots.call(self.live.close)  # joins its worker: at most one render step
        except RuntimeError:  # the render threads are shut down already (the server is stopping)
            self.live.close()

    def abort(self, reason: str | None = None) -> None:
        super().abort(reason)
        if self.bridge is not None:
            self.bridge.stop()

    def ready(self) -> str:
        return ready_message(FPS, self.avatar.track.width, self.avatar.track.height, self.start,
                             mode="continuous", max_queued_speech_s=self.limits.queue_seconds)

    def summary(self) -> dict:
        return continuous_summary("end", self.stats, self.live.stats(), self.limits.queue_seconds)

    # -- on the event loop ---------------------------------------------------------------------
    async def _rendering(self) -> None:
        """The frames: the bridge runs on the slot's thread; its messages go to the client."""
        pump = asyncio.ensure_future(self.slots.call(self.bridge.run))
        try:
            async for messages in self.bridge:
                for message in messages:
                    self.outbox.push(message)
        except Exception as exc:  # noqa: BLE001 - reported to the client; the service goes on
            self._failed(exc)
        finally:
            self.bridge.stop()  # a receiver still reading learns that the frames are over
            await asyncio.wait([pump])
            self.outbox.close()

    async def _receive(self, ws: web.WebSocketResponse, deadline: Deadline) -> None:
        """Push speech, end turns and interrupt until ``end``; raise on bad input, a limit, or
        the client gone. No idle limit: the deadline and the heartbeat end a quiet session."""
        while True:
            try:
                message = await ws.receive(timeout=deadline.left())
            except asyncio.TimeoutError:
                raise deadline.error() from None
            if self.bridge.stopped:
                return  # the frames are over (an error, if any, is reported)
            if message.type == WSMsgType.BINARY:
                self._push(message.data)
            elif message.type == WSMsgType.TEXT:
                kind = message_type(message.data)
                if kind not in COMMANDS:
                    raise ApiError(400, "in continuous mode send binary audio, {\"type\": \"turn_end\"}, "
                                        "{\"type\": \"interrupt\"} or {\"type\": \"end\"}")
                if kind == "end":
                    self.bridge.stop()  # the frames stop within one
                    return
                try:
                    self.live.end_of_turn() if kind == "turn_end" else self.live.interrupt()
                except IplapError:
                    return  # closed: the frames are over
            elif message.type == WSMsgType.ERROR:
                raise ApiError(400, f"bad WebSocket message: {_ws_error(message.data)}")
            else:  # CLOSE, CLOSING, CLOSED: gone without "end"
                raise ClientGone

    def _push(self, data: bytes) -> None:
        self._count(data)
        if not data:
            return
        seconds = len(data) / self.start.bytes_per_second
        queued = self.live.queued_speech_seconds
        if queued + seconds > self.limits.queue_seconds:
            raise ApiError(413, f"{queued + seconds:.1f} s of speech would wait to play, more than the "
                                f"{self.limits.queue_seconds:g} s a continuous session may queue; send speech "
                                "closer to its playback")
        try:
            self.live.push(np.frombuffer(data, self.start.dtype))
        except IplapError:
            pass  # closed: the frames are over, and the receiver ends at the next message

    # -- on the bridge's (the slot's) thread -------------------------------------------------------
    def _messages(self, frame) -> list:
        """A frame as the client's messages, with its events in their order (an interrupted
        turn's finish and a turn's start before it, a finish after it)."""
        before, after = [], []
        for event in frame.events:
            if event.kind == "playback_started":
                latency = self.live.stats().latencies[-1]
                before.append(event_message("playback_started", event.turn, latency_s=round(latency, 4)))
            else:
                (before if event.before_frame else after).extend(self._finished(event.turn, event.interrupted))
        audio = self._audio(frame) if frame.speaking else b""
        picture = Outgoing("frame", frame.index, round(frame.time, 6), self._encode(frame.image), audio,
                           frame.time, {"speaking": frame.speaking, "turn": frame.turn, "held": frame.held})
        if frame.speaking:
            self._turn = frame.turn
        return [*before, picture, *after]

    def _finished(self, turn: int | None, interrupted: bool) -> list[str]:
        stats = continuous_summary("stats", self.stats, self.live.stats(), self.limits.queue_seconds)
        return [event_message("playback_finished", turn, interrupted=interrupted), json.dumps(stats)]

    def _encode(self, image: np.ndarray) -> bytes:
        """The picture's JPEG; the same picture again (idle, or held) is not encoded again. (The
        last picture is kept, so no other array can have its identity; frames are never drawn
        into once yielded.)"""
        last, jpeg = self._jpeg
        if image is not last:
            ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.limits.jpeg_quality])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            jpeg = encoded.tobytes()
            self._jpeg = (image, jpeg)
        return jpeg

    def _audio(self, frame) -> bytes:
        """A frame's audio in the client's own format, interleaved."""
        if self.start.format == "s16le":
            return frame.pcm16().astype("<i2").tobytes()
        return frame.audio.astype("<f4").tobytes()
