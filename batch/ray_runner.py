"""Jobs as Ray tasks on a cluster (the ``ray`` extra): ``iplap batch --ray auto|ADDRESS``.

One task per face preparation and one per job, each asking for ``threads`` CPUs; ``threads``
must fit the cluster's largest node (checked first: a task that fits no node would wait
forever), and without ``--threads`` it is this machine's cores, at most that node's CPUs. The
bundle goes into Ray's object store once; each face and each speech file is put there when
its task is submitted and freed with it, and the driver submits no more tasks than the
cluster has room to run at once (so the store holds only what is being worked on, and a
task's time limit runs from when it can start). A job's renders follow its face's
preparation and take its avatar from the store. The outputs come back as bytes that the
driver writes, so the workers need no shared file system, only iplap installed.

Faults: a task whose worker dies is retried by Ray on another worker (``max_retries``); a
task past its time limit (:meth:`~.config.BatchConfig.time_limit`) is taken for hung,
cancelled (its worker killed) and submitted again, at most ``retries`` times; an error in
the input is not retried and is recorded with its message.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .. import Bundle, IplapError
from ..errors import Failure, first_line
from .config import BatchConfig
from .manifest import JobOptions
from .plan import PrepareTask, RenderTask, Sink
from .work import Rendered, prepare_face, render_job

log = logging.getLogger(__name__)

#: The bundles this worker process has found whole on its node (checked once per process).
_VERIFIED: dict[str, Path] = {}


def _bundle_on_this_node(files: dict[str, bytes], bundle_id: str) -> Path:
    """The bundle, written once per node (by its identity) into the temporary folder and
    checked before use: a cached copy that does not load as this bundle (damaged, half
    written, edited) is rebuilt. The node's workers take turns under a file lock."""
    if bundle_id in _VERIFIED:
        return _VERIFIED[bundle_id]
    base = Path(tempfile.gettempdir()) / "iplap-ray-bundles"
    base.mkdir(parents=True, exist_ok=True)
    root = base / bundle_id[:24]
    with open(base / f"{root.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_bundle(root, bundle_id):
            if root.exists():
                log.warning("the bundle cached in %s is not bundle %s; writing it again", root, bundle_id[:12])
            _write_bundle(root, files)
            if not _is_bundle(root, bundle_id):
                raise IplapError(f"the bundle sent to this node does not verify as bundle {bundle_id[:12]}")
    _VERIFIED[bundle_id] = root
    return root


def _is_bundle(root: Path, bundle_id: str) -> bool:
    try:
        return Bundle.load(root).bundle_id == bundle_id
    except (IplapError, OSError, ValueError, KeyError):
        return False


def _write_bundle(root: Path, files: dict[str, bytes]) -> None:
    """Write the files into a staging folder beside ``root``, then swap it in by renames, so
    that ``root`` is always either the old copy or the whole new one."""
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        for rel, data in files.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_bytes(data)
        if root.exists():
            old = staging.with_name(staging.name + ".old")
            os.rename(root, old)
            os.rename(staging, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _prepare_remote(files: dict[str, bytes], bundle_id: str, face: bytes, face_name: str, options: JobOptions,
                    threads: int) -> tuple[int, bytes]:
    bundle = _bundle_on_this_node(files, bundle_id)
    with tempfile.TemporaryDirectory(prefix="iplap-prepare-") as tmp:
        face_path = Path(tmp) / face_name  # the runtime tells a photo from a video by its content
        face_path.write_bytes(face)
        avatar = Path(tmp) / "face.avatar"
        frames = prepare_face(bundle, face_path, options, threads, avatar)
        return frames, avatar.read_bytes()


def _render_remote(files: dict[str, bytes], bundle_id: str, avatar: bytes, audio: bytes, audio_name: str,
                   options: JobOptions, threads: int) -> tuple[bytes, Rendered]:
    bundle = _bundle_on_this_node(files, bundle_id)
    with tempfile.TemporaryDirectory(prefix="iplap-render-") as tmp:
        avatar_path, audio_path, out = Path(tmp) / "face.avatar", Path(tmp) / audio_name, Path(tmp) / "out.mp4"
        avatar_path.write_bytes(avatar)
        audio_path.write_bytes(audio)
        rendered = render_job(bundle, avatar_path, audio_path, options, threads, out)
        return out.read_bytes(), rendered


@dataclass
class _Queued:
    task: PrepareTask | RenderTask
    attempts: int = 0  # tries again after it hung
    avatar: object = None  # the ObjectRef of the avatar: a preparation's result, a render's input


@dataclass
class _Running:
    queued: _Queued
    deadline: float  # time.monotonic()
    limit: float  # seconds


def _renders(task: PrepareTask | RenderTask) -> list[RenderTask]:
    return task.renders() if isinstance(task, PrepareTask) else [task]


def _frames(n: int) -> str:
    return f"{n} frame{'s' * (n != 1)}"


#: Seconds to wait for a TCP connection to an explicit cluster address before ``ray.init``.
PROBE_TIMEOUT_S = 5.0


def cluster_endpoint(address: str | None) -> tuple[str, int] | None:
    """``(host, port)`` of an explicit cluster address (``HOST:PORT``, ``[IPv6]:PORT``,
    ``ray://HOST:PORT``); ``None`` for ``auto`` or anything else, which is left to Ray."""
    host, sep, port = (address or "").split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    if not 0 < int(port) < 65536:  # the resolver would take 99999 modulo 65536: another port
        raise IplapError(f"--ray {address}: {port} is not a port (1 to 65535)")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _refused_token(exc: BaseException) -> bool:
    """Whether ``ray.init`` failed because the cluster rejected (or missed) a token. Ray raises
    a plain ConnectionError whose causes name ``InvalidAuthToken``."""
    while exc is not None:
        if type(exc).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class RayRunner:
    def __init__(self, bundle: Bundle, config: BatchConfig):
        try:
            import ray
        except ImportError:
            raise IplapError("iplap batch --ray needs the ray extra (ray is missing): pip install 'iplap[ray]'") from None
        self.ray, self.bundle, self.config = ray, bundle, config
        self.address, self.retries = config.ray, config.retries

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        endpoint = cluster_endpoint(self.address)
        if endpoint is not None:
            # Ray retries an address where nothing listens for about 14 minutes (20 tries of
            # about 41 s each, seen with Ray 2.60): a wrong port fails here at once instead.
            try:
                socket.create_connection(endpoint, timeout=PROBE_TIMEOUT_S).close()
            except OSError as exc:
                raise IplapError(f"nothing answers at {self.address!r} ({exc.strerror or exc}); start a Ray cluster "
                                 "with `ray start --head` and pass its address") from None
        try:
            ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            if _refused_token(exc):
                # Ray sends its token to an explicit address only when told to (it would hand
                # the token to whatever listens there): we do not turn that on for the user.
                raise IplapError(f"the Ray cluster at {self.address!r} refused this client's authentication token "
                                 "(it has token authentication on): set RAY_AUTH_MODE=token, and RAY_AUTH_TOKEN "
                                 "(or ~/.ray/auth_token) to the cluster's token") from None
            raise IplapError(f"cannot reach a Ray cluster at {self.address!r} ({first_line(exc)}); start one with "
                             "`ray start --head` and pass its address") from None

    def fit(self) -> tuple[int, int]:
        """The threads (CPUs) each task asks for, and how many such tasks the cluster runs at
        once. Asked for more than the largest node has, no task would ever be scheduled."""
        cpus = [int(node.get("Resources", {}).get("CPU", 0)) for node in self.ray.nodes() if node.get("Alive")]
        largest = max(cpus, default=0)
        if largest < 1:
            raise IplapError("the Ray cluster has no node with a CPU to run the tasks on")
        asked = self.config.threads
        if asked > largest:
            raise IplapError(f"--threads {asked} does not fit the Ray cluster: each task asks for that many CPUs and "
                             f"its largest node has {largest} CPU{'s' * (largest != 1)} (give --threads {largest} "
                             "or less)")
        threads = asked or min(os.cpu_count() or 1, largest)
        return threads, sum(c // threads for c in cpus)

    def run(self, prepares: list[PrepareTask], sink: Sink) -> None:
        ray = self.ray
        self._connect()
        threads, slots = self.fit()
        log.info("Ray: %d CPUs a task, %d tasks at once", threads, slots)
        files = {p.relative_to(self.bundle.root).as_posix(): p.read_bytes()
                 for p in sorted(self.bundle.root.rglob("*")) if p.is_file()}
        self._bundle_ref = ray.put(files)
        del files
        self._threads = threads
        options = dict(num_cpus=threads, max_retries=self.retries, retry_exceptions=False)
        self._prepare = ray.remote(_prepare_remote).options(name="iplap-prepare", num_returns=2, **options)
        self._render = ray.remote(_render_remote).options(name="iplap-render", **options)
        ready: deque[_Queued] = deque(_Queued(p) for p in prepares)
        running: dict = {}  # ObjectRef -> _Running
        try:
            while ready or running:
                while ready and len(running) < slots:
                    queued = ready.popleft()
                    limit = self.config.time_limit(queued.task.frames)
                    running[self._submit(queued)] = _Running(queued, time.monotonic() + limit, limit)
                wait = max(0.0, min(r.deadline for r in running.values()) - time.monotonic())
                done, _ = ray.wait(list(running), num_returns=1, timeout=wait)
                if done:
                    self._collect(done[0], running.pop(done[0]), ready, sink)
                    continue
                now = time.monotonic()
                for ref in [ref for ref, r in running.items() if r.deadline <= now]:
                    self._hung(ref, running.pop(ref), ready, sink)
        except BaseException:
            for ref in running:
                ray.cancel(ref, force=True)
            raise
        finally:
            del self._bundle_ref, self._prepare, self._render

    def _submit(self, queued: _Queued):
        """Submit the task; its face or speech goes into the store now, held by the task alone."""
        ray, task = self.ray, queued.task
        if isinstance(task, PrepareTask):
            frames, queued.avatar = self._prepare.remote(self._bundle_ref, self.bundle.bundle_id,
                                                         ray.put(task.face.read_bytes()), task.face.name,
                                                         task.options, self._threads)
            return frames
        audio = task.job.audio
        return self._render.remote(self._bundle_ref, self.bundle.bundle_id, queued.avatar,
                                   ray.put(audio.read_bytes()), audio.name, task.job.options, self._threads)

    def _collect(self, ref, running: _Running, ready: deque, sink: Sink) -> None:
        ray, queued = self.ray, running.queued
        task = queued.task
        try:
            result = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            failure = Failure.of(exc.cause)
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError) as exc:
            failure = Failure.worker(f"its worker died {self.retries + 1} times ({type(exc).__name__})")
        except ray.exceptions.RayError as exc:  # cancelled by someone else, killed for memory, ...
            failure = Failure.worker(f"Ray did not run it ({type(exc).__name__}: {first_line(exc)})")
        else:
            if isinstance(task, PrepareTask):
                # Its renders next, before other faces: its avatar leaves the store the sooner.
                ready.extendleft(_Queued(render, avatar=queued.avatar) for render in reversed(task.renders()))
            else:
                sink.rendered(task, *result)
            return
        for render in _renders(task):
            sink.failed(render, failure)

    def _hung(self, ref, running: _Running, ready: deque, sink: Sink) -> None:
        queued = running.queued
        again = queued.attempts < self.retries
        log.warning("a Ray task hung (no result within %.0f s) during %s; %s", running.limit, queued.task.describe(),
                    "cancelling it and retrying it on another worker" if again else "cancelling it, giving up")
        self.ray.cancel(ref, force=True)
        if again:
            queued.attempts += 1
            ready.appendleft(queued)
            return
        failure = Failure.worker(f"its worker hung {queued.attempts + 1} times (no result within "
                                 f"{running.limit:.0f} s, the limit for {_frames(queued.task.frames)})")
        for render in _renders(queued.task):
            sink.failed(render, failure)
