"""Render jobs: a queue in front of a fixed number of render slots.

A job is a face (an avatar id) and speech (decoded and checked when it is submitted, so a
bad file is refused at once; then kept as the uploaded file, not as samples, so that a full
queue of long speech costs disk, not memory). Jobs wait for one of the service's render slots
(:class:`~.slots.Slots`, shared with live sessions and face preparations); at most
``max_queue`` jobs and preparations may wait, and one more is refused (429), so memory and
disk stay bounded however many clients submit at once. A running job reports its frames and speed, and a
cancelled one stops after its current frame, leaving no file.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from .. import Pipeline
from ..errors import Failure, Fault
from .errors import ApiError
from .slots import Slots
from .store import AvatarStore, Cancelled

log = logging.getLogger(__name__)


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING)


@dataclass
class Job:
    id: str
    avatar: str
    refs: int
    audio: Path = field(repr=False)  # the uploaded speech, checked, in the jobs folder
    keyframe_every: int = 1  # the renderer on every K-th frame (PipelineConfig.keyframe_every)
    state: JobState = JobState.QUEUED
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
        return {"id": self.id, "state": self.state.value, "frames_done": self.frames_done, "frames_total": self.frames_total,
                "fps": None if self.fps is None else round(self.fps, 3), "error": self.error, "avatar": self.avatar,
                "refs": self.refs, "keyframe_every": self.keyframe_every}


class JobQueue:
    """Jobs by id, their queue and their renders."""

    def __init__(self, pipeline: Pipeline, store: AvatarStore, slots: Slots, folder: Path, keep: int):
        self.pipeline, self.store, self.slots = pipeline, store, slots
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._tasks: set[asyncio.Task] = set()

    @property
    def waiting(self) -> int:
        """Jobs and face preparations that will find no free slot (see :class:`Slots`)."""
        return self.slots.waiting

    @property
    def max_queue(self) -> int:
        return self.slots.max_queue

    @property
    def running(self) -> int:
        return sum(1 for job in self._jobs.values() if job.state is JobState.RUNNING)

    def list(self) -> list[Job]:
        return list(self._jobs.values())

    def check_room(self, avatar: str) -> None:
        """What ``submit`` checks first, for a caller to ask before it decodes the speech: the
        face is ready, and the queue has room (429)."""
        self.store.ready(avatar)
        self.slots.check_room()

    def submit(self, avatar: str, audio: Path, suffix: str, refs: int, keyframe_every: int = 1) -> Job:
        """Queue a render of the checked speech file ``audio`` (taken over: moved into the jobs
        folder); 429 when the queue is full."""
        self.store.ready(avatar)
        self.slots.admit()
        job_id = secrets.token_hex(8)
        kept = self.folder / f"{job_id}.speech{suffix}"
        shutil.move(str(audio), kept)
        job = Job(job_id, avatar, refs, kept, keyframe_every)
        self._jobs[job.id] = job
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._forget_old()
        return job

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id!r}")
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if not job.state.finished:
            job.cancel_requested = True
            if job.state is JobState.QUEUED:
                self._finish(job, JobState.CANCELLED)
        return job

    async def _run(self, job: Job) -> None:
        async with self.slots.hold(admitted=True):
            if job.cancel_requested:
                return
            job.state, job.started = JobState.RUNNING, time.time()
            try:
                await self.slots.call(self._render, job)
            except Cancelled:
                self._finish(job, JobState.CANCELLED)
            except ApiError as exc:
                self._finish(job, JobState.FAILED, exc.message)
            except Exception as exc:  # noqa: BLE001 - the job fails, the service goes on
                failure = Failure.of(exc, details=False)
                if failure.fault is Fault.INTERNAL:
                    log.exception("job %s failed", job.id)
                self._finish(job, JobState.FAILED, failure.message)
            else:
                self._finish(job, JobState.DONE)

    def _render(self, job: Job) -> None:
        avatar = self.store.load(job.avatar, job.refs)
        out = self.folder / f"{job.id}.mp4"
        start = time.perf_counter()

        def on_frame(done: int, total: int) -> None:
            job.frames_done, job.frames_total = done, total
            job.fps = done / max(1e-9, time.perf_counter() - start)
            if job.cancel_requested:
                raise Cancelled

        pipeline = self.pipeline if job.keyframe_every == 1 else self.pipeline.with_config(
            keyframe_every=job.keyframe_every)
        pipeline.render(avatar, job.audio, out, on_progress=on_frame)
        job.path = out

    def _finish(self, job: Job, state: JobState, error: str | None = None) -> None:
        job.state, job.error, job.finished = state, error, time.time()
        job.audio.unlink(missing_ok=True)  # the speech is not needed any more
        log.info("job %s %s%s", job.id, state.value, f": {error}" if error else "")

    def video(self, job_id: str) -> Path:
        """The finished job's mp4 (409 while there is none)."""
        job = self.get(job_id)
        if job.state is not JobState.DONE or job.path is None or not job.path.is_file():
            raise ApiError(409, f"job {job.id} is {job.state.value}: no video" + (f" ({job.error})" if job.error else ""))
        return job.path

    def delete(self, job_id: str) -> Job:
        """Cancel a job; a finished one is removed with its video."""
        job = self.cancel(job_id)
        if job.state.finished:
            self._remove(job)
        return job

    def _remove(self, job: Job) -> None:
        self._jobs.pop(job.id, None)
        if job.path is not None:
            job.path.unlink(missing_ok=True)

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state.finished]
        for job in finished[:max(0, len(finished) - self.keep)]:
            self._remove(job)

    async def close(self) -> None:
        for job in self._jobs.values():
            job.cancel_requested = True
        for task in list(self._tasks):
            task.cancel()
        shutil.rmtree(self.folder, ignore_errors=True)
