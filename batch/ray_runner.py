"""Jobs as Ray tasks on a cluster (the ``ray`` extra): ``iplap batch --ray auto|ADDRESS``.

One task per face preparation and one per job, each asking for ``threads`` CPUs. The
bundle, the faces and the speech travel through Ray's object store (put once each), and
the outputs come back as bytes that the driver writes, so the workers need no shared file
system, only iplap installed. A task whose worker dies is retried by Ray on another worker
(``max_retries``); an error in the input is not retried and is recorded with its message.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

from .. import Bundle, IplapError
from ..errors import Failure, first_line
from .manifest import JobOptions
from .plan import PrepareTask, RenderTask, Sink
from .work import Rendered, prepare_face, render_job

log = logging.getLogger(__name__)

_BUNDLE_LOCK = threading.Lock()


def _bundle_on_this_node(files: dict[str, bytes], bundle_id: str) -> Path:
    """The bundle written once per node (by its identity) into the temporary folder."""
    root = Path(tempfile.gettempdir()) / "iplap-ray-bundles" / bundle_id[:24]
    with _BUNDLE_LOCK:
        if not (root / "manifest.json").is_file():
            root.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
            for rel, data in files.items():
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                (staging / rel).write_bytes(data)
            try:
                os.rename(staging, root)
            except OSError:  # another worker on this node was first
                shutil.rmtree(staging, ignore_errors=True)
    return root


def _prepare_remote(files: dict[str, bytes], bundle_id: str, face: bytes, face_name: str, options: JobOptions,
                    threads: int) -> bytes:
    bundle = _bundle_on_this_node(files, bundle_id)
    with tempfile.TemporaryDirectory(prefix="iplap-prepare-") as tmp:
        face_path = Path(tmp) / face_name  # the name's suffix tells a photo from a video
        face_path.write_bytes(face)
        avatar = Path(tmp) / "face.avatar"
        prepare_face(bundle, face_path, options, threads, avatar)
        return avatar.read_bytes()


def _render_remote(files: dict[str, bytes], bundle_id: str, avatar: bytes, audio: bytes, audio_name: str,
                   options: JobOptions, threads: int) -> tuple[bytes, Rendered]:
    bundle = _bundle_on_this_node(files, bundle_id)
    with tempfile.TemporaryDirectory(prefix="iplap-render-") as tmp:
        avatar_path, audio_path, out = Path(tmp) / "face.avatar", Path(tmp) / audio_name, Path(tmp) / "out.mp4"
        avatar_path.write_bytes(avatar)
        audio_path.write_bytes(audio)
        rendered = render_job(bundle, avatar_path, audio_path, options, threads, out)
        return out.read_bytes(), rendered


class RayRunner:
    def __init__(self, bundle: Bundle, address: str, threads: int, retries: int):
        try:
            import ray
        except ImportError:
            raise IplapError("iplap batch --ray needs the ray extra (ray is missing): pip install 'iplap[ray]'") from None
        self.ray, self.bundle, self.address, self.threads, self.retries = ray, bundle, address, threads, retries

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        try:
            ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise IplapError(f"cannot reach a Ray cluster at {self.address!r} ({first_line(exc)}); start one with "
                             "`ray start --head` and pass its address") from None

    def run(self, prepares: list[PrepareTask], sink: Sink) -> None:
        ray = self.ray
        self._connect()
        files = {p.relative_to(self.bundle.root).as_posix(): p.read_bytes()
                 for p in sorted(self.bundle.root.rglob("*")) if p.is_file()}
        bundle_ref = ray.put(files)
        del files
        options = dict(num_cpus=self.threads, max_retries=self.retries, retry_exceptions=False)
        prepare = ray.remote(_prepare_remote).options(name="iplap-prepare", **options)
        render = ray.remote(_render_remote).options(name="iplap-render", **options)
        pending: dict = {}
        audio_refs: dict[Path, object] = {}
        for task in prepares:
            avatar = prepare.remote(bundle_ref, self.bundle.bundle_id, ray.put(task.face.read_bytes()), task.face.name,
                                    task.options, self.threads)
            for job in task.renders():
                audio = job.job.audio
                if audio not in audio_refs:
                    audio_refs[audio] = ray.put(audio.read_bytes())
                ref = render.remote(bundle_ref, self.bundle.bundle_id, avatar, audio_refs[audio], audio.name,
                                    job.job.options, self.threads)
                pending[ref] = job
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(done[0])
                self._collect(done[0], job, sink)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise

    def _collect(self, ref, job: RenderTask, sink: Sink) -> None:
        ray = self.ray
        try:
            mp4, rendered = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            sink.failed(job, Failure.of(exc.cause))
            return
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError) as exc:
            sink.failed(job, Failure.worker(f"its worker died {self.retries + 1} times ({type(exc).__name__})"))
            return
        sink.rendered(job, mp4, rendered)
