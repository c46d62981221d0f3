"""Fixtures for the face-tracking tests (``pytest_plugins``): the converted face models, once per session.

The models come from the mediapipe 0.10.21 wheel: ``$IPLAP_MEDIAPIPE_WHEEL``, or the copy
cached in ``~/.cache/iplap/wheels`` (``$IPLAP_CACHE``), or else a one-time ``pip download``
into that cache (see ``iplap.export.facemodels.locate_wheel``). Conversion and its checks
take about 10 s; the files then serve every face test of the session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

BACKENDS = ("onnxruntime", "openvino")


@pytest.fixture(scope="session")
def face_models(tmp_path_factory) -> dict[str, Path]:
    from iplap.export.facemodels import export_face_models

    out = tmp_path_factory.mktemp("face_models")
    written = export_face_models(out, check=True)
    return {"dir": out, **written}


@pytest.fixture(scope="session", params=BACKENDS)
def face_backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def face_stack(face_models, face_backend):
    """(detector, mesh, full_range) loaded once per backend; trackers over them are cheap."""
    from iplap.runtime.backends import BackendConfig
    from iplap.runtime.face import FaceTracker

    tracker = FaceTracker.from_folder(face_models["dir"], BackendConfig(face_backend, threads=1))
    return tracker.detector, tracker.mesh, tracker.full_range

