"""``iplap batch``: every job of a manifest, each output written whole, nothing rendered twice.

Steps (:func:`run_batch`): read and check the whole manifest; hash the faces and speech;
skip the jobs whose output is there with a matching record in ``OUT/batch.jsonl`` (input
hashes, bundle, options, the output's own hash); plan one face preparation per distinct face
and its renders; run them on local worker processes or on a Ray cluster; move each finished
output into place (a rename) and append its record. A job that fails on bad input is
recorded with its one-line error and the others go on.

One batch at a time per output folder: a run holds an exclusive lock (``flock``) on
``OUT/.iplap-batch.lock`` from before it clears the work folder to its end, and a second run
is refused, naming the first's pid. The kernel drops the lock when its process dies, so a
crashed run's lock file never blocks the next. And a batch overwrites only what a batch wrote:
a file at a job's output path that no "done" record of ``batch.jsonl`` wrote (by its hash) is
left alone, and that job fails (the others go on; a rerun after moving it renders it).
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .. import FPS, Bundle, IplapError, load_speech
from ..provenance import sha256_file
from ..errors import Failure, Fault
from .config import BatchConfig
from .manifest import BatchJob, JobOptions, read_manifest
from .plan import RenderTask, plan

log = logging.getLogger(__name__)

RECORDS = "batch.jsonl"
WORK = ".iplap-batch-work"  # inside the output folder: temporary files, removed before and after a run
LOCK = ".iplap-batch.lock"  # inside the output folder: locked while a batch runs there; holds its pid


@dataclass
class Summary:
    jobs: int = 0
    done: int = 0
    skipped: int = 0
    failed: dict[str, Failure] = field(default_factory=dict)  # by output name
    frames: int = 0
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0: all done; 2: some failed on bad input; 1: some failed otherwise (workers that died or hung)."""
        if not self.failed:
            return 0
        return 2 if any(f.fault is Fault.INPUT for f in self.failed.values()) else 1

    def table(self) -> str:
        fps = self.frames / self.seconds if self.seconds else 0.0
        rows = [("jobs", self.jobs), ("done", self.done), ("skipped (done before)", self.skipped),
                ("failed", len(self.failed)), ("frames rendered", self.frames), ("seconds", f"{self.seconds:.1f}"),
                ("frames per second", f"{fps:.2f}")]
        width = max(len(k) for k, _ in rows)
        lines = [f"  {k:<{width}}  {v}" for k, v in rows]
        lines += [f"  failed: {out}: {f.message}" for out, f in self.failed.items()]
        return "\n".join(lines)


class Records:
    """``batch.jsonl``: one JSON record a finished job (done or failed), appended; the last one
    for an output wins. Every "done" record also says which file a batch wrote (its hash)."""

    def __init__(self, path: Path):
        self.path = path
        self.latest: dict[str, dict] = {}
        self._written: dict[str, set[str]] = {}  # output name -> the hashes of the files batches wrote there
        if path.is_file():
            for number, line in enumerate(path.read_text().splitlines(), 1):
                try:
                    self._remember(json.loads(line))
                except (ValueError, KeyError, TypeError, AttributeError):
                    log.warning("%s line %d is not a record; ignored", path.name, number)

    def _remember(self, record: dict) -> None:
        self.latest[record["out"]] = record
        if record.get("state") == "done" and record.get("output_sha256"):
            self._written.setdefault(record["out"], set()).add(record["output_sha256"])

    def wrote(self, target: Path) -> bool:
        """Whether a batch may put an output at ``target``: nothing is there, or a finished job
        wrote what is (a later failed try does not disown it; an edit since does)."""
        if not target.exists() and not target.is_symlink():
            return True
        return target.is_file() and sha256_file(target) in self._written.get(target.name, ())

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._remember(record)

    def done_before(self, task: RenderTask, bundle_id: str, out: Path) -> bool:
        record = self.latest.get(task.job.out)
        target = out / task.job.out
        return (record is not None and record.get("state") == "done" and target.is_file()
                and record.get("face_sha256") == task.face_sha256 and record.get("audio_sha256") == task.audio_sha256
                and record.get("bundle_id") == bundle_id and record.get("options") == task.job.options.to_dict()
                and record.get("output_sha256") == sha256_file(target))


class _Outputs:
    """The driver's side: outputs moved into place, records, progress bars, the summary."""

    def __init__(self, out: Path, work: Path, records: Records, bundle_id: str, summary: Summary, progress: bool):
        self.out, self.work, self.records, self.bundle_id, self.summary = out, work, records, bundle_id, summary
        self._frames_seen: dict[int, int] = {}
        self._bars = None
        if progress:
            from tqdm import tqdm

            self._bars = (tqdm(total=summary.jobs, desc="jobs", unit="job", file=sys.stderr, position=0),
                          tqdm(desc="frames", unit="frame", file=sys.stderr, position=1))
            self._bars[0].update(summary.skipped)

    def progress(self, task: RenderTask, frames_done: int) -> None:
        before = self._frames_seen.get(id(task), 0)
        self._frames_seen[id(task)] = frames_done
        if self._bars:
            self._bars[1].update(frames_done - before)

    def rendered(self, task: RenderTask, output: Path | bytes, rendered) -> None:
        target = self.out / task.job.out
        if isinstance(output, bytes):  # from a Ray task: written here, then renamed into place
            temporary = self.work / "renders" / task.job.out
            temporary.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(output)
            output = temporary
        if not self.records.wrote(target):  # it appeared while the job ran
            os.unlink(output)
            self.failed(task, not_ours(target))
            return
        os.replace(output, target)
        self.progress(task, rendered.frames)
        self.summary.done += 1
        self.summary.frames += rendered.frames
        self._record(task, "done", frames=rendered.frames, seconds=round(rendered.seconds, 3),
                     output_sha256=sha256_file(target))
        if self._bars:
            self._bars[0].update(1)

    def failed(self, task: RenderTask, failure: Failure) -> None:
        self.summary.failed[task.job.out] = failure
        self._record(task, "failed", error=failure.message, failure=failure.fault.value)
        log.warning("%s failed: %s", task.describe(), failure.message)
        if self._bars:
            self._bars[0].update(1)

    def _record(self, task: RenderTask, state: str, **extra) -> None:
        self.records.append({"out": task.job.out, "state": state, "line": task.job.line, "face": str(task.job.face),
                             "audio": str(task.job.audio), "face_sha256": task.face_sha256,
                             "audio_sha256": task.audio_sha256, "bundle_id": self.bundle_id,
                             "options": task.job.options.to_dict(), "finished": time.time(), **extra})

    def close(self) -> None:
        if self._bars:
            for bar in self._bars:
                bar.close()


