"""How a :class:`~iplap.runtime.pipeline.Pipeline` runs: :class:`PipelineConfig` and its choices."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import IplapError
from .backends import BackendConfig
from .constants import DEFAULT_REFS, FACE_MODES, MISSING_FACE_MODES, check_keyframe_every, check_refs


def check_missing_face_mode(mode: str) -> None:
    """Refuse an ``on_missing_face`` that is not one of :data:`MISSING_FACE_MODES`."""
    if mode not in MISSING_FACE_MODES:
        raise IplapError(f"unknown on_missing_face {mode!r}: choose one of {', '.join(MISSING_FACE_MODES)}")


@dataclass(frozen=True)
class PipelineConfig:
    """How a :class:`~iplap.runtime.pipeline.Pipeline` runs. The model's own constants come from the bundle.

    Attributes:
        backend: inference backend, device, threads and cache (see :class:`BackendConfig`).
        refs: number of reference images N (``DEFAULT_REFS``, 25, in the original; ``MIN_REFS``
            to ``MAX_REFS``).
        face_mode: ``"static"`` detects the face on every frame, as the original (exact);
            ``"track"`` follows it from the previous frame's landmarks (faster).
        on_missing_face: frames of the face video without a face (fades, cut-aways,
            occlusions): ``"pass"`` leaves them as they are in the output (default);
            ``"fill"`` renders the nearest frame's face track onto them; ``"error"`` refuses
            the video. Either way the landmark windows around them use the nearest face, and
            a video with no face at all is an error.
        smoothing: One-Euro smoothing of the tracked landmarks against jitter (off: faithful).
        keyframe_every: renders only: the renderer draws every K-th frame and the frames
            between are the nearest keyframes moved to their own predicted landmarks
            (:mod:`~iplap.runtime.keyframes`); about 1/K of the renderer's time. 1 (default):
            every frame rendered, exactly as the original.
    """

    backend: BackendConfig = field(default_factory=BackendConfig)
    refs: int = DEFAULT_REFS
    face_mode: str = "static"
    on_missing_face: str = "pass"
    smoothing: bool = False
    keyframe_every: int = 1

    def __post_init__(self):
        check_refs(self.refs)
        check_keyframe_every(self.keyframe_every)
        if self.face_mode not in FACE_MODES:
            raise IplapError(f"unknown face_mode {self.face_mode!r}: choose one of {', '.join(FACE_MODES)}")
        check_missing_face_mode(self.on_missing_face)


__all__ = ["FACE_MODES", "MISSING_FACE_MODES", "PipelineConfig", "check_missing_face_mode"]
