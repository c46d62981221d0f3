"""Face tracking over a face's frames: landmarks and crop boxes of every frame (:func:`track_faces`),
what to do where a frame has no face, and the 128x128 face crop the models take (:func:`crop_face`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import cv2
import numpy as np

from ..errors import MediaError, NoFaceError
from .avatar import FaceTrack
from .config import check_missing_face_mode
from .constants import IMAGE_SIZE
from .landmarks import crop_box
from .reports import StageClock

log = logging.getLogger(__name__)


def track_faces(frames: Iterable[np.ndarray], tracker, on_missing_face: str = "pass", name: str = "the face video",
                clock: StageClock | None = None) -> FaceTrack:
    """Face landmarks and crop boxes of every frame.

    Frames without a face get the nearest face's track (so that the landmark windows
    around them stay whole) and are marked ``missing``; with ``on_missing_face="pass"``
    they are also marked to pass through the render unchanged, with ``"error"`` they are
    refused. A video without any face is always an error.
    """
    check_missing_face_mode(on_missing_face)
    landmarks: list[np.ndarray | None] = []
    height = width = 0
    clock = clock or StageClock()
    iterator = iter(frames)
    while True:
        with clock.time("decode"):
            frame = next(iterator, None)
        if frame is None:
            break
        height, width = frame.shape[:2]
        with clock.time("face"):
            face = tracker.process(frame)
        landmarks.append(None if face is None else face.points.astype(np.float32))
    if not landmarks:
        raise MediaError(f"no frames in {name}")
    missing = np.array([lm is None for lm in landmarks])
    _fill_missing(landmarks, missing, on_missing_face, name)
    stacked = np.stack(landmarks)
    boxes = np.array([crop_box(lm, height, width) for lm in stacked], np.int32)
    bad = [k for k, (y1, y2, x1, x2) in enumerate(boxes) if y2 - y1 < 8 or x2 - x1 < 8]
    if bad:
        raise NoFaceError(f"the face in frame {bad[0]} of {name} is too small or outside the image to crop")
    passthrough = missing.copy() if on_missing_face == "pass" else np.zeros_like(missing)
    return FaceTrack(stacked, boxes, height, width, missing, passthrough)


def _fill_missing(landmarks: list[np.ndarray | None], missing: np.ndarray, on_missing_face: str, name: str) -> None:
    """Give the frames without a face the nearest face's landmarks (in place), or refuse them."""
    if missing.all():
        raise NoFaceError(f"no face found in {name}" + (" (any of its frames)" if len(landmarks) > 1 else ""))
    if missing.any():
        where = describe_frames(np.flatnonzero(missing))
        if on_missing_face == "error":
            raise NoFaceError(f"no face in {where} of {name} (25 fps frame numbers)", setting="on_missing_face",
                              suggestion="pass")
        nearest = nearest_good(missing)
        for k in np.flatnonzero(missing):
            landmarks[k] = landmarks[nearest[k]]
        action = ("pass through unchanged" if on_missing_face == "pass"
                  else "get the face track of the nearest frame with a face")
        log.warning("no face found in %s of %s (25 fps frame numbers): %s %s", where, name,
                    "it will" if missing.sum() == 1 else "they will", action)


def nearest_good(missing: np.ndarray) -> np.ndarray:
    """For every frame, the nearest frame that is not ``missing`` (the earlier one on a tie)."""
    good = np.flatnonzero(~missing)
    frames = np.arange(len(missing))
    after = np.clip(np.searchsorted(good, frames), 0, len(good) - 1)
    before = np.clip(after - 1, 0, len(good) - 1)
    take_before = np.abs(frames - good[before]) <= np.abs(good[after] - frames)
    return np.where(take_before, good[before], good[after])


def describe_frames(indices: Iterable[int], most: int = 6) -> str:
    """``"frames 0-4, 30"``: runs of consecutive frame numbers, the first ``most`` of them."""
    runs: list[list[int]] = []
    for k in indices:
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = int(k)
        else:
            runs.append([int(k), int(k)])
    count = sum(b - a + 1 for a, b in runs)
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:most])
    if len(runs) > most:
        text += f" and {len(runs) - most} more runs"
    return f"frame{'s' if count > 1 else ''} {text}"


def crop_face(frame: np.ndarray, box) -> np.ndarray:
    """The crop box resized to 128x128, (3, 128, 128) float32 in [0, 1], as the original."""
    y1, y2, x1, x2 = (int(v) for v in box)
    crop = cv2.resize(frame[y1:y2, x1:x2], (IMAGE_SIZE, IMAGE_SIZE))
    return (crop.astype(np.float32) / np.float32(255)).transpose(2, 0, 1)


__all__ = ["crop_face", "describe_frames", "nearest_good", "track_faces"]
