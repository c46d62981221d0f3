"""A live session's frames on an asyncio event loop: :class:`LiveBridge`.

``LiveSession.frames()`` blocks (it keeps the session's clock), so an event loop cannot
iterate it. The bridge does it on a thread (its own, or one the caller lends with
:meth:`LiveBridge.run`), converts each frame there with the caller's ``convert`` (a
picture to bytes, a JPEG, audio frames: off the loop), and hands the results to the loop,
where ``async for`` reads them in order. Every front end that meets an event loop uses it:
the Pipecat and LiveKit adapters and the service's continuous WebSocket mode.

Back-pressure. At most ``max_pending`` converted frames wait for the loop; when they do, the
thread waits, and with it the session's clock consumer: nothing is dropped, and the clock
delivers the frames that fell due at once when it goes on (it does not wait for anyone).

Errors. An exception of the session (or of ``convert``) ends the iteration: ``async for``
raises it on the loop.

Shutdown. :meth:`stop` (any thread) ends the iteration within a frame; :meth:`aclose`
closes the session too and joins the thread. With ``drain=True`` the frames already
converted are still read before the iteration ends; without, they are dropped. Either way
nothing is left running.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

from ...errors import IplapError
from .session import LiveSession
from .types import LiveFrame

T = TypeVar("T")

#: How often (s) a thread waiting for room looks whether it was stopped.
_POLL_SECONDS = 0.1


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


_DONE = object()  # the frames have ended


class LiveBridge(Generic[T]):
    """``async for item in LiveBridge(session, convert)``: each frame of ``session``,
    converted on the bridge's thread, delivered on the loop (see the module docstring)."""

    def __init__(self, session: LiveSession, convert: Callable[[LiveFrame], T] | None = None,
                 max_pending: int = 2):
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise IplapError(f"max_pending must be a whole number of frames, at least 1, not {max_pending!r}")
        self.session = session
        self._convert = convert or (lambda frame: frame)
        self.max_pending = max_pending
        self._slots = threading.Semaphore(max_pending)
        self._stopping = threading.Event()
        self._items: asyncio.Queue | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ended = False  # the iteration has delivered its end

    # -- the thread ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start iterating the frames on a thread of the bridge's own (call on the loop)."""
        self._bind(asyncio.get_running_loop())
        self._thread = threading.Thread(target=self.run, name="iplap-live-bridge", daemon=True)
        self._thread.start()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver onto ``loop``; for a caller that runs :meth:`run` on a thread of its own."""
        self._bind(loop)

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not None:
            raise IplapError("a live bridge is started once")
        self._loop, self._items = loop, asyncio.Queue()

    def run(self) -> None:
        """Iterate the frames here (blocking) until they end, :meth:`stop`, or an error."""
        try:
            for frame in self.session.frames():
                if self._stopping.is_set() or not self._hand(self._convert(frame)):
                    return
            self._deliver(_DONE)
        except BaseException as exc:  # noqa: BLE001 - raised on the loop, to the reader
            self._deliver(_Failed(exc))

    def _hand(self, item) -> bool:
        """Queue ``item`` for the loop once a slot is free; False once stopping."""
        while not self._slots.acquire(timeout=_POLL_SECONDS):
            if self._stopping.is_set():
                return False
        return self._deliver(item)

    def _deliver(self, item) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False
        return True

    # -- the loop ------------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        if self._items is None:
            raise IplapError("start the live bridge (start() or bind()) before reading it")
        if self._ended:
            raise StopAsyncIteration
        item = await self._items.get()
        if item is _DONE:
            self._ended = True
            raise StopAsyncIteration
        if isinstance(item, _Failed):
            self._ended = True
            raise item.error
        self._slots.release()
        return item

    @property
    def stopped(self) -> bool:
        """:meth:`stop` (or :meth:`aclose`) was called."""
        return self._stopping.is_set()

    def stop(self) -> None:
        """End the iteration within a frame (any thread); the session stays open."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._loop is not None:
            self._deliver(_DONE)

    async def aclose(self, drain: bool = False) -> None:
        """Stop, close the session and join the thread; ``drain``: the frames converted already
        are still read before the iteration ends (else they are dropped)."""
        if drain:
            self._stopping.set()  # the end is queued after what waits, below
        else:
            self._drop_pending()
            self.stop()
        await asyncio.to_thread(self.session.close)  # waits for the render step under way
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        if drain and self._loop is not None:
            self._deliver(_DONE)

    def _drop_pending(self) -> None:
        if self._items is None:
            return
        while not self._items.empty():
            item = self._items.get_nowait()
            if item is not _DONE and not isinstance(item, _Failed):
                self._slots.release()


__all__ = ["LiveBridge"]
