"""``iplap demo``: the whole product on a fresh machine, with no official checkpoints.

It writes the stand-in checkpoints (random weights in the official format), exports a
bundle once into the cache folder, and renders the sample photo speaking the sample
speech. The stand-in weights are random, so the face region comes out as noise: the
pipeline is real, the model is not. With the official checkpoints (pass
``--checkpoint-dir``), the same command renders a real lip-synced face.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .cache import CACHE_ENV, cache_dir
from .console import quiet
from .errors import IplapError
from .flags import path_arg
from .runtime.constants import BACKENDS

log = logging.getLogger(__name__)

STANDIN_NOTE = ("note: the demo uses stand-in checkpoints with random weights, so the mouth and face region is "
                "noise. For real results, get the official landmarkgenerator_checkpoint.pth and "
                "renderer_checkpoint.pth (see README.md) and run: iplap demo --checkpoint-dir DIR")


def resolve_cache_dir(path: Path | None = None) -> Path:
    return Path(path) if path is not None else cache_dir()


def run_demo(out_path: Path, cache_dir: Path | None = None, checkpoint_dir: Path | None = None,
             backend: str = BACKENDS[0], threads: int = 0, show_progress: bool = True) -> Path:
    from .runtime.backends import BackendConfig
    from .runtime.media import check_output_path
    from .runtime.pipeline import Pipeline, PipelineConfig
    from .samples import FACE_IMAGE, SPEECH_16K

    check_output_path(out_path)
    cache = resolve_cache_dir(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        from .export.reference import cached_bundle
    except ImportError as exc:
        raise IplapError(f"iplap demo exports a bundle and needs the export extra ({exc.name} is missing): "
                         "pip install 'iplap[export]'") from None
    bundle = cached_bundle(cache, checkpoint_dir, on_export=lambda folder: print(
        f"exporting a model bundle to {folder} (once; about two minutes)...", file=sys.stderr))
    if checkpoint_dir is None:
        print(STANDIN_NOTE, file=sys.stderr)
    pipeline = Pipeline(bundle, PipelineConfig(backend=BackendConfig(backend=backend, threads=threads)))
    report = pipeline.render(FACE_IMAGE, SPEECH_16K, out_path, show_progress=show_progress)
    print(f"wrote {report.path}: {report.frames} frames ({report.seconds_per_frame:.2f} s per frame)",
          file=sys.stderr)
    return report.path


def register(sub) -> None:
    p = sub.add_parser("demo", help="render the sample photo speaking the sample speech (stand-in weights)",
                       description="Write the stand-in checkpoints, export a bundle into the cache folder (once), "
                                   "and render the sample photo with the sample speech. Needs the export extra. "
                                   "Stand-in weights are random: the face region is noise, the pipeline is real.")
    p.add_argument("--out", type=path_arg, default=Path("demo.mp4"), help="output mp4 (default demo.mp4)")
    p.add_argument("--cache-dir", type=path_arg,
                   help=f"where the stand-in bundle is kept (default {CACHE_ENV}, else ~/.cache/iplap)")
    p.add_argument("--checkpoint-dir", type=path_arg, help="use these (official) checkpoints instead of stand-ins")
    p.add_argument("--backend", choices=BACKENDS, default=BACKENDS[0], help="inference backend (default %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="threads for inference (default: all cores)")
    p.set_defaults(handler=_cmd_demo)


def _cmd_demo(args) -> int:
    run_demo(args.out, cache_dir=args.cache_dir, checkpoint_dir=args.checkpoint_dir, backend=args.backend,
             threads=args.threads, show_progress=not quiet())
    return 0
