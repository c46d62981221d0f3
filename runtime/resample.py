"""Resampling to 16 kHz exactly as the original IP_LAP reads speech.

The original calls ``librosa.core.load(path, sr=16000)`` under librosa 0.9.2, whose default
``res_type='kaiser_best'`` runs ``resampy.resample(y, orig_sr, 16000, filter='kaiser_best')``
(resampy 0.4.x) and then ``librosa.util.fix_length`` to ``ceil(n * 16000 / orig_sr)``
samples. This module reproduces that bit for bit, in numpy and Numba only (resampy 0.3.x
passed the down-sampling scale to its kernel as float32 and differs by a few float32 ulp;
the reference goldens match 0.4.x):

- the filter: the right wing of a Kaiser-windowed sinc, 50 zero crossings, 2**13 table
  entries per crossing, rolloff 0.9173..., Kaiser beta 12.9846... (resampy ships it as
  ``data/kaiser_best.npz``; here it is generated from that definition at run time);
- the loop: output ``t`` sits at input time ``t * (orig_sr / 16000)``; the left wing is
  applied first, then the right wing, both read from the table by linear interpolation
  (table value plus ``eta`` times its forward difference). Each tap's float64 product is
  added into a float32 output sample, so the sum is rounded to float32 after every tap;
  the kernel keeps that order because it decides the last bit;
- the length: resampy computes ``int(n * rate_out / rate_in)`` samples, librosa pads them
  with zeros (or trims them) to ``ceil(n * (rate_out / rate_in))``.

:func:`resample_like_librosa` does a whole signal; :class:`KaiserResampler` does the same
in chunks and gives the same samples for any chunking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .constants import SAMPLE_RATE
from .jit import njit


@dataclass(frozen=True)
class KaiserSincFilter:
    """A Kaiser-windowed sinc interpolation filter, stored as its right wing."""

    num_zeros: int
    """Zero crossings of the sinc kept on each side."""
    precision: int
    """The table holds ``2**precision`` entries per zero crossing."""
    rolloff: float
    """Cut-off frequency as a fraction of the (lower) Nyquist frequency."""
    beta: float
    """Kaiser window shape parameter."""

    @property
    def table_density(self) -> int:
        return 2**self.precision

    @property
    def table_size(self) -> int:
        return self.num_zeros * self.table_density + 1


# resampy >= 0.3 'kaiser_best' (resampy/data/kaiser_best.npz, made by
# scripts/create_filter.py): the npz stores rolloff exactly; beta is the optimiser's value,
# printed as 12.9846 in resampy's docs, recovered here to the last bit from the table.
KAISER_BEST = KaiserSincFilter(
    num_zeros=50, precision=13, rolloff=0.9173473712608761, beta=12.984585247040012
)

# Cephes' Chebyshev coefficients for exp(-x) I0(x) on [0, 8] and exp(-x) sqrt(x) I0(x) on
# (8, inf), as scipy.special.i0 (which made resampy's table) and numpy.i0 use them.
_I0_A = np.array([
    -4.4153416464793395e-18, 3.3307945188222384e-17, -2.431279846547955e-16,
    1.715391285555133e-15, -1.1685332877993451e-14, 7.676185498604936e-14,
    -4.856446783111929e-13, 2.95505266312964e-12, -1.726826291441556e-11,
    9.675809035373237e-11, -5.189795601635263e-10, 2.6598237246823866e-09,
    -1.300025009986248e-08, 6.046995022541919e-08, -2.670793853940612e-07,
    1.1173875391201037e-06, -4.4167383584587505e-06, 1.6448448070728896e-05,
    -5.754195010082104e-05, 0.00018850288509584165, -0.0005763755745385824,
    0.0016394756169413357, -0.004324309995050576, 0.010546460394594998,
    -0.02373741480589947, 0.04930528423967071, -0.09490109704804764,
    0.17162090152220877, -0.3046826723431984, 0.6767952744094761,
])
_I0_B = np.array([
    -7.233180487874754e-18, -4.830504485944182e-18, 4.46562142029676e-17,
    3.461222867697461e-17, -2.8276239805165836e-16, -3.425485619677219e-16,
    1.7725601330565263e-15, 3.8116806693526224e-15, -9.554846698828307e-15,
    -4.150569347287222e-14, 1.54008621752141e-14, 3.8527783827421426e-13,
    7.180124451383666e-13, -1.7941785315068062e-12, -1.3215811840447713e-11,
    -3.1499165279632416e-11, 1.1889147107846439e-11, 4.94060238822497e-10,
    3.3962320257083865e-09, 2.266668990498178e-08, 2.0489185894690638e-07,
    2.8913705208347567e-06, 6.889758346916825e-05, 0.0033691164782556943,
    0.8044904110141088,
])


@njit()
def _chebyshev(x: float, coefficients: np.ndarray) -> float:
    b0 = coefficients[0]
    b1 = 0.0
    b2 = 0.0
    for i in range(1, coefficients.shape[0]):
        b2 = b1
        b1 = b0
        b0 = x * b1 - b2 + coefficients[i]
    return 0.5 * (b0 - b2)


@njit()
def _bessel_i0(x: np.ndarray, coefficients_a: np.ndarray, coefficients_b: np.ndarray) -> np.ndarray:
    # Not np.i0: numpy's vectorised exp differs from libm's by an ulp on about a fifth of
    # these arguments, which moves 16% of the table entries by 1-2 ulp away from resampy's.
    # math.exp here is libm's, as in scipy.special.i0.
    out = np.empty_like(x)
    for k in range(x.shape[0]):
        v = abs(x[k])
        if v <= 8.0:
            out[k] = math.exp(v) * _chebyshev(v / 2.0 - 2.0, coefficients_a)
        else:
            out[k] = math.exp(v) * _chebyshev(32.0 / v - 2.0, coefficients_b) / math.sqrt(v)
    return out


def bessel_i0(x: np.ndarray) -> np.ndarray:
    """Modified Bessel function of the first kind, order 0 (Cephes' algorithm, float64)."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    return _bessel_i0(x.ravel(), _I0_A, _I0_B).reshape(x.shape)


@lru_cache(maxsize=4)
def filter_table(spec: KaiserSincFilter = KAISER_BEST) -> np.ndarray:
    """The filter's right wing, ``spec.table_size`` float64 values (read-only).

    Entry ``j`` is the filter at ``j / table_density`` input samples from its centre:
    ``rolloff * sinc(rolloff * x) * kaiser(x)`` with ``x = j / table_density``, where the
    Kaiser window is the right half of a symmetric window of ``2 * table_size - 1`` points.
    For :data:`KAISER_BEST` it equals resampy's ``kaiser_best.npz`` bit for bit.
    """
    n = spec.table_size - 1
    x = np.linspace(0, spec.num_zeros, num=n + 1, endpoint=True)
    sinc = spec.rolloff * np.sinc(spec.rolloff * x)
    # Spelled as scipy.signal.windows.kaiser computes it (positions n..2n of 2n+1 points),
    # so every intermediate rounds as it did when resampy's table was made.
    alpha = (2 * n) / 2.0
    position = np.arange(n, 2 * n + 1, dtype=np.float64)
    window = bessel_i0(spec.beta * np.sqrt(1 - ((position - alpha) / alpha) ** 2.0))
    window /= bessel_i0(np.array([spec.beta]))[0]
    table = window * sinc
    table.setflags(write=False)
    return table


@dataclass(frozen=True)
class _Plan:
    """What the kernel needs for one pair of rates."""

    time_increment: float
    scale: float
    index_step: int
    table_size: int
    density: int
    taps: np.ndarray
    """``taps[o, i] = (window[o + i * index_step], delta[o + i * index_step])``."""

    @property
    def max_wing(self) -> int:
        """An upper bound on the taps of either wing."""
        return self.taps.shape[1]


@lru_cache(maxsize=8)
def _plan(rate_in: int, rate_out: int) -> _Plan:
    ratio = float(rate_out) / rate_in
    table = filter_table(KAISER_BEST)
    # Downsampling stretches the filter in time, so its gain shrinks by the same factor.
    window = ratio * table if ratio < 1 else table
    delta = np.diff(window, append=window[-1])
    scale = min(1.0, ratio)
    density = KAISER_BEST.table_density
    index_step = int(scale * density)
    # An output reads window[o + i * index_step] for i = 0, 1, ... with 0 <= o <= index_step.
    # Stored as one row per o, those reads are contiguous instead of one cache line each.
    nwin = window.shape[0]
    taps = np.zeros((index_step + 1, nwin // index_step, 2), dtype=np.float64)
    for o in range(index_step + 1):
        count = (nwin - o) // index_step
        taps[o, :count, 0] = window[o:o + count * index_step:index_step]
        taps[o, :count, 1] = delta[o:o + count * index_step:index_step]
    taps.setflags(write=False)
    return _Plan(1.0 / ratio, scale, index_step, nwin, density, taps)


_BLOCK = 8  # outputs computed side by side: their float32 sums are independent chains


@njit(inline="always")
def _taps(t, time_increment, scale, density, index_step, nwin, n_total, final):
    """Where output ``t`` sits and how many taps each wing has; right_taps is -1 when the
    right wing needs input that has not arrived (only when not ``final``)."""
    time_register = t * time_increment
    n = int(time_register)
    frac = scale * (time_register - n)
    index_frac = frac * density
    left_offset = int(index_frac)
    left_eta = index_frac - left_offset
    frac = scale - frac
    index_frac = frac * density
    right_offset = int(index_frac)
    right_eta = index_frac - right_offset
    left_taps = min(n + 1, (nwin - left_offset) // index_step)
    right_taps = (nwin - right_offset) // index_step
    if n_total - n - 1 < right_taps:
        right_taps = n_total - n - 1 if final else -1
    return n, left_offset, left_eta, left_taps, right_offset, right_eta, right_taps


@njit()
def _resample_kernel(x, base, n_total, final, t_start, t_stop, time_increment, taps,
                     nwin, density, scale, index_step, out):
    """Compute outputs ``t_start <= t < t_stop`` into ``out[t - t_start]``.

    ``x`` holds input samples ``base .. base + len(x) - 1`` of the signal, and ``n_total``
    samples of it have arrived (``base + len(x) == n_total``). When ``final``, the signal
    has exactly ``n_total`` samples and right wings are cut at its end. Otherwise the
    kernel stops before the first output whose right wing reaches past ``n_total - 1``.
    Returns how many outputs it wrote.

    ``taps`` is the plan's table (window and forward difference by offset and tap), and
    ``nwin`` the length of the window it was cut from, which bounds the tap counts.

    Each output is a float32 sum rounded after every tap (left wing from the centre out,
    then right wing), as resampy's ``y[t] += weight * x[...]`` into a float32 array is.
    That serial chain is latency-bound, so outputs go in blocks of ``_BLOCK`` whose chains
    interleave; each output still adds its own taps in resampy's order.
    """
    local = np.empty(_BLOCK, dtype=np.int64)
    left_offset = np.empty(_BLOCK, dtype=np.int64)
    left_eta = np.empty(_BLOCK, dtype=np.float64)
    left_taps = np.empty(_BLOCK, dtype=np.int64)
    right_offset = np.empty(_BLOCK, dtype=np.int64)
    right_eta = np.empty(_BLOCK, dtype=np.float64)
    right_taps = np.empty(_BLOCK, dtype=np.int64)
    acc = np.empty(_BLOCK, dtype=np.float32)

    t = t_start
    while t < t_stop:
        size = min(_BLOCK, t_stop - t)
        for b in range(size):
            n, lo, le, lt, ro, re, rt = _taps(t + b, time_increment, scale, density,
                                               index_step, nwin, n_total, final)
            if rt < 0:
                size = b  # not ready: neither it nor any later output goes out now
                break
            local[b] = n - base
            left_offset[b] = lo
            left_eta[b] = le
            left_taps[b] = lt
            right_offset[b] = ro
            right_eta[b] = re
            right_taps[b] = rt
            acc[b] = np.float32(0.0)
        if size == 0:
            break

        common = left_taps[0]
        for b in range(1, size):
            common = min(common, left_taps[b])
        for i in range(common):
            for b in range(size):
                weight = taps[left_offset[b], i, 0] + left_eta[b] * taps[left_offset[b], i, 1]
                acc[b] = np.float32(acc[b] + weight * x[local[b] - i])
        for b in range(size):
            for i in range(common, left_taps[b]):
                weight = taps[left_offset[b], i, 0] + left_eta[b] * taps[left_offset[b], i, 1]
                acc[b] = np.float32(acc[b] + weight * x[local[b] - i])

        common = right_taps[0]
        for b in range(1, size):
            common = min(common, right_taps[b])
        for k in range(common):
            for b in range(size):
                weight = taps[right_offset[b], k, 0] + right_eta[b] * taps[right_offset[b], k, 1]
                acc[b] = np.float32(acc[b] + weight * x[local[b] + k + 1])
        for b in range(size):
            for k in range(common, right_taps[b]):
                weight = taps[right_offset[b], k, 0] + right_eta[b] * taps[right_offset[b], k, 1]
                acc[b] = np.float32(acc[b] + weight * x[local[b] + k + 1])

        for b in range(size):
            out[t - t_start + b] = acc[b]
        t += size
        if size < _BLOCK and t < t_stop:
            break  # stopped early on an output that is not ready
    return t - t_start


def librosa_length(n: int, rate_in: int, rate_out: int = SAMPLE_RATE) -> int:
    """Length of ``librosa.resample``'s output: ``ceil(n * (rate_out / rate_in))`` in
    librosa's own float arithmetic (kept as is: at an exact multiple a rounding up would
    make it one more than the exact value, and librosa would pad a zero)."""
    return int(np.ceil(n * (float(rate_out) / rate_in)))


def _resampy_length(n: int, rate_in: int, rate_out: int) -> int:
    # resampy >= 0.4: int(n * float(sr_new) / float(sr_orig)), i.e. floor of the exact value.
    return int(n * float(rate_out) / float(rate_in))


def _check_rates(rate_in: int, rate_out: int) -> tuple[int, int]:
    if int(rate_in) != rate_in or int(rate_out) != rate_out or rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive integers, got {rate_in} -> {rate_out}")
    return int(rate_in), int(rate_out)


def _mono_float32(samples: np.ndarray) -> np.ndarray:
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {samples.shape}")
    return samples


def resample_like_librosa(samples: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Resample mono audio as ``librosa.load(path, sr=rate_out)`` does (librosa 0.9.2,
    resampy ``kaiser_best``), bit for bit.

    ``samples`` is converted to float32 (librosa loads float32). Returns float32 of length
    :func:`librosa_length`; a copy of the input when the rates are equal. Where resampy
    would refuse (fewer than ``rate_in / rate_out`` input samples) this returns
    librosa's length of zeros instead of raising.
    """
    rate_in, rate_out = _check_rates(rate_in, rate_out)
    x = _mono_float32(samples)
    if rate_in == rate_out:
        return x.copy()
    plan = _plan(rate_in, rate_out)
    n = x.shape[0]
    out = np.zeros(librosa_length(n, rate_in, rate_out), dtype=np.float32)
    computed = min(_resampy_length(n, rate_in, rate_out), out.shape[0])
    _resample_kernel(x, 0, n, True, 0, computed, plan.time_increment, plan.taps,
                     plan.table_size, plan.density, plan.scale, plan.index_step, out)
    return out


class KaiserResampler:
    """Streaming :func:`resample_like_librosa`: push chunks, then flush once.

    The concatenated outputs of every :meth:`push` and the final :meth:`flush` equal
    ``resample_like_librosa(whole_signal, rate_in, rate_out)`` bit for bit, whatever the
    chunk sizes. An output sample is released as soon as every input its right wing
    reaches has arrived (about ``50 * rate_in / min(rate_in, rate_out)`` samples of
    look-ahead); input that no later output can reach is dropped, so memory stays bounded.
    """

    def __init__(self, rate_in: int, rate_out: int = SAMPLE_RATE):
        self.rate_in, self.rate_out = _check_rates(rate_in, rate_out)
        self._plan = None if self.rate_in == self.rate_out else _plan(self.rate_in, self.rate_out)
        self._buffer = np.zeros(0, dtype=np.float32)
        self._base = 0        # signal index of self._buffer[0]
        self._received = 0    # input samples pushed so far
        self._emitted = 0     # output samples returned so far
        self._flushed = False

    @property
    def samples_in(self) -> int:
        return self._received

    @property
    def buffered_samples(self) -> int:
        """Input samples held for outputs still to come (bounded by about two wings)."""
        return self._buffer.shape[0]

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add input samples; returns the output samples they complete (float32)."""
        if self._flushed:
            raise RuntimeError("push() after flush(): make a new KaiserResampler per stream")
        chunk = _mono_float32(samples)
        self._received += chunk.shape[0]
        if self._plan is None:
            self._emitted += chunk.shape[0]
            return chunk.copy()
        self._buffer = np.concatenate([self._buffer, chunk]) if self._buffer.size else chunk.copy()
        # Never past what the signal will have however it ends: resampy's own length for
        # the samples so far, which only grows.
        stop = _resampy_length(self._received, self.rate_in, self.rate_out)
        out = self._run(stop, final=False)
        self._drop_consumed()
        return out

    def flush(self) -> np.ndarray:
        """End of stream: the remaining outputs, right wings cut at the signal's end, then
        librosa's zero padding up to :func:`librosa_length` of all the input."""
        if self._flushed:
            raise RuntimeError("flush() called twice")
        self._flushed = True
        if self._plan is None:
            return np.zeros(0, dtype=np.float32)
        total = librosa_length(self._received, self.rate_in, self.rate_out)
        stop = min(_resampy_length(self._received, self.rate_in, self.rate_out), total)
        computed = self._run(stop, final=True)
        tail = np.zeros(max(total - self._emitted, 0), dtype=np.float32)
        self._emitted += tail.shape[0]
        self._buffer = np.zeros(0, dtype=np.float32)
        return np.concatenate([computed, tail])

    def _run(self, stop: int, final: bool) -> np.ndarray:
        plan = self._plan
        if stop <= self._emitted:
            return np.zeros(0, dtype=np.float32)
        out = np.empty(stop - self._emitted, dtype=np.float32)
        done = _resample_kernel(self._buffer, self._base, self._received, final, self._emitted,
                                stop, plan.time_increment, plan.taps, plan.table_size,
                                plan.density, plan.scale, plan.index_step, out)
        self._emitted += done
        return out[:done]

    def _drop_consumed(self) -> None:
        # Later outputs sit at input index >= n_next and read at most max_wing samples back.
        n_next = int(self._emitted * self._plan.time_increment)
        keep_from = max(n_next - self._plan.max_wing, self._base)
        if keep_from > self._base:
            self._buffer = self._buffer[keep_from - self._base:].copy()
            self._base = keep_from
