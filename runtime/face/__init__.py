"""Face detection and the FaceMesh attention model, without mediapipe.

The entry object is :class:`FaceTracker` (``tracker.py``): BGR images or video frames in,
:class:`FaceLandmarks` (478 MediaPipe FaceMesh points, normalised) out, or ``None`` when
there is no face. Its stages are public and can be used alone: ``detector`` (BlazeFace
with MediaPipe's anchors, decoding and weighted NMS), ``mesh`` (ROI, crop, the attention
model, refinement and projection), ``geometry`` (rotated ROIs and crops), ``anchors`` and
``smoothing`` (One-Euro); ``files`` names the model files (the one home of their stems,
which the exporter imports). The models are converted from the mediapipe 0.10.21 wheel by
``iplap.export.facemodels``.
"""

from .detector import Detection, FaceDetector
from .files import MODEL_STEMS, face_model_files
from .geometry import NormRect
from .mesh import FaceMesh, MeshResult
from .smoothing import OneEuroConfig, OneEuroFilter
from .tracker import FaceLandmarks, FaceTracker, FaceTrackerConfig

__all__ = ["MODEL_STEMS", "Detection", "FaceDetector", "FaceLandmarks", "FaceMesh", "FaceTracker", "FaceTrackerConfig",
           "MeshResult", "NormRect", "OneEuroConfig", "OneEuroFilter", "face_model_files"]
