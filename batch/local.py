"""Jobs on worker processes of this machine (the default: nothing but iplap needed).

A small pool of our own rather than ``concurrent.futures.ProcessPoolExecutor``: when a
worker dies, that pool breaks as a whole and cannot say which job killed it. Here every
worker runs one task at a time over a pipe, so a dead worker's task is known; it is retried
(at most ``retries`` times) on a fresh worker, and the other workers go on. A worker whose
task runs past its time limit (:meth:`~.config.BatchConfig.time_limit`, from the task's
frames) is taken for hung: it is killed, and its task retried the same way.
"""

from __future__ import annotations

import logging
import multiprocessing
import math
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path

from ..errors import Failure, IplapError
from .config import BatchConfig
from .plan import PrepareTask, RenderTask, Sink
from .work import prepare_face, render_job

log = logging.getLogger(__name__)


@dataclass
class _Worker:
    process: multiprocessing.Process
    conn: object
    task: PrepareTask | RenderTask | None = None
    deadline: float = math.inf  # time.monotonic() by which its task must be done


@dataclass
class _Queued:
    task: PrepareTask | RenderTask
    attempts: int = 0
    avatar: Path | None = field(default=None)


def _leave_with_the_driver(every: float = 1.0) -> None:
    """End this worker when its driver is gone (killed with SIGKILL, say), as a hung worker
    would otherwise stay for ever."""
    driver = os.getppid()

    def watch():
        while os.getppid() == driver:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="iplap-driver-watch").start()


def _worker_main(conn, bundle: str, threads: int) -> None:
    # Ctrl-C is the driver's to handle: it stops the workers and cleans up after them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _leave_with_the_driver()
    bundle_path = Path(bundle)
    while True:
        message = conn.recv()
        if message is None:
            return
        kind, task_id, payload = message
        try:
            if kind == "prepare":
                face, options, avatar = payload
                conn.send(("done", task_id, prepare_face(bundle_path, face, options, threads, avatar)))
            else:
                avatar, audio, options, out = payload

                def progress(done, total, task_id=task_id):
                    conn.send(("progress", task_id, done))

                conn.send(("done", task_id, render_job(bundle_path, avatar, audio, options, threads, out, progress)))
        except Exception as exc:  # noqa: BLE001 - reported as the job's failure; the worker goes on
            if not isinstance(exc, IplapError):
                log.exception("%s failed", kind)  # a bug: its traceback, in the worker's log
            conn.send(("failed", task_id, Failure.of(exc)))


