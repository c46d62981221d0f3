"""Warping the references with their motion fields, and fusing them: one Numba kernel.

What the original computes per reference n (see ``iplap.models.warp``), restated:

* deformation ``g = base + 2 * flow / (size - 1)``, where ``base`` spans [-1, 1] over
  pixel centres (x: ``2 * x / (W - 1) - 1``);
* h1 (32 x 128 x 128) and the reference image are sampled at ``g`` with bilinear
  ``grid_sample`` (zeros padding, align_corners=False: pixel ``((g + 1) * W - 1) / 2``);
* h2 (256 x 64 x 64) is sampled at ``g`` resized to 64 x 64 by bilinear interpolation
  (align_corners=False), which for an exact 2:1 reduction is the mean of each 2x2 block;
* the weighted mean over references: ``sum_n w_n * warped_n / (sum_n w_n + 1e-5)``, with
  the weight map and the denominator taken at 64 x 64 by nearest sampling (the top-left
  pixel of each 2x2 block) for h2.

The kernel runs over 2-row bands of the 128 x 128 output in parallel; each band also
produces one row of the 64 x 64 h2 output, so every deformation is computed once. The
features are stored channels-last (computed once per video), so each bilinear tap reads
a contiguous vector of channels.

Threads. A service calls the kernel from several threads at once, so Numba's threading
layer must be one that allows concurrent callers (:func:`threading_layer`). iplap asks
for ``threadsafe`` (tbb, else omp) before the first launch, and makes tbb loadable with
the oneTBB library that the openvino wheel (a dependency) ships: one TBB in the process,
shared by OpenVINO and the kernel, rather than a second copy from the ``tbb`` package
that OpenVINO would then pick up instead of its own. Where neither tbb nor omp (the
system's libgomp) loads, Numba falls back to ``workqueue``, which aborts the process when
two threads launch kernels at once; the kernel is then serialized across threads (each
launch still uses all its threads) and a warning says so. A layer chosen by the user
(``NUMBA_THREADING_LAYER``) is respected. Numba's thread count is per calling thread,
so every launch sets it for the thread it runs on.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import logging
import os
import threading
from contextlib import nullcontext

import numba
import numpy as np

from .jit import njit

log = logging.getLogger(__name__)

FUSION_EPS = np.float32(1e-5)


@numba.njit(inline="always", fastmath=False)
def _tap_weights(coord, size):
    """Bilinear taps of an unnormalised sample coordinate; weight 0 for taps outside."""
    c0 = np.floor(coord)
    frac = coord - c0
    i0 = np.int64(c0)
    w0 = np.float32(1.0) - frac
    w1 = frac
    if i0 < 0 or i0 >= size:
        w0 = np.float32(0.0)
    if i0 + 1 < 0 or i0 + 1 >= size:
        w1 = np.float32(0.0)
    return min(max(i0, 0), size - 1), min(max(i0 + 1, 0), size - 1), w0, w1


@numba.njit(inline="always")
def _sample_weighted(out, src, n, y0, y1, wy0, wy1, x0, x1, wx0, wx1, weight):
    """out[c] = weight * bilinear(src[n], ...) over the channel axis (src is N, H, W, C)."""
    w00 = weight * wy0 * wx0
    w01 = weight * wy0 * wx1
    w10 = weight * wy1 * wx0
    w11 = weight * wy1 * wx1
    for c in range(out.shape[0]):
        out[c] = (w00 * src[n, y0, x0, c] + w01 * src[n, y0, x1, c]) + (w10 * src[n, y1, x0, c] + w11 * src[n, y1, x1, c])


@numba.njit(inline="always")
def _add(acc, term):
    for c in range(acc.shape[0]):
        acc[c] += term[c]


@njit(parallel=True, fastmath=False)
def warp_fuse(flow, weight, h1, h2, ref, ref_index, out_h1, out_h2, out_ref):
    """Warp every reference by its flow and take the weighted mean over references.

    flow (U, 2, H, W) in pixels, weight (U, 1, H, W); h1 (U, H, W, C1), h2 (U, H/2, W/2, C2)
    and ref (U, H, W, 3) channels-last, for U distinct references; ``ref_index`` (N,) says
    which distinct reference is the n-th of the N. Each distinct reference's weighted samples
    are computed once per pixel and added once for each of its places among the N, in the
    original's order: the same sums (a photo gives N copies of one frame, warped once, not N
    times). Writes out_h1 (C1, H, W), out_h2 (C2, H/2, W/2), out_ref (3, H, W). H and W must
    be even (128 in IP_LAP).
    """
    n_ref, n_src = ref_index.shape[0], flow.shape[0]
    height, width = flow.shape[2], flow.shape[3]
    c1, c2, c3 = h1.shape[3], h2.shape[3], ref.shape[3]
    half_h, half_w = height // 2, width // 2
    one, two, half = np.float32(1.0), np.float32(2.0), np.float32(0.5)
    sx, sy = np.float32(width - 1), np.float32(height - 1)
    for band in numba.prange(half_h):
        acc1 = np.empty((2, 2, c1), np.float32)
        acc3 = np.empty((2, 2, c3), np.float32)
        acc2 = np.empty(c2, np.float32)
        den = np.empty((2, 2), np.float32)
        # One distinct reference's terms at the current 2x2 block (computed on first use).
        term1 = np.empty((n_src, 2, 2, c1), np.float32)
        term3 = np.empty((n_src, 2, 2, c3), np.float32)
        term2 = np.empty((n_src, c2), np.float32)
        done = np.empty(n_src, np.bool_)
        gxs = np.empty((2, 2), np.float32)
        gys = np.empty((2, 2), np.float32)
        for j in range(half_w):
            acc1[:] = 0
            acc3[:] = 0
            acc2[:] = 0
            den[:] = 0
            done[:] = False
            for k in range(n_ref):
                n = ref_index[k]
                if not done[n]:
                    done[n] = True
                    for dy in range(2):
                        y = 2 * band + dy
                        base_y = two * (np.float32(y) / sy) - one
                        for dx in range(2):
                            x = 2 * j + dx
                            base_x = two * (np.float32(x) / sx) - one
                            gx = base_x + two * (flow[n, 0, y, x] / sx)
                            gy = base_y + two * (flow[n, 1, y, x] / sy)
                            gxs[dy, dx] = gx
                            gys[dy, dx] = gy
                            w = weight[n, 0, y, x]
                            ix = ((gx + one) * np.float32(width) - one) / two
                            iy = ((gy + one) * np.float32(height) - one) / two
                            x0, x1, wx0, wx1 = _tap_weights(ix, width)
                            y0, y1, wy0, wy1 = _tap_weights(iy, height)
                            _sample_weighted(term1[n, dy, dx], h1, n, y0, y1, wy0, wy1, x0, x1, wx0, wx1, w)
                            _sample_weighted(term3[n, dy, dx], ref, n, y0, y1, wy0, wy1, x0, x1, wx0, wx1, w)
                    # h2: the 2x2 mean of the deformation, the top-left weight (nearest).
                    gx2 = half * (half * gxs[0, 0] + half * gxs[0, 1]) + half * (half * gxs[1, 0] + half * gxs[1, 1])
                    gy2 = half * (half * gys[0, 0] + half * gys[0, 1]) + half * (half * gys[1, 0] + half * gys[1, 1])
                    ix = ((gx2 + one) * np.float32(half_w) - one) / two
                    iy = ((gy2 + one) * np.float32(half_h) - one) / two
                    x0, x1, wx0, wx1 = _tap_weights(ix, half_w)
                    y0, y1, wy0, wy1 = _tap_weights(iy, half_h)
                    _sample_weighted(term2[n], h2, n, y0, y1, wy0, wy1, x0, x1, wx0, wx1, weight[n, 0, 2 * band, 2 * j])
                for dy in range(2):
                    for dx in range(2):
                        den[dy, dx] += weight[n, 0, 2 * band + dy, 2 * j + dx]
                        _add(acc1[dy, dx], term1[n, dy, dx])
                        _add(acc3[dy, dx], term3[n, dy, dx])
                _add(acc2, term2[n])
            for dy in range(2):
                for dx in range(2):
                    d = den[dy, dx] + FUSION_EPS
                    y, x = 2 * band + dy, 2 * j + dx
                    for c in range(c1):
                        out_h1[c, y, x] = acc1[dy, dx, c] / d
                    for c in range(c3):
                        out_ref[c, y, x] = acc3[dy, dx, c] / d
            d2 = den[0, 0] + FUSION_EPS
            for c in range(c2):
                out_h2[c, band, j] = acc2[c] / d2


def channels_last(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> contiguous (N, H, W, C) float32, the layout the kernel reads."""
    return np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 2, 3, 1))


