"""The FaceMesh attention model (478 points) with MediaPipe's ROI, crop and projection.

* ROI from a detection: the detection box, rotated so that the eye keypoints lie level,
  squared on its long side and scaled by 1.5. ROI from landmarks (tracking): the same from
  the extent of all landmarks, levelled on points 33 and 263.
* Crop: the rotated ROI resampled to 192 x 192 (bilinear, replicated border), RGB in [0, 1].
* Outputs: 468 mesh points (x, y, z in crop pixels), then lips (80), eyes (71 each) and
  irises (5 each) as x, y; the refinement writes those over the mesh points (iris z is the
  mean z of its eye's contour), everything is divided by 192 and rotated and scaled back
  into the image. z is scaled like x, by the ROI's normalised width.
* The face-presence logit must give ``sigmoid > threshold`` or there is no face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import BundleError
from ..backends import BackendConfig, InferenceModel, load_model
from .detector import Detection, tensor_rgb
from .geometry import NormRect, crop_to_tensor, rotation_from_points, scale_square_long

TENSOR_SIZE = 192
ROI_SCALE = 1.5
NUM_LANDMARKS = 478

#: Where each refinement output's points go in the 478-point list (MediaPipe's mapping).
LIPS_INDICES = (
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409,
    78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415,
    76, 77, 90, 180, 85, 16, 315, 404, 320, 307, 306, 184, 74, 73, 72, 11, 302, 303, 304, 408,
    62, 96, 89, 179, 86, 15, 316, 403, 319, 325, 292, 183, 42, 41, 38, 12, 268, 271, 272, 407)
LEFT_EYE_INDICES = (
    33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173,
    130, 25, 110, 24, 23, 22, 26, 112, 243, 247, 30, 29, 27, 28, 56, 190,
    226, 31, 228, 229, 230, 231, 232, 233, 244, 113, 225, 224, 223, 222, 221, 189,
    35, 124, 46, 53, 52, 65, 143, 111, 117, 118, 119, 120, 121, 128, 245, 156, 70, 63, 105, 66, 107, 55, 193)
RIGHT_EYE_INDICES = (
    263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398,
    359, 255, 339, 254, 253, 252, 256, 341, 463, 467, 260, 259, 257, 258, 286, 414,
    446, 261, 448, 449, 450, 451, 452, 453, 464, 342, 445, 444, 443, 442, 441, 413,
    265, 353, 276, 283, 282, 295, 372, 340, 346, 347, 348, 349, 350, 357, 465, 383, 300, 293, 334, 296, 336, 285, 417)
LEFT_IRIS_INDICES = (468, 469, 470, 471, 472)
RIGHT_IRIS_INDICES = (473, 474, 475, 476, 477)
#: An iris's z is the mean z of its eye's 16 contour points (the first 16 of the eye's mapping).
LEFT_IRIS_Z_FROM = LEFT_EYE_INDICES[:16]
RIGHT_IRIS_Z_FROM = RIGHT_EYE_INDICES[:16]
#: Landmarks that level a tracking ROI (outer eye corners).
ROTATION_POINTS = (33, 263)

OUTPUTS = ("output_mesh_identity", "output_lips", "output_left_eye", "output_right_eye", "output_left_iris",
           "output_right_iris", "conv_faceflag")


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields, not objects
class MeshResult:
    """The mesh model's answer for one ROI."""

    points: np.ndarray = field(repr=False)  # (478, 3) float32: x, y normalised to the image, z scaled as x
    presence: float  # sigmoid of the face-flag logit
    roi: NormRect


def roi_from_detection(detection: Detection, image_width: int, image_height: int) -> NormRect:
    """MediaPipe's FaceDetectionFrontDetectionToRoi: level the eyes, square on the long side, x1.5."""
    (x0, y0), (x1, y1) = detection.keypoints[0], detection.keypoints[1]
    rotation = rotation_from_points(float(x0), float(y0), float(x1), float(y1), image_width, image_height)
    rect = NormRect(detection.xmin + detection.width / 2, detection.ymin + detection.height / 2, detection.width,
                    detection.height, rotation)
    return scale_square_long(rect, image_width, image_height, ROI_SCALE)


