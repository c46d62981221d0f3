"""The 131 FaceMesh landmarks IP_LAP uses, and what the original does with them.

All of it is plain numpy and follows the original ``inference_single.py``:

* which FaceMesh points are used, and their fixed order: a (2, 131) array is
  ``[pose 74 | content 57]``, x row then y row, where content is jaw (17) then lips (40);
* the face crop box and the normalisation of landmarks to it;
* lip openness, and the choice of reference frames by it (``torch.linspace`` positions
  over the frames sorted by openness);
* the ping-pong frame order used when the audio outlasts the video.
"""

from __future__ import annotations

import numpy as np

# -- FaceMesh topology (468-point indices) ----------------------------------------------------
FACEMESH_LIPS = frozenset([
    (61, 146), (146, 91), (91, 181), (181, 84), (84, 17), (17, 314), (314, 405), (405, 321), (321, 375),
    (375, 291), (61, 185), (185, 40), (40, 39), (39, 37), (37, 0), (0, 267), (267, 269), (269, 270),
    (270, 409), (409, 291), (78, 95), (95, 88), (88, 178), (178, 87), (87, 14), (14, 317), (317, 402),
    (402, 318), (318, 324), (324, 308), (78, 191), (191, 80), (80, 81), (81, 82), (82, 13), (13, 312),
    (312, 311), (311, 310), (310, 415), (415, 308)])
FACEMESH_LEFT_EYE = frozenset([
    (263, 249), (249, 390), (390, 373), (373, 374), (374, 380), (380, 381), (381, 382), (382, 362),
    (263, 466), (466, 388), (388, 387), (387, 386), (386, 385), (385, 384), (384, 398), (398, 362)])
FACEMESH_LEFT_EYEBROW = frozenset([
    (276, 283), (283, 282), (282, 295), (295, 285), (300, 293), (293, 334), (334, 296), (296, 336)])
FACEMESH_RIGHT_EYE = frozenset([
    (33, 7), (7, 163), (163, 144), (144, 145), (145, 153), (153, 154), (154, 155), (155, 133),
    (33, 246), (246, 161), (161, 160), (160, 159), (159, 158), (158, 157), (157, 173), (173, 133)])
FACEMESH_RIGHT_EYEBROW = frozenset([
    (46, 53), (53, 52), (52, 65), (65, 55), (70, 63), (63, 105), (105, 66), (66, 107)])
#: IP_LAP's face oval: MediaPipe's without the forehead arc.
FACEMESH_FACE_OVAL = frozenset([
    (389, 356), (356, 454), (454, 323), (323, 361), (361, 288), (288, 397), (397, 365), (365, 379),
    (379, 378), (378, 400), (400, 377), (377, 152), (152, 148), (148, 176), (176, 149), (149, 150),
    (150, 136), (136, 172), (172, 58), (58, 132), (132, 93), (93, 234), (234, 127), (127, 162)])
#: IP_LAP's own nose lines (not MediaPipe's FACEMESH_NOSE).
FACEMESH_NOSE = frozenset([
    (168, 6), (6, 197), (197, 195), (195, 5), (5, 4), (4, 45), (45, 220), (220, 115), (115, 48),
    (4, 275), (275, 440), (440, 344), (344, 278)])
FACEMESH_CONNECTIONS = frozenset().union(
    FACEMESH_LIPS, FACEMESH_LEFT_EYE, FACEMESH_LEFT_EYEBROW, FACEMESH_RIGHT_EYE, FACEMESH_RIGHT_EYEBROW,
    FACEMESH_FACE_OVAL, FACEMESH_NOSE)

#: The original's ordering of the 131 used points (``ori_sequence_idx``).
ORI_SEQUENCE_IDX = (
    162, 127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288,
    361, 323, 454, 356, 389,
    70, 63, 105, 66, 107, 55, 65, 52, 53, 46,
    336, 296, 334, 293, 300, 276, 283, 282, 295, 285,
    168, 6, 197, 195, 5,
    48, 115, 220, 45, 4, 275, 440, 344, 278,
    33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7,
    362, 398, 384, 385, 386, 387, 388, 466, 263, 249, 390, 373, 374, 380, 381, 382,
    61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146,
    78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)


def _points(edges) -> set[int]:
    return {i for edge in edges for i in edge}


_POSE_SET = _points(FACEMESH_NOSE | FACEMESH_RIGHT_EYEBROW | FACEMESH_RIGHT_EYE | FACEMESH_LEFT_EYE
                    | FACEMESH_LEFT_EYEBROW) | {162, 127, 234, 93, 389, 356, 454, 323}
_CONTENT_SET = _points(FACEMESH_CONNECTIONS) - _POSE_SET

