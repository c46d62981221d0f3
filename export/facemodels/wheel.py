"""The pinned mediapipe wheel that the face models come from: which files, their hashes, where
the wheel is found (or downloaded to), and reading a model out of it.

Also home of :class:`FaceModelExportError`, which every step of the face-model export raises.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ...cache import cache_dir as user_cache_dir  # locate_wheel keeps its own cache_dir argument
from ...errors import IplapError
from ...runtime.face.files import MODEL_STEMS

log = logging.getLogger(__name__)

MEDIAPIPE_VERSION = "0.10.21"
#: The environment variable naming a mediapipe wheel to use instead of a cached download.
WHEEL_ENV = "IPLAP_MEDIAPIPE_WHEEL"
#: The folder below the cache folder that downloaded wheels are kept in.
WHEEL_CACHE = "wheels"


class FaceModelExportError(IplapError):
    """The mediapipe wheel is missing or altered, or a converted face model does not check out."""


@dataclass(frozen=True)
class FaceModelSource:
    """One ``.tflite`` file inside the mediapipe wheel."""

    name: str
    member: str
    sha256: str


def _source(role: str, module: str, sha256: str) -> FaceModelSource:
    stem = MODEL_STEMS[role]
    return FaceModelSource(stem, f"mediapipe/modules/{module}/{stem}.tflite", sha256)


DETECTOR = _source("detector", "face_detection", "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8")
MESH = _source("mesh", "face_landmark", "e06a804e0144f9929eda782122916b35d60c697c3c9344013ca2bbe76a6ce2b4")
FULL_RANGE_DETECTOR = _source("full_range", "face_detection",
                              "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1")
SOURCES = (DETECTOR, MESH, FULL_RANGE_DETECTOR)


def locate_wheel(wheel: Path | None = None, cache_dir: Path | None = None) -> Path:
    """The mediapipe 0.10.21 wheel: ``wheel``, else ``$IPLAP_MEDIAPIPE_WHEEL``, else a cached download.

    ``cache_dir`` replaces the user's cache folder (:func:`iplap.cache.cache_dir`); the wheel
    is kept in its ``wheels`` folder either way.
    """
    if wheel is None and os.environ.get(WHEEL_ENV):
        wheel = Path(os.environ[WHEEL_ENV])
    if wheel is not None:
        wheel = Path(wheel)
        if not wheel.is_file():
            raise FaceModelExportError(f"mediapipe wheel not found: {wheel}")
        return wheel
    folder = Path(cache_dir) / WHEEL_CACHE if cache_dir is not None else user_cache_dir(WHEEL_CACHE)
    found = _cached_wheels(folder)
    return found[0] if found else _download(folder)


def _cached_wheels(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))


def _download(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    log.info("downloading mediapipe==%s into %s (for its face models)", MEDIAPIPE_VERSION, folder)
    cmd = [sys.executable, "-m", "pip", "download", f"mediapipe=={MEDIAPIPE_VERSION}", "--no-deps",
           "--only-binary=:all:", "--dest", str(folder), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = _cached_wheels(folder)
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise FaceModelExportError(f"cannot download mediapipe=={MEDIAPIPE_VERSION}: {tail[0]}; "
                                   f"download a wheel yourself and set {WHEEL_ENV}")
    return found[0]


def read_model(wheel: Path, source: FaceModelSource) -> bytes:
    """The ``.tflite`` bytes of ``source``, checked against the pinned sha256."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(source.member)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise FaceModelExportError(f"{wheel.name} has no readable {source.member}: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != source.sha256:
        raise FaceModelExportError(f"{source.member} in {wheel.name} has sha256 {digest}, expected {source.sha256} "
                                   f"(mediapipe {MEDIAPIPE_VERSION})")
    return data