def roi_from_landmarks(points: np.ndarray, image_width: int, image_height: int) -> NormRect:
    """MediaPipe's FaceLandmarkLandmarksToRoi: the landmarks' extent, levelled on 33 and 263, squared, x1.5."""
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    lo, hi = xy.min(0), xy.max(0)
    a, b = ROTATION_POINTS
    rotation = rotation_from_points(xy[a, 0], xy[a, 1], xy[b, 0], xy[b, 1], image_width, image_height)
    rect = NormRect(float(lo[0] + (hi[0] - lo[0]) / 2), float(lo[1] + (hi[1] - lo[1]) / 2), float(hi[0] - lo[0]),
                    float(hi[1] - lo[1]), rotation)
    return scale_square_long(rect, image_width, image_height, ROI_SCALE)


_REFINEMENTS = tuple((name, np.array(indices)) for name, indices in (
    ("output_lips", LIPS_INDICES), ("output_left_eye", LEFT_EYE_INDICES), ("output_right_eye", RIGHT_EYE_INDICES),
    ("output_left_iris", LEFT_IRIS_INDICES), ("output_right_iris", RIGHT_IRIS_INDICES)))
_IRIS_Z = ((np.array(LEFT_IRIS_INDICES), np.array(LEFT_IRIS_Z_FROM)),
           (np.array(RIGHT_IRIS_INDICES), np.array(RIGHT_IRIS_Z_FROM)))


def refine(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """The model's seven outputs -> (478, 3) points normalised to the crop (z divided by 192 as x)."""
    size = np.float32(TENSOR_SIZE)
    points = np.zeros((NUM_LANDMARKS, 3), np.float32)
    points[:468] = outputs["output_mesh_identity"].reshape(468, 3) / size
    for name, indices in _REFINEMENTS:
        points[indices, :2] = outputs[name].reshape(-1, 2) / size
    for iris, contour in _IRIS_Z:  # the mean is taken in double, as MediaPipe does
        points[iris, 2] = np.float32(points[contour, 2].astype(np.float64).mean())
    return points


def project(points: np.ndarray, roi: NormRect) -> np.ndarray:
    """Crop-normalised points -> image-normalised points (MediaPipe's LandmarkProjection with a NORM_RECT)."""
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    x = points[:, 0].astype(np.float64) - 0.5
    y = points[:, 1].astype(np.float64) - 0.5
    out = np.empty_like(points)
    out[:, 0] = (c * x - s * y) * roi.width + roi.x_center
    out[:, 1] = (s * x + c * y) * roi.height + roi.y_center
    out[:, 2] = points[:, 2] * np.float32(roi.width)
    return out


class FaceMesh:
    """The attention mesh model: an image and a ROI in, 478 landmarks and a presence score out."""

    def __init__(self, model: InferenceModel):
        missing = [name for name in OUTPUTS if name not in model.output_names]
        if len(model.input_names) != 1 or missing:
            raise BundleError(f"face mesh model: expected one input and outputs {', '.join(OUTPUTS)}; "
                              f"missing {missing or model.input_names}")
        self.model = model
        self.input_name = model.input_names[0]

    @classmethod
    def load(cls, path: str | Path, backend: BackendConfig) -> FaceMesh:
        return cls(load_model(path, backend))

    def input_tensor(self, image: np.ndarray, roi: NormRect) -> np.ndarray:
        height, width = image.shape[:2]
        crop = crop_to_tensor(image, roi.to_pixels(width, height), TENSOR_SIZE, TENSOR_SIZE, "replicate")
        return (tensor_rgb(crop).astype(np.float32) * np.float32(1.0 / 255.0))[None]

    def run(self, image: np.ndarray, roi: NormRect) -> MeshResult:
        outputs = self.model.run({self.input_name: self.input_tensor(image, roi)})
        logit = float(np.asarray(outputs["conv_faceflag"]).reshape(-1)[0])
        presence = 1.0 / (1.0 + math.exp(-logit)) if logit > -80 else 0.0
        return MeshResult(project(refine(outputs), roi), presence, roi)
