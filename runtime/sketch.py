"""Landmark sketches: the line drawings the renderer is conditioned on.

As in the original: the 131 landmarks (normalised to the face crop) are drawn as
MediaPipe-style 1-pixel lines of colour (224, 224, 224) on a black canvas whose shorter
side is 128 and whose aspect is the crop's, then the canvas is resized to 128x128
(bilinear). Points outside [0, 1] are not drawn, nor are lines that touch them.
"""

from __future__ import annotations

import cv2
import numpy as np

from .landmarks import FACEMESH_CONNECTIONS, N_USED, USED_INDICES

SKETCH_SIZE = 128
SKETCH_COLOR = (224, 224, 224)

_COLUMN = {index: col for col, index in enumerate(USED_INDICES)}
#: Connections as pairs of columns of the (2, 131) array, in a fixed order.
CONNECTION_COLUMNS = np.array(sorted((_COLUMN[a], _COLUMN[b]) for a, b in FACEMESH_CONNECTIONS), np.int64)


def canvas_shape(crop_h: int, crop_w: int, size: int = SKETCH_SIZE) -> tuple[int, int]:
    """Canvas (height, width): the crop's aspect with the shorter side ``size``."""
    short = min(crop_h, crop_w)
    return int(crop_h * size / short), int(crop_w * size / short)


def _unit(v: np.ndarray) -> np.ndarray:
    """0 <= v <= 1, as MediaPipe's drawing utils test it (``math.isclose`` at the ends, its
    default tolerances: relative 1e-9, none absolute), for an array at once."""
    v = np.asarray(v, np.float64)
    close_to_one = np.abs(1.0 - v) <= 1e-9 * np.maximum(1.0, np.abs(v))
    return ((v > 0) | (v == 0)) & ((v < 1) | close_to_one)


def pixel_coordinates(landmarks: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(2, 131) normalised landmarks -> integer pixels (131, 2) and a drawable mask (131,).

    The product is taken in float32, as the original multiplies float32 landmarks by the
    canvas size; a point on a pixel boundary rounds the way the original's does.
    """
    lm = np.asarray(landmarks, dtype=np.float32)
    valid = _unit(lm[0]) & _unit(lm[1])
    finite = np.where(np.isfinite(lm), lm, np.float32(0))  # a missing point: not drawn, no pixel to cast
    xs = np.floor(finite[0] * np.float32(width)).astype(np.int64)
    ys = np.floor(finite[1] * np.float32(height)).astype(np.int64)
    px = np.stack([np.minimum(xs, width - 1), np.minimum(ys, height - 1)], axis=1)
    return px, valid


def draw_sketch(landmarks: np.ndarray, crop_h: int, crop_w: int, size: int = SKETCH_SIZE) -> np.ndarray:
    """One sketch, (size, size, 3) float32 with values in [0, 224] (divide by 255 for the model)."""
    return np.repeat(_sketch_plane(landmarks, crop_h, crop_w, size)[:, :, None], 3, axis=2)


def _sketch_plane(landmarks: np.ndarray, crop_h: int, crop_w: int, size: int) -> np.ndarray:
    """One channel of a sketch, (size, size) float32 in [0, 224] (the colour is grey: the three are equal).

    The original draws each connection with ``cv2.line`` (1 pixel, 8-connected) on a float64
    three-channel canvas, then resizes it bilinearly. Here the connections are drawn with
    one ``cv2.polylines`` call of two-point lines (the same rasteriser, the same pixels) on
    one float64 plane, resized alone: the same numbers per channel, a third of the
    work and no Python loop over the connections (a frame's five sketches: 4.0 -> 0.8 ms, Intel Xeon
    model 207; `tests/test_sketch.py` checks it bit for bit against the per-line drawing)."""
    landmarks = np.asarray(landmarks)
    if landmarks.shape != (2, N_USED):
        raise ValueError(f"landmarks must be (2, {N_USED}), got {landmarks.shape}")
    h, w = canvas_shape(crop_h, crop_w, size)
    canvas = np.zeros((h, w), np.float64)  # the original draws on float64
    px, valid = pixel_coordinates(landmarks, h, w)
    a, b = CONNECTION_COLUMNS[:, 0], CONNECTION_COLUMNS[:, 1]
    drawn = valid[a] & valid[b]
    if drawn.any():
        segments = np.stack([px[a[drawn]], px[b[drawn]]], axis=1).astype(np.int32)
        cv2.polylines(canvas, list(segments), False, float(SKETCH_COLOR[0]), 1)
    return cv2.resize(canvas, (size, size)).astype(np.float32)


def draw_sketches(landmarks: np.ndarray, crop_hw, size: int = SKETCH_SIZE) -> np.ndarray:
    """A batch of sketches as the model takes them: (K, 3, size, size) float32 in [0, 224/255].

    ``landmarks`` is (K, 2, 131); ``crop_hw`` is one (h, w) for all, or (K, 2).
    """
    landmarks = np.asarray(landmarks)
    hw = np.broadcast_to(np.asarray(crop_hw, dtype=np.int64).reshape(-1, 2), (len(landmarks), 2))
    out = np.empty((len(landmarks), 3, size, size), np.float32)
    for k, (lm, (h, w)) in enumerate(zip(landmarks, hw)):
        out[k] = _sketch_plane(lm, int(h), int(w), size)[None] / np.float32(255.0)
    return out
