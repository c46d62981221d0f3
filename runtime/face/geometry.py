"""Rotated regions of interest and the crops MediaPipe takes from them.

MediaPipe describes every crop by a rotated rectangle in normalised image coordinates (a
``NormalizedRect``), turns it into pixels, optionally pads it to the model's aspect ratio
(letterboxing), and resamples the image with OpenCV's ``warpPerspective`` (bilinear, on the
8-bit image) so that the rectangle's corners land on the tensor's corners. The same
rectangle then maps the model's outputs back to the image. This module does those steps
with the same conventions: rotation in radians, clockwise in image coordinates, about the
rectangle's centre; a rectangle's size in the same normalised units as its centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np


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


def crop_to_tensor(image: np.ndarray, box: tuple[float, float, float, float, float], tensor_width: int,
                   tensor_height: int, border: str) -> np.ndarray:
    """Resample the rotated pixel box ``(cx, cy, w, h, rotation)`` of ``image`` to the tensor's size.

    The box's corners map to the tensor's outer corners (not pixel centres), exactly as
    MediaPipe's CPU ImageToTensor converter does it: ``cv2.boxPoints`` of the box,
    ``getPerspectiveTransform`` onto ``(0, H), (0, 0), (W, 0), (W, H)``, and a bilinear
    ``warpPerspective`` of the 8-bit image. ``border`` is ``"zero"`` or ``"replicate"``.
    The result keeps the image's dtype and channels.
    """
    cx, cy, w, h, rotation = box
    src = cv2.boxPoints(((float(cx), float(cy)), (float(w), float(h)), float(rotation * 180.0 / math.pi)))
    dst = np.array([[0, tensor_height], [0, 0], [tensor_width, 0], [tensor_width, tensor_height]], np.float32)
    matrix = cv2.getPerspectiveTransform(src.astype(np.float32), dst)
    mode = cv2.BORDER_CONSTANT if border == "zero" else cv2.BORDER_REPLICATE
    return cv2.warpPerspective(image, matrix, (tensor_width, tensor_height), flags=cv2.INTER_LINEAR,
                               borderMode=mode, borderValue=0)


def subrect_to_image(points: np.ndarray, box: tuple[float, float, float, float, float], image_width: int,
                     image_height: int) -> np.ndarray:
    """Points normalised to a rotated pixel box -> points normalised to the image ((N, 2) -> (N, 2))."""
    cx, cy, w, h, r = box
    c, s = math.cos(r), math.sin(r)
    x = (points[:, 0] - 0.5) * w
    y = (points[:, 1] - 0.5) * h
    return np.stack([(c * x - s * y + cx) / image_width, (s * x + c * y + cy) / image_height], axis=1)