class LocalRunner:
    """``config.workers`` processes with ``config.threads_per_worker`` inference threads each."""

    def __init__(self, bundle: Path, config: BatchConfig, work: Path):
        self.bundle, self.config, self.work = bundle, config, work
        self.workers, self.threads, self.retries = config.workers, config.threads_per_worker, config.retries
        self._context = multiprocessing.get_context("spawn")  # no inherited threads or sessions
        self._pool: list[_Worker] = []

    def _start_worker(self) -> _Worker:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_worker_main, args=(theirs, str(self.bundle), self.threads),
                                        daemon=True, name="iplap-batch-worker")
        process.start()
        theirs.close()
        return _Worker(process, ours)

    def run(self, prepares: list[PrepareTask], sink: Sink) -> None:
        ready: deque[_Queued] = deque(_Queued(p) for p in prepares)
        ids: dict[int, _Queued] = {}
        self._pool = [self._start_worker() for _ in range(min(self.workers, max(1, sum(len(p.jobs) for p in prepares))))]
        finished = False
        try:
            while ready or any(w.task is not None for w in self._pool):
                for worker in self._pool:
                    if worker.task is None and ready:
                        self._assign(worker, ready.popleft(), ids)
                busy = [w for w in self._pool if w.task is not None]
                waitables = {w.conn: w for w in busy} | {w.process.sentinel: w for w in busy}
                timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
                signalled = wait(list(waitables), timeout=timeout)
                if not signalled:
                    now = time.monotonic()
                    for worker in [w for w in busy if w.deadline <= now]:
                        self._hung(worker, ids, ready, sink)
                for ready_object in signalled:
                    worker = waitables[ready_object]
                    if worker.task is None:
                        continue
                    if ready_object is worker.conn:
                        self._receive(worker, ids, ready, sink)
                    elif not worker.conn.poll():
                        self._died(worker, ids, ready, sink)
            finished = True
        finally:
            self.stop(graceful=finished)

    def _assign(self, worker: _Worker, queued: _Queued, ids: dict[int, _Queued]) -> None:
        task = queued.task
        ids[id(task)] = queued
        worker.task = task
        worker.deadline = time.monotonic() + self.config.time_limit(task.frames)
        if isinstance(task, PrepareTask):
            worker.conn.send(("prepare", id(task), (task.face, task.options, task.avatar_path(self.work))))
        else:
            worker.conn.send(("render", id(task), (queued.avatar, task.job.audio, task.job.options,
                                                   task.temporary_output(self.work))))

    def _receive(self, worker: _Worker, ids, ready: deque, sink: Sink) -> None:
        try:
            kind, task_id, payload = worker.conn.recv()
        except (EOFError, OSError):
            self._died(worker, ids, ready, sink)
            return
        queued = ids[task_id]
        task = queued.task
        if kind == "progress":
            sink.progress(task, payload)
            return
        worker.task, worker.deadline = None, math.inf
        del ids[task_id]
        if isinstance(task, PrepareTask):
            if kind == "done":
                avatar = task.avatar_path(self.work)
                ready.extend(_Queued(render, avatar=avatar) for render in task.renders())
            else:
                for render in task.renders():
                    sink.failed(render, payload)
        elif kind == "done":
            sink.rendered(task, task.temporary_output(self.work), payload)
        else:
            sink.failed(task, payload)

    def _died(self, worker: _Worker, ids, ready: deque, sink: Sink) -> None:
        code = worker.process.exitcode
        self._lost(worker, ids, ready, sink, f"a worker died (exit code {code})",
                   lambda times: f"the worker died {times} times (last exit code {code})")

    def _hung(self, worker: _Worker, ids, ready: deque, sink: Sink) -> None:
        """Past its task's time limit: the worker is killed, and the task handled like a dead
        worker's."""
        limit = self.config.time_limit(worker.task.frames)
        worker.process.kill()
        worker.process.join(timeout=10)
        frames = worker.task.frames
        self._lost(worker, ids, ready, sink, f"a worker hung (no result within {limit:.0f} s)",
                   lambda times: f"its worker hung {times} times (no result within {limit:.0f} s, the limit for "
                                 f"{frames} frame{'s' * (frames != 1)})")

    def _lost(self, worker: _Worker, ids, ready: deque, sink: Sink, what: str, message) -> None:
        """The task of a worker that is gone: retried on a fresh worker (at most ``retries``
        times), then failed with ``message(times)``."""
        task = worker.task
        queued = ids.pop(id(task))
        again = queued.attempts < self.retries
        log.warning("%s during %s; %s", what, task.describe(),
                    "retrying it on another worker" if again else "giving up")
        worker.task, worker.deadline = None, math.inf
        self._pool.remove(worker)
        worker.conn.close()
        self._pool.append(self._start_worker())
        if again:
            queued.attempts += 1
            ready.appendleft(queued)
        else:
            failure = Failure.worker(message(queued.attempts + 1))
            for render in (task.renders() if isinstance(task, PrepareTask) else [task]):
                sink.failed(render, failure)

    def stop(self, graceful: bool = False) -> None:
        """End the workers: asked to leave when all went well, terminated otherwise (Ctrl-C, an
        error): a render cut short leaves only its temporary file, which the batch removes."""
        for worker in self._pool:
            if graceful:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
            elif worker.process.is_alive():
                worker.process.terminate()
        for worker in self._pool:
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.kill()
            worker.conn.close()
        self._pool = []
