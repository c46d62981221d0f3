"""In-between frames: a rendered face moved to another frame's landmarks, and pasted on that frame.

The renderer draws a face from landmark sketches at a few pictures a second on a small CPU,
while the landmark generator gives the lips and jaw of every frame cheaply. A frame between
two rendered ones (keyframes) is made here from the keyframe's 128 x 128 face and the 131
landmarks it was drawn from (normalised to its crop box), and the frame's own 131 landmarks
(normalised to the frame's crop box):

1. **Global motion.** The frame's head and crop box differ from the keyframe's: the affine
   map that best carries the keyframe's 74 pose points (eyes, brows, nose, cheeks) onto the
   frame's, in the video's pixels. It is folded into the paste (one resampling, from the
   128 px face straight into the frame), so a still head is not blurred by a second one.
2. **Local motion** (the keyframe's own 128 px face): control points are the 131
   landmarks, a ring outside the jaw and the crop's border, anchored; the frame's
   landmarks, with the global motion taken out, are where they move to. A point that moves
   less than ``dead_zone_px`` stays (landmark jitter of a few tenths of a pixel made a warp
   worse than holding a still face). A triangulation of the keyframe's points, fixed for the
   keyframe, is carried over; each pixel takes the keyframe's pixel at its triangle's
   affine preimage.
3. **Mouth.** Stretching a closed mouth open smears its lips; shrinking an open one keeps a
   line of teeth. Where the frame's mouth differs in shape, the inside of its inner lips is
   taken from the rendered face of the turn whose mouth shape is nearest (:class:`MouthBank`),
   moved the same way, and blended in with a soft edge.
4. **Morph** (with the next keyframe too): both keyframes moved to the frame, mixed by the
   frame's time between them; it recovers what the warp alone loses over a long gap.

The face is then blended into the frame by its contour mask, as a rendered face is
(:func:`~.compose.blend_face`, whose mask this shares).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from .compose import contour_mask_region
from .constants import IMAGE_SIZE
from .landmarks import N_POSE

#: The content points' parts, by their column in a (2, 131) landmark array.
JAW = slice(N_POSE, N_POSE + 17)
OUTER_LIPS = slice(N_POSE + 17, N_POSE + 37)
INNER_LIPS = slice(N_POSE + 37, N_POSE + 57)

#: The modes: hold the keyframe; warp it (causal); morph the previous and the next.
MODES = ("hold", "warp", "morph")


@dataclass(frozen=True)
class InbetweenConfig:
    """How in-between frames are made."""

    #: A point that moves less than this (pixels of the 128 px face) stays where it was. The
    #: tracked points jitter by about a pixel of the 128 px face whatever the video's size (the
    #: face mesh runs on a crop of fixed size): measured on real footage, 0.5 px let that jitter
    #: through on nearly still faces (3 dB below holding the keyframe), 1 px did not, and moving
    #: mouths lost nothing (``iplap bench --inbetween``).
    dead_zone_px: float = 1.0
    #: The anchored ring lies this far outside the jaw (pixels of the face), past the chin.
    ring_px: float = 14.0
    #: Rendered faces kept for their mouths (the turn's most recent).
    bank_size: int = 8
    #: Soft edge of the mouth's inside, pixels of the video.
    mouth_feather_px: float = 1.5
    #: The head counts as still, and the keyframe's face stays where it was pasted, where the
    #: fitted global motion moves the pose points less than this (mean, pixels of the face):
    #: the tracked points jitter by a pixel or two on a large face, and following that jitter
    #: shifts a still face from frame to frame.
    still_px: float = 1.0
    #: The inside of the mouth comes from another rendered face only where the frame's inner
    #: lips differ from the keyframe's by more than this (pixels of the face, mean over the
    #: points) and that face's are nearer by half at least: a mouth of the same shape keeps
    #: its own inside (no flicker on a still or slowly moving mouth).
    mouth_change_px: float = 1.0


@dataclass(frozen=True)
class Keyframe:
    """A rendered face, the landmarks it was drawn from, and the crop box it belongs in."""

    face: np.ndarray  # (128, 128, 3) uint8 BGR
    landmarks: np.ndarray  # (2, 131): pose then content, normalised to ``box``
    box: tuple[int, int, int, int]  # y1, y2, x1, x2 in the video's pixels
    index: int = 0  # the frame it was rendered for

    @property
    def points(self) -> np.ndarray:
        """The landmarks in pixels of the 128 px face."""
        return face_points(self.landmarks)

    @property
    def to_image(self) -> np.ndarray:
        """The affine map (2 x 3) from the 128 px face to the video's pixels."""
        return face_to_image(self.box)


