"""The render slots that jobs, live sessions and face preparations share, and the one queue
in front of them.

``count`` renders run at once, each on a thread of its own. Jobs and face preparations that
find no free slot wait in one queue of at most ``max_queue``; one more is refused (429), so
however many clients submit at once, what waits is bounded. Live sessions never wait: they
take a free slot or are refused (503).
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor

from .errors import ApiError


class Slots:
    """The render slots. Hold a slot (``hold()``, or ``try_acquire``/``release``) around ``call``;
    ``admit`` before ``run`` puts work in the queue."""

    def __init__(self, count: int, max_queue: int = 0):
        self.count, self.max_queue = count, max_queue
        # Slots nobody holds. ``busy`` (renders computing) differs from ``count - free`` while a
        # live session holds a slot and waits on a slow client.
        self.free = count
        self.busy = 0
        self.admitted = 0  # work admitted that holds no slot yet
        self._semaphore = asyncio.Semaphore(count)
        self.executor = ThreadPoolExecutor(max_workers=count, thread_name_prefix="iplap-render")

    @property
    def waiting(self) -> int:
        """Admitted work that will find no free slot (work admitted while a slot is free is
        waiting only until its task starts, and does not count against ``max_queue``)."""
        return max(0, self.admitted - self.free)

    def check_room(self) -> None:
        """429 when the queue is full (before any costly check of what would be admitted)."""
        if self.waiting >= self.max_queue:
            raise ApiError(429, f"the queue is full ({self.max_queue} jobs and face preparations waiting); "
                                "try again later")

    def admit(self) -> None:
        """Count one more piece of work as queued (429 when the queue is full); its ``run``
        takes it out of the queue."""
        self.check_room()
        self.admitted += 1

    @contextlib.asynccontextmanager
    async def hold(self, admitted: bool = False):
        """Wait for a slot and hold it for the block (``admitted``: the work was ``admit``-ted)."""
        try:
            await self._semaphore.acquire()
        finally:
            self.admitted -= admitted
        self.free -= 1
        try:
            yield
        finally:
            self.release()

    async def run(self, fn, *args, admitted: bool = False):
        """Wait for a slot, then run ``fn(*args)`` on a render thread."""
        async with self.hold(admitted):
            return await self.call(fn, *args)

    async def try_acquire(self) -> bool:
        """Take a slot now if one is free, without waiting (live sessions do not queue)."""
        if self._semaphore.locked():
            return False
        await self._semaphore.acquire()  # not locked: this returns at once
        self.free -= 1
        return True

    def release(self) -> None:
        self.free += 1
        self._semaphore.release()

    async def call(self, fn, *args):
        """Run ``fn(*args)`` on a render thread; the caller holds a slot."""
        self.busy += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.busy -= 1

    def public(self) -> dict:
        return {"total": self.count, "busy": self.busy, "free": self.free, "waiting": self.waiting}

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
