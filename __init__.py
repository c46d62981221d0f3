"""iplap: IP_LAP talking-face inference without PyTorch.

What an application needs is here (``docs/api.md`` documents every name)::

    import iplap

    pipe = iplap.Pipeline("bundle", iplap.PipelineConfig(backend=iplap.BackendConfig("openvino", threads=2)))
    pipe.render("face.mp4", "speech.wav", "out.mp4")

* :class:`Pipeline` (``prepare``, ``render``, ``stream``, ``open_stream``, ``open_live``),
  configured by :class:`PipelineConfig` and :class:`BackendConfig` (:class:`Backend` names
  the engines); it opens a bundle from its folder, or takes a :class:`Bundle`.
* :class:`Avatar`: a prepared face. :func:`face_is_photo`: a face file's kind, by content.
* Offline and streams: :class:`StreamSession`, :class:`Frame`, :class:`RenderReport`;
  :func:`load_speech` and :class:`Speech` (speech decoded once); :class:`AudioFormat` (the
  audio contract of streams) and :func:`to_pcm16` (float samples to int16, its one scale).
* Live: :class:`LiveSession` (``Pipeline.open_live``), :class:`LiveConfig`, :class:`LiveFrame`,
  :class:`LiveEvent`, :class:`LiveStats`, and :class:`LiveBridge` (a session's frames on an
  asyncio loop).
* :data:`FPS` and the limits a caller checks against: :data:`DEFAULT_REFS`, :data:`MIN_REFS`,
  :data:`MAX_REFS`, :data:`MIN_SAMPLE_RATE`, :data:`MAX_SAMPLE_RATE` (with the rest of the
  limits and their checks in :mod:`iplap.limits`).
* Errors: every problem a user can cause is an :class:`IplapError` (one line; subclasses
  :class:`MediaError`, :class:`LimitError`, :class:`NoFaceError`, :class:`BundleError`,
  :class:`AvatarError`, :class:`CheckpointError`, :class:`BackendError`).

Threads: one :class:`Pipeline` may be used from several threads at once; each render or
stream keeps its state in its own objects.

Names here are imported on first use, so ``import iplap`` (and ``iplap --help``) stays
fast. The runtime's modules live in :mod:`iplap.runtime`; the export toolchain (torch) in
:mod:`iplap.export`, calibration in :mod:`iplap.calibration`.
"""

from .errors import (AvatarError, BackendError, BundleError, CheckpointError, IplapError, LimitError, MediaError,
                     NoFaceError)
from .limits import DEFAULT_REFS, MAX_REFS, MAX_SAMPLE_RATE, MIN_REFS, MIN_SAMPLE_RATE, Backend

__version__ = "0.1.0"

_LAZY = {
    "Pipeline": "iplap.runtime.pipeline",
    "PipelineConfig": "iplap.runtime.config",
    "BackendConfig": "iplap.runtime.backends",
    "Bundle": "iplap.runtime.bundle",
    "Avatar": "iplap.runtime.avatar",
    "face_is_photo": "iplap.runtime.face_source",
    "StreamSession": "iplap.runtime.session",
    "Frame": "iplap.runtime.reports",
    "RenderReport": "iplap.runtime.reports",
    "Speech": "iplap.runtime.audio",
    "load_speech": "iplap.runtime.audio",
    "AudioFormat": "iplap.runtime.pcm",
    "to_pcm16": "iplap.runtime.pcm",
    "LiveSession": "iplap.runtime.live",
    "LiveConfig": "iplap.runtime.live",
    "LiveFrame": "iplap.runtime.live",
    "LiveEvent": "iplap.runtime.live",
    "LiveStats": "iplap.runtime.live",
    "LiveBridge": "iplap.runtime.live",
    "FPS": "iplap.runtime.constants",
}

__all__ = ["DEFAULT_REFS", "FPS", "MAX_REFS", "MAX_SAMPLE_RATE", "MIN_REFS", "MIN_SAMPLE_RATE", "AudioFormat", "Avatar",
           "AvatarError", "Backend", "BackendConfig", "BackendError", "Bundle", "BundleError", "CheckpointError",
           "Frame", "IplapError", "LimitError", "LiveBridge", "LiveConfig", "LiveEvent", "LiveFrame", "LiveSession",
           "LiveStats", "MediaError", "NoFaceError", "Pipeline", "PipelineConfig", "RenderReport", "Speech",
           "StreamSession", "__version__", "face_is_photo", "load_speech", "to_pcm16"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'iplap' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
