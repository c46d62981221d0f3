"""Audio: decode speech once, the 16 kHz mono signal the model hears, and the mel spectrogram.

Decoding (:func:`load_speech`) tries soundfile first (wav, flac, ogg, mp3), as librosa
does, then PyAV (anything FFmpeg reads: m4a/aac, opus, the audio track of a video). It
keeps the samples at their own rate and channels (:class:`Speech`): the output video's
audio track is encoded from them, so what is heard is what drove the lips, at full quality.

What the model hears (:meth:`Speech.for_model`) is what the original reads with
``librosa.core.load(path, sr=16000)`` (librosa 0.9.2): channels averaged, then resampled
with resampy's ``kaiser_best`` filter (:mod:`.resample`).

The mel spectrogram is Wav2Lip's, which IP_LAP uses: pre-emphasis 0.97, a centred STFT
(reflect padding, n_fft 800, hop 200, periodic Hann window), magnitude, 80 Slaney mel
bands from 55 to 7600 Hz, dB, and symmetric normalisation to [-4, 4]; 80 frames a second.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import LimitError, MediaError
from .constants import FPS, MEL_WINDOW, SAMPLE_RATE
from .files import check_input_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MelConfig:
    """Mel spectrogram parameters of the original release (Wav2Lip's hparams)."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 800
    hop: int = 200
    win: int = 800
    n_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    min_level_db: float = -100.0
    ref_level_db: float = 20.0
    max_abs_value: float = 4.0

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop


# -- decoding -------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)  # holds an array: compare fields, not objects
class Speech:
    """Decoded speech at its own sample rate, all channels.

    Attributes:
        samples: (frames, channels) float32 in [-1, 1].
        sample_rate: the file's own rate (Hz).
        layout: FFmpeg's name of the channel layout ("mono", "stereo", "5.1", ...).
        name: the file's name, for messages.
    """

    samples: np.ndarray = field(repr=False)
    sample_rate: int
    layout: str
    name: str = "speech"

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        return self.samples.shape[0] / self.sample_rate

    def mono(self) -> np.ndarray:
        """The channels averaged in float32, as ``librosa.to_mono`` does."""
        if self.channels == 1:
            return np.ascontiguousarray(self.samples[:, 0])
        return np.mean(self.samples, axis=1, dtype=np.float32)

    def for_model(self) -> np.ndarray:
        """What the model hears: mono at 16 kHz, as the original reads speech (computed once)."""
        cached = self.__dict__.get("_for_model")
        if cached is None:
            # Imported here: it loads numba, and the bundle manifest's readers (``iplap --help``
            # among them) import this module without ever resampling.
            from .resample import resample_like_librosa

            cached = resample_like_librosa(self.mono(), self.sample_rate, SAMPLE_RATE)
            cached.setflags(write=False)
            object.__setattr__(self, "_for_model", cached)  # frozen: set once, as a cache
        return cached

    def check(self) -> None:
        """Refuse speech that is silent or too short for one output frame (:class:`MediaError`)."""
        check_speech(self.for_model(), self.name)


def load_speech(path: str | Path, max_seconds: float | None = None, name: str | None = None) -> Speech:
    """Decode ``path`` once, at its own rate; raises :class:`MediaError` naming the file.

    ``max_seconds``: refuse longer speech (:class:`LimitError`); decoding stops just past the
    limit, so memory stays bounded whatever the file claims. ``name``: how messages name the
    file (a service names the client's file, not its own temporary path).
    """
    path = Path(path)
    shown = name or str(path)
    check_input_file(path, "audio", shown)
    speech = _decode_soundfile(path, max_seconds, shown) or _decode_pyav(path, max_seconds, shown)
    if speech.samples.shape[0] == 0:
        raise MediaError(f"no audio samples in {shown}")
    if not np.isfinite(speech.samples).all():
        raise MediaError(f"{shown}: the audio holds NaN or infinite samples")
    return speech


def _too_long(shown: str, max_seconds: float) -> LimitError:
    return LimitError(f"{shown} is longer than {max_seconds:g} s, the limit for speech")


def load_audio(path: str | Path) -> np.ndarray:
    """Decode ``path`` to what the model hears: mono float32 at 16 kHz."""
    return load_speech(path).for_model()


_SOUNDFILE_LAYOUTS = {1: "mono", 2: "stereo"}


def _decode_soundfile(path: Path, max_seconds: float | None, shown: str) -> Speech | None:
    import soundfile

    try:
        with soundfile.SoundFile(str(path)) as f:
            if f.channels not in _SOUNDFILE_LAYOUTS:
                return None  # PyAV knows the layout of multichannel files
            limit = -1 if max_seconds is None else int(max_seconds * f.samplerate) + 1
            samples = f.read(frames=limit, dtype="float32", always_2d=True)
            rate, channels = f.samplerate, f.channels
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None  # not a format libsndfile reads; PyAV gets its turn
    if max_seconds is not None and samples.shape[0] > max_seconds * rate:
        raise _too_long(shown, max_seconds)
    return Speech(samples, int(rate), _SOUNDFILE_LAYOUTS[channels], Path(shown).name)


def _decode_pyav(path: Path, max_seconds: float | None, shown: str) -> Speech:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(f"{shown} has no audio track")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate or stream.rate
            layout = stream.codec_context.layout
            # Convert to packed float at the stream's own rate and layout; mixing is ours.
            converter = av.AudioResampler(format="flt", layout=layout, rate=rate)
            chunks, decoded = [], 0
            for frame in container.decode(stream):
                for out in converter.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1, out.layout.nb_channels))
                    decoded += chunks[-1].shape[0]
                if max_seconds is not None and rate and decoded > max_seconds * rate:
                    raise _too_long(shown, max_seconds)
            for out in converter.resample(None):
                chunks.append(out.to_ndarray().reshape(-1, out.layout.nb_channels))
    except MediaError:
        raise
    except (av.FFmpegError, ValueError, OSError, IndexError) as exc:
        from .media.probe import unreadable

        raise MediaError(unreadable(path, "audio", exc).replace(path.name, Path(shown).name, 1)) from None
    if not chunks or not rate:
        raise MediaError(f"no audio samples in {shown}")
    return Speech(np.concatenate(chunks, axis=0), int(rate), layout.name, Path(shown).name)


