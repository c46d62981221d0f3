"""What a live session has rendered and not yet sent, bounded by dropping pictures, never sound."""

from __future__ import annotations

import asyncio
import time
from collections import deque

from aiohttp import web

from .protocol import LiveStats, Outgoing


class Outbox:
    """Messages waiting for the client (on the event loop).

    At most ``max_pending`` wait; beyond that the oldest waiting frame's picture is dropped and
    its audio is carried by the next message, so the sound stays whole and memory stays bounded.
    Rendering never waits for the client.
    """

    def __init__(self, max_pending: int, stats: LiveStats):
        self.max_pending, self.stats = max_pending, stats
        self._pending: deque[Outgoing] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False

    def push(self, message: Outgoing) -> None:
        self._pending.append(message)
        while len(self._pending) > self.max_pending:
            oldest, following = self._pending.popleft(), self._pending[0]
            if oldest.jpeg:
                self.stats.dropped_frames += 1
            following.audio = oldest.audio + following.audio
            following.audio_time = oldest.audio_time
        self.stats.max_pending_frames = max(self.stats.max_pending_frames, len(self._pending))
        self._wakeup.set()

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
                message = self._pending.popleft()
                await ws.send_bytes(message.encode())
                if message.type == "frame":
                    now = time.perf_counter()
                    self.stats.frames += 1
                    self.stats.first_frame = self.stats.first_frame or now
                    self.stats.last_frame = now
            if self._closed:
                return
