"""SSD anchors of MediaPipe's BlazeFace detectors (the ``SsdAnchorsCalculator`` recipe).

Layers that share a stride are merged: each cell of that stride's grid gets the anchors
of all of them, in layer order. With ``fixed_anchor_size`` every anchor is 1 x 1 (the
model's box outputs are then plain offsets in tensor pixels), so only the centres matter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AnchorSpec:
    """The anchor options of one detector (from MediaPipe's face_detection graphs)."""

    input_size: int
    strides: tuple[int, ...]
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    offset: float = 0.5
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0
    fixed_anchor_size: bool = True


def _scale(spec: AnchorSpec, index: int) -> float:
    if len(spec.strides) == 1:
        return (spec.min_scale + spec.max_scale) * 0.5
    return spec.min_scale + (spec.max_scale - spec.min_scale) * index / (len(spec.strides) - 1.0)


def ssd_anchors(spec: AnchorSpec) -> np.ndarray:
    """Anchors as an (N, 4) float32 array of ``x_center, y_center, width, height`` (normalised)."""
    rows: list[tuple[float, float, float, float]] = []
    layer = 0
    n_layers = len(spec.strides)
    while layer < n_layers:
        sizes: list[tuple[float, float]] = []  # (height, width) of each anchor in a cell
        last = layer
        while last < n_layers and spec.strides[last] == spec.strides[layer]:
            scale = _scale(spec, last)
            for ratio in spec.aspect_ratios:
                sizes.append((scale / math.sqrt(ratio), scale * math.sqrt(ratio)))
            if spec.interpolated_scale_aspect_ratio > 0.0:
                scale_next = 1.0 if last == n_layers - 1 else _scale(spec, last + 1)
                interpolated = math.sqrt(scale * scale_next)
                ratio = spec.interpolated_scale_aspect_ratio
                sizes.append((interpolated / math.sqrt(ratio), interpolated * math.sqrt(ratio)))
            last += 1
        cells = math.ceil(spec.input_size / spec.strides[layer])
        for y in range(cells):
            for x in range(cells):
                for height, width in sizes:
                    if spec.fixed_anchor_size:
                        height = width = 1.0
                    rows.append(((x + spec.offset) / cells, (y + spec.offset) / cells, width, height))
        layer = last
    return np.array(rows, np.float32)