# -- mel spectrogram ------------------------------------------------------------------------

def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa, htk=False)."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    mel = hz / f_sp
    return np.where(hz >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


@lru_cache(maxsize=4)
def mel_filterbank(config: MelConfig = MelConfig()) -> np.ndarray:
    """(n_mels, n_fft//2 + 1) triangular filters with Slaney area normalisation."""
    fft_freqs = np.linspace(0, config.sample_rate / 2, config.n_fft // 2 + 1)
    mel_points = np.linspace(_hz_to_mel(config.fmin), _hz_to_mel(config.fmax), config.n_mels + 2)
    edges = _mel_to_hz(mel_points)
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=4)
def _hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # periodic, as scipy's fftbins=True


def _normalise_db(mel: np.ndarray, config: MelConfig) -> np.ndarray:
    min_level = np.exp(config.min_level_db / 20 * np.log(10))
    db = 20 * np.log10(np.maximum(min_level, mel)) - config.ref_level_db
    m = config.max_abs_value
    return np.clip(2 * m * ((db - config.min_level_db) / -config.min_level_db) - m, -m, m)


class MelStream:
    """The mel spectrogram of audio that arrives in chunks, identical for any chunking.

    Frame m is centred on sample ``m * hop``; it is computed once its window is complete,
    and the last frames (which need the reflect padding at the end) when the stream is
    finished. Frames are computed in fixed blocks of ``block`` frames aligned to absolute
    frame numbers, so the arithmetic does not depend on how the audio was cut: the whole
    file and any chunking give bit-identical spectrograms.
    """

    def __init__(self, config: MelConfig = MelConfig(), block: int = 4):
        if config.win > config.n_fft:
            raise ValueError("win must not exceed n_fft")
        self.config = config
        self.block = block
        self._pad = config.n_fft // 2
        self._window = np.zeros(config.n_fft)
        offset = (config.n_fft - config.win) // 2
        self._window[offset:offset + config.win] = _hann(config.win)
        self._basis = mel_filterbank(config).astype(np.float64)
        self._emph = np.zeros(0)  # pre-emphasised samples not yet dropped
        self._offset = 0  # absolute index of _emph[0]
        self._head = None  # the reflect padding at the start (needs pad + 1 samples)
        self._last_raw = None
        self._total = 0
        self._done = 0  # frames emitted
        self.finished = False

    @property
    def samples(self) -> int:
        return self._total

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add audio; returns the newly completed mel frames (n_mels, k)."""
        if self.finished:
            raise RuntimeError("the stream is finished")
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        if x.size == 0:
            return np.zeros((self.config.n_mels, 0), np.float32)
        emph = x.copy()
        emph[1:] -= self.config.preemphasis * x[:-1]
        if self._last_raw is not None:
            emph[0] -= self.config.preemphasis * self._last_raw
        self._last_raw = x[-1]
        self._emph = np.concatenate([self._emph, emph])
        self._total += x.size
        # Frame m needs samples up to m * hop + pad - 1 (and pad + 1 samples for its left reflection).
        available = (self._total - self._pad) // self.config.hop + 1 if self._total > self._pad else 0
        ready = (available // self.block) * self.block
        return self._emit(ready, final=False)

    def finish(self) -> np.ndarray:
        """End of audio: the remaining frames, with reflect padding at the end."""
        if self._total <= self._pad:
            raise MediaError(f"audio too short: {self._total} samples (at least {self._pad + 1} needed)")
        self.finished = True
        return self._emit(1 + self._total // self.config.hop, final=True)

    def _emit(self, upto: int, final: bool) -> np.ndarray:
        cfg = self.config
        out = []
        while self._done < upto:
            stop = min(self._done + self.block, upto) if final else self._done + self.block
            out.append(self._frames(self._done, stop, final))
            self._done = stop
        # Keep only what later frames can still need.
        keep_from = max(0, self._done * cfg.hop - self._pad)
        if keep_from > self._offset and self._head is not None:
            self._emph = self._emph[keep_from - self._offset:]
            self._offset = keep_from
        if not out:
            return np.zeros((cfg.n_mels, 0), np.float32)
        return np.concatenate(out, axis=1)

    def _padded(self, start: int, stop: int, final: bool) -> np.ndarray:
        """Pre-emphasised samples [start, stop) with reflect padding outside [0, total)."""
        pad = self._pad
        if self._head is None:
            self._head = self._emph[1:pad + 1][::-1].copy()  # x[pad] .. x[1]
        parts = []
        if start < 0:
            parts.append(self._head[pad + start:])
            start = 0
        end_inner = min(stop, self._total)
        parts.append(self._emph[start - self._offset:end_inner - self._offset])
        if stop > self._total:
            if not final:
                raise AssertionError("right padding before the end of the stream")
            tail = self._emph[self._total - self._offset - pad - 1:self._total - self._offset - 1][::-1]
            parts.append(tail[:stop - self._total])
        return np.concatenate(parts)

    def _frames(self, first: int, stop: int, final: bool) -> np.ndarray:
        cfg = self.config
        count = stop - first
        block = np.zeros((self.block, cfg.n_fft))
        for i in range(count):
            centre = (first + i) * cfg.hop
            block[i] = self._padded(centre - self._pad, centre + self._pad, final)
        magnitude = np.abs(np.fft.rfft(block * self._window, axis=1)).T  # always `block` rows
        return _normalise_db(self._basis @ magnitude, cfg)[:, :count].astype(np.float32)


def melspectrogram(wav: np.ndarray, config: MelConfig = MelConfig()) -> np.ndarray:
    """Normalised log-mel spectrogram (n_mels, frames) of 16 kHz mono audio, float32.

    Computed by :class:`MelStream`, so that a whole file and a stream give the same bits.
    """
    stream = MelStream(config)
    return np.concatenate([stream.push(wav), stream.finish()], axis=1)


# -- windows: the audio of each video frame ---------------------------------------------------

@dataclass
class MelWindows:
    """The mel frames received so far, and the original's 16-frame windows over them.

    Window ``w`` starts at mel frame ``int(w * 80 / 25)`` (the original's ``mel_chunks``);
    the video has one frame per complete window.
    """

    fps: float = FPS
    mel_fps: float = MelConfig().frames_per_second
    frames: np.ndarray = field(default_factory=lambda: np.zeros((MelConfig().n_mels, 0), np.float32))
    offset: int = 0  # absolute index of frames[:, 0]

    def extend(self, new: np.ndarray) -> None:
        if new.shape[1]:
            self.frames = np.concatenate([self.frames, new], axis=1)

    def start(self, w: int) -> int:
        return int(w * (self.mel_fps / self.fps))

    @property
    def available(self) -> int:
        """How many windows are complete."""
        total = self.offset + self.frames.shape[1]
        count = 0 if total < MEL_WINDOW else int((total - MEL_WINDOW) / (self.mel_fps / self.fps)) + 2
        while count > 0 and self.start(count - 1) + MEL_WINDOW > total:
            count -= 1
        return count

    def window(self, w: int) -> np.ndarray:
        s = self.start(w) - self.offset
        if s < 0:
            raise IndexError(f"mel window {w} was already dropped")
        return self.frames[:, s:s + MEL_WINDOW]

    def drop_before(self, w: int) -> None:
        """Forget frames that no window >= w needs (keeps memory flat on long speech)."""
        keep = self.start(max(0, w)) - self.offset
        if keep > 0:
            self.frames = self.frames[:, keep:]
            self.offset += keep


def count_windows(n_mel_frames: int) -> int:
    """Complete windows in ``n_mel_frames`` mel frames: the output video's frame count."""
    return MelWindows(frames=np.zeros((MelConfig().n_mels, n_mel_frames), np.float32)).available


def mel_frame_count(n_samples: int, config: MelConfig = MelConfig()) -> int:
    """Mel frames of ``n_samples`` samples at 16 kHz (centred frames, one per hop)."""
    return 1 + n_samples // config.hop


#: Peak amplitude below which speech counts as silence (-80 dBFS).
SILENCE_PEAK = 1e-4
#: Output frames that one render of the landmark window needs the audio of (windows 0..2).
_FIRST_RENDER_WINDOWS = 3


def min_speech_seconds() -> float:
    """The shortest speech that gives one output frame (three mel windows)."""
    n_mel = MelWindows().start(_FIRST_RENDER_WINDOWS - 1) + MEL_WINDOW
    return ((n_mel - 1) * MelConfig().hop + 1) / SAMPLE_RATE


def check_speech(wav: np.ndarray, name: str = "the audio") -> None:
    """Refuse 16 kHz speech that is silent or too short for one output frame."""
    if wav.size == 0 or float(np.abs(wav).max()) < SILENCE_PEAK:
        raise MediaError(f"{name} is silent (peak below -80 dBFS): there is no speech to lip-sync")
    if count_windows(mel_frame_count(wav.size)) < _FIRST_RENDER_WINDOWS:
        raise MediaError(f"{name} is too short: {wav.size / SAMPLE_RATE:.2f} s; at least "
                         f"{min_speech_seconds():.2f} s are needed for one output frame")
