"""The work a batch plans: one preparation per distinct face (and settings), then its renders.

Faces are grouped by content (sha256), not by path: two jobs that name one face file twice,
or two copies of it, share one :class:`PrepareTask`. The runners (local processes, Ray)
take the tasks and report back through a :class:`Sink`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..errors import Failure
from .manifest import BatchJob, JobOptions


@dataclass(eq=False)
class RenderTask:
    job: BatchJob
    face_sha256: str
    audio_sha256: str
    frames: int = 0  # of its speech, as far as the driver knows (for its time limit)

    def temporary_output(self, work: Path) -> Path:
        """Where a local worker writes the mp4 before the driver moves it into place."""
        return work / "renders" / self.job.out

    def describe(self) -> str:
        return f"job {self.job.out} (line {self.job.line})"


@dataclass(eq=False)
class PrepareTask:
    face: Path
    face_sha256: str
    options: JobOptions
    jobs: list[RenderTask] = field(default_factory=list)
    frames: int = 1  # of the face (for its time limit)

    @property
    def key(self) -> str:
        return f"{self.face_sha256[:24]}-{self.options.backend}-n{self.options.refs}"

    def avatar_path(self, work: Path) -> Path:
        return work / "avatars" / f"{self.key}.avatar"

    def renders(self) -> list[RenderTask]:
        return list(self.jobs)

    def describe(self) -> str:
        return f"preparing the face {self.face.name} (for {len(self.jobs)} job{'s' * (len(self.jobs) != 1)})"


def plan(tasks: list[RenderTask]) -> list[PrepareTask]:
    """Group render tasks by face content and the settings a preparation depends on (N, backend)."""
    prepares: dict[tuple, PrepareTask] = {}
    for task in tasks:
        options = task.job.options
        key = (task.face_sha256, options.refs, options.backend)
        if key not in prepares:
            # The crf does not change the avatar: the preparation takes the first job's options.
            prepares[key] = PrepareTask(task.job.face, task.face_sha256, options)
        prepares[key].jobs.append(task)
    return list(prepares.values())


class Sink(Protocol):
    """Where runners report what happened."""

    def progress(self, task: RenderTask, frames_done: int) -> None: ...

    def rendered(self, task: RenderTask, output: Path | bytes, rendered) -> None: ...

    def failed(self, task: RenderTask, failure: Failure) -> None: ...
