"""The original models in PyTorch, for what needs them beside the exported graphs: the
benchmarks' torch baseline and the demo's bundle from stand-in checkpoints. (Only export and
calibration import :mod:`iplap.models`; the others ask here.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import BundleError
from ..models import (LANDMARK_GENERATOR_FILE, LandmarkGenerator, Renderer, load_landmark_generator, load_renderer,
                      standin_state_dict, write_standin_checkpoints)
from ..provenance import sha256_file
from ..runtime.bundle import Bundle
from .bundle_writer import ExportConfig, export_bundle


def original_renderer(checkpoint: str | Path | None = None) -> Renderer:
    """The original renderer, in eval mode: from ``checkpoint``, or with the stand-in weights
    (the same architecture, so the same cost)."""
    if checkpoint:
        return load_renderer(checkpoint)
    renderer = Renderer()
    renderer.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                              for k, v in standin_state_dict("renderer").items() if not k.startswith("perceptual.")})
    return renderer.eval()


def original_landmark_generator(checkpoint: str | Path) -> LandmarkGenerator:
    """The original landmark generator, in eval mode, from its checkpoint file (or the folder
    that holds it under its official name)."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / LANDMARK_GENERATOR_FILE
    return load_landmark_generator(checkpoint).eval()


def standin_checkpoints(folder: Path) -> dict[str, Path]:
    """The stand-in checkpoints (the official format, seed-0 random weights) written into ``folder``."""
    return write_standin_checkpoints(folder)


def cached_bundle(cache: Path, checkpoint_dir: Path | None = None,
                  on_export: Callable[[Path], None] | None = None) -> Path:
    """A bundle exported once into ``cache`` from ``checkpoint_dir`` (default: the stand-ins),
    and reused while it verifies and was made from the same checkpoints. ``on_export(folder)``
    is called before an export (it takes a couple of minutes)."""
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
    if on_export is not None:
        on_export(bundle_dir)
    return export_bundle(config).root


__all__ = ["cached_bundle", "original_landmark_generator", "original_renderer", "standin_checkpoints"]
