"""runtime.resample: librosa 0.9.2 / resampy kaiser_best resampling, bit for bit."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import soundfile

from conftest import DATA, golden
from iplap.runtime.resample import (
    KAISER_BEST,
    KaiserResampler,
    bessel_i0,
    filter_table,
    librosa_length,
    resample_like_librosa,
)

RATES_IN = [8000, 11025, 22050, 44100, 48000]
CHUNKS = [1, 7, 160, 1234, 4096, None]  # None: the whole signal in one push


def noise(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.3).astype(np.float32)


def tone(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate).astype(np.float32)


def streamed(x: np.ndarray, rate_in: int, chunks) -> np.ndarray:
    """Push ``x`` in pieces of the given sizes (cycled), then flush."""
    resampler = KaiserResampler(rate_in)
    parts, start, sizes = [], 0, itertools.cycle(chunks)
    while start < len(x):
        size = next(sizes)
        parts.append(resampler.push(x[start:start + size]))
        start += size
    parts.append(resampler.flush())
    return np.concatenate(parts)


def reference_resample(x: np.ndarray, rate_in: int, rate_out: int = 16000) -> np.ndarray:
    """resampy 0.4's loop and librosa 0.9.2's fix_length in plain numpy: vectorised over
    outputs, one tap at a time, each float64 product added into float32 outputs."""
    ratio = float(rate_out) / rate_in
    table = filter_table()
    window = ratio * table if ratio < 1 else table
    delta = np.diff(window, append=window[-1])
    scale = min(1.0, ratio)
    density = KAISER_BEST.table_density
    step = int(scale * density)
    n_out = int(len(x) * float(rate_out) / float(rate_in))
    t = np.arange(n_out) * (1.0 / ratio)
    n = t.astype(np.int64)
    frac = scale * (t - n)
    y = np.zeros(n_out, dtype=np.float32)
    for wing in ("left", "right"):
        index_frac = (frac if wing == "left" else scale - frac) * density
        offset = index_frac.astype(np.int64)
        eta = index_frac - offset
        limit = n + 1 if wing == "left" else len(x) - n - 1
        taps = np.minimum(limit, (len(window) - offset) // step)
        for i in range(int(taps.max(initial=0))):
            live = i < taps
            j = offset[live] + i * step
            source = n[live] - i if wing == "left" else n[live] + i + 1
            weight = window[j] + eta[live] * delta[j]
            y[live] = (y[live] + weight * x[source]).astype(np.float32)
    size = int(np.ceil(len(x) * ratio))
    return np.pad(y, (0, size - n_out)) if size > n_out else y[:size]


# -- against the original ---------------------------------------------------------------------

def test_matches_librosa_golden():
    """librosa.core.load(path, sr=16000) under librosa 0.9.2 + resampy 0.4.3 gave the
    golden; the same float32 mono input gives it exactly (measured max error 0)."""
    wav = golden("mel_resampled")["wav_speech_44k_stereo"]
    samples, rate = soundfile.read(str(DATA / "speech_44k_stereo.wav"), dtype="float32",
                                   always_2d=True)
    mono = np.mean(samples, axis=1)  # float32 mean over channels, as librosa.to_mono
    assert rate == 44100 and mono.dtype == np.float32
    out = resample_like_librosa(mono, rate)
    assert out.dtype == np.float32 and out.shape == wav.shape == (70620,)
    np.testing.assert_array_equal(out, wav)
    np.testing.assert_array_equal(streamed(mono, rate, [4410]), wav)


@pytest.mark.parametrize("rate_in", RATES_IN + [16001, 96000])
def test_kernel_matches_numpy_reference(rate_in):
    for n in (rate_in // 7 + 3, 300, 40):
        x = noise(n, seed=n)
        np.testing.assert_array_equal(resample_like_librosa(x, rate_in), reference_resample(x, rate_in))


def test_output_length_is_librosas():
    for rate_in in RATES_IN:
        for n in (0, 1, 2, 3, 441, 1000, 44099, 44100, 44101):
            expected = int(np.ceil(n * (16000 / rate_in)))
            assert librosa_length(n, rate_in) == expected
            assert resample_like_librosa(noise(n), rate_in).shape == (expected,)


# -- streaming --------------------------------------------------------------------------------

@pytest.mark.parametrize("rate_in", RATES_IN)
def test_chunking_does_not_change_a_bit(rate_in):
    x = noise(rate_in // 3 + 11, seed=rate_in)
    whole = resample_like_librosa(x, rate_in)
    for chunk in CHUNKS:
        out = streamed(x, rate_in, [chunk or len(x)])
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, whole, err_msg=f"chunk {chunk}")
    sizes = np.random.default_rng(rate_in).integers(0, 900, size=len(x))  # zero-size too
    np.testing.assert_array_equal(streamed(x, rate_in, sizes), whole)


def test_streaming_releases_early_and_keeps_little():
    resampler = KaiserResampler(44100)
    x = noise(44100 * 3)
    released, held = 0, 0
    for start in range(0, len(x), 441):
        released += len(resampler.push(x[start:start + 441]))
        held = max(held, resampler.buffered_samples)
    # Look-ahead: one right wing (50 zero crossings at 16 kHz, ~138 input samples).
    assert resampler.samples_in - released * 44100 / 16000 < 200
    assert held < 2 * 140 + 441
    assert released + len(resampler.flush()) == librosa_length(len(x), 44100)
    with pytest.raises(RuntimeError):
        resampler.push(x[:10])


# -- the filter -------------------------------------------------------------------------------

def test_filter_table_follows_its_definition():
    table = filter_table()
    assert table.shape == (50 * 8192 + 1,) and table.dtype == np.float64
    n = table.shape[0] - 1
    beta, rolloff = KAISER_BEST.beta, KAISER_BEST.rolloff

    def i0(v: float) -> float:  # power series, independent of the Chebyshev one
        return math.fsum((v / 2) ** (2 * k) / math.factorial(k) ** 2 for k in range(80))

    for j in (0, 1, 777, 4096, 8192, 100000, 204800, 333333, 409599, n):
        x = 50 * j / n
        sinc = 1.0 if x == 0 else math.sin(math.pi * rolloff * x) / (math.pi * rolloff * x)
        kaiser = i0(beta * math.sqrt(1 - (j / n) ** 2)) / i0(beta)
        assert table[j] == pytest.approx(rolloff * sinc * kaiser, rel=1e-12, abs=1e-17), j


def test_filter_table_equals_resampys():
    """Entries of resampy 0.4.3's data/kaiser_best.npz (the whole table was checked equal
    bit for bit when this module was written)."""
    table = filter_table()
    pinned = {0: 0.9173473712608761, 1: 0.9173473523046404, 4096: 0.6308682827433317,
              8192: 0.08152330317945146, 100000: -0.010423628222795207,
              204800: 0.0004977063778016244, 409599: -5.294015325928821e-08,
              409600: -5.2887095330227954e-08}
    for j, value in pinned.items():
        assert table[j] == value, j


def test_bessel_i0_matches_numpy():
    x = np.concatenate([np.linspace(0, 20, 2001), [-3.5, 8.0, 12.984585247040012]])
    np.testing.assert_allclose(bessel_i0(x), np.i0(x), rtol=4e-16, atol=0)


def _amplitude(y: np.ndarray, freq: float, rate: int) -> float:
    """Least-squares amplitude of a ``freq`` sinusoid in the middle half of ``y``."""
    middle = slice(len(y) // 4, 3 * len(y) // 4)
    t = np.arange(len(y))[middle] / rate
    basis = np.stack([np.cos(2 * np.pi * freq * t), np.sin(2 * np.pi * freq * t)], axis=1)
    coef = np.linalg.lstsq(basis, y[middle].astype(np.float64), rcond=None)[0]
    return float(np.hypot(*coef))


@pytest.mark.parametrize("rate_in", RATES_IN)
def test_passband_tone_keeps_its_amplitude(rate_in):
    y = resample_like_librosa(tone(1000, rate_in), rate_in)
    assert abs(_amplitude(y, 1000, 16000) - 1) < 1e-3  # measured <= 4e-5


def test_tone_near_nyquist_is_stopped():
    y = resample_like_librosa(tone(7900, 44100), 44100)
    rms = np.sqrt(np.mean(y[4000:12000].astype(np.float64) ** 2))
    assert rms * np.sqrt(2) < 1e-3  # measured 2.8e-4 (-71 dB); passband edge ~7.3 kHz


def test_upsampling_makes_no_images():
    y = resample_like_librosa(tone(3000, 8000), 8000)
    middle = y[4000:12000].astype(np.float64)
    t = np.arange(4000, 12000) / 16000
    fit = np.stack([np.cos(2 * np.pi * 3000 * t), np.sin(2 * np.pi * 3000 * t)], axis=1)
    residual = middle - fit @ np.linalg.lstsq(fit, middle, rcond=None)[0]
    assert abs(_amplitude(y, 3000, 16000) - 1) < 1e-3
    assert np.sqrt(np.mean(residual**2)) < 1e-3  # the 5 kHz image, among others


# -- edge cases -------------------------------------------------------------------------------

@pytest.mark.parametrize("rate_in", RATES_IN)
def test_empty_input(rate_in):
    assert resample_like_librosa(np.zeros(0, np.float32), rate_in).shape == (0,)
    resampler = KaiserResampler(rate_in)
    assert resampler.push(np.zeros(0, np.float32)).shape == (0,)
    out = resampler.flush()
    assert out.shape == (0,) and out.dtype == np.float32


@pytest.mark.parametrize("rate_in", RATES_IN)
def test_input_shorter_than_the_filter(rate_in):
    x = noise(25, seed=3)  # both wings are cut at the signal's ends
    out = resample_like_librosa(x, rate_in)
    np.testing.assert_array_equal(out, reference_resample(x, rate_in))
    np.testing.assert_array_equal(streamed(x, rate_in, [1]), out)


def test_too_short_for_resampy_gives_librosas_length_of_zeros():
    # resampy raises when int(n * 16000 / 44100) == 0; librosa's length is still 1.
    out = resample_like_librosa(np.ones(2, np.float32), 44100)
    np.testing.assert_array_equal(out, np.zeros(1, np.float32))
    np.testing.assert_array_equal(streamed(np.ones(2, np.float32), 44100, [1]), out)


def test_equal_rates_are_the_identity():
    x = noise(1000)
    out = resample_like_librosa(x, 16000, 16000)
    np.testing.assert_array_equal(out, x)
    assert out is not x and out.dtype == np.float32
    np.testing.assert_array_equal(streamed(x, 16000, [7]), x)


def test_other_output_rate():
    x = noise(5000)
    np.testing.assert_array_equal(resample_like_librosa(x, 44100, 22050),
                                  reference_resample(x, 44100, 22050))


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        resample_like_librosa(np.zeros((10, 2), np.float32), 44100)
    with pytest.raises(ValueError):
        KaiserResampler(0)
    with pytest.raises(ValueError):
        KaiserResampler(44100.5)
    # float64 input is read as float32, as librosa.load reads it.
    x = noise(3000).astype(np.float64)
    np.testing.assert_array_equal(resample_like_librosa(x, 22050),
                                  resample_like_librosa(x.astype(np.float32), 22050))
