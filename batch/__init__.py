"""``iplap batch``: render a catalogue of jobs on local worker processes or a Ray cluster.

Built on the public API (``import iplap``). The manifest (:mod:`.manifest`) is checked
whole before anything runs; each face is prepared once (:mod:`.plan`); the jobs run on local
worker processes (:mod:`.local`, the default) or as Ray tasks (:mod:`.ray_runner`, the
``ray`` extra); outputs are renamed into place and recorded in ``batch.jsonl``, so a rerun
resumes where a crash or Ctrl-C stopped (:mod:`.run`). One batch at a time holds an output
folder, and none overwrites a file that no batch wrote. Every task has a time limit from its
frames (:class:`.config.BatchConfig`): a hung worker is killed and its job retried.
"""

from .manifest import BatchJob, JobOptions, ManifestError
from .config import BatchConfig
from .run import Summary, run_batch

__all__ = ["BatchConfig", "BatchJob", "JobOptions", "ManifestError", "Summary", "run_batch"]
