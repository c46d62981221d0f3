"""Paste-back: put the rendered 128x128 face into the frame and blend it, as the original.

The original resizes the rendered face (truncated to uint8) to the crop box, pastes it,
then blends with a mask: the face contour (68-point FAN jaw 0-16 and brows 26..17)
filled, blurred with ``GaussianBlur(mask, (21, 21), 11)``, and used as alpha over the
source frame (``generated * m + source * (1 - m)``, truncated to uint8). FAN needs torch;
the same contour is taken here from the FaceMesh jaw and brow points of the source frame.
The blend is computed on the box plus the blur's reach, which equals doing it on the
whole frame, since the mask is zero further out.
"""

from __future__ import annotations

import cv2
import numpy as np

#: FaceMesh stand-ins for FAN's jaw (points 0..16: ear to ear round the chin) ...
CONTOUR_JAW = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323,
               454)
#: ... and its brows, 26..17 (the image-right brow's outer end to the image-left one's).
CONTOUR_BROWS = (300, 293, 334, 296, 336, 107, 66, 105, 63, 70)
CONTOUR = CONTOUR_JAW + CONTOUR_BROWS
BLUR_KERNEL, BLUR_SIGMA = (21, 21), 11
_REACH = BLUR_KERNEL[0] // 2 + 1


def face_to_uint8(face: np.ndarray) -> np.ndarray:
    """Rendered face (3, 128, 128) in [0, 1] -> (128, 128, 3) uint8, truncated as the original."""
    return (np.asarray(face).transpose(1, 2, 0) * 255).astype(np.uint8)


def contour_points(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """The contour in integer pixels (truncated, as the original's ``astype(int)``)."""
    pts = np.asarray(landmarks, dtype=np.float64)[list(CONTOUR), :2] * (width, height)
    return pts.astype(np.int32)


def contour_mask_region(frame: np.ndarray, box: tuple[int, int, int, int],
                        landmarks: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The region (y1, y2, x1, x2) a pasted face can touch (the box, the contour and the blur's
    reach) and the blend's alpha there, (h, w, 1) in [0, 1]: the contour filled and blurred."""
    y1, y2, x1, x2 = box
    height, width = frame.shape[:2]
    contour = contour_points(landmarks, width, height)
    # The region the mask can touch: the contour's extent plus the blur's reach.
    ry1 = max(0, min(y1, contour[:, 1].min()) - _REACH)
    ry2 = min(height, max(y2, contour[:, 1].max() + 1) + _REACH)
    rx1 = max(0, min(x1, contour[:, 0].min()) - _REACH)
    rx2 = min(width, max(x2, contour[:, 0].max() + 1) + _REACH)
    # Where the region meets the frame's edge, the blur reflects the same pixels as a
    # whole-frame blur; elsewhere it has at least the blur's reach of zeros on both sides.
    mask = np.zeros((ry2 - ry1, rx2 - rx1), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(contour - (rx1, ry1)), 255)
    return (ry1, ry2, rx1, rx2), (cv2.GaussianBlur(mask, BLUR_KERNEL, BLUR_SIGMA) / 255)[..., None]


def blend_face(frame: np.ndarray, face: np.ndarray, box: tuple[int, int, int, int], landmarks: np.ndarray) -> np.ndarray:
    """A new frame with ``face`` (128, 128, 3 uint8) pasted into ``box`` and blended by the contour mask."""
    y1, y2, x1, x2 = box
    (ry1, ry2, rx1, rx2), alpha = contour_mask_region(frame, box, landmarks)
    generated = frame[ry1:ry2, rx1:rx2].copy()
    generated[y1 - ry1:y2 - ry1, x1 - rx1:x2 - rx1] = cv2.resize(face, (x2 - x1, y2 - y1))
    out = frame.copy()
    out[ry1:ry2, rx1:rx2] = (generated * alpha + frame[ry1:ry2, rx1:rx2] * (1 - alpha)).astype(np.uint8)
    return out
