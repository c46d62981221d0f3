"""``iplap batch``: the subcommand and its handler.

The flags' defaults are :class:`~.config.BatchConfig`'s and :class:`~.manifest.JobOptions`'
(read from the dataclasses, so each is defined once), and the handler builds the config by
keyword from the parsed arguments, whose names are the fields' names.
"""

from __future__ import annotations

import sys
from pathlib import Path

_DESCRIPTION = """\
Render every job of a manifest: a CSV file with a header line, or JSON Lines (.jsonl), one job
a line, with the fields face and audio (paths; relative ones are resolved against the
manifest's folder), optional out (a file name inside --out; default: the audio's stem + .mp4),
and optional per-job refs, crf and backend. The whole manifest is checked first; a problem on
any line stops everything before it starts. Each face is prepared once. Finished outputs are
renamed into place and recorded in OUT/batch.jsonl: a rerun skips what is done (same inputs,
bundle and options) and renders the rest. One batch at a time per output folder (a second is
refused), and a file in it that no job of a batch wrote is never overwritten (that job fails).
Exit code 0 when every job is done, 2 when any failed on bad input (recorded with its error;
the others went on), 1 when any failed otherwise (a worker that died or hung)."""

#: BatchConfig's fields that are flags of their own (the others: JOBS, the job options, --quiet).
_CONFIG_FLAGS = ("bundle", "out", "workers", "threads", "ray", "retries", "timeout", "timeout_per_frame")


def _default(cls, name: str):
    """A dataclass field's default, so that the flag and the API share it."""
    return cls.__dataclass_fields__[name].default


def register(subparsers) -> None:
    import argparse

    from .. import BACKENDS, MAX_REFS, MIN_REFS
    from .config import BatchConfig
    from .manifest import JobOptions

    p = subparsers.add_parser("batch", help="render many jobs (a CSV or JSON Lines manifest), locally or on Ray",
                              description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    config = {name: _default(BatchConfig, name) for name in _CONFIG_FLAGS}
    p.set_defaults(**config, **{name: _default(JobOptions, name) for name in ("refs", "crf", "backend")})
    p.add_argument("manifest", type=Path, metavar="JOBS", help="the manifest (.csv with a header, or .jsonl)")
    p.add_argument("--bundle", type=Path, required=True, help="model bundle folder (from iplap export)")
    p.add_argument("--out", type=Path, required=True, help="output folder (made if missing)")
    p.add_argument("--workers", type=int, metavar="K", help="local worker processes (default %(default)s)")
    p.add_argument("--threads", type=int,
                   help="inference threads per worker or Ray task (default: the cores shared out between the "
                        "workers; on Ray this machine's cores, at most the largest node's CPUs)")
    p.add_argument("--ray", metavar="auto|ADDRESS",
                   help="run the jobs as Ray tasks on a cluster (auto: the running cluster; or its address, e.g. "
                        "127.0.0.1:6379); needs the ray extra")
    p.add_argument("--retries", type=int,
                   help="tries again for a job whose worker died or hung (default %(default)s)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="seconds a face preparation or a render may take besides its frames, after which its "
                        "worker counts as hung: killed, and the job retried (default %(default)g)")
    p.add_argument("--timeout-per-frame", type=float, metavar="SECONDS",
                   help="seconds more per frame (of the face, or of the speech) (default %(default)g)")
    p.add_argument("--refs", type=int, help=f"number of reference images N ({MIN_REFS}-{MAX_REFS}), where a job "
                                            "does not say (default %(default)s)")
    p.add_argument("--crf", type=int, help="H.264 quality, where a job does not say (default %(default)s)")
    p.add_argument("--backend", choices=BACKENDS, help="inference backend, where a job does not say "
                                                       "(default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_cmd_batch)


def _cmd_batch(args) -> int:
    from .. import MAX_REFS, MIN_REFS
    from ..errors import IplapError
    from .config import BatchConfig
    from .manifest import MAX_CRF, MIN_CRF, JobOptions
    from .run import run_batch

    if not MIN_REFS <= args.refs <= MAX_REFS or not MIN_CRF <= args.crf <= MAX_CRF:
        raise IplapError(f"--refs must be between {MIN_REFS} and {MAX_REFS} and --crf between {MIN_CRF} and "
                         f"{MAX_CRF}")
    defaults = JobOptions(refs=args.refs, crf=args.crf, backend=args.backend)
    config = BatchConfig(manifest=args.manifest, defaults=defaults, progress=not args.quiet,
                         **{name: getattr(args, name) for name in _CONFIG_FLAGS})
    summary = run_batch(config)
    print(f"iplap batch: {args.out}\n{summary.table()}", file=sys.stderr)
    return summary.exit_code