#: FaceMesh indices of the 74 pose points (eyes, brows, nose, 8 cheek points), in array order.
POSE_INDICES = tuple(i for i in ORI_SEQUENCE_IDX if i in _POSE_SET)
#: FaceMesh indices of the 57 content points: jaw (17) then lips (40), in array order.
CONTENT_INDICES = tuple(i for i in ORI_SEQUENCE_IDX if i in _CONTENT_SET)
#: FaceMesh index of each column of a (2, 131) landmark array.
USED_INDICES = POSE_INDICES + CONTENT_INDICES
N_POSE, N_CONTENT, N_USED = len(POSE_INDICES), len(CONTENT_INDICES), len(USED_INDICES)

#: Midpoints of the upper and lower lip: their distance is the lip openness.
LIP_OPENNESS_POINTS = (0, 17)
#: Pixels added around the landmarks' extent to make the face crop box.
CROP_MARGIN_PX = 25


def crop_box(landmarks: np.ndarray, height: int, width: int, margin: int = CROP_MARGIN_PX) -> tuple[int, int, int, int]:
    """The face crop box ``(y1, y2, x1, x2)`` from FaceMesh landmarks in normalised coordinates.

    ``landmarks`` is (468 or 478, >=2). The extent of the 131 used points, widened by
    ``margin`` pixels and clipped to the image, truncated to ints as the original does.
    """
    pts = np.asarray(landmarks, dtype=np.float64)[list(USED_INDICES), :2]
    x_min = max(pts[:, 0].min() - margin / width, 0.0)
    x_max = min(pts[:, 0].max() + margin / width, 1.0)
    y_min = max(pts[:, 1].min() - margin / height, 0.0)
    y_max = min(pts[:, 1].max() + margin / height, 1.0)
    return int(y_min * height), int(y_max * height), int(x_min * width), int(x_max * width)


def normalise_to_box(landmarks: np.ndarray, height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """FaceMesh landmarks (normalised to the image) -> the (2, 131) array, normalised to ``box``."""
    pts = np.asarray(landmarks, dtype=np.float64)[list(USED_INDICES), :2]
    y1, y2, x1, x2 = box
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"empty face crop box {box}")
    x = (width * pts[:, 0] - x1) / (x2 - x1)
    y = (height * pts[:, 1] - y1) / (y2 - y1)
    return np.stack([x, y]).astype(np.float32)


def split_pose_content(full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 2, 131) -> pose (..., 2, 74), content (..., 2, 57)."""
    return full[..., :N_POSE], full[..., N_POSE:]


def lip_openness(landmarks: np.ndarray) -> float:
    """Distance between the lip midpoints, in the image's normalised coordinates."""
    a, b = LIP_OPENNESS_POINTS
    pts = np.asarray(landmarks, dtype=np.float64)
    return float(np.hypot(pts[a, 0] - pts[b, 0], pts[a, 1] - pts[b, 1]))


def torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps)`` (float32), as torch computes it on x86 CPUs.

    Torch fills the first half forwards from ``start`` and the second half backwards
    from ``end``, with a float32 step; its AVX2/AVX-512 kernels fuse the multiply-add
    (one rounding). Truncating the values to ints depends on exactly that rounding. The
    product and sum are exact in float64, so one cast to float32 is one rounding.
    """
    if steps == 1:
        return np.array([start], np.float32)
    start32, end32 = np.float32(start), np.float32(end)
    step = np.float64(np.float32((end32 - start32) / np.float32(steps - 1)))
    idx = np.arange(steps, dtype=np.float64)
    half = steps // 2
    out = np.empty(steps, np.float64)
    out[:half] = np.float64(start32) + step * idx[:half]
    out[half:] = np.float64(end32) - step * (steps - idx[half:] - 1)
    return out.astype(np.float32)


def select_references(openness: np.ndarray, count: int) -> np.ndarray:
    """Frame indices of ``count`` references, spread evenly over the frames sorted by lip openness.

    Frames may repeat when there are fewer frames than references (a single photo gives
    ``count`` copies of frame 0).
    """
    openness = np.asarray(openness, dtype=np.float64)
    if openness.size == 0:
        raise ValueError("no frames to choose references from")
    order = np.argsort(openness, kind="stable")  # Python's sorted() is stable too
    positions = torch_linspace_f32(0, openness.size - 1, count).astype(np.int64)  # int() truncates
    return order[positions]


def pingpong_index(k: int | np.ndarray, n_frames: int):
    """Frame of the video used at position ``k``: 0..n-1, n-1..0, 0..n-1, ..."""
    if n_frames <= 0:
        raise ValueError("n_frames must be positive")
    p = np.asarray(k) % (2 * n_frames)
    out = np.where(p < n_frames, p, 2 * n_frames - 1 - p)
    return int(out) if out.ndim == 0 else out
