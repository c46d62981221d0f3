"""The service's settings: one dataclass, checked when it is made."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import IplapError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def default_avatar_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "iplap" / "avatars"


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any address


@dataclass(frozen=True)
class ServeConfig:
    """How ``iplap serve`` runs.

    Attributes:
        bundle: the model bundle folder.
        host, port: where to listen (port 0: any free port). Only loopback addresses are
            allowed without a ``token``.
        token: when set, every API request carries ``Authorization: Bearer TOKEN`` (the
            WebSocket may pass it as the ``token`` query parameter instead).
        max_sessions: renders (jobs, live sessions, face preparations) that run at once.
        max_queue: jobs that may wait for a render slot; one more is answered with 429.
        avatar_dir: where prepared faces are kept, by content hash (they survive restarts).
        max_upload_mb: the largest upload (a face or a speech file) accepted, MB.
        refs: the default number of reference images N (a job may ask for another).
        backend, device, threads: inference (threads per render; 0: the cores shared out
            between the render slots).
        max_live_seconds: the most speech one live session may send.
        live_pending_frames: frames a live session holds for a client that reads slowly;
            beyond that the oldest frames' pictures are dropped (their audio is kept).
        jpeg_quality: quality of the live frames.
        keep_jobs: finished jobs kept (with their videos) before the oldest are removed.
    """

    bundle: Path
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    max_sessions: int = 2
    max_queue: int = 16
    avatar_dir: Path | None = None
    max_upload_mb: float = 200.0
    refs: int = 25
    backend: str = "onnxruntime"
    device: str = "CPU"
    threads: int = 0
    max_live_seconds: float = 600.0
    live_pending_frames: int = 8
    jpeg_quality: int = 85
    keep_jobs: int = 200

    def __post_init__(self):
        if not is_loopback(self.host) and not self.token:
            raise IplapError(f"serving on {self.host} (not this machine only) needs a token: anyone who can reach "
                             "it could use it", setting="token", suggestion="a secret")
        if self.token is not None and (len(self.token) < 8 or any(c.isspace() for c in self.token)):
            raise IplapError("the token must be at least 8 characters, without spaces")
        if not 0 <= self.port <= 65535:
            raise IplapError(f"port must be between 0 and 65535, got {self.port}")
        for name, low in (("max_sessions", 1), ("max_queue", 0), ("live_pending_frames", 1), ("keep_jobs", 1),
                          ("refs", 1)):
            if getattr(self, name) < low:
                raise IplapError(f"{name} must be at least {low}, got {getattr(self, name)}")
        if self.max_upload_mb <= 0 or self.max_live_seconds <= 0:
            raise IplapError("max_upload_mb and max_live_seconds must be positive")
        if not 1 <= self.jpeg_quality <= 100:
            raise IplapError(f"jpeg_quality must be between 1 and 100, got {self.jpeg_quality}")

    @property
    def avatar_folder(self) -> Path:
        return Path(self.avatar_dir) if self.avatar_dir is not None else default_avatar_dir()

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def render_threads(self) -> int:
        """Inference threads per render: the cores shared out between the slots, by default."""
        if self.threads:
            return self.threads
        return max(1, (os.cpu_count() or 1) // self.max_sessions)
