"""The limits and names that every front end checks the same way, each checked by one function.

The runtime enforces them (``PipelineConfig``, ``BackendConfig``, ``AudioFormat``, the video
writer), and the front ends (the CLI, the service, batch manifests, the framework adapters)
check what their users give against the same numbers, with the same functions, so that a
rule reads the same wherever it is broken. This module is public: front ends import it.
"""

from __future__ import annotations

from enum import Enum

from .errors import IplapError

#: Reference images (N) the renderer takes in the original release.
DEFAULT_REFS = 25
#: The numbers of reference images N a pipeline accepts (inclusive).
MIN_REFS, MAX_REFS = 1, 100
#: The sample rates (Hz, inclusive) that speech may have, in any format or stream.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 192000
#: The H.264 quality (x264's CRF) of written videos: the default and the range (0: lossless).
DEFAULT_CRF = 18
MIN_CRF, MAX_CRF = 0, 51
#: Offline keyframes (``PipelineConfig.keyframe_every``): the renderer on every K-th frame, K
#: from 1 (every frame, as the original) to this (past it, in-between frames span a second).
MAX_KEYFRAME_EVERY = 25


class Backend(str, Enum):
    """The inference backends (a ``str``: ``Backend.OPENVINO == "openvino"``)."""

    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"

    def __str__(self) -> str:
        return self.value


#: The inference backends' names, the default first.
BACKENDS = tuple(b.value for b in Backend)
#: OpenVINO's inference precision hints (``BackendConfig.inference_precision``): what its CPU
#: plugin computes float operations in. ``f32`` is exact.
INFERENCE_PRECISIONS = ("f32", "bf16", "f16")


def _whole(value) -> bool:
    """An int that is not a bool (nor a float that happens to be whole)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_refs(refs) -> int:
    """``refs`` (the number of reference images N), or an :class:`IplapError` outside
    :data:`MIN_REFS`..:data:`MAX_REFS` (suggesting the nearest number allowed)."""
    if not _whole(refs) or not MIN_REFS <= refs <= MAX_REFS:
        nearest = MAX_REFS if _whole(refs) and refs > MAX_REFS else MIN_REFS
        raise IplapError(f"refs must be a whole number from {MIN_REFS} to {MAX_REFS} (the number of reference "
                         f"images), got {refs!r}", setting="refs", suggestion=nearest)
    return refs


def check_keyframe_every(every) -> int:
    """``every`` (the renderer draws every K-th frame), or an :class:`IplapError` outside 1..:data:`MAX_KEYFRAME_EVERY`."""
    if not _whole(every) or not 1 <= every <= MAX_KEYFRAME_EVERY:
        raise IplapError(f"keyframe_every must be a whole number from 1 (every frame rendered) to "
                         f"{MAX_KEYFRAME_EVERY}, got {every!r}", setting="keyframe_every")
    return every


def check_crf(crf) -> int:
    """``crf`` (H.264 quality), or an :class:`IplapError` outside :data:`MIN_CRF`..:data:`MAX_CRF`."""
    if not _whole(crf) or not MIN_CRF <= crf <= MAX_CRF:
        raise IplapError(f"crf must be a whole number from {MIN_CRF} to {MAX_CRF} (the H.264 quality; 0 is "
                         f"lossless), got {crf!r}", setting="crf", suggestion=DEFAULT_CRF)
    return crf


def check_backend(name) -> Backend:
    """The :class:`Backend` named ``name``, or an :class:`IplapError` naming the choices."""
    try:
        return Backend(name)
    except ValueError:
        raise IplapError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}") from None


__all__ = ["BACKENDS", "DEFAULT_CRF", "DEFAULT_REFS", "INFERENCE_PRECISIONS", "MAX_CRF", "MAX_KEYFRAME_EVERY", "MAX_REFS",
           "MAX_SAMPLE_RATE", "MIN_CRF", "MIN_REFS", "MIN_SAMPLE_RATE", "Backend", "check_backend", "check_crf",
           "check_keyframe_every", "check_refs"]