def not_ours(target: Path) -> Failure:
    """The failure of a job whose output path holds a file that no batch wrote."""
    return Failure(Fault.INPUT, f"{target} exists and no job of a batch wrote it, so it is not overwritten "
                                "(move it away, or give the job another out)")


@contextmanager
def hold(out: Path):
    """The output folder's lock, held for the block: another batch there is refused with the
    pid of this one. ``flock`` rather than a pid file alone: the kernel releases it when its
    process dies however it dies, so a stale lock file never blocks."""
    path = out / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise IplapError(f"{out} is in use by another iplap batch (pid {holder}): one batch at a time per "
                             "output folder; wait for it to end, or give another --out") from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # locked a file that the batch before removed as it ended: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.unlink(path)  # while still locked, so that no one locks the file that goes away
        os.close(fd)


def run_batch(config: BatchConfig) -> Summary:
    """Run the manifest's jobs; returns what happened (see :attr:`Summary.exit_code`).

    Raises :class:`IplapError` when another batch is running on the same output folder. A job
    whose output path holds a file that no batch wrote fails (it is not overwritten) and the
    others go on: refusing the whole batch up front would hold back every other job for one
    stray file, and the rerun after it is moved renders that job alone."""
    start = time.perf_counter()
    jobs = read_manifest(config.manifest, config.defaults)
    bundle = Bundle.load(config.bundle)
    out = Path(config.out)
    if not out.parent.is_dir():
        raise IplapError(f"the output folder's parent does not exist: {out.parent}")
    out.mkdir(exist_ok=True)
    with hold(out):
        return _run_batch(config, jobs, bundle, out, start)


def _run_batch(config: BatchConfig, jobs: list[BatchJob], bundle: Bundle, out: Path, start: float) -> Summary:
    work = out / WORK
    shutil.rmtree(work, ignore_errors=True)  # a crashed run's leftovers
    hashes: dict[Path, str] = {}

    def digest(path: Path) -> str:
        if path not in hashes:
            hashes[path] = sha256_file(path)
        return hashes[path]

    tasks = [RenderTask(job, digest(job.face), digest(job.audio)) for job in jobs]
    records = Records(out / RECORDS)
    summary = Summary(jobs=len(tasks))
    todo, refused = [], []
    for task in tasks:
        if records.done_before(task, bundle.bundle_id, out):
            summary.skipped += 1
        elif not records.wrote(out / task.job.out):
            refused.append(task)
        else:
            todo.append(task)
    log.info("%d jobs: %d done before, %d to render", len(tasks), summary.skipped, len(todo))
    prepares = plan(todo)
    _count_frames(prepares)
    sink = _Outputs(out, work, records, bundle.bundle_id, summary, config.progress)
    try:
        for task in refused:
            sink.failed(task, not_ours(out / task.job.out))
        if todo:
            (work / "avatars").mkdir(parents=True)
            (work / "renders").mkdir(parents=True)
            _runner(config, bundle).run(prepares, sink)
    finally:
        sink.close()
        shutil.rmtree(work, ignore_errors=True)
        summary.seconds = time.perf_counter() - start
    return summary


def _runner(config: BatchConfig, bundle: Bundle):
    work = Path(config.out) / WORK
    if config.ray is None:
        from .local import LocalRunner

        return LocalRunner(bundle.root, config, work)
    from .ray_runner import RayRunner

    return RayRunner(bundle, config)


def _count_frames(prepares) -> None:
    """Each task's frames (a face's, a speech's: what its time limit is made of), counted
    here once for every runner."""
    speech: dict[Path, int] = {}
    for prepare in prepares:
        prepare.frames = face_frames(prepare.face)
        for render in prepare.renders():
            audio = render.job.audio
            if audio not in speech:
                speech[audio] = speech_frames(audio)
            render.frames = speech[audio]


def speech_frames(path: Path) -> int:
    """The video frames a render of this speech makes (its duration at iplap.FPS); 0 where it
    does not decode (the worker then says why, as the job's failure)."""
    try:
        return math.ceil(load_speech(path).duration * FPS)
    except IplapError:
        return 0


def face_frames(path: Path) -> int:
    """The frames of a face video as its container states them; 1 for a photo (or where it
    does not say)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    finally:
        capture.release()
    return max(1, count)


__all__ = ["BatchConfig", "BatchJob", "JobOptions", "Summary", "run_batch"]
