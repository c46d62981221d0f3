"""The streams' audio contract, in one place: :class:`AudioFormat` (a rate and a channel
count, checked), the chunks it takes, the samples of each 25 fps frame, and float <-> int16.

Samples are float32 or float64 in [-1, 1], or int16 scaled by 1/32768 (as a 16-bit WAV is
read); :func:`to_pcm16` is the inverse, with the same scale, so int16 speech pushed into a
live session comes back out of its frames bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import MediaError
from .constants import FPS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, SAMPLE_RATE

#: int16 full scale: int16 samples are read as ``x / PCM16_SCALE`` and written as ``x * PCM16_SCALE``.
PCM16_SCALE = 32768.0


@dataclass(frozen=True)
class AudioFormat:
    """A stream's audio: ``sample_rate`` Hz (8 kHz to 192 kHz) and ``channels`` (1, or 2:
    interleaved in a flat array or shaped (n, 2)). Checked when made."""

    sample_rate: int = SAMPLE_RATE
    channels: int = 1

    def __post_init__(self):
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) \
                or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise MediaError(f"sample_rate must be a whole number of Hz from {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE}, "
                             f"got {_shown(rate)}")
        if isinstance(self.channels, bool) or not isinstance(self.channels, (int, np.integer)) \
                or self.channels not in (1, 2):
            raise MediaError(f"channels must be 1 (mono) or 2 (stereo, interleaved or shaped (n, 2)), "
                             f"got {_shown(self.channels)}")
        object.__setattr__(self, "channels", int(self.channels))
        object.__setattr__(self, "sample_rate", int(rate))

    def frames(self, samples) -> np.ndarray:
        """A chunk of this format as float32 (n, channels) sample frames; a :class:`MediaError`
        for anything else (another type, half a stereo frame, NaN)."""
        x = np.asarray(samples)
        if x.dtype == np.int16:
            x = x.astype(np.float32)
            x /= np.float32(PCM16_SCALE)
        elif x.dtype in (np.float32, np.float64):
            x = x.astype(np.float32, copy=False)
        else:
            raise MediaError(f"audio samples must be float32 or float64 in [-1, 1], or int16; got {x.dtype}")
        channels = self.channels
        if x.ndim == 1:
            if x.size % channels:
                raise MediaError(f"an interleaved stereo chunk must hold whole frames (an even number of samples); "
                                 f"got {x.size}")
            x = x.reshape(-1, channels)
        elif x.ndim != 2 or x.shape[1] != channels:
            raise MediaError(f"audio samples must be a flat array or shaped (n, {channels}) for "
                             f"{channels} channel{'s' if channels > 1 else ''}; got shape {x.shape}")
        if not np.isfinite(x).all():
            raise MediaError("audio samples hold NaN or infinite values")
        return x

    def mono(self, samples) -> np.ndarray:
        """A chunk as float32 mono (the channels averaged, as the original does)."""
        x = self.frames(samples)
        return np.ascontiguousarray(x[:, 0]) if self.channels == 1 else np.mean(x, axis=1, dtype=np.float32)

    def frame_span(self, n: int) -> tuple[int, int]:
        """The samples of video frame ``n`` (25 fps): ``[round(n * rate / 25), round((n + 1) * rate / 25))``,
        so that the frames' audio adds up to the clock exactly, with no drift."""
        rate = self.sample_rate
        return round(n * rate / FPS), round((n + 1) * rate / FPS)

    def frame_samples(self, n: int) -> int:
        """How many samples video frame ``n`` carries (:meth:`frame_span`'s length)."""
        start, stop = self.frame_span(n)
        return stop - start


def _shown(value) -> str:
    """A caller's value in a message, cut short (it may come from a remote client)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as int16 (rounded, clipped), the inverse of how int16 is read."""
    return np.clip(np.rint(np.asarray(samples, np.float32) * PCM16_SCALE), -32768, 32767).astype(np.int16)


__all__ = ["PCM16_SCALE", "AudioFormat", "to_pcm16"]
