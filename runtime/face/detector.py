"""BlazeFace face detection as MediaPipe's ``FaceDetection`` graph runs it, in numpy.

Steps (each a function below, so each can be tested alone):

1. the image (or a pixel region of it) is letterboxed into the square input tensor, with a
   zero border, values mapped from [0, 255] to [-1, 1];
2. the model gives, per SSD anchor, a box and six keypoints (offsets in tensor pixels) and a
   logit; scores are ``sigmoid(clip(logit, -100, 100))`` and kept when ``>= min_score``;
3. weighted non-max suppression (IoU > 0.3 clusters, score-weighted mean of boxes and
   keypoints, the best score kept), best first;
4. boxes and keypoints are projected from the tensor back to the image (normalised).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ...errors import BundleError, MediaError
from ..backends import BackendConfig, InferenceModel, load_model
from .anchors import AnchorSpec, ssd_anchors
from .files import MODEL_STEMS
from .geometry import crop_to_tensor, pad_to_aspect, subrect_to_image

#: Order of a detection's keypoints (MediaPipe's FaceKeyPoint).
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")


@dataclass(frozen=True)
class DetectorSpec:
    """A detector model's own configuration (MediaPipe's face_detection_*.pbtxt options)."""

    name: str
    tensor_size: int
    anchors: AnchorSpec
    min_score: float
    num_keypoints: int = 6
    score_clip: float = 100.0
    nms_iou: float = 0.3


SHORT_RANGE = DetectorSpec(MODEL_STEMS["detector"], 128, AnchorSpec(128, (8, 16, 16, 16)), 0.5)
FULL_RANGE = DetectorSpec(MODEL_STEMS["full_range"], 192,
                          AnchorSpec(192, (4,), interpolated_scale_aspect_ratio=0.0), 0.6)


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields, not objects
class Detection:
    """One face: a box and six keypoints, normalised to the image, and the detector's score."""

    score: float
    xmin: float
    ymin: float
    width: float
    height: float
    keypoints: np.ndarray = field(repr=False)  # (6, 2) x, y normalised; order as KEYPOINT_NAMES

    def box_pixels(self, image_width: int, image_height: int) -> tuple[float, float, float, float]:
        """(x1, y1, x2, y2) in pixels."""
        return (self.xmin * image_width, self.ymin * image_height, (self.xmin + self.width) * image_width,
                (self.ymin + self.height) * image_height)


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Check an input image: uint8, 2-D gray, or HxWx1/3/4 (BGR, BGRA). Returned unchanged (no copy)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise MediaError(f"expected a uint8 image, got {getattr(image, 'dtype', type(image).__name__)}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4)):
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise MediaError(f"empty image of shape {image.shape}")
        return image
    raise MediaError(f"expected a gray, BGR or BGRA image, got shape {image.shape}")


def tensor_rgb(crop: np.ndarray) -> np.ndarray:
    """A warped crop (any channel layout accepted by :func:`as_bgr`) -> HxWx3 RGB uint8.

    Warping is per channel, so converting the small crop gives the same numbers as
    converting the whole image first (and is much cheaper on a 4K frame).
    """
    if crop.ndim == 2:
        return cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB)
    if crop.shape[2] == 1:
        return cv2.cvtColor(crop[:, :, 0], cv2.COLOR_GRAY2RGB)
    if crop.shape[2] == 4:
        return cv2.cvtColor(crop, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, spec: DetectorSpec,
           min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model outputs -> (scores (K,), boxes (K, 4) xmin ymin xmax ymax, keypoints (K, 6, 2)), tensor-normalised."""
    logits = np.clip(raw_scores.reshape(-1).astype(np.float64), -spec.score_clip, spec.score_clip)
    scores = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)  # float64: exp(100) overflows float32
    candidates = np.flatnonzero(scores >= min_score)
    raw = raw_boxes.reshape(-1, raw_boxes.shape[-1])[candidates].astype(np.float32)
    scale = np.float32(spec.tensor_size)
    ax, ay, aw, ah = (anchors[candidates, k] for k in range(4))
    xc = raw[:, 0] / scale * aw + ax
    yc = raw[:, 1] / scale * ah + ay
    w = raw[:, 2] / scale * aw
    h = raw[:, 3] / scale * ah
    boxes = np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1)
    kp = raw[:, 4:4 + 2 * spec.num_keypoints].reshape(-1, spec.num_keypoints, 2)
    keypoints = np.stack([kp[..., 0] / scale * aw[:, None] + ax[:, None],
                          kp[..., 1] / scale * ah[:, None] + ay[:, None]], axis=-1)
    keep = (boxes[:, 2] - boxes[:, 0] >= 0) & (boxes[:, 3] - boxes[:, 1] >= 0)  # NaN sizes fail these too
    return scores[candidates][keep], boxes[keep], keypoints[keep]


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    ix = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    iy = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    inter = np.where((ix >= 0) & (iy >= 0), ix * iy, 0.0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray,
                 iou_threshold: float) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """MediaPipe's WEIGHTED non-max suppression: [(score, box (4,), keypoints (k, 2))], best first.

    The best remaining detection and every remaining one that overlaps it by IoU >
    ``iou_threshold`` (itself included) form a cluster; the output keeps the best score and
    the score-weighted mean of the cluster's boxes (as corners) and keypoints.
    """
    order = np.argsort(-scores, kind="stable")
    remaining = order
    out = []
    while remaining.size:
        best = remaining[0]
        overlap = _iou(boxes[best].astype(np.float64), boxes[remaining].astype(np.float64)) > iou_threshold
        cluster, rest = remaining[overlap], remaining[~overlap]
        if cluster.size:
            w = scores[cluster].astype(np.float64)
            box = (boxes[cluster] * w[:, None]).sum(0) / w.sum()
            kps = (keypoints[cluster] * w[:, None, None]).sum(0) / w.sum()
        else:
            box, kps = boxes[best].astype(np.float64), keypoints[best].astype(np.float64)
        out.append((float(scores[best]), box, kps))
        if rest.size == remaining.size:  # a degenerate (empty) box overlaps nothing, itself included
            break
        remaining = rest
    return out


class FaceDetector:
    """A BlazeFace model with MediaPipe's pre- and post-processing.

    ``detect`` returns detections best first; with ``max_num_faces=1`` MediaPipe uses the
    first. ``region`` limits detection to an axis-aligned pixel box ``(cx, cy, w, h)``,
    as MediaPipe's detection-by-ROI graphs do; results are still normalised to the image.
    """

    def __init__(self, model: InferenceModel, spec: DetectorSpec = SHORT_RANGE):
        self.model = model
        self.spec = spec
        self.anchors = ssd_anchors(spec.anchors)
        if len(model.input_names) != 1 or len(model.output_names) != 2:
            raise BundleError(f"{spec.name}: expected 1 input and 2 outputs, got {model.input_names} -> "
                              f"{model.output_names}")
        self.input_name = model.input_names[0]

    @classmethod
    def load(cls, path: str | Path, backend: BackendConfig, spec: DetectorSpec = SHORT_RANGE) -> FaceDetector:
        return cls(load_model(path, backend), spec)

    def input_tensor(self, image: np.ndarray,
                     region: tuple[float, float, float, float] | None = None) -> tuple[np.ndarray, tuple]:
        """The letterboxed (1, S, S, 3) float32 tensor in [-1, 1], and the padded pixel box it covers."""
        height, width = image.shape[:2]
        cx, cy, w, h = region if region is not None else (width / 2.0, height / 2.0, float(width), float(height))
        size = self.spec.tensor_size
        padded, _ = pad_to_aspect(cx, cy, w, h, size, size)
        box = (*padded, 0.0)
        crop = tensor_rgb(crop_to_tensor(image, box, size, size, "zero"))
        tensor = crop.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
        return tensor[None], box

    def detect(self, image: np.ndarray, region: tuple[float, float, float, float] | None = None,
               min_score: float | None = None) -> list[Detection]:
        """Faces in ``image`` (uint8 BGR, BGRA or gray), best first; ``min_score`` overrides the spec's."""
        image = as_bgr(image)
        height, width = image.shape[:2]
        tensor, box = self.input_tensor(image, region)
        outputs = self.model.run({self.input_name: tensor})
        raw_boxes, raw_scores = sorted(outputs.values(), key=lambda a: -a.shape[-1])
        threshold = self.spec.min_score if min_score is None else float(min_score)
        scores, boxes, keypoints = decode(raw_boxes, raw_scores, self.anchors, self.spec, threshold)
        detections = []
        for score, corners, kps in weighted_nms(scores, boxes, keypoints, self.spec.nms_iou):
            # the box's four corners, projected, and their axis-aligned extent
            quad = np.array([[corners[0], corners[1]], [corners[2], corners[1]], [corners[2], corners[3]],
                             [corners[0], corners[3]]])
            quad = subrect_to_image(quad, box, width, height)
            lo, hi = quad.min(0), quad.max(0)
            points = subrect_to_image(kps, box, width, height).astype(np.float32)
            detections.append(Detection(score, float(lo[0]), float(lo[1]), float(hi[0] - lo[0]),
                                        float(hi[1] - lo[1]), points))
        return detections
