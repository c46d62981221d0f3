"""iplap: IP_LAP talking-face inference without PyTorch.

What a program needs is here::

    import iplap

    pipe = iplap.Pipeline("bundle", iplap.PipelineConfig(backend=iplap.BackendConfig("openvino", threads=2)))
    pipe.render("face.mp4", "speech.wav", "out.mp4")

* :class:`Pipeline` (the entry object: ``prepare``, ``render``, ``stream``, ``open_stream``),
  configured by :class:`PipelineConfig` and :class:`BackendConfig`; it opens a bundle from
  its folder, or takes a :class:`Bundle` opened with ``Bundle.load(folder)`` (the one way to
  open and verify a bundle, e.g. to share it between pipelines).
* :class:`Avatar`: a prepared face (``Pipeline.prepare``, ``Pipeline.load_avatar``, ``save``).
* :class:`StreamSession`, :class:`Frame`, :class:`RenderReport`: what streams and renders give;
  :class:`LiveSession` and :class:`LiveFrame`: an always-on avatar (``Pipeline.open_live``).
* :func:`load_speech` and :class:`Speech`: speech decoded once (any format), to check it
  before rendering and to pass to ``Pipeline.render``.
* :func:`face_is_photo`: whether a face file is a photo or a video, by its content, as the
  pipeline decides it.
* :func:`sha256_file`: a file's sha256, read a block at a time (how bundles and batch
  records name content).
* Limits and names that front ends check as the pipeline does: :data:`DEFAULT_REFS`,
  :data:`MIN_REFS`/:data:`MAX_REFS`, :data:`MIN_SAMPLE_RATE`/:data:`MAX_SAMPLE_RATE`,
  :data:`BACKENDS`, :data:`FPS`, :data:`MIN_GATE_PSNR_DB` (defined once, in
  :mod:`iplap.runtime.constants`).
* Errors: every problem a user can cause is an :class:`IplapError` (one line; subclasses
  :class:`MediaError`, :class:`NoFaceError`, :class:`BundleError`, :class:`AvatarError`,
  :class:`CheckpointError`, :class:`BackendError`).

Threads: one :class:`Pipeline` may be used from several threads at once; each render or
stream keeps its state in its own objects (see the README's "Threads").

The runtime's modules live in :mod:`iplap.runtime`; the export toolchain (torch) in
:mod:`iplap.export`, calibration in :mod:`iplap.calibration`. Names here are imported on
first use, so ``import iplap`` (and ``iplap --help``) stays fast.
"""

from .errors import (AvatarError, BackendError, BundleError, CheckpointError, Failure, Fault, IplapError, LimitError,
                     MediaError, NoFaceError)

__version__ = "0.1.0"

_LAZY = {
    "Pipeline": "iplap.runtime.pipeline",
    "PipelineConfig": "iplap.runtime.config",
    "StreamSession": "iplap.runtime.session",
    "LiveSession": "iplap.runtime.live",
    "LiveFrame": "iplap.runtime.live",
    "LiveConfig": "iplap.runtime.live",
    "LiveStats": "iplap.runtime.live",
    "LiveEvent": "iplap.runtime.live",
    "Frame": "iplap.runtime.reports",
    "RenderReport": "iplap.runtime.reports",
    "face_is_photo": "iplap.runtime.face_source",
    "BackendConfig": "iplap.runtime.backends",
    "Avatar": "iplap.runtime.avatar",
    "Bundle": "iplap.runtime.bundle",
    "Speech": "iplap.runtime.audio",
    "load_speech": "iplap.runtime.audio",
    "sha256_file": "iplap.runtime.files",
    # the limits and names every front end checks the same way (runtime/constants.py)
    "FPS": "iplap.runtime.constants",
    "DEFAULT_REFS": "iplap.runtime.constants",
    "MIN_REFS": "iplap.runtime.constants",
    "MAX_REFS": "iplap.runtime.constants",
    "MIN_SAMPLE_RATE": "iplap.runtime.constants",
    "MAX_SAMPLE_RATE": "iplap.runtime.constants",
    "BACKENDS": "iplap.runtime.constants",
    "MIN_GATE_PSNR_DB": "iplap.runtime.constants",
}

__all__ = ["BACKENDS", "DEFAULT_REFS", "FPS", "MAX_REFS", "MAX_SAMPLE_RATE", "MIN_GATE_PSNR_DB", "MIN_REFS",
           "MIN_SAMPLE_RATE", "Avatar", "AvatarError", "BackendConfig", "BackendError", "Bundle", "BundleError",
           "CheckpointError", "Failure", "Fault", "Frame", "IplapError", "LimitError", "LiveConfig", "LiveEvent", "LiveFrame", "LiveSession", "LiveStats",
           "MediaError", "NoFaceError", "Pipeline", "PipelineConfig", "RenderReport", "Speech", "StreamSession",
           "__version__", "face_is_photo", "load_speech", "sha256_file"]


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
