"""What ``iplap batch`` does (:class:`BatchConfig`), in a module of its own: the CLI makes its
flags from these fields when it builds its parser (each default and its help written once,
here: ``metadata["help"]``), so this must stay light (no runtime imports)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import IplapError
from ..flags import setting
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
    bundle: Path = field(metadata={"help": "model bundle folder (from iplap export)", "required": True})
    out: Path = field(metadata={"help": "output folder (made if missing; one batch at a time uses it)",
                                "required": True})
    defaults: JobOptions = field(default_factory=JobOptions)
    workers: int = setting(1, "local worker processes", metavar="K")
    threads: int = setting(0, "inference threads per worker or Ray task (0: the cores shared out between the "
                               "workers; on Ray this machine's cores, at most the largest node's CPUs)")
    ray: str | None = setting(None, "run the jobs as Ray tasks on a cluster (auto: the running cluster; or its "
                                     "address, e.g. 127.0.0.1:6379); needs the ray extra", metavar="auto|ADDRESS")
    retries: int = setting(2, "tries again for a job whose worker died or hung")
    timeout: float = setting(600.0, "seconds a face preparation or a render may take besides its frames, after "
                                     "which its worker counts as hung: killed, and the job retried",
                              metavar="SECONDS")
    timeout_per_frame: float = setting(30.0, "seconds more per frame (of the face, or of the speech)",
                                        metavar="SECONDS")
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
