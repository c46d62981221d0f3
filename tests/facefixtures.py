"""Fixtures for the face-tracking tests (``pytest_plugins``): the converted face models, once per session.

The models come from the mediapipe 0.10.21 wheel: ``$IPLAP_MEDIAPIPE_WHEEL``, or the copy
cached in ``~/.cache/iplap/wheels`` (``$IPLAP_CACHE``), or else a one-time ``pip download``
into that cache (see ``iplap.export.facemodels.locate_wheel``). They are converted once per
run, by the session's bundle export (``conftest.bundle_dir``: ``export_face_models`` with its
checks, into the bundle's ``face/`` folder); the face tests use those files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BACKENDS = ("onnxruntime", "openvino")


@pytest.fixture(scope="session")
def face_models(bundle_dir) -> dict[str, Path]:
    """The face models of the session's bundle, converted and checked once by its export
    (``export_face_models(..., check=True)``, the bundle's ``face/`` folder): ``{"dir": folder,
    path relative to it: path}``, as ``export_face_models`` returns them. Read them, never
    write into them: the bundle's checksums cover them."""
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    files = {name: bundle_dir / path for name, path in manifest["face_models"].items()}
    folder = bundle_dir / "face"
    assert files and all(path.is_file() and folder in path.parents for path in files.values()), files
    return {"dir": folder, **files}


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

