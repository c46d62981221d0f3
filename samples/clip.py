"""A talking-head stand-in video made from the sample photo: small, smooth head motion.

There is no real face video among the samples, so tests, calibration and benchmarks use
this clip: the photo rotated, shifted and scaled a little around the face, frame by
frame (a few degrees and pixels, like a person talking), written losslessly at 25 fps.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from ..limits import DEFAULT_CRF
from ..runtime.constants import FPS
from . import FACE_IMAGE

#: Centre of the face in the sample photo (pixels), the pivot of the motion.
FACE_CENTRE = (230, 130)


def head_motion(seconds: float = 2.0, fps: int = FPS, size: int | None = None, image: np.ndarray | None = None,
                seed: int = 0, noise: float = 0.0) -> tuple[list[np.ndarray], np.ndarray]:
    """BGR frames of the photo with smooth, small head motion (deterministic for a seed),
    and their (n, 2, 3) affine matrices (photo pixel -> frame pixel, before any resizing
    to ``size``). ``noise``: Gaussian sensor noise of that many grey levels."""
    photo = cv2.imread(str(FACE_IMAGE)) if image is None else image
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * np.pi, 4)
    frames, matrices = [], []
    for k in range(max(1, int(round(seconds * fps)))):
        t = k / fps
        angle = 3.0 * np.sin(2 * np.pi * 0.4 * t + phases[0])
        scale = 1.0 + 0.02 * np.sin(2 * np.pi * 0.3 * t + phases[1])
        matrix = cv2.getRotationMatrix2D(FACE_CENTRE, angle, scale)
        matrix[0, 2] += 4.0 * np.sin(2 * np.pi * 0.5 * t + phases[2])
        matrix[1, 2] += 3.0 * np.sin(2 * np.pi * 0.35 * t + phases[3])
        frame = cv2.warpAffine(photo, matrix, (photo.shape[1], photo.shape[0]), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
        if noise:
            frame = np.clip(frame + rng.normal(0.0, noise, frame.shape), 0, 255).astype(np.uint8)
        if size is not None and size != frame.shape[1]:
            frame = cv2.resize(frame, (size, size * frame.shape[0] // frame.shape[1]), interpolation=cv2.INTER_AREA)
        frames.append(frame)
        matrices.append(matrix)
    return frames, np.array(matrices)


def head_motion_frames(seconds: float = 2.0, fps: int = FPS, size: int | None = None,
                       image: np.ndarray | None = None, seed: int = 0) -> list[np.ndarray]:
    """The frames of :func:`head_motion`."""
    return head_motion(seconds, fps, size, image, seed)[0]


def write_clip(path: str | Path, frames: list[np.ndarray], fps: int = FPS, lossless: bool = True) -> Path:
    """Encode frames as H.264 (lossless RGB by default, so decoding gives the frames back exactly)."""
    import av

    path = Path(path)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb" if lossless else "libx264", rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "bgr24" if lossless else "yuv420p"
        stream.options = {"crf": "0" if lossless else str(DEFAULT_CRF), "preset": "veryfast"}
        for k, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
            video_frame.pts, video_frame.time_base = k, Fraction(1, fps)
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def make_head_motion_clip(path: str | Path, seconds: float = 2.0, size: int | None = None, seed: int = 0) -> Path:
    return write_clip(path, head_motion_frames(seconds, size=size, seed=seed))
