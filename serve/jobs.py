"""Render jobs: a queue in front of a fixed number of render slots.

A job is a face (an avatar id) and speech (decoded and checked when it is submitted, so a
bad file is refused at once; then kept as the uploaded file, not as samples, so that a full
queue of long speech costs disk, not memory). Jobs wait for one of the service's render slots
(:class:`Slots`, shared with live sessions and face preparations); at most
``max_queue`` may wait, and one more is refused (429), so memory and disk stay bounded
however many clients submit at once. A running job reports its frames and speed, and a
cancelled one stops after its current frame, leaving no file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import IplapError, Pipeline
from .errors import ApiError
from .store import AvatarStore

log = logging.getLogger(__name__)

STATES = ("queued", "running", "done", "failed", "cancelled")


class Slots:
    """The render slots: ``count`` renders (jobs, live sessions, preparations) at once, each on
    a thread of its own. Hold a slot (``hold()``, or ``try_acquire``/``release``) around ``call``."""

    def __init__(self, count: int):
        self.count = count
        self.free = count  # slots nobody holds (a held slot may be idle: a live session waiting on its client)
        self._semaphore = asyncio.Semaphore(count)
        self.executor = ThreadPoolExecutor(max_workers=count, thread_name_prefix="iplap-render")
        self.busy = 0  # renders on the executor now

    @contextlib.asynccontextmanager
    async def hold(self):
        """Wait for a slot and hold it for the block."""
        await self._semaphore.acquire()
        self.free -= 1
        try:
            yield
        finally:
            self.release()

    async def run(self, fn, *args):
        """Wait for a slot, then run ``fn(*args)`` on a render thread."""
        async with self.hold():
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

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


class Cancelled(Exception):
    """Raised inside a render to stop it (the client cancelled the job)."""


@dataclass
class Job:
    id: str
    avatar: str
    refs: int
    audio: Path = field(repr=False)  # the uploaded speech, checked, in the jobs folder
    state: str = "queued"
    frames_done: int = 0
    frames_total: int | None = None
    fps: float | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel_requested: bool = False
    path: Path | None = None

    def public(self) -> dict:
        return {"id": self.id, "state": self.state, "frames_done": self.frames_done, "frames_total": self.frames_total,
                "fps": None if self.fps is None else round(self.fps, 3), "error": self.error, "avatar": self.avatar,
                "refs": self.refs}


class JobQueue:
    """Jobs by id, their queue and their renders."""

    def __init__(self, pipeline: Pipeline, store: AvatarStore, slots: Slots, folder: Path, max_queue: int,
                 keep: int):
        self.pipeline, self.store, self.slots = pipeline, store, slots
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_queue, self.keep = max_queue, keep
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._tasks: set[asyncio.Task] = set()

    @property
    def waiting(self) -> int:
        """Queued jobs that will find no free slot: a job submitted while a slot is free is
        queued only until its task starts, and does not count against ``max_queue``."""
        queued = sum(1 for job in self.jobs.values() if job.state == "queued")
        return max(0, queued - self.slots.free)

    @property
    def running(self) -> int:
        return sum(1 for job in self.jobs.values() if job.state == "running")

    def submit(self, avatar: str, audio: Path, suffix: str, refs: int) -> Job:
        """Queue a render of the checked speech file ``audio`` (taken over: moved into the jobs
        folder); 429 when ``max_queue`` jobs already wait."""
        self.store.ready(avatar)
        if self.waiting >= self.max_queue:
            raise ApiError(429, f"the queue is full ({self.max_queue} jobs waiting); try again later")
        job_id = secrets.token_hex(8)
        kept = self.folder / f"{job_id}.speech{suffix}"
        shutil.move(str(audio), kept)
        job = Job(job_id, avatar, refs, kept)
        self.jobs[job.id] = job
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._forget_old()
        return job

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id!r}")
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state in ("queued", "running"):
            job.cancel_requested = True
            if job.state == "queued":
                self._finish(job, "cancelled")
        return job

    async def _run(self, job: Job) -> None:
        async with self.slots.hold():
            if job.cancel_requested:
                return
            job.state, job.started = "running", time.time()
            try:
                await self.slots.call(self._render, job)
            except Cancelled:
                self._finish(job, "cancelled")
            except ApiError as exc:
                self._finish(job, "failed", exc.message)
            except IplapError as exc:
                self._finish(job, "failed", exc.message)
            except Exception as exc:  # noqa: BLE001 - the job fails, the service goes on
                log.exception("job %s failed", job.id)
                self._finish(job, "failed", f"internal error ({type(exc).__name__})")
            else:
                self._finish(job, "done")

    def _render(self, job: Job) -> None:
        avatar = self.store.load(job.avatar, job.refs)
        out = self.folder / f"{job.id}.mp4"
        start = time.perf_counter()

        def on_frame(done: int, total: int) -> None:
            job.frames_done, job.frames_total = done, total
            job.fps = done / max(1e-9, time.perf_counter() - start)
            if job.cancel_requested:
                raise Cancelled

        self.pipeline.render(avatar, job.audio, out, on_progress=on_frame)
        job.path = out

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        job.state, job.error, job.finished = state, error, time.time()
        job.audio.unlink(missing_ok=True)  # the speech is not needed any more
        log.info("job %s %s%s", job.id, state, f": {error}" if error else "")

    def delete(self, job_id: str) -> None:
        job = self.cancel(job_id)
        if job.state in ("done", "failed", "cancelled"):
            self._remove(job)

    def _remove(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        if job.path is not None:
            job.path.unlink(missing_ok=True)

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.state in ("done", "failed", "cancelled")]
        for job in finished[:max(0, len(finished) - self.keep)]:
            self._remove(job)

    async def close(self) -> None:
        for job in self.jobs.values():
            job.cancel_requested = True
        for task in list(self._tasks):
            task.cancel()
        shutil.rmtree(self.folder, ignore_errors=True)