@dataclass(frozen=True)
class Target:
    """A frame to make: its own 131 landmarks and crop box, its picture and its tracked face."""

    landmarks: np.ndarray  # (2, 131) normalised to ``box``
    box: tuple[int, int, int, int]
    background: np.ndarray  # (H, W, 3) uint8: the frame the face goes on
    track_landmarks: np.ndarray  # (478, 3) normalised to the frame: the blend mask's contour

    @property
    def image_points(self) -> np.ndarray:
        return _image_points(self.landmarks, self.box)


def face_points(landmarks: np.ndarray) -> np.ndarray:
    """(2, 131) normalised landmarks -> (131, 2) float32 pixel positions in the 128 px face."""
    return (np.asarray(landmarks, np.float32).T * IMAGE_SIZE).astype(np.float32)


def face_to_image(box: tuple[int, int, int, int]) -> np.ndarray:
    """The affine map from the 128 px face to the video's pixels of ``box`` (as the paste's resize)."""
    y1, y2, x1, x2 = box
    sx, sy = (x2 - x1) / IMAGE_SIZE, (y2 - y1) / IMAGE_SIZE
    # cv2.resize's pixel centres: face pixel u lands at x1 + (u + 0.5) * sx - 0.5
    return np.array([[sx, 0.0, x1 + 0.5 * sx - 0.5], [0.0, sy, y1 + 0.5 * sy - 0.5]])


def _image_points(landmarks: np.ndarray, box) -> np.ndarray:
    y1, y2, x1, x2 = box
    return np.asarray(landmarks, np.float64).T * (x2 - x1, y2 - y1) + (x1, y1)


def _border(size: int = IMAGE_SIZE, per_side: int = 4) -> np.ndarray:
    edge = np.linspace(0, size - 1, per_side + 1, dtype=np.float32)[:-1]
    last = np.float32(size - 1)
    return np.concatenate([np.stack([edge, np.zeros_like(edge)], 1), np.stack([np.full_like(edge, last), edge], 1),
                           np.stack([last - edge, np.full_like(edge, last)], 1),
                           np.stack([np.zeros_like(edge), last - edge], 1)])


def _ring(points: np.ndarray, distance: float) -> np.ndarray:
    """Anchors outside the jaw: each jaw point pushed away from the face's centre."""
    jaw = points[JAW]
    away = jaw - points.mean(axis=0)
    away /= np.maximum(np.linalg.norm(away, axis=1, keepdims=True), 1e-6)
    return np.clip(jaw + distance * away, 0, IMAGE_SIZE - 1)


def _affine_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The affine map (2 x 3) that carries ``source`` points onto ``target`` best (least squares)."""
    a = np.concatenate([np.asarray(source, np.float64), np.ones((len(source), 1))], axis=1)
    solution, *_ = np.linalg.lstsq(a, np.asarray(target, np.float64), rcond=None)
    return solution.T


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer`` after ``inner`` (both 2 x 3)."""
    return (np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]]))[:2]


def _invert(affine: np.ndarray) -> np.ndarray:
    return np.linalg.inv(np.vstack([affine, [0, 0, 1]]))[:2]


def _apply(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64) @ affine[:, :2].T + affine[:, 2]


