"""The service's settings: one dataclass, checked when it is made.

Each field carries its own help (``metadata["help"]``): ``iplap serve``'s flags are made
from the fields (:mod:`.cli`), so a default or its explanation is written once, here.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..limits import BACKENDS, DEFAULT_REFS, check_refs
from ..cache import cache_dir
from ..errors import IplapError
from ..flags import setting

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def default_avatar_dir() -> Path:
    return cache_dir("avatars")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any address


@dataclass(frozen=True)
class ServeConfig:
    """How ``iplap serve`` runs. Each field's ``metadata["help"]`` says what it does."""

    bundle: Path = field(metadata={"help": "model bundle folder (from iplap export)", "required": True})
    host: str = setting("127.0.0.1", "address to listen on (127.0.0.1: this machine only; any other address "
                                      "needs --token)")
    port: int = setting(8765, "port (0: any free port)")
    token: str | None = setting(None, "require 'Authorization: Bearer TOKEN' on every API request (the WebSocket "
                                       "may pass ?token=TOKEN); needed when --host is not a loopback address")
    allow_origin: tuple[str, ...] = setting((), "a web origin besides the service's own whose pages may call the "
                                                 "API, e.g. http://localhost:3000 (repeat for more)",
                                             action="append", metavar="ORIGIN")
    max_sessions: int = setting(2, "renders (jobs, live sessions, face preparations) at once", metavar="K")
    max_queue: int = setting(16, "jobs and face preparations that may wait for a render slot; one more gets 429")
    avatar_dir: Path | None = setting(None, "where prepared faces are kept (default: avatars in the cache folder, "
                                            "$IPLAP_CACHE or ~/.cache/iplap)")
    avatar_dir_mb: float = setting(4096.0, "the most the prepared faces may take on disk, MB; beyond it the least "
                                            "recently used faces are removed (0: no limit)")
    max_upload_mb: float = setting(200.0, "largest upload (a face or a speech file), MB")
    max_speech_seconds: float = setting(600.0, "longest speech a job may have, s (decoding stops beyond it)")
    max_face_frames: int = setting(9000, "most frames a face video may have (at its own frame rate)")
    max_face_pixels: int = setting(3840 * 2160, "most pixels (width x height) a face photo or video may have")
    refs: int = setting(DEFAULT_REFS, "default number of reference images N (a job may ask for another)")
    backend: str = setting(BACKENDS[0], "inference backend", choices=BACKENDS)
    device: str = setting("CPU", "OpenVINO device")
    threads: int = setting(0, "inference threads per render (0: the cores shared out between the render slots)")
    streams: int = setting(1, "renders in flight per render slot: a continuous live session keeps this many frames "
                              "rendering at once, each with threads / streams of the threads (iplap bench --live "
                              "--live-workers 1,2 says whether it pays on this machine)")
    max_live_seconds: float = setting(600.0, "most speech one live session may send, s")
    live_queue_s: float = setting(60.0, "most speech a continuous live session may have waiting to play, s; a "
                                         "chunk beyond it ends the session with a 413 error")
    live_timeout_s: float = setting(3600.0, "longest wall-clock time of one live session, s")
    idle_timeout_s: float = setting(30.0, "longest wait for a live client's next message (the start message "
                                           "too; in continuous mode only the start message) or for the next "
                                           "bytes of an upload, s")
    live_heartbeat_s: float = setting(30.0, "seconds between the server's pings on a live session; a client "
                                            "that does not answer one within half of it is taken for gone")
    upload_timeout_s: float = setting(600.0, "longest time one upload may take, s")
    live_pending_frames: int = setting(8, "frames a live session holds for a client that reads slowly; older "
                                           "pictures are then dropped, their audio kept", metavar="K")
    jpeg_quality: int = setting(85, "JPEG quality of the live frames (1-100)")
    keep_jobs: int = setting(200, "finished jobs kept (with their videos) before the oldest are removed")

    def __post_init__(self):
        object.__setattr__(self, "allow_origin", tuple(self.allow_origin or ()))
        if not is_loopback(self.host) and not self.token:
            raise IplapError(f"serving on {self.host} (not this machine only) needs a token: anyone who can reach "
                             "it could use it", setting="token", suggestion="a secret")
        if self.token is not None and (len(self.token) < 8 or any(c.isspace() for c in self.token)):
            raise IplapError("the token must be at least 8 characters, without spaces")
        if not 0 <= self.port <= 65535:
            raise IplapError(f"port must be between 0 and 65535, got {self.port}")
        for name, low in (("max_sessions", 1), ("max_queue", 0), ("live_pending_frames", 1), ("keep_jobs", 1),
                          ("streams", 1),
                          ("max_face_frames", 1), ("max_face_pixels", 1)):
            if getattr(self, name) < low:
                raise IplapError(f"{name} must be at least {low}, got {getattr(self, name)}")
        check_refs(self.refs)
        for name in ("max_upload_mb", "max_live_seconds", "live_queue_s", "max_speech_seconds", "live_timeout_s", "idle_timeout_s",
                     "upload_timeout_s", "live_heartbeat_s"):
            if not getattr(self, name) > 0:
                raise IplapError(f"{name} must be positive, got {getattr(self, name)}")
        if self.avatar_dir_mb < 0:
            raise IplapError(f"avatar_dir_mb must not be negative, got {self.avatar_dir_mb}")
        if not 1 <= self.jpeg_quality <= 100:
            raise IplapError(f"jpeg_quality must be between 1 and 100, got {self.jpeg_quality}")
        for origin in self.allow_origin:
            if not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
                raise IplapError(f"an allowed origin is scheme://host[:port], e.g. http://localhost:3000; got "
                                 f"{origin!r}")

    @property
    def avatar_folder(self) -> Path:
        return Path(self.avatar_dir) if self.avatar_dir is not None else default_avatar_dir()

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def avatar_dir_bytes(self) -> int | None:
        return int(self.avatar_dir_mb * 2**20) if self.avatar_dir_mb else None

    @property
    def any_host(self) -> bool:
        """Bound to every address (with a token): any Host name may reach it."""
        return self.host in WILDCARD_HOSTS

    @property
    def render_threads(self) -> int:
        """Inference threads per render: the cores shared out between the slots, by default."""
        if self.threads:
            return self.threads
        return max(1, (os.cpu_count() or 1) // self.max_sessions)
