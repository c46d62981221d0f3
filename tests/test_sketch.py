"""Sketches are drawn exactly as the original draws them."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import golden
from iplap.runtime.landmarks import N_USED, USED_INDICES
from iplap.runtime.sketch import SKETCH_COLOR, canvas_shape, draw_sketch, draw_sketches, pixel_coordinates


def test_matches_golden_sketches():
    g = golden("sketch")
    differing = 0
    for lm, (h, w), expected in zip(g["landmarks"], g["crop_hw"], g["sketch"]):
        differing += int((np.abs(draw_sketch(lm, int(h), int(w)) - expected) > 1e-3).any(axis=2).sum())
    assert differing == 0


def test_canvas_keeps_the_crop_aspect():
    assert canvas_shape(200, 160) == (160, 128)
    assert canvas_shape(96, 300) == (128, 400)
    assert canvas_shape(150, 150) == (128, 128)


def test_pixel_rounding_is_float32_like_the_original():
    lm = np.full((2, N_USED), 0.5, np.float32)
    lm[0, 0] = np.float32(0.1)  # 0.1f * 130 = 13.000000193... in float32 products: floor -> 13
    px, valid = pixel_coordinates(lm, 128, 130)
    assert px[0, 0] == int(np.floor(np.float32(0.1) * np.float32(130)))
    assert valid.all()


def test_points_outside_the_crop_are_not_drawn():
    lm = np.full((2, N_USED), 0.5, np.float32)
    px, valid = pixel_coordinates(np.where(np.arange(N_USED) == 3, -0.01, lm).astype(np.float32), 128, 128)
    assert not valid[3] and valid.sum() == N_USED - 1
    _, valid_one = pixel_coordinates(np.ones((2, N_USED), np.float32), 128, 128)
    assert valid_one.all()  # 1.0 is inside, and lands on the last pixel


def test_a_single_line():
    """Only the upper-lip midpoint (0) and its neighbour 37 apart: one horizontal line."""
    lm = np.full((2, N_USED), 2.0, np.float32)  # everything off-canvas
    c0, c37 = USED_INDICES.index(0), USED_INDICES.index(37)
    lm[:, c0] = (0.75, 0.5)
    lm[:, c37] = (0.25, 0.5)
    sketch = draw_sketch(lm, 100, 100)
    rows = np.nonzero(sketch[..., 0].max(axis=1))[0]
    assert set(rows) <= {63, 64, 65}
    assert sketch.max() == pytest.approx(SKETCH_COLOR[0])


def test_batch_layout():
    g = golden("sketch")
    batch = draw_sketches(g["landmarks"][:2], g["crop_hw"][:2])
    assert batch.shape == (2, 3, 128, 128) and batch.dtype == np.float32
    assert np.allclose(batch[1].transpose(1, 2, 0), g["sketch"][1] / 255, atol=1e-6)


def _per_line_sketch(landmarks, h, w):
    """The original's drawing, line by line on a three-channel float64 canvas."""
    import cv2

    from iplap.runtime.sketch import CONNECTION_COLUMNS, SKETCH_SIZE

    ch, cw = canvas_shape(h, w)
    canvas = np.zeros((ch, cw, 3), np.float64)
    px, valid = pixel_coordinates(landmarks, ch, cw)
    for a, b in CONNECTION_COLUMNS:
        if valid[a] and valid[b]:
            cv2.line(canvas, (int(px[a, 0]), int(px[a, 1])), (int(px[b, 0]), int(px[b, 1])), SKETCH_COLOR, 1)
    return cv2.resize(canvas, (SKETCH_SIZE, SKETCH_SIZE)).astype(np.float32)


def test_one_polylines_call_on_one_plane_draws_what_the_lines_draw():
    """The sketch is drawn with one cv2.polylines call on one channel: bit for bit the
    original's cv2.line per connection on three channels, for points inside, outside, on
    the edges and missing (NaN), at many crop shapes."""
    rng = np.random.default_rng(7)
    for trial in range(120):
        lm = (rng.random((2, N_USED)) * 1.2 - 0.1).astype(np.float32)
        if trial % 3 == 0:
            lm = np.clip(lm, 0, 1)  # points exactly on 0 and 1
        if trial % 5 == 0:
            lm[:, rng.integers(0, N_USED, 4)] = np.nan
        h, w = (int(v) for v in rng.integers(60, 400, 2))
        expected = _per_line_sketch(lm, h, w)
        assert np.array_equal(draw_sketch(lm, h, w), expected)
        assert np.array_equal(draw_sketches(lm[None], (h, w))[0], expected.transpose(2, 0, 1) / np.float32(255))
