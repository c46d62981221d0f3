"""``iplap batch``: the subcommand and its handler."""

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
bundle and options) and renders the rest. Exit code 0 when every job is done, 2 when any
failed on bad input (recorded with its error; the others went on)."""


def register(subparsers) -> None:
    import argparse

    p = subparsers.add_parser("batch", help="render many jobs (a CSV or JSON Lines manifest), locally or on Ray",
                              description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("jobs", type=Path, metavar="JOBS", help="the manifest (.csv with a header, or .jsonl)")
    p.add_argument("--bundle", type=Path, required=True, help="model bundle folder (from iplap export)")
    p.add_argument("--out", type=Path, required=True, help="output folder (made if missing)")
    p.add_argument("--workers", type=int, default=1, metavar="K", help="local worker processes (default 1)")
    p.add_argument("--threads", type=int, default=0,
                   help="inference threads per worker or Ray task (default: the cores shared out between the workers)")
    p.add_argument("--ray", metavar="auto|ADDRESS",
                   help="run the jobs as Ray tasks on a cluster (auto: the running cluster; or its address, e.g. "
                        "127.0.0.1:6379); needs the ray extra")
    p.add_argument("--retries", type=int, default=2, help="tries again for a job whose worker died (default 2)")
    p.add_argument("--refs", type=int, default=25, help="number of reference images N, where a job does not say")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality, where a job does not say (default 18)")
    p.add_argument("--backend", choices=("onnxruntime", "openvino"), default="onnxruntime",
                   help="inference backend, where a job does not say")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=_cmd_batch)


def _cmd_batch(args) -> int:
    from ..errors import IplapError
    from .manifest import JobOptions
    from .run import BatchConfig, run_batch

    if not 1 <= args.refs <= 100 or not 0 <= args.crf <= 51:
        raise IplapError("--refs must be between 1 and 100 and --crf between 0 and 51")
    config = BatchConfig(args.jobs, args.bundle, args.out, JobOptions(args.refs, args.crf, args.backend),
                         args.workers, args.threads, args.ray, args.retries, progress=not args.quiet)
    summary = run_batch(config)
    print(f"iplap batch: {args.out}\n{summary.table()}", file=sys.stderr)
    return summary.exit_code
