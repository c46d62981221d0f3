"""``iplap demo``: the whole product on a fresh machine, with no official checkpoints.

It writes the stand-in checkpoints (random weights in the official format), exports a
bundle once into the cache folder, and renders the sample photo speaking the sample
speech. The stand-in weights are random, so the face region comes out as noise: the
pipeline is real, the model is not. With the official checkpoints (pass
``--checkpoint-dir``), the same command renders a real lip-synced face.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from .errors import BundleError, IplapError
from .runtime.constants import BACKENDS

log = logging.getLogger(__name__)

STANDIN_NOTE = ("note: the demo uses stand-in checkpoints with random weights, so the mouth and face region is "
                "noise. For real results, get the official landmarkgenerator_checkpoint.pth and "
                "renderer_checkpoint.pth (see README.md) and run: iplap demo --checkpoint-dir DIR")


def resolve_cache_dir(path: Path | None = None) -> Path:
    if path is not None:
        return Path(path)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "iplap"


def demo_bundle(cache: Path, checkpoint_dir: Path | None = None) -> Path:
    """The bundle the demo renders with, exported once and reused while it verifies."""
    try:
        from .export.bundle_writer import ExportConfig, export_bundle
        from .models import write_standin_checkpoints
    except ImportError as exc:
        raise IplapError(f"iplap demo exports a bundle and needs the export extra ({exc.name} is missing): "
                         "pip install 'iplap[export]'") from None
    from .runtime.bundle import Bundle
    from .runtime.files import sha256_file

    if checkpoint_dir is None:
        checkpoint_dir = cache / "standin-checkpoints"
        write_standin_checkpoints(checkpoint_dir)
    name = "standin-bundle" if checkpoint_dir == cache / "standin-checkpoints" else "demo-bundle"
    bundle_dir = cache / name
    config = ExportConfig.from_dir(checkpoint_dir, bundle_dir, overwrite=True)
    if bundle_dir.exists():
        try:
            bundle = Bundle.load(bundle_dir)
            wanted = {"landmark_generator": sha256_file(config.landmark_checkpoint),
                      "renderer": sha256_file(config.renderer_checkpoint)}
            if all(bundle.manifest["checkpoints"][k]["sha256"] == v for k, v in wanted.items()):
                return bundle_dir
        except (BundleError, KeyError):
            pass
    print(f"exporting a model bundle to {bundle_dir} (once; about two minutes)...", file=sys.stderr)
    return export_bundle(config).root


def run_demo(out_path: Path, cache_dir: Path | None = None, checkpoint_dir: Path | None = None,
             backend: str = BACKENDS[0], threads: int = 0, show_progress: bool = True) -> Path:
    from .runtime.backends import BackendConfig
    from .runtime.media import check_output_path
    from .runtime.pipeline import Pipeline, PipelineConfig
    from .samples import FACE_IMAGE, SPEECH_16K

    check_output_path(out_path)
    cache = resolve_cache_dir(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    bundle = demo_bundle(cache, checkpoint_dir)
    if checkpoint_dir is None:
        print(STANDIN_NOTE, file=sys.stderr)
    pipeline = Pipeline(bundle, PipelineConfig(backend=BackendConfig(backend=backend, threads=threads)))
    report = pipeline.render(FACE_IMAGE, SPEECH_16K, out_path, show_progress=show_progress)
    print(f"wrote {report.path}: {report.frames} frames ({report.seconds_per_frame:.2f} s per frame)",
          file=sys.stderr)
    return report.path