def warp_and_fuse(flow: np.ndarray, weight: np.ndarray, h1_nhwc: np.ndarray, h2_nhwc: np.ndarray,
                  ref_nhwc: np.ndarray, ref_index: np.ndarray | None = None,
                  threads: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fused h1 (1, C1, H, W), h2 (1, C2, H/2, W/2) and reference (1, 3, H, W) for one frame.

    ``ref_index`` (N,) maps the N references to rows of the other arrays (default: all rows).
    ``threads``: Numba threads for this launch (0: all). Safe to call from several threads.
    """
    n, _, height, width = flow.shape
    ref_index = np.arange(n, dtype=np.int64) if ref_index is None else np.asarray(ref_index, np.int64)
    if ref_index.size == 0 or ref_index.min() < 0 or ref_index.max() >= n:
        raise ValueError(f"ref_index must index the {n} references")
    if height % 2 or width % 2:
        raise ValueError(f"the flow must have an even size, got {height}x{width}")
    for name, arr, size in (("h1", h1_nhwc, (height, width)), ("h2", h2_nhwc, (height // 2, width // 2)),
                            ("ref", ref_nhwc, (height, width))):
        if arr.shape[0] != n or arr.shape[1:3] != size:
            raise ValueError(f"{name} has shape {arr.shape}, expected ({n}, {size[0]}, {size[1]}, C)")
    out_h1 = np.empty((1, h1_nhwc.shape[3], height, width), np.float32)
    out_h2 = np.empty((1, h2_nhwc.shape[3], height // 2, width // 2), np.float32)
    out_ref = np.empty((1, ref_nhwc.shape[3], height, width), np.float32)
    serial = threading_layer() == "workqueue"
    with _SERIAL if serial else nullcontext():
        numba.set_num_threads(_thread_count(threads))
        warp_fuse(np.ascontiguousarray(flow, np.float32), np.ascontiguousarray(weight, np.float32), h1_nhwc,
                  h2_nhwc, ref_nhwc, ref_index, out_h1[0], out_h2[0], out_ref[0])
    return out_h1, out_h2, out_ref


def _thread_count(threads: int) -> int:
    most = numba.config.NUMBA_NUM_THREADS
    return most if threads <= 0 else min(threads, most)


def warm_up() -> None:
    """Compile (or load from Numba's cache) the kernel before the first real frame."""
    threading_layer()


# -- the threading layer -----------------------------------------------------------------------

_LAYER_LOCK = threading.Lock()
_SERIAL = threading.Lock()  # held around each launch when the layer is workqueue
_layer: str | None = None


def threading_layer() -> str:
    """The Numba threading layer the kernel runs on, chosen at the first call (see the
    module's docstring): ``"tbb"`` or ``"omp"`` (concurrent callers are fine), or
    ``"workqueue"`` (launches are serialized)."""
    global _layer
    if _layer is None:
        with _LAYER_LOCK:
            if _layer is None:
                _layer = _choose_layer()
    return _layer


def _choose_layer() -> str:
    user_choice = os.environ.get("NUMBA_THREADING_LAYER") or numba.config.THREADING_LAYER != "default"
    if not user_choice:
        _load_openvino_tbb()
        numba.config.THREADING_LAYER = "threadsafe"
    try:
        _launch_tiny()
    except ValueError as exc:  # Numba: "No threading layer could be loaded"
        if user_choice:
            raise
        log.debug("no thread-safe Numba threading layer (%s)", exc)
        numba.config.THREADING_LAYER = "workqueue"
        _launch_tiny()
    layer = numba.threading_layer()
    if layer == "workqueue":
        log.warning("Numba has neither its tbb nor its omp threading layer here; the warp kernel runs one "
                    "call at a time across threads (install libgomp, or openvino's oneTBB, to lift this)")
    else:
        log.debug("Numba threading layer: %s", layer)
    return layer


def _launch_tiny() -> None:
    n, size = 1, 4
    out = (np.empty((1, 2, size, size), np.float32), np.empty((1, 2, size // 2, size // 2), np.float32),
           np.empty((1, 3, size, size), np.float32))
    warp_fuse(np.zeros((n, 2, size, size), np.float32), np.ones((n, 1, size, size), np.float32),
              np.zeros((n, size, size, 2), np.float32), np.zeros((n, size // 2, size // 2, 2), np.float32),
              np.zeros((n, size, size, 3), np.float32), np.zeros(n, np.int64), out[0][0], out[1][0], out[2][0])


_TBB_NAMES = ("libtbb.so.12", "libtbb.12.dylib", "tbb12.dll")


def _load_openvino_tbb() -> None:
    """Load the oneTBB library shipped in the openvino wheel, so that Numba's tbb layer finds it.

    Numba's tbb layer links against ``libtbb.so.12`` but pip installs put no library on
    the loader's path; once a library of that name is loaded, Numba (and OpenVINO) use it.
    """
    spec = importlib.util.find_spec("openvino")
    if spec is None or not spec.submodule_search_locations:
        return
    for folder in spec.submodule_search_locations:
        for name in _TBB_NAMES:
            for path in glob.glob(os.path.join(folder, "libs", name)) + glob.glob(os.path.join(folder, name)):
                try:
                    ctypes.CDLL(path, mode=getattr(ctypes, "RTLD_GLOBAL", 0))
                    return
                except OSError as exc:
                    log.debug("cannot load %s: %s", path, exc)


def warp_and_fuse_reference(flow, weight, h1, h2, ref):
    """Plain numpy statement of the same computation (NCHW inputs), for tests and reading."""
    n, _, height, width = flow.shape
    xs = np.arange(width, dtype=np.float32)
    ys = np.arange(height, dtype=np.float32)
    base_x = np.float32(2) * (xs / np.float32(width - 1)) - np.float32(1)
    base_y = np.float32(2) * (ys / np.float32(height - 1)) - np.float32(1)
    gx = base_x[None, None, :] + np.float32(2) * (flow[:, 0] / np.float32(width - 1))
    gy = base_y[None, :, None] + np.float32(2) * (flow[:, 1] / np.float32(height - 1))
    gx2 = gx.reshape(n, height // 2, 2, width // 2, 2).mean(axis=(2, 4))
    gy2 = gy.reshape(n, height // 2, 2, width // 2, 2).mean(axis=(2, 4))
    w = weight[:, 0]
    den = w.sum(axis=0) + FUSION_EPS
    out_h1 = (_sample(h1, gx, gy) * w[:, None]).sum(axis=0) / den
    out_ref = (_sample(ref, gx, gy) * w[:, None]).sum(axis=0) / den
    w2 = w[:, ::2, ::2]
    out_h2 = (_sample(h2, gx2, gy2) * w2[:, None]).sum(axis=0) / den[::2, ::2]
    return out_h1[None], out_h2[None], out_ref[None]


def _sample(src, gx, gy):
    """Bilinear grid_sample (zeros, align_corners=False) of src (N, C, h, w) at grids (N, H, W)."""
    n, c, h, w = src.shape
    ix = ((gx + 1) * w - 1) / 2
    iy = ((gy + 1) * h - 1) / 2
    x0, y0 = np.floor(ix).astype(np.int64), np.floor(iy).astype(np.int64)
    out = np.zeros((n, c) + gx.shape[1:], np.float64)
    for ox, oy in ((0, 0), (0, 1), (1, 0), (1, 1)):
        xi, yi = x0 + ox, y0 + oy
        wx = (ix - x0) if ox else (1 - (ix - x0))
        wy = (iy - y0) if oy else (1 - (iy - y0))
        valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        xi_c, yi_c = np.clip(xi, 0, w - 1), np.clip(yi, 0, h - 1)
        vals = src[np.arange(n)[:, None, None], :, yi_c, xi_c]  # (N, H, W, C)
        out += np.moveaxis(vals, -1, 1) * (wx * wy * valid)[:, None]
    return out.astype(np.float32)
