"""The face-tracking entry object: detection, the attention mesh, tracking and smoothing.

Static mode (the default) is MediaPipe FaceMesh with ``static_image_mode=True,
max_num_faces=1, refine_landmarks=True``: every image is detected afresh, the best
detection gives the ROI, and the mesh's face-presence score must exceed
``min_tracking_confidence``. Track mode is the same graph with ``static_image_mode=False``:
the previous frame's landmarks give the next ROI and detection runs only when there is no
face to follow. Unlike MediaPipe, which reports no face on the frame where tracking is lost
and detects again on the next one, the tracker detects again on that same frame
(``redetect_on_loss``), so a lost track costs no frame.

Small faces: the short-range detector sees the whole frame letterboxed to 128 x 128, so a
face under about 15 % of the frame's width is not found. When it finds nothing, and a
full-range model is given, the full-range detector (192 x 192, faces down to a few
percent of the frame) finds the face; the short-range detector then runs again on a
square region around it, as MediaPipe would on a closer crop, and its detection gives
the ROI. MediaPipe's answer depends on that framing (about 1 % of the face's width
between a 4x and a 6x square), so three squares (4, 5 and 6 face-box sizes) are searched
and their detections averaged, weighted by score, as weighted non-max suppression merges
overlapping detections. Where the short-range detector finds a face on the whole frame,
nothing changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import IplapError
from ..backends import BackendConfig
from ..constants import FPS
from ..landmarks import crop_box
from .detector import FULL_RANGE, SHORT_RANGE, Detection, FaceDetector, as_bgr
from .files import face_model_files
from .geometry import NormRect
from .mesh import FaceMesh, MeshResult, roi_from_detection, roi_from_landmarks
from .smoothing import OneEuroConfig, OneEuroFilter

log = logging.getLogger(__name__)

MODES = ("static", "track")
#: Sides of the squares searched again with the short-range detector, in face-box sizes.
SMALL_FACE_REGIONS = (4.0, 5.0, 6.0)


@dataclass(frozen=True)
class FaceTrackerConfig:
    """Options of a tracking run (the models' own settings live in ``detector.DetectorSpec``).

    Attributes:
        mode: ``"static"`` detects on every image (MediaPipe ``static_image_mode=True``, exact);
            ``"track"`` takes each ROI from the previous frame's landmarks (video).
        min_detection_confidence: the short-range detector's score threshold (MediaPipe 0.5).
        min_tracking_confidence: the mesh's face-presence threshold (MediaPipe 0.5); below it
            there is no face (static) or the track is lost (track).
        redetect_on_loss: in track mode, detect again on the frame where the track is lost.
        small_faces: when the short-range detector finds nothing, look with the full-range
            detector (needs its model; otherwise ignored).
        smoothing: One-Euro smoothing of consecutive results; ``None`` (default) is off.
        fps: frame rate for the smoothing filter's time step.
    """

    mode: str = "static"
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    redetect_on_loss: bool = True
    small_faces: bool = True
    smoothing: OneEuroConfig | None = None
    fps: float = FPS

    def __post_init__(self):
        if self.mode not in MODES:
            raise IplapError(f"unknown face tracking mode {self.mode!r}: choose one of {', '.join(MODES)}")
        for name in ("min_detection_confidence", "min_tracking_confidence"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise IplapError(f"{name} must be within [0, 1], got {getattr(self, name)}")
        if self.fps <= 0:
            raise IplapError(f"fps must be positive, got {self.fps}")


@dataclass(frozen=True, eq=False)  # holds arrays: compare fields, not objects
class FaceLandmarks:
    """One face's 478 FaceMesh landmarks in MediaPipe's normalised coordinates.

    ``points[:, 0]`` and ``points[:, 1]`` are x / width and y / height; ``points[:, 2]``
    is depth on the scale of x (MediaPipe's convention). ``source`` says how the ROI was
    found: ``"detection"`` (short-range detector on the whole image), ``"small_face"``
    (the full-range fallback) or ``"tracking"`` (the previous frame's landmarks).
    """

    points: np.ndarray = field(repr=False)
    image_width: int
    image_height: int
    presence: float
    roi: NormRect
    source: str
    detection: Detection | None = None

    def pixels(self) -> np.ndarray:
        """(478, 2) x, y in pixels."""
        return self.points[:, :2] * np.array([self.image_width, self.image_height], np.float32)

    def crop_box(self) -> tuple[int, int, int, int]:
        """IP_LAP's face crop box ``(y1, y2, x1, x2)`` (see ``iplap.runtime.landmarks.crop_box``)."""
        return crop_box(self.points, self.image_height, self.image_width)


class FaceTracker:
    """Face landmarks for images or video frames, as MediaPipe FaceMesh gives them."""

    def __init__(self, detector_path: str | Path, mesh_path: str | Path, backend: BackendConfig | None = None,
                 config: FaceTrackerConfig | None = None, full_range_path: str | Path | None = None):
        backend = backend or BackendConfig()
        config = config or FaceTrackerConfig()
        detector = FaceDetector.load(detector_path, backend, SHORT_RANGE)
        full_range = FaceDetector.load(full_range_path, backend, FULL_RANGE) if full_range_path else None
        self._setup(detector, FaceMesh.load(mesh_path, backend), full_range, config)

    @classmethod
    def from_folder(cls, folder: str | Path, backend: BackendConfig | None = None,
                    config: FaceTrackerConfig | None = None) -> FaceTracker:
        """A tracker over the files ``iplap.export.facemodels.export_face_models`` wrote into ``folder``.

        OpenVINO uses ``openvino/NAME.xml`` where present, else the ONNX files. The full-range
        detector is optional (without it small faces are not found, as in MediaPipe).
        """
        backend = backend or BackendConfig()
        files = face_model_files(folder, backend.backend)
        return cls(files["detector"], files["mesh"], backend, config, files.get("full_range"))

    @classmethod
    def from_models(cls, detector: FaceDetector, mesh: FaceMesh, full_range: FaceDetector | None = None,
                    config: FaceTrackerConfig | None = None) -> FaceTracker:
        """A tracker over already loaded models (they may be shared between trackers)."""
        tracker = cls.__new__(cls)
        tracker._setup(detector, mesh, full_range, config or FaceTrackerConfig())
        return tracker

    def _setup(self, detector: FaceDetector, mesh: FaceMesh, full_range: FaceDetector | None,
               config: FaceTrackerConfig) -> None:
        self.detector, self.mesh, self.full_range, self.config = detector, mesh, full_range, config
        self._filter = OneEuroFilter(config.smoothing) if config.smoothing else None
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame (start of a new video)."""
        self._next_roi: NormRect | None = None
        self._warned_many = False
        if self._filter is not None:
            self._filter.reset()

    # detection ---------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in ``image`` (BGR, BGRA or gray uint8), best first; [] when there is none."""
        return self._find(as_bgr(image))[0]

    def _find(self, image: np.ndarray) -> tuple[list[Detection], str]:
        found = self.detector.detect(image, min_score=self.config.min_detection_confidence)
        if found or not (self.config.small_faces and self.full_range is not None):
            return found, "detection"
        return self._detect_small(image), "small_face"

    def _detect_small(self, image: np.ndarray) -> list[Detection]:
        height, width = image.shape[:2]
        out = []
        for coarse in self.full_range.detect(image):
            x1, y1, x2, y2 = coarse.box_pixels(width, height)
            size = max(x2 - x1, y2 - y1)
            fine = []
            for factor in SMALL_FACE_REGIONS:
                region = ((x1 + x2) / 2, (y1 + y2) / 2, factor * size, factor * size)
                found = self.detector.detect(image, region, self.config.min_detection_confidence)
                best = max(found, key=lambda d: _iou(d, coarse), default=None)
                if best is not None and _iou(best, coarse) > 0:  # the same face, not a neighbour
                    fine.append(best)
            out.append(_fuse(fine) if fine else coarse)
        if out:
            log.debug("short-range detector found no face; full-range fallback found %d", len(out))
        return out

    # landmarks ---------------------------------------------------------------------------
    def process(self, image: np.ndarray) -> FaceLandmarks | None:
        """The face's landmarks in one image or the next video frame; ``None`` when there is no face."""
        image = as_bgr(image)
        height, width = image.shape[:2]
        result, source, detection = None, "tracking", None
        if self.config.mode == "track" and self._next_roi is not None:
            result = self._accept(self.mesh.run(image, self._next_roi))
            if result is None:
                log.debug("face track lost")
                self._reset_stream()
                if not self.config.redetect_on_loss:
                    return None
        if result is None:
            detections, source = self._find(image)
            if detections:
                if len(detections) > 1:
                    self._log_many(len(detections))
                detection = detections[0]
                result = self._accept(self.mesh.run(image, roi_from_detection(detection, width, height)))
            if result is None:
                self._reset_stream()
                return None
        points = result.points
        if self.config.mode == "track":
            self._next_roi = roi_from_landmarks(points, width, height)
        if self._filter is not None:
            points = self._smooth(points, result.roi, width, height)
        return FaceLandmarks(points, width, height, result.presence, result.roi, source, detection)

    def process_video(self, frames: Iterable[np.ndarray]) -> Iterator[FaceLandmarks | None]:
        """Landmarks of each frame in order (a fresh stream: the tracker is reset first)."""
        self.reset()
        for frame in frames:
            yield self.process(frame)

    # helpers -----------------------------------------------------------------------------
    def _accept(self, result: MeshResult) -> MeshResult | None:
        return result if result.presence > self.config.min_tracking_confidence else None

    def _reset_stream(self) -> None:
        self._next_roi = None
        if self._filter is not None:
            self._filter.reset()

    def _log_many(self, count: int) -> None:
        if not self._warned_many:
            log.info("%d faces found; using the best one, as MediaPipe does with max_num_faces=1", count)
            self._warned_many = True
        else:
            log.debug("%d faces found; using the best one", count)

    def _smooth(self, points: np.ndarray, roi: NormRect, width: int, height: int) -> np.ndarray:
        scale_px = np.array([width, height, width], np.float64)
        size = max(roi.width * width, roi.height * height) / 1.5  # the face's size in pixels
        smoothed = self._filter(points * scale_px, 1.0 / self.config.fps, size)
        return (smoothed / scale_px).astype(np.float32)


def _iou(a: Detection, b: Detection) -> float:
    ix = min(a.xmin + a.width, b.xmin + b.width) - max(a.xmin, b.xmin)
    iy = min(a.ymin + a.height, b.ymin + b.height) - max(a.ymin, b.ymin)
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    return inter / (a.width * a.height + b.width * b.height - inter)


def _fuse(detections: list[Detection]) -> Detection:
    """Score-weighted mean of detections of one face (boxes as corners, and keypoints)."""
    weights = np.array([d.score for d in detections], np.float64)
    corners = np.array([[d.xmin, d.ymin, d.xmin + d.width, d.ymin + d.height] for d in detections])
    x1, y1, x2, y2 = np.average(corners, axis=0, weights=weights)
    keypoints = np.average(np.stack([d.keypoints for d in detections]), axis=0, weights=weights)
    return Detection(float(weights.max()), float(x1), float(y1), float(x2 - x1), float(y2 - y1),
                     keypoints.astype(np.float32))
