"""``iplap batch``: the subcommand and its handler.

The flags are made from the fields of :class:`~.config.BatchConfig` and
:class:`~.manifest.JobOptions` (:mod:`iplap.flags`), where each default and its help are
written once, and the handler builds both by keyword from the parsed arguments.
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

#: BatchConfig's fields that are not flags of their own: JOBS, the job options, --quiet.
_NOT_FLAGS = ("manifest", "defaults", "progress")


def register(subparsers) -> None:
    import argparse

    from ..flags import add_flags
    from .config import BatchConfig
    from .manifest import JobOptions

    p = subparsers.add_parser("batch", help="render many jobs (a CSV or JSON Lines manifest), locally or on Ray",
                              description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", type=Path, metavar="JOBS", help="the manifest (.csv with a header, or .jsonl)")
    add_flags(p, BatchConfig, skip=_NOT_FLAGS)
    add_flags(p, JobOptions)
    p.set_defaults(handler=_cmd_batch)


def _cmd_batch(args) -> int:
    from ..console import quiet
    from ..flags import settings_from
    from .config import BatchConfig
    from .manifest import JobOptions
    from .run import run_batch

    config = settings_from(args, BatchConfig, defaults=settings_from(args, JobOptions), progress=not quiet())
    summary = run_batch(config)
    print(f"iplap batch: {args.out}\n{summary.table()}", file=sys.stderr)
    return summary.exit_code
