"""Deterministic stand-in checkpoints in the official file format.

The official weights cannot be downloaded here, so tests and the demo use stand-ins:
the official keys, shapes and file layout, with weights drawn from a fixed recipe. The
recipe is the one the reference goldens were computed with (``../shared/reference/
make_checkpoints.py``), so seed 0 gives bit-identical tensors and the goldens apply.

Recipe, per key: a generator seeded with ``[seed, crc32(key)]``; BatchNorm statistics
``running_mean ~ N(0, 0.1)``, ``running_var ~ U(0.5, 1.5)``, ``num_batches_tracked = 0``;
positional tables ``.pe`` are the sinusoidal table; the modality embedding is N(0, 1)
with row 0 (padding) zeroed; tensors of rank >= 2 are ``U(-1/sqrt(fan_in), +)``;
vectors are norm weights ``U(0.8, 1.2)``, norm biases ``U(-0.1, 0.1)`` or other biases
``U(-0.05, 0.05)``, where a vector is a norm parameter when its ``.weight`` sibling is 1-D.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np

from .checkpoint import LANDMARK_GENERATOR_FILE, RENDERER_FILE

KEYS_FILE = Path(__file__).resolve().parent / "checkpoint_keys.json"


def checkpoint_specs() -> dict[str, list[tuple[str, tuple[int, ...], str]]]:
    """{model: [(key, shape, dtype), ...]} of the official checkpoints (keys without ``module.``)."""
    raw = json.loads(KEYS_FILE.read_text())
    return {model: [(k, tuple(shape), dtype) for k, shape, dtype in specs] for model, specs in raw.items()}


def _sinusoid(max_len: int, d_model: int) -> np.ndarray:
    position = np.arange(max_len, dtype=np.float32)[:, None]
    freq = np.exp(np.arange(0, d_model, 2, dtype=np.float32) * -(math.log(10000.0) / d_model))
    table = np.zeros((max_len, d_model), np.float32)
    table[:, 0::2] = np.sin(position * freq)
    table[:, 1::2] = np.cos(position * freq)
    return table[None]


def standin_tensor(key: str, shape: tuple[int, ...], shapes: dict[str, tuple[int, ...]], seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    if key.endswith("num_batches_tracked"):
        return np.array(0, np.int64)
    if key.endswith(".pe"):
        return _sinusoid(shape[1], shape[2])
    if key.endswith("running_mean"):
        return rng.normal(0.0, 0.1, shape).astype(np.float32)
    if key.endswith("running_var"):
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if key.endswith("modality.weight"):
        table = rng.normal(0.0, 1.0, shape).astype(np.float32)
        table[0] = 0.0
        return table
    if len(shape) >= 2:
        bound = 1.0 / math.sqrt(int(np.prod(shape[1:])))
        return rng.uniform(-bound, bound, shape).astype(np.float32)
    owner_weight = shapes.get(key.rsplit(".", 1)[0] + ".weight", (0, 0))
    is_norm = key.endswith(".weight") or len(owner_weight) == 1
    if is_norm and key.endswith(".weight"):
        return rng.uniform(0.8, 1.2, shape).astype(np.float32)
    if is_norm:
        return rng.uniform(-0.1, 0.1, shape).astype(np.float32)
    return rng.uniform(-0.05, 0.05, shape).astype(np.float32)


def standin_state_dict(model: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Stand-in weights of ``model`` ('landmark_generator' or 'renderer'), keys without ``module.``."""
    specs = checkpoint_specs()[model]
    shapes = {key: shape for key, shape, _ in specs}
    return {key: standin_tensor(key, shape, shapes, seed) for key, shape, _ in specs}


def write_standin_checkpoints(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write both stand-in checkpoints under their official names; returns {model: path}.

    As in the official files, the renderer's keys carry ``module.`` and the landmark
    generator's do not.
    """
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for model, name, prefix in (("landmark_generator", LANDMARK_GENERATOR_FILE, ""),
                                ("renderer", RENDERER_FILE, "module.")):
        state = {prefix + k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in standin_state_dict(model, seed).items()}
        torch.save({"state_dict": state, "optimizer": None, "global_step": 0, "global_epoch": 0}, out_dir / name)
        paths[model] = out_dir / name
    return paths
