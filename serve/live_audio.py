"""A live session's audio: the bounded inbox from the socket to the render thread, and the
client's own bytes handed back with the frames they were rendered from."""

from __future__ import annotations

import asyncio
import threading
from collections import deque

from .protocol import StartMessage


class Aborted(Exception):
    """The session is over before its speech was: the render thread stops where it is."""


class Inbox:
    """Audio from the event loop to the render thread, at most ``max_bytes`` waiting.

    ``put`` (on the loop) waits while the inbox is full, so a client that sends faster than
    frames are rendered is slowed down by TCP instead of filling memory; ``get`` (on the render
    thread) blocks until audio, the end or an abort arrives. ``abort`` may come from anywhere
    and wakes both sides.
    """

    def __init__(self, max_bytes: int, loop: asyncio.AbstractEventLoop):
        self.max_bytes = max(1, max_bytes)
        self._loop = loop
        self._items: deque[bytes] = deque()
        self._bytes = 0
        self._ended = False
        self.aborted = False
        self._ready = threading.Condition()
        self._room = asyncio.Event()
        self._room.set()

    async def put(self, data: bytes) -> None:
        while self._bytes >= self.max_bytes and not self.aborted:
            self._room.clear()
            await self._room.wait()
        if self.aborted:
            raise Aborted
        with self._ready:
            self._items.append(data)
            self._bytes += len(data)
            self._ready.notify()

    def end(self) -> None:
        with self._ready:
            self._ended = True
            self._ready.notify()

    def abort(self) -> None:
        with self._ready:
            self.aborted = True
            self._items.clear()
            self._bytes = 0
            self._ready.notify_all()
        self._loop.call_soon_threadsafe(self._room.set)

    def get(self) -> bytes | None:
        """The next audio (render thread); None at the end; :class:`Aborted` after an abort."""
        with self._ready:
            while not self._items and not self._ended and not self.aborted:
                self._ready.wait()
            if self.aborted:
                raise Aborted
            if not self._items:
                return None
            data = self._items.popleft()
            self._bytes -= len(data)
        self._loop.call_soon_threadsafe(self._room.set)
        return data


class ClientAudio:
    """The client's audio not yet sent back, in its own format, cut at frame boundaries.

    Frame ``i`` plays samples ``[i * rate / fps, (i + 1) * rate / fps)``; each frame's message
    carries the samples of its span that arrived (and any left over from before), so every
    sample goes back once, in order. Only the audio of frames not yet rendered is kept.
    """

    def __init__(self, start: StartMessage, fps: int):
        self.start, self.fps = start, fps
        self._audio = bytearray()
        self._offset = 0  # sample frames before _audio[0]
        self._sent_until = 0  # sample frames handed to messages

    def add(self, data: bytes) -> None:
        self._audio += data

    @property
    def _available(self) -> int:
        return self._offset + len(self._audio) // self.start.frame_bytes

    def frame_span(self, index: int) -> tuple[int, int]:
        rate = self.start.sample_rate
        return max(self._sent_until, round(index * rate / self.fps)), round((index + 1) * rate / self.fps)

    def take(self, start: int, stop: int) -> bytes:
        """The bytes of sample frames ``[start, stop)`` that are here; later calls start after them."""
        size = self.start.frame_bytes
        stop = min(stop, self._available)
        if stop <= start:
            return b""
        chunk = bytes(self._audio[(start - self._offset) * size:(stop - self._offset) * size])
        del self._audio[:(stop - self._offset) * size]
        self._offset = self._sent_until = stop
        return chunk

    def for_frame(self, index: int) -> tuple[bytes, float]:
        """Frame ``index``'s audio and the time it starts."""
        start, stop = self.frame_span(index)
        return self.take(start, stop), start / self.start.sample_rate

    def tail(self) -> tuple[bytes, float]:
        """The speech after the last frame's span (so that the client hears all of it)."""
        start = self._sent_until
        return self.take(start, self._available), start / self.start.sample_rate
