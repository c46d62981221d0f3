"""Rotated regions of interest and the crops MediaPipe takes from them.

MediaPipe describes every crop by a rotated rectangle in normalised image coordinates (a
``NormalizedRect``), turns it into pixels, optionally pads it to the model's aspect ratio
(letterboxing), and resamples the image with OpenCV's ``warpPerspective`` (bilinear, on the
8-bit image) so that the rectangle's corners land on the tensor's corners. The same
rectangle then maps the model's outputs back to the image. This module does those steps
with the same conventions: rotation in radians, clockwise in image coordinates, about the
rectangle's centre; a rectangle's size in the same normalised units as its centre.

The resampling must be OpenCV 4's, bit for bit, not merely bilinear: mediapipe 0.10.21
links OpenCV 4.10, whose 8-bit ``warpPerspective`` puts each sample on a 1/32-pixel grid
and blends the four neighbours in fixed point, rounding halves up. The OpenCV this project
installs (5.x) samples at the exact position and rounds halves to even. The two differ by
a grey level in about 1 pixel of 10 in a rotated face crop, and, in the detector's
letterbox, wherever the frame does not scale to whole pixels (720x528 -> 128: 5.625 image
pixels a tensor pixel, so a neighbour pair is often blended 3/8 : 5/8 and lands on a half).
The models amplify that into up to 0.2 px of landmark error on the goldens.
``crop_to_tensor`` therefore computes OpenCV 4's grid positions itself and lets
``cv2.remap`` blend them with its fixed-point tables, which round as OpenCV 4 does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numba
import numpy as np

from ..jit import njit


@dataclass(frozen=True)
class NormRect:
    """A rotated rectangle: centre, size (normalised to the image) and rotation (radians)."""

    x_center: float
    y_center: float
    width: float
    height: float
    rotation: float = 0.0

    def to_pixels(self, image_width: int, image_height: int) -> tuple[float, float, float, float, float]:
        """(cx, cy, w, h, rotation) in pixels."""
        return (self.x_center * image_width, self.y_center * image_height, self.width * image_width,
                self.height * image_height, self.rotation)

    def corners(self, image_width: int, image_height: int) -> np.ndarray:
        """The four corners in pixels, (4, 2), clockwise from the top-left of the unrotated box."""
        cx, cy, w, h, r = self.to_pixels(image_width, image_height)
        c, s = math.cos(r), math.sin(r)
        local = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
        return local @ np.array([[c, s], [-s, c]]) + [cx, cy]


def normalize_radians(angle: float) -> float:
    """Wrap to [-pi, pi) as MediaPipe does."""
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def rotation_from_points(x0: float, y0: float, x1: float, y1: float, image_width: int, image_height: int,
                         target_degrees: float = 0.0) -> float:
    """The rotation that brings the vector from point 0 to point 1 (normalised coords) to ``target_degrees``."""
    dx = (x1 - x0) * image_width
    dy = (y1 - y0) * image_height
    return normalize_radians(math.radians(target_degrees) - math.atan2(-dy, dx))


def scale_square_long(rect: NormRect, image_width: int, image_height: int, scale: float) -> NormRect:
    """Square the rectangle on its longer side in pixels, then scale it (MediaPipe's RectTransformation)."""
    long_side = max(rect.width * image_width, rect.height * image_height)
    return replace(rect, width=long_side / image_width * scale, height=long_side / image_height * scale)


def pad_to_aspect(cx: float, cy: float, w: float, h: float, tensor_width: int,
                  tensor_height: int) -> tuple[tuple[float, float, float, float], tuple[float, float]]:
    """Grow a pixel box to the tensor's aspect ratio (letterbox); also return the (x, y) padding fractions."""
    tensor_aspect = tensor_height / tensor_width
    roi_aspect = h / w
    if tensor_aspect > roi_aspect:
        return (cx, cy, w, w * tensor_aspect), (0.0, (1.0 - roi_aspect / tensor_aspect) / 2.0)
    return (cx, cy, h / tensor_aspect, h), ((1.0 - tensor_aspect / roi_aspect) / 2.0, 0.0)


#: OpenCV 4's sub-pixel resolution for warps and remaps (``INTER_TAB_SIZE``): a sample's
#: position is rounded to 1/32 pixel; the low 5 bits of the rounded position select the
#: bilinear weights.
SUBPIXEL_BITS = 5
SUBPIXEL_STEPS = 1 << SUBPIXEL_BITS


def tensor_to_image_matrix(box: tuple[float, float, float, float, float], tensor_width: int,
                           tensor_height: int) -> np.ndarray:
    """The 3x3 matrix from tensor pixels to image pixels for the rotated pixel box ``(cx, cy, w, h, rotation)``.

    Built as MediaPipe's CPU ImageToTensor converter builds it (``cv2.boxPoints`` of the
    box in float32, ``getPerspectiveTransform`` onto the tensor's outer corners
    ``(0, H), (0, 0), (W, 0), (W, H)``), then inverted by LU as ``warpPerspective``
    inverts it. Its last bits decide which way a position near a 1/64-pixel boundary
    rounds, so it is not rebuilt from the box analytically; the float32 corners also leave
    a last row that is not exactly (0, 0, 1), which is why the sampling divides by it.
    """
    cx, cy, w, h, rotation = box
    src = cv2.boxPoints(((float(cx), float(cy)), (float(w), float(h)), float(rotation * 180.0 / math.pi)))
    dst = np.array([[0, tensor_height], [0, 0], [tensor_width, 0], [tensor_width, tensor_height]], np.float32)
    image_to_tensor = cv2.getPerspectiveTransform(src.astype(np.float32), dst)
    return cv2.invert(image_to_tensor, flags=cv2.DECOMP_LU)[1]


_INT32_MIN, _INT32_MAX = float(np.iinfo(np.int32).min), float(np.iinfo(np.int32).max)


@numba.njit(inline="always")
def _round_fixed(value):
    """A position times 32 -> int32 as OpenCV 4 rounds it: clamped first (NaN -> max), then half to even."""
    if not value < _INT32_MAX:
        return np.int32(_INT32_MAX)
    if value < _INT32_MIN:
        return np.int32(_INT32_MIN)
    return np.int32(np.rint(value))


@njit(nogil=True, fastmath=False)
def _fixed_point_maps(matrix, width, height):
    whole = np.empty((height, width, 2), np.int16)
    fraction = np.empty((height, width), np.uint16)
    mask = SUBPIXEL_STEPS - 1
    for y in range(height):
        for x in range(width):
            w = matrix[2, 0] * x + matrix[2, 1] * y + matrix[2, 2]
            scale = SUBPIXEL_STEPS / w if w != 0 else 0.0
            fixed_x = _round_fixed((matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2]) * scale)
            fixed_y = _round_fixed((matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]) * scale)
            whole[y, x, 0] = min(max(fixed_x >> SUBPIXEL_BITS, -32768), 32767)
            whole[y, x, 1] = min(max(fixed_y >> SUBPIXEL_BITS, -32768), 32767)
            fraction[y, x] = (fixed_y & mask) * SUBPIXEL_STEPS + (fixed_x & mask)
    return whole, fraction


