"""The face models' file names, in one place: what the exporter writes and the tracker loads.

A model folder (``iplap.export.facemodels.export_face_models`` writes one, and a bundle
keeps one) holds ``STEM.onnx`` for each role below, and ``openvino/STEM.xml`` + ``.bin``
where the OpenVINO IR was written. The stems are MediaPipe's own ``.tflite`` names, so a
file can be traced back to the wheel member it was converted from.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import BundleError
from ..constants import Backend

#: File stem of each face model, by its role in the tracker.
MODEL_STEMS = {"detector": "face_detection_short_range", "mesh": "face_landmark_with_attention",
               "full_range": "face_detection_full_range_sparse"}
#: Roles a tracker can do without (small faces are not found without the full-range detector).
OPTIONAL_ROLES = ("full_range",)


def face_model_files(folder: str | Path, backend: str = Backend.ONNXRUNTIME) -> dict[str, Path]:
    """``{"detector", "mesh"[, "full_range"]}`` -> model file in ``folder`` for ``backend``."""
    folder = Path(folder)
    files = {}
    for role, stem in MODEL_STEMS.items():
        candidates = [folder / f"{stem}.onnx"]
        if backend == Backend.OPENVINO:
            candidates.insert(0, folder / "openvino" / f"{stem}.xml")
        path = next((c for c in candidates if c.is_file()), None)
        if path is not None:
            files[role] = path
        elif role not in OPTIONAL_ROLES:
            raise BundleError(f"face model {stem} not found in {folder}")
    return files


__all__ = ["MODEL_STEMS", "OPTIONAL_ROLES", "face_model_files"]