class Mesh:
    """A keyframe's control points (its landmarks, then the anchors) and a triangulation of
    them, which every frame made from this keyframe keeps."""

    def __init__(self, points: np.ndarray, config: InbetweenConfig):
        self.config = config
        self.anchors = np.concatenate([_ring(points, config.ring_px), _border()]).astype(np.float32)
        # landmarks outside the crop (a face at the frame's edge, or a model's stray point) are
        # kept on its border: the triangulation covers the crop
        inside = np.clip(points, 0, IMAGE_SIZE - 1)
        self.source = np.concatenate([inside, self.anchors]).astype(np.float32)
        self.triangles = _triangulate(self.source)

    def target(self, points: np.ndarray) -> np.ndarray | None:
        """The control points moved to ``points`` (the 131, in this keyframe's face pixels),
        those within the dead zone staying; None where nothing moves past it."""
        points = np.asarray(points, np.float32)
        moving = np.linalg.norm(points - self.source[:len(points)], axis=1) >= self.config.dead_zone_px
        if not moving.any():
            return None
        target = self.source.copy()
        target[:len(points)][moving] = points[moving]
        return target

    def warp(self, face: np.ndarray, target: np.ndarray | None) -> np.ndarray:
        """``face`` (this keyframe's) with its control points moved to ``target``."""
        if target is None:
            return face
        map_x, map_y = self.backward_map(target)
        return cv2.remap(face, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def backward_map(self, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For every pixel of the moved face, where it comes from in the keyframe's face. Only
        the triangles with a moving corner are drawn: the others map each pixel to itself."""
        size = IMAGE_SIZE
        moved = np.any(target != self.source, axis=1)
        triangles = self.triangles[moved[self.triangles].any(axis=1)]
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        map_x, map_y = xs.copy(), ys.copy()
        if not len(triangles):
            return map_x, map_y
        corners = target[triangles]  # (T, 3, 2)
        x0, y0 = np.clip(np.floor(corners.min(axis=(0, 1))).astype(int), 0, size - 1)
        x1, y1 = np.clip(np.ceil(corners.max(axis=(0, 1))).astype(int) + 1, 1, size)
        labels = np.full((y1 - y0, x1 - x0), -1, np.int32)
        shifted = np.round((corners - (x0, y0)) * 16).astype(np.int32)
        for k in range(len(triangles)):
            cv2.fillConvexPoly(labels, shifted[k], k, cv2.LINE_8, 4)
        affines = _triangle_affines(target, self.source, triangles)  # (T, 2, 3): moved -> keyframe
        inside = labels >= 0
        a = affines[labels[inside]]
        px, py = xs[y0:y1, x0:x1][inside], ys[y0:y1, x0:x1][inside]
        map_x[y0:y1, x0:x1][inside] = a[:, 0, 0] * px + a[:, 0, 1] * py + a[:, 0, 2]
        map_y[y0:y1, x0:x1][inside] = a[:, 1, 0] * px + a[:, 1, 1] * py + a[:, 1, 2]
        return map_x, map_y


def _triangulate(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles of ``points`` as (T, 3) indices. Points that coincide (a closed
    mouth's inner lips) are spread by a hair first, so that every point is a vertex."""
    spread = points.astype(np.float64).copy()
    _, first, counts = np.unique(np.round(spread, 3), axis=0, return_index=True, return_counts=True)
    for i in np.flatnonzero(counts > 1):
        same = np.flatnonzero(np.all(np.abs(spread - spread[first[i]]) < 5e-4, axis=1))
        spread[same, 1] += 0.01 * np.arange(len(same))
    subdiv = cv2.Subdiv2D((-1, -1, IMAGE_SIZE + 2, IMAGE_SIZE + 2))
    for x, y in spread:
        subdiv.insert((float(x), float(y)))
    triangles = []
    for x1, y1, x2, y2, x3, y3 in subdiv.getTriangleList():
        corners = [(x1, y1), (x2, y2), (x3, y3)]
        if any(not (-1 <= x <= IMAGE_SIZE + 1 and -1 <= y <= IMAGE_SIZE + 1) for x, y in corners):
            continue  # a triangle of the subdivision's own outer frame
        index = [int(np.argmin(np.sum((spread - c) ** 2, axis=1))) for c in corners]
        if len(set(index)) == 3:
            triangles.append(index)
    return np.asarray(triangles, np.int32)


def _triangle_affines(target: np.ndarray, source: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Per triangle, the affine map from its target corners to its source corners (2 x 3)."""
    dst = target[triangles].astype(np.float64)  # (T, 3, 2)
    src = source[triangles].astype(np.float64)
    a = np.concatenate([dst, np.ones((len(triangles), 3, 1))], axis=2)  # (T, 3, 3)
    safe = np.abs(np.linalg.det(a)) > 1e-9  # a collapsed target triangle covers no pixel: any map will do
    solved = np.zeros((len(triangles), 3, 2))
    solved[safe] = np.linalg.solve(a[safe], src[safe])
    solved[~safe] = np.array([[1.0, 0], [0, 1.0], [0, 0]])
    return solved.transpose(0, 2, 1).astype(np.float32)  # (T, 2, 3)


def _mouth_distance_px(a: np.ndarray, b: np.ndarray) -> float:
    """How far apart two mouths' inner lips are, in pixels of the face (mean over the points,
    each mouth about its own centre: where the mouth is does not count, its shape does)."""
    inner_a, inner_b = a[INNER_LIPS], b[INNER_LIPS]
    return float(np.linalg.norm((inner_a - inner_a.mean(axis=0)) - (inner_b - inner_b.mean(axis=0)), axis=1).mean())


class MouthBank:
    """The turn's most recent rendered faces, for the inside of a mouth of another shape."""

    def __init__(self, size: int = InbetweenConfig.bank_size):
        self._faces: deque[Keyframe] = deque(maxlen=size)

    def add(self, keyframe: Keyframe) -> None:
        self._faces.append(keyframe)

    def nearest(self, points: np.ndarray) -> tuple[Keyframe | None, float]:
        """The face whose mouth is nearest in shape to ``points``' (face pixels), and how near."""
        if not self._faces:
            return None, float("inf")
        found = min(self._faces, key=lambda k: _mouth_distance_px(k.points, points))
        return found, _mouth_distance_px(found.points, points)

    def __len__(self) -> int:
        return len(self._faces)


class InbetweenMaker:
    """Makes in-between frames; keeps the meshes of recent keyframes and the mouth bank."""

    def __init__(self, config: InbetweenConfig | None = None):
        self.config = config or InbetweenConfig()
        self.bank = MouthBank(self.config.bank_size)
        self._meshes: dict[int, tuple[Keyframe, Mesh]] = {}

    def _mesh(self, keyframe: Keyframe) -> Mesh:
        found = self._meshes.get(id(keyframe))
        if found is None or found[0] is not keyframe:
            if len(self._meshes) > 2 * self.config.bank_size:
                self._meshes.clear()
            found = self._meshes[id(keyframe)] = (keyframe, Mesh(keyframe.points, self.config))
        return found[1]

    def _moved(self, keyframe: Keyframe, target: Target) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The keyframe's face with its local motion done (in its own face pixels), the affine
        map from those to the video's pixels (the global motion folded in), and the frame's
        landmarks in the keyframe's face pixels."""
        to_image = keyframe.to_image
        pose = _image_points(keyframe.landmarks, keyframe.box)[:N_POSE]
        motion = _affine_fit(pose, target.image_points[:N_POSE])
        moved_px = np.linalg.norm(_apply(motion, pose) - pose, axis=1).mean() / to_image[0, 0]
        paste = to_image if moved_px < self.config.still_px else _compose(motion, to_image)  # face px -> frame px
        points = _apply(_invert(paste), target.image_points).astype(np.float32)
        mesh = self._mesh(keyframe)
        return mesh.warp(keyframe.face, mesh.target(points)), paste, points

    def frame(self, target: Target, previous: Keyframe, following: Keyframe | None = None,
              t: float = 0.0) -> np.ndarray:
        """The in-between frame: ``previous`` (warp), or ``previous`` and ``following`` mixed
        by ``t`` in [0, 1] (morph), moved to ``target`` and blended into its picture."""
        region, mask = contour_mask_region(target.background, target.box, target.track_landmarks)
        face, paste, points = self._moved(previous, target)
        face = self._with_mouth(face, points, previous)
        layer = _into_region(face, paste, target.background, region)
        if following is not None and t > 0:
            other, paste_b, points_b = self._moved(following, target)
            other = self._with_mouth(other, points_b, following)
            layer = cv2.addWeighted(layer, 1.0 - t, _into_region(other, paste_b, target.background, region), t, 0.0)
        return _blend(target.background, layer, region, mask)

    def _with_mouth(self, face: np.ndarray, points: np.ndarray, keyframe: Keyframe) -> np.ndarray:
        """``face`` (the keyframe's, moved) with the inside of the mouth of ``points`` taken from
        the nearest rendered mouth, where the keyframe's own differs in shape."""
        own = _mouth_distance_px(keyframe.points, points)
        if own <= self.config.mouth_change_px:
            return face
        source, distance = self.bank.nearest(points)
        if source is None or source is keyframe or distance > own / 2:
            return face
        # the bank's face, in the keyframe's face pixels: the same affine fit of the pose points
        align = _affine_fit(source.points[:N_POSE], keyframe.points[:N_POSE])
        mesh = self._mesh(source)
        moved = mesh.warp(source.face, mesh.target(_apply(_invert(align), points).astype(np.float32)))
        inside = cv2.warpAffine(moved, align, (IMAGE_SIZE, IMAGE_SIZE), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        mask = np.zeros(face.shape[:2], np.float32)
        cv2.fillPoly(mask, [np.round(points[INNER_LIPS] * 16).astype(np.int32)], 1.0, cv2.LINE_AA, 4)
        mask = cv2.GaussianBlur(mask, (0, 0), self.config.mouth_feather_px)[..., None]
        return (inside * mask + face * (1 - mask) + 0.5).astype(np.uint8)


def _into_region(face: np.ndarray, paste: np.ndarray, frame: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """``face`` resampled once into the region (y1, y2, x1, x2) of ``frame`` through ``paste``;
    where the moved face does not reach, the frame's own pixels (as a rendered face's paste
    leaves the frame outside its box)."""
    ry1, ry2, rx1, rx2 = region
    shifted = paste.copy()
    shifted[:, 2] -= (rx1, ry1)
    out = frame[ry1:ry2, rx1:rx2].copy()
    cv2.warpAffine(face, shifted, (rx2 - rx1, ry2 - ry1), dst=out, flags=cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_TRANSPARENT)
    return out


def _blend(frame: np.ndarray, layer: np.ndarray, region: tuple[int, int, int, int], alpha: np.ndarray) -> np.ndarray:
    ry1, ry2, rx1, rx2 = region
    out = frame.copy()
    out[ry1:ry2, rx1:rx2] = (layer * alpha + frame[ry1:ry2, rx1:rx2] * (1 - alpha)).astype(np.uint8)
    return out


__all__ = ["INNER_LIPS", "JAW", "MODES", "OUTER_LIPS", "InbetweenConfig", "InbetweenMaker", "Keyframe", "Mesh",
           "MouthBank", "Target", "face_points", "face_to_image"]
