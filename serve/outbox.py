"""What a live session has rendered and not yet sent, bounded by dropping pictures, never sound."""

from __future__ import annotations

import asyncio
import time
from collections import deque

from aiohttp import web

from .protocol import SentStats, Outgoing

#: Text messages (a continuous session's events) that may wait for a client that reads slowly;
#: they are never dropped, so one more means the client is not reading at all.
MAX_PENDING_TEXTS = 256


class OutboxOverflow(ConnectionError):
    """More text messages wait than :data:`MAX_PENDING_TEXTS`: the client is not reading."""


class Outbox:
    """Messages waiting for the client (on the event loop).

    At most ``max_pending`` frame and audio messages wait; beyond that the oldest waiting
    frame's picture is dropped and its audio is carried by the next such message, so the
    sound stays whole and memory stays bounded. Text messages (events) keep their place among
    them and are never dropped; beyond :data:`MAX_PENDING_TEXTS` of them the send loop fails
    with :class:`OutboxOverflow`. Rendering never waits for the client.
    """

    def __init__(self, max_pending: int, stats: SentStats):
        self.max_pending, self.stats = max_pending, stats
        self._pending: deque[Outgoing | str] = deque()
        self._media = 0  # Outgoing messages in _pending
        self._wakeup = asyncio.Event()
        self._closed = False
        self._overflow = False

    def push(self, message: Outgoing | str) -> None:
        self._pending.append(message)
        if isinstance(message, str):
            self._overflow = self._overflow or len(self._pending) - self._media > MAX_PENDING_TEXTS
        else:
            self._media += 1
            if self._media > self.max_pending:
                self._drop_oldest()
            self.stats.max_pending_frames = max(self.stats.max_pending_frames, self._media)
        self._wakeup.set()

    def _drop_oldest(self) -> None:
        """Drop the oldest frame or audio message; the next one carries its audio."""
        media = [i for i, m in enumerate(self._pending) if not isinstance(m, str)][:2]
        oldest, following = self._pending[media[0]], self._pending[media[1]]
        del self._pending[media[0]]
        self._media -= 1
        if oldest.jpeg:
            self.stats.dropped_frames += 1
        if oldest.audio:
            following.audio = oldest.audio + following.audio
            following.audio_time = oldest.audio_time

    def close(self) -> None:
        """Nothing more will come: the send loop ends once the waiting messages are sent."""
        self._closed = True
        self._wakeup.set()

    async def send_all(self, ws: web.WebSocketResponse) -> None:
        """Send messages as they come, until :meth:`close` and the last one is sent."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                if self._overflow:
                    raise OutboxOverflow(f"more than {MAX_PENDING_TEXTS} messages wait for the client")
                message = self._pending.popleft()
                if isinstance(message, str):
                    await ws.send_str(message)
                    continue
                self._media -= 1
                await ws.send_bytes(message.encode())
                if message.type == "frame":
                    now = time.perf_counter()
                    self.stats.frames += 1
                    self.stats.first_frame = self.stats.first_frame or now
                    self.stats.last_frame = now
            if self._closed:
                return
