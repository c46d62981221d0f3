"""Checks of the converted face models, run before they are written into a bundle.

* each detector against OpenVINO running the ``.tflite`` itself (OpenVINO reads the
  detectors but not the mesh, for its custom ops);
* the mesh through the whole runtime pipeline (each backend) against landmarks mediapipe
  0.10.21 gave on the sample photo (a few points stored below; ``tests/test_face.py``
  checks all 478 on every golden image).

Each check raises :class:`FaceModelExportError` when a model is off, else returns the
largest difference it saw, for the log.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...limits import Backend
from .wheel import DETECTOR, MESH, FaceModelExportError

#: MediaPipe 0.10.21 FaceMesh (static, refine_landmarks=True) on samples/astronaut.png: a few
#: landmarks (index: x, y normalised) to check the converted mesh against.
SAMPLE_LANDMARKS = {
    1: (0.43642187, 0.25393739), 33: (0.38127568, 0.19711463), 263: (0.49952674, 0.20367774),
    61: (0.39415824, 0.27190676), 291: (0.47849900, 0.27536461), 152: (0.43216010, 0.34657174),
    10: (0.44191417, 0.14001351), 468: (0.39741832, 0.19746043), 473: (0.48161137, 0.20208928)}
#: Largest allowed distance to MediaPipe's landmarks, in pixels of the 512 x 512 sample.
SAMPLE_TOLERANCE_PX = 0.25
#: Converted detector vs OpenVINO running the .tflite: |a - b| <= ATOL + RTOL * |b|.
ATOL, RTOL = 1e-3, 1e-4


def _sample_image() -> np.ndarray:
    import cv2

    from ...samples import FACE_IMAGE

    image = cv2.imread(str(FACE_IMAGE), cv2.IMREAD_COLOR)
    if image is None:
        raise FaceModelExportError(f"cannot read the sample photo {FACE_IMAGE}")
    return image


def check_detector(data: bytes, onnx_path: Path, spec_name: str) -> float:
    """Largest difference between the ONNX graph (onnxruntime) and OpenVINO running the .tflite."""
    import tempfile

    from ...runtime.backends import BackendConfig, load_model
    from ...runtime.face.detector import FULL_RANGE, SHORT_RANGE, FaceDetector
    from ...telemetry import import_openvino

    ov = import_openvino()

    spec = SHORT_RANGE if spec_name == SHORT_RANGE.name else FULL_RANGE
    with tempfile.TemporaryDirectory() as tmp:
        tflite_path = Path(tmp) / f"{spec_name}.tflite"
        tflite_path.write_bytes(data)
        reference = ov.Core().compile_model(str(tflite_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    ours = FaceDetector(load_model(onnx_path, BackendConfig(Backend.ONNXRUNTIME)), spec)
    sample = _sample_image()
    worst = 0.0
    for image in (sample, sample[:, ::-1].copy(), np.full((300, 400, 3), 90, np.uint8)):
        tensor, _ = ours.input_tensor(image)
        got = ours.model.run({ours.input_name: tensor})
        want = reference(tensor)
        for port in reference.outputs:
            name = next(n for n in port.get_names() if n in got)
            a, b = got[name], want[port]
            bad = np.abs(a - b) > ATOL + RTOL * np.abs(b)
            if bad.any():
                raise FaceModelExportError(f"{spec_name}: output {name} differs from the .tflite by "
                                           f"{np.abs(a - b).max():.3g}")
            worst = max(worst, float(np.abs(a - b).max()))
    return worst


def check_mesh(files: dict[str, Path], backend: str) -> float:
    """Largest distance (pixels) of the whole pipeline's landmarks on the sample photo to MediaPipe's.

    ``files`` is :func:`~.write.export_face_models`' answer (paths relative to its folder).
    """
    from ...runtime.backends import BackendConfig
    from ...runtime.face.tracker import FaceTracker

    ext = ".onnx" if backend == Backend.ONNXRUNTIME else ".xml"
    prefix = "" if backend == Backend.ONNXRUNTIME else "openvino/"
    tracker = FaceTracker(files[f"{prefix}{DETECTOR.name}{ext}"], files[f"{prefix}{MESH.name}{ext}"],
                          BackendConfig(backend))
    image = _sample_image()
    found = tracker.process(image)
    if found is None:
        raise FaceModelExportError(f"the converted face models ({backend}) find no face in the sample photo")
    height, width = image.shape[:2]
    index = list(SAMPLE_LANDMARKS)
    want = np.array([SAMPLE_LANDMARKS[i] for i in index]) * [width, height]
    error = float(np.linalg.norm(found.points[index, :2] * [width, height] - want, axis=1).max())
    if error > SAMPLE_TOLERANCE_PX:
        raise FaceModelExportError(f"converted face mesh ({backend}) is {error:.3f} px from MediaPipe's landmarks "
                                   f"on the sample photo (allowed {SAMPLE_TOLERANCE_PX})")
    return error
