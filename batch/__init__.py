"""``iplap batch``: render a catalogue of jobs on local worker processes or a Ray cluster.

Built on the public API (``import iplap``). The manifest (:mod:`.manifest`) is checked
whole before anything runs; each face is prepared once (:mod:`.plan`); the jobs run on local
worker processes (:mod:`.local`, the default) or as Ray tasks (:mod:`.ray_runner`, the
``ray`` extra); outputs are renamed into place and recorded in ``batch.jsonl``, so a rerun
resumes where a crash or Ctrl-C stopped (:mod:`.run`). One batch at a time holds an output
folder, and none overwrites a file that no batch wrote. Every task has a time limit from its
frames (:class:`.config.BatchConfig`): a hung worker is killed and its job retried.
"""

from .config import BatchConfig
from .manifest import BatchJob, JobOptions, ManifestError


def __getattr__(name: str):
    # The runner pulls in the public API's bundle reader; registering `iplap batch` does not need it.
    if name in ("Summary", "run_batch"):
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module 'iplap.batch' has no attribute {name!r}")


__all__ = ["BatchConfig", "BatchJob", "JobOptions", "ManifestError", "Summary", "run_batch"]
