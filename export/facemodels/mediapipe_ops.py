"""MediaPipe's three custom ops of the attention mesh model (version 2 of each), written with standard ONNX ops.

* ``Landmarks2TransformMatrix``: rotation from two landmarks, the rotated extent of a
  landmark subset, and the 4x4 matrix that maps a small output grid onto it, all as
  elementwise ops, Gather and ReduceMin/ReduceMax (cos/sin come from the normalised
  eye/mouth vector, so no atan2 is needed);
* ``TransformTensorBilinear``: the sampling grid from that matrix, ``GridSample``
  (bilinear, zeros, ``align_corners=1`` so grid units are pixel centres), multiplied by
  the op's "whole sample is zero when the point falls outside the map" mask;
* ``TransformLandmarks``: a 2x2 MatMul plus translation.

Each function adds its nodes to a :class:`~.convert.Converter` and returns the name of
its output; ``tests/test_face.py`` checks them against numpy definitions of the ops.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Converter(Protocol):
    """What these functions need of :class:`~.convert.Converter` (named here, not imported, so
    that the converter and its ops do not import each other)."""

    def node(self, op_type: str, inputs: list[str], hint: str, **attrs) -> str: ...

    def const(self, value: np.ndarray, hint: str = "const") -> str: ...


def _scalar_pick(cv: Converter, vec: str, index: int, hint: str) -> str:
    """Element ``index`` of the last axis of a (1, ..., k) tensor, keeping the axis (-> (1, ..., 1))."""
    return cv.node("Slice", [vec, cv.const(np.array([index], np.int64)), cv.const(np.array([index + 1], np.int64)),
                             cv.const(np.array([-1], np.int64))], hint)


def _rotation(cv: Converter, xy: str, attrs: dict) -> tuple[str, str]:
    """cos and sin, each (1, 1, 1), of the rotation that turns the landmarks' rotation vector
    (left -> right rotation landmark) to ``target_rotation_radians``."""
    f32 = np.float32
    left = cv.node("Gather", [xy, cv.const(np.array([int(attrs["left_rotation_idx"])], np.int64))], "l2tm_left", axis=1)
    right = cv.node("Gather", [xy, cv.const(np.array([int(attrs["right_rotation_idx"])], np.int64))], "l2tm_right",
                    axis=1)
    vec = cv.node("Sub", [right, left], "l2tm_vec")  # (1, 1, 2)
    dx, dy = _scalar_pick(cv, vec, 0, "l2tm_dx"), _scalar_pick(cv, vec, 1, "l2tm_dy")  # (1, 1, 1)
    norm = cv.node("Sqrt", [cv.node("ReduceSum", [cv.node("Mul", [vec, vec], "l2tm_sq"),
                                                  cv.const(np.array([2], np.int64))], "l2tm_ss", keepdims=1)],
                   "l2tm_norm")
    positive = cv.node("Greater", [norm, cv.const(f32(0))], "l2tm_pos")
    safe = cv.node("Max", [norm, cv.const(f32(1e-30))], "l2tm_safe")
    # angle = atan2(dy, dx); atan2(0, 0) = 0 as in std::atan2
    cos_a = cv.node("Where", [positive, cv.node("Div", [dx, safe], "l2tm_ca"), cv.const(f32(1))], "l2tm_cos_a")
    sin_a = cv.node("Where", [positive, cv.node("Div", [dy, safe], "l2tm_sa"), cv.const(f32(0))], "l2tm_sin_a")
    # rotation r = target - angle
    target = float(attrs.get("target_rotation_radians", 0.0))
    ct, st = cv.const(f32(np.cos(target))), cv.const(f32(np.sin(target)))
    c = cv.node("Add", [cv.node("Mul", [ct, cos_a], "m"), cv.node("Mul", [st, sin_a], "m")], "l2tm_c")
    s = cv.node("Sub", [cv.node("Mul", [st, cos_a], "m"), cv.node("Mul", [ct, sin_a], "m")], "l2tm_s")
    return c, s


def landmarks_to_matrix(cv: Converter, landmarks: str, attrs: dict, subset: list[int]) -> str:
    """Landmarks2TransformMatrix v2: (1, N, 3) landmarks -> (1, 4, 4) matrix from output grid to input."""
    f32 = np.float32
    xy = cv.node("Slice", [landmarks, cv.const(np.array([0], np.int64)), cv.const(np.array([2], np.int64)),
                           cv.const(np.array([2], np.int64))], "l2tm_xy")  # (1, N, 2)
    c, s = _rotation(cv, xy, attrs)
    pts = cv.node("Gather", [xy, cv.const(np.array(subset, np.int64))], "l2tm_subset", axis=1)  # (1, K, 2)
    px, py = _scalar_pick(cv, pts, 0, "l2tm_px"), _scalar_pick(cv, pts, 1, "l2tm_py")  # (1, K, 1)
    rx = cv.node("Sub", [cv.node("Mul", [c, px], "m"), cv.node("Mul", [s, py], "m")], "l2tm_rx")
    ry = cv.node("Add", [cv.node("Mul", [s, px], "m"), cv.node("Mul", [c, py], "m")], "l2tm_ry")
    x_max = cv.node("ReduceMax", [rx], "l2tm_xmax", axes=[1], keepdims=1)
    x_min = cv.node("ReduceMin", [rx], "l2tm_xmin", axes=[1], keepdims=1)
    y_max = cv.node("ReduceMax", [ry], "l2tm_ymax", axes=[1], keepdims=1)
    y_min = cv.node("ReduceMin", [ry], "l2tm_ymin", axes=[1], keepdims=1)
    crop_w = cv.node("Sub", [x_max, x_min], "l2tm_w")
    crop_h = cv.node("Sub", [y_max, y_min], "l2tm_h")
    half = cv.const(f32(0.5))
    mx = cv.node("Mul", [cv.node("Add", [x_min, x_max], "a"), half], "l2tm_mx")
    my = cv.node("Mul", [cv.node("Add", [y_min, y_max], "a"), half], "l2tm_my")
    # centre back in the unrotated frame (rotation by -r)
    cx = cv.node("Add", [cv.node("Mul", [c, mx], "m"), cv.node("Mul", [s, my], "m")], "l2tm_cx")
    cy = cv.node("Sub", [cv.node("Mul", [c, my], "m"), cv.node("Mul", [s, mx], "m")], "l2tm_cy")
    out_w, out_h = float(attrs["output_width"]), float(attrs["output_height"])
    sx = cv.node("Mul", [crop_w, cv.const(f32(float(attrs["scale_x"]) / out_w))], "l2tm_sx")
    sy = cv.node("Mul", [crop_h, cv.const(f32(float(attrs["scale_y"]) / out_h))], "l2tm_sy")
    # shift(cx, cy) * rotate(-r) * scale(sx, sy) * shift(-out_w / 2, -out_h / 2)
    m00 = cv.node("Mul", [c, sx], "l2tm_m00")
    m01 = cv.node("Mul", [s, sy], "l2tm_m01")
    m10 = cv.node("Neg", [cv.node("Mul", [s, sx], "m")], "l2tm_m10")
    m11 = cv.node("Mul", [c, sy], "l2tm_m11")
    hw, hh = cv.const(f32(-out_w / 2)), cv.const(f32(-out_h / 2))
    m03 = cv.node("Add", [cx, cv.node("Add", [cv.node("Mul", [m00, hw], "m"), cv.node("Mul", [m01, hh], "m")], "a")],
                  "l2tm_m03")
    m13 = cv.node("Add", [cy, cv.node("Add", [cv.node("Mul", [m10, hw], "m"), cv.node("Mul", [m11, hh], "m")], "a")],
                  "l2tm_m13")
    zero, one = cv.const(np.zeros((1, 1, 1), f32)), cv.const(np.ones((1, 1, 1), f32))
    cells = [m00, m01, zero, m03, m10, m11, zero, m13, zero, zero, one, zero, zero, zero, zero, one]
    flat = cv.node("Concat", cells, "l2tm_cells", axis=2)  # (1, 1, 16)
    return cv.node("Reshape", [flat, cv.const(np.array([1, 4, 4], np.int64))], "l2tm_matrix")


def transform_tensor_bilinear(cv: Converter, features: str, matrix: str, in_hw: tuple[int, int],
                              out_hw: tuple[int, int]) -> str:
    """TransformTensorBilinear v2: sample (1, C, H, W) at the matrix-mapped output grid -> (1, C, oh, ow)."""
    f32 = np.float32
    height, width = in_hw
    out_h, out_w = out_hw
    rows = cv.node("Slice", [matrix, cv.const(np.array([0, 0], np.int64)), cv.const(np.array([2, 4], np.int64)),
                             cv.const(np.array([1, 2], np.int64))], "ttb_rows")  # (1, 2, 4)
    # v2 samples at pixel centres: T -> S * T * A with A = +0.5 and S = -0.5 translations
    a = cv.node("Slice", [rows, cv.const(np.array([0], np.int64)), cv.const(np.array([1], np.int64)),
                          cv.const(np.array([2], np.int64))], "ttb_a")  # (1, 2, 1): column 0
    b = cv.node("Slice", [rows, cv.const(np.array([1], np.int64)), cv.const(np.array([2], np.int64)),
                          cv.const(np.array([2], np.int64))], "ttb_b")
    t = cv.node("Slice", [rows, cv.const(np.array([3], np.int64)), cv.const(np.array([4], np.int64)),
                          cv.const(np.array([2], np.int64))], "ttb_t")
    half = cv.const(f32(0.5))
    t = cv.node("Sub", [cv.node("Add", [t, cv.node("Add", [cv.node("Mul", [a, half], "m"),
                                                          cv.node("Mul", [b, half], "m")], "a")], "a"), half], "ttb_t2")
    grid_x = np.tile(np.arange(out_w, dtype=f32), out_h)[None, None, :]  # (1, 1, oh*ow), row-major
    grid_y = np.repeat(np.arange(out_h, dtype=f32), out_w)[None, None, :]
    coords = cv.node("Add", [cv.node("Add", [cv.node("Mul", [a, cv.const(grid_x)], "m"),
                                             cv.node("Mul", [b, cv.const(grid_y)], "m")], "a"), t],
                     "ttb_coords")  # (1, 2, oh*ow): x row, y row
    limit = cv.const(np.array([[[width - 1]], [[height - 1]]], f32).reshape(1, 2, 1))
    inside = cv.node("And", [cv.node("GreaterOrEqual", [coords, cv.const(f32(0))], "ge"),
                             cv.node("LessOrEqual", [coords, limit], "le")], "ttb_in")
    inside = cv.node("Cast", [inside], "ttb_inf", to=1)
    mask = cv.node("ReduceMin", [inside], "ttb_mask", axes=[1], keepdims=1)  # (1, 1, oh*ow)
    mask = cv.node("Reshape", [mask, cv.const(np.array([1, 1, out_h, out_w], np.int64))], "ttb_mask4")
    # align_corners=1: grid -1 and +1 are the centres of the first and last pixels
    scale = cv.const(np.array([2.0 / (width - 1), 2.0 / (height - 1)], f32).reshape(1, 2, 1))
    grid = cv.node("Sub", [cv.node("Mul", [coords, scale], "m"), cv.const(f32(1))], "ttb_norm")
    grid = cv.node("Transpose", [grid], "ttb_gridT", perm=[0, 2, 1])  # (1, oh*ow, 2)
    grid = cv.node("Reshape", [grid, cv.const(np.array([1, out_h, out_w, 2], np.int64))], "ttb_grid")
    sampled = cv.node("GridSample", [features, grid], "ttb_sample", mode="bilinear", padding_mode="zeros",
                      align_corners=1)
    return cv.node("Mul", [sampled, mask], "ttb_out")


def transform_landmarks(cv: Converter, landmarks: str, matrix: str, dims: int) -> str:
    """TransformLandmarks v2: x, y of (1, N, dims) through the matrix's 2-D affine part; z passes."""
    linear = cv.node("Slice", [matrix, cv.const(np.array([0, 0], np.int64)), cv.const(np.array([2, 2], np.int64)),
                               cv.const(np.array([1, 2], np.int64))], "tl_lin")  # (1, 2, 2)
    shift = cv.node("Slice", [matrix, cv.const(np.array([0, 3], np.int64)), cv.const(np.array([2, 4], np.int64)),
                              cv.const(np.array([1, 2], np.int64))], "tl_shift")  # (1, 2, 1)
    xy = landmarks
    if dims == 3:
        xy = cv.node("Slice", [landmarks, cv.const(np.array([0], np.int64)), cv.const(np.array([2], np.int64)),
                               cv.const(np.array([2], np.int64))], "tl_xy")
    moved = cv.node("Add", [cv.node("MatMul", [xy, cv.node("Transpose", [linear], "tl_linT", perm=[0, 2, 1])], "mm"),
                            cv.node("Transpose", [shift], "tl_shiftT", perm=[0, 2, 1])], "tl_out")
    if dims == 3:
        z = cv.node("Slice", [landmarks, cv.const(np.array([2], np.int64)), cv.const(np.array([3], np.int64)),
                              cv.const(np.array([2], np.int64))], "tl_z")
        moved = cv.node("Concat", [moved, z], "tl_xyz", axis=2)
    return moved

