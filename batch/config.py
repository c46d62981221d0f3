"""What ``iplap batch`` does (:class:`BatchConfig`), in a module of its own: the CLI takes its
defaults from here when it builds its parser, so this must stay light (no runtime imports)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import IplapError
from .manifest import JobOptions


@dataclass(frozen=True)
class BatchConfig:
    """What ``iplap batch`` does.

    Attributes:
        manifest: the CSV or JSON Lines file of jobs.
        bundle: the model bundle.
        out: the output folder (made if missing; its parent must exist). One batch at a time
            uses it: a second one is refused while the first holds its lock.
        defaults: options of the jobs that do not set them.
        workers: local worker processes.
        threads: inference threads per worker (local) or per task (Ray); 0: the machine's
            cores shared out between the local workers, or on Ray this machine's cores, at
            most the largest node's CPUs.
        ray: ``None`` (local), ``"auto"`` (a running Ray cluster found the usual way) or the
            address of a Ray cluster.
        retries: how often a job is tried again after its worker died or hung.
        timeout: seconds any task (a face preparation, a render) may take besides its frames.
        timeout_per_frame: seconds more it may take per frame (of the face for a preparation,
            of the speech for a render); past both its worker is taken for hung, killed, and
            the task retried (``retries``). Generous: it catches hangs, not slowness.
        progress: progress bars on stderr.
    """

    manifest: Path
    bundle: Path
    out: Path
    defaults: JobOptions = field(default_factory=JobOptions)
    workers: int = 1
    threads: int = 0
    ray: str | None = None
    retries: int = 2
    timeout: float = 600.0
    timeout_per_frame: float = 30.0
    progress: bool = False

    def __post_init__(self):
        if self.workers < 1:
            raise IplapError(f"workers must be at least 1, got {self.workers}")
        if self.threads < 0 or self.retries < 0:
            raise IplapError("threads and retries must not be negative")
        if self.timeout <= 0 or self.timeout_per_frame < 0:
            raise IplapError(f"the timeout must be positive and the timeout per frame not negative, got "
                             f"{self.timeout:g} s and {self.timeout_per_frame:g} s")

    @property
    def threads_per_worker(self) -> int:
        """The local workers' threads (on Ray the cluster decides what fits, see ``ray_runner``)."""
        if self.threads:
            return self.threads
        workers = 1 if self.ray else self.workers
        return max(1, (os.cpu_count() or 1) // workers)

    def time_limit(self, frames: int) -> float:
        """Seconds a task over ``frames`` frames may run before its worker counts as hung."""
        return self.timeout + self.timeout_per_frame * frames
