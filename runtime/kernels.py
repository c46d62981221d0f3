"""The runtime's Numba kernels, all of them: whether they are compiled, and compiling them now.

:mod:`.jit` decides where their compiled code is cached; this module knows which kernels
there are (``iplap warmup`` and the first ``iplap run`` use it to announce and do the one-off
compile).
"""

from __future__ import annotations

import os

import numpy as np

from . import resample, warp
from .face import geometry
from .jit import caching


def kernels() -> list:
    """Every cached kernel of the runtime (Numba dispatchers), for :func:`compiled`."""
    return [warp.warp_fuse, resample._resample_kernel, geometry._fixed_point_maps]


def compiled() -> bool:
    """Whether every kernel's compiled code is in the cache already (a start is then quick)."""
    cached, _ = caching()
    if not cached:
        return False
    for kernel in kernels():
        cache_file = getattr(getattr(kernel, "_cache", None), "_cache_file", None)
        index = getattr(cache_file, "_index_path", None)
        if index is None or not os.path.exists(index):
            return False
    return True


def warm_up() -> None:
    """Compile (or load from the cache) every kernel now, not at the first frame."""
    warp.warm_up()
    resampler = resample.KaiserResampler(44100, 16000)
    resampler.push(np.zeros(4410, np.float32))
    resampler.flush()
    geometry.fixed_point_maps(np.eye(3), 8, 8)


__all__ = ["compiled", "kernels", "warm_up"]