def fixed_point_maps(matrix: np.ndarray, tensor_width: int, tensor_height: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each tensor pixel samples the image, as OpenCV 4's ``warpPerspective`` computes it.

    Returns ``cv2.remap``'s fixed-point maps: (H, W, 2) int16 whole pixels (x, y) and (H, W)
    uint16 sub-pixel indices ``32 * (y & 31) + (x & 31)``. The projected position is
    computed in double, scaled by 32 and rounded to the nearest integer (ties to even, as
    ``cvRound``); a zero ``w`` gives position 0, and whole pixels saturate to int16, as there.
    A Numba loop: the same arithmetic in numpy costs three times as much as the remap itself.
    """
    return _fixed_point_maps(np.ascontiguousarray(matrix, np.float64), int(tensor_width), int(tensor_height))


def crop_to_tensor(image: np.ndarray, box: tuple[float, float, float, float, float], tensor_width: int,
                   tensor_height: int, border: str) -> np.ndarray:
    """Resample the rotated pixel box ``(cx, cy, w, h, rotation)`` of ``image`` to the tensor's size.

    The box's corners map to the tensor's outer corners (not pixel centres), and the
    numbers are those of MediaPipe's CPU ImageToTensor converter, a bilinear OpenCV 4
    ``warpPerspective`` of the 8-bit image: sample positions on a 1/32-pixel grid, weights
    in fixed point, halves rounded up (see the module's docstring for why not
    ``cv2.warpPerspective`` itself). ``border`` is ``"zero"`` or ``"replicate"``. The result
    keeps the image's dtype and channels.
    """
    whole, fraction = fixed_point_maps(tensor_to_image_matrix(box, tensor_width, tensor_height), tensor_width,
                                       tensor_height)
    mode = cv2.BORDER_CONSTANT if border == "zero" else cv2.BORDER_REPLICATE
    return cv2.remap(image, whole, fraction, cv2.INTER_LINEAR, borderMode=mode, borderValue=0)


def subrect_to_image(points: np.ndarray, box: tuple[float, float, float, float, float], image_width: int,
                     image_height: int) -> np.ndarray:
    """Points normalised to a rotated pixel box -> points normalised to the image ((N, 2) -> (N, 2))."""
    cx, cy, w, h, r = box
    c, s = math.cos(r), math.sin(r)
    x = (points[:, 0] - 0.5) * w
    y = (points[:, 1] - 0.5) * h
    return np.stack([(c * x - s * y + cx) / image_width, (s * x + c * y + cy) / image_height], axis=1)

