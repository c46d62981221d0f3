"""Prepared faces, kept by content hash so that the same face is prepared once.

Layout of the avatar folder (one folder a face)::

    ID/face.EXT          the uploaded face, as it came
    ID/meta.json         name, sha256, size, the bundle it was prepared with, state (written
                         atomically; its modification time is when the face was last used)
    ID/refs-N.avatar     the prepared avatar for N references (iplap's avatar file)

``ID`` is derived from the face's sha256 and the bundle's identity, so one face uploaded
twice (under any name) is one avatar, and a bundle change prepares faces afresh. Faces
are prepared in the render slots; videos report the frames tracked so far, and a preparation
stops at its next frame when the service shuts down. With a size limit, the least recently
used faces are removed once the folder outgrows it.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import Avatar, Pipeline
from ..errors import Failure, Fault
from .errors import ApiError

log = logging.getLogger(__name__)

#: Prepared avatars kept loaded (their reference features are several MB each for a video).
LOADED_AVATARS = 4
META = "meta.json"


class AvatarState(str, enum.Enum):
    PREPARING = "preparing"
    READY = "ready"
    FAILED = "failed"


class Cancelled(Exception):
    """Raised inside a render or a preparation to stop it at its next frame."""


@dataclass
class AvatarRecord:
    """What the API reports of a face (``GET /api/avatars``)."""

    id: str
    name: str
    sha256: str
    size: int
    kind: str  # the API's word for the face's medium: "image" or "video"
    state: AvatarState = AvatarState.PREPARING
    frames_done: int = 0
    frames_total: int | None = None
    frames: int | None = None  # 25 fps frames of the prepared face
    width: int | None = None
    height: int | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)

    def public(self) -> dict:
        out = asdict(self)
        out.pop("sha256")
        out["state"] = self.state.value
        return out


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _folder_bytes(folder: Path) -> int:
    total = 0
    for entry in folder.rglob("*"):
        try:
            total += entry.stat().st_size if entry.is_file() else 0
        except OSError:
            pass
    return total


class AvatarStore:
    """The avatar folder, and the records of the faces in it (thread-safe)."""

    def __init__(self, folder: Path, pipeline: Pipeline, max_bytes: int | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pipeline = pipeline
        self.bundle_id = pipeline.bundle.bundle_id
        self.max_bytes = max_bytes
        self.closing = False  # set at shutdown: preparations stop at their next frame
        self._lock = threading.Lock()
        self._records: dict[str, AvatarRecord] = {}
        self._loaded: OrderedDict[tuple[str, int], Avatar] = OrderedDict()
        self._preparing: dict[tuple[str, int], threading.Lock] = {}
        self._scan()

    # -- records ---------------------------------------------------------------------------
    def _scan(self) -> None:
        """Faces prepared by earlier runs with this bundle."""
        for meta in sorted(self.folder.glob(f"*/{META}")):
            try:
                data = json.loads(meta.read_text())
                if data.get("bundle_id") != self.bundle_id or data.get("state") != AvatarState.READY.value:
                    continue
                fields = {k: v for k, v in data.items() if k in AvatarRecord.__dataclass_fields__}
                record = AvatarRecord(**{**fields, "state": AvatarState.READY})
            except (OSError, ValueError, TypeError):
                log.warning("ignoring unreadable avatar record %s", meta.parent.name)
                continue
            self._records[record.id] = record

    def avatar_id(self, sha256: str) -> str:
        return hashlib.sha256(f"{sha256}:{self.bundle_id}".encode()).hexdigest()[:20]

    def list(self) -> list[AvatarRecord]:
        with self._lock:
            return sorted(self._records.values(), key=lambda r: r.created)

    def get(self, avatar_id: str) -> AvatarRecord:
        with self._lock:
            record = self._records.get(avatar_id)
        if record is None:
            raise ApiError(404, f"no avatar {avatar_id[:40]!r}")
        return record

    def ready(self, avatar_id: str) -> AvatarRecord:
        record = self.get(avatar_id)
        if record.state is not AvatarState.READY:
            raise ApiError(409, f"avatar {avatar_id} is {record.state.value}" +
                           (f": {record.error}" if record.error else ""))
        return record

    def add(self, upload_path: Path, sha256: str, size: int, name: str, suffix: str, photo: bool) \
            -> tuple[AvatarRecord, bool]:
        """Take an uploaded face: (its record, whether it must be prepared now). A face
        already here (ready or being prepared) is not prepared again."""
        avatar_id = self.avatar_id(sha256)
        with self._lock:
            existing = self._records.get(avatar_id)
            if existing is not None and existing.state is not AvatarState.FAILED:
                upload_path.unlink(missing_ok=True)
                return existing, False
            folder = self.folder / avatar_id
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            face = folder / ("face" + (suffix or ".bin"))  # the runtime tells a photo by its content
            shutil.move(str(upload_path), face)
            record = AvatarRecord(avatar_id, name, sha256, size, "image" if photo else "video")
            self._records[avatar_id] = record
        return record, True

    def delete(self, avatar_id: str) -> None:
        record = self.get(avatar_id)
        if record.state is AvatarState.PREPARING:
            raise ApiError(409, f"avatar {avatar_id} is being prepared; delete it when it is ready")
        self.discard(avatar_id)

    def discard(self, avatar_id: str) -> None:
        """Forget a face and remove its folder (nothing happens for an unknown id)."""
        with self._lock:
            self._records.pop(avatar_id, None)
            for key in [k for k in self._loaded if k[0] == avatar_id]:
                del self._loaded[key]
        shutil.rmtree(self.folder / avatar_id, ignore_errors=True)

    def _face_file(self, avatar_id: str) -> Path:
        found = [p for p in (self.folder / avatar_id).glob("face.*")]
        if not found:
            raise ApiError(404, f"the face of avatar {avatar_id} is gone")
        return found[0]

    # -- preparation (in a render slot) -----------------------------------------------------
    def prepare(self, avatar_id: str) -> AvatarRecord:
        """Prepare a new face with the default number of references. The record says how it
        went; a failure is also raised (422 with its message; 503 when the service stops)."""
        record = self.get(avatar_id)

        def progress(done: int, total: int | None) -> None:
            record.frames_done, record.frames_total = done, total
            if self.closing:
                raise Cancelled

        try:
            avatar = self._prepare(avatar_id, self.pipeline.config.refs, progress)
        except Cancelled:
            self.discard(avatar_id)
            raise ApiError(503, "the service is shutting down") from None
        except Exception as exc:  # noqa: BLE001 - reported in the record; the service goes on
            failure = Failure.of(exc, details=False)
            if failure.fault is Fault.INTERNAL:
                log.exception("preparing avatar %s failed", avatar_id)
            message = _in_clients_words(failure.message, self._face_file(avatar_id).name, record.name)
            record.state, record.error = AvatarState.FAILED, message
            log.info("avatar %s (%s) failed: %s", avatar_id, record.name, message)
            raise ApiError(422, message) from None
        record.frames, record.width, record.height = avatar.n_frames, avatar.track.width, avatar.track.height
        record.frames_done = record.frames_total = avatar.n_frames
        record.state = AvatarState.READY
        meta = {**asdict(record), "state": record.state.value, "bundle_id": self.bundle_id}
        _write_atomically(self.folder / avatar_id / META, json.dumps(meta, indent=1))
        log.info("avatar %s (%s) ready: %d frames", avatar_id, record.name, avatar.n_frames)
        self.evict(keep=avatar_id)
        return record

    def load(self, avatar_id: str, refs: int | None = None) -> Avatar:
        """The prepared avatar for ``refs`` references (prepared now from the stored face
        when this number was not asked for before). Call it in a render slot."""
        self.ready(avatar_id)
        self._touch(avatar_id)
        refs = refs or self.pipeline.config.refs
        key = (avatar_id, refs)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            lock = self._preparing.setdefault(key, threading.Lock())
        with lock:  # one preparation per (face, N), however many jobs ask for it at once
            with self._lock:
                if key in self._loaded:
                    return self._loaded[key]
            path = self.folder / avatar_id / f"refs-{refs}.avatar"
            pipeline = self.pipeline.with_config(refs=refs)
            avatar = pipeline.load_avatar(path) if path.is_file() else self._prepare(avatar_id, refs)
            with self._lock:
                self._loaded[key] = avatar
                while len(self._loaded) > LOADED_AVATARS:
                    self._loaded.popitem(last=False)
        return avatar

    def _prepare(self, avatar_id: str, refs: int, progress=None) -> Avatar:
        pipeline = self.pipeline.with_config(refs=refs)
        avatar = pipeline.prepare(self._face_file(avatar_id), on_progress=progress)
        avatar.save(self.folder / avatar_id / f"refs-{refs}.avatar")
        return avatar

    # -- the folder's size -------------------------------------------------------------------
    def _touch(self, avatar_id: str) -> None:
        try:
            os.utime(self.folder / avatar_id / META)
        except OSError:
            pass

    def _last_used(self, avatar_id: str) -> float:
        try:
            return (self.folder / avatar_id / META).stat().st_mtime
        except OSError:
            return 0.0

    def evict(self, keep: str | None = None) -> list[str]:
        """Remove the least recently used ready faces (never ``keep``, never one being
        prepared) until the folder fits ``max_bytes``; the ids removed."""
        if self.max_bytes is None:
            return []
        with self._lock:
            ready = [r.id for r in self._records.values() if r.state is AvatarState.READY and r.id != keep]
        sizes = {avatar_id: _folder_bytes(self.folder / avatar_id) for avatar_id in ready}
        total = sum(_folder_bytes(p) for p in self.folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        removed = []
        for avatar_id in sorted(ready, key=self._last_used):
            if total <= self.max_bytes:
                break
            self.discard(avatar_id)
            total -= sizes[avatar_id]
            removed.append(avatar_id)
            log.info("avatar %s removed: the avatar folder is over its limit of %d MB", avatar_id,
                     self.max_bytes // 2**20)
        return removed


def _in_clients_words(message: str, stored: str, uploaded: str) -> str:
    """A runtime error about the stored face file, naming the file as the client uploaded it
    (never the server's own name), and naming it once."""
    if stored in message:
        return message.replace(stored, uploaded)
    return f"{uploaded}: {message}"
