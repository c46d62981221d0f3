"""Audio decoding, resampling and the numpy mel spectrogram."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from conftest import golden
from iplap.errors import MediaError
from iplap.runtime import audio
from mediautil import sine, write_audio, write_video


def test_mel_matches_golden():
    g = golden("mel")
    mel = audio.melspectrogram(g["pcm"].astype(np.float32) / 32768)
    assert mel.shape == g["mel"].shape
    assert np.abs(mel - g["mel"]).max() <= 1e-3


def test_mel_filterbank_is_slaney():
    fb = audio.mel_filterbank()
    assert fb.shape == (80, 401)
    assert np.all(fb >= 0)
    freqs = np.linspace(0, 8000, 401)
    assert fb[:, freqs < 55].max() == 0 and fb[:, freqs > 7600].max() == 0
    # Slaney normalisation: each triangle has area 1 / ... i.e. peak * width / 2 == 1 (in Hz).
    widths = np.array([(freqs[row > 0].max() - freqs[row > 0].min()) for row in fb])
    assert np.all(fb.max(axis=1) * widths < 2.2)


def test_mel_windows_follow_the_original():
    assert audio.mel_windows(16) == [0]
    assert audio.mel_windows(100)[:6] == [0, 3, 6, 9, 12, 16]
    starts = audio.mel_windows(354)
    assert starts[-1] + 16 <= 354 and int(len(starts) * 3.2) + 16 > 354


def test_wav_16k(data_dir):
    wav = audio.load_audio(data_dir.parent.parent / "samples" / "speech_16k.wav")
    assert wav.dtype == np.float32 and wav.ndim == 1 and len(wav) == 70619


def test_stereo_44k_is_mixed_and_resampled(data_dir):
    ref = audio.load_audio(data_dir.parent.parent / "samples" / "speech_16k.wav")
    wav = audio.load_audio(data_dir / "speech_44k_stereo.wav")
    assert abs(len(wav) - len(ref)) <= 2
    n = min(len(wav), len(ref))
    xcorr = np.correlate(ref[:n], wav[:n], "full")
    assert xcorr.argmax() - (n - 1) == 0  # no delay
    # The two files were made from the same speech by sox; they agree closely.
    assert np.sqrt(np.mean((wav[:n] - ref[:n]) ** 2)) < 0.05 * np.sqrt(np.mean(ref ** 2))


def test_resampler_is_band_limited_not_linear():
    """A 7 kHz tone at 44.1 kHz survives resampling to 16 kHz with little distortion;
    linear interpolation would leave strong images and a drooping amplitude."""
    x = sine(7000, 1.0, 44100)
    y = audio.resample(x, 44100, 16000)
    assert abs(len(y) - 16000) <= 1
    seg = y[2000:14000]
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    freqs = np.fft.rfftfreq(len(seg), 1 / 16000)
    peak = spectrum[np.abs(freqs - 7000) < 30].max()
    elsewhere = spectrum[np.abs(freqs - 7000) > 200].max()
    assert elsewhere < peak * 1e-3  # > 60 dB clean; linear interpolation aliases at about -25 dB
    assert abs(np.sqrt(2) * seg.std() - 0.5) < 0.05  # the anti-alias filter starts near 0.9 Nyquist
    flat = audio.resample(sine(1000, 1.0, 44100), 44100, 16000)[2000:14000]
    assert abs(np.sqrt(2) * flat.std() - 0.5) < 1e-3


def test_stream_resampler_is_chunk_independent():
    x = np.random.default_rng(0).standard_normal(44100).astype(np.float32) * 0.1
    whole = audio.resample(x, 44100, 16000)
    r = audio.StreamResampler(44100, 16000)
    parts = [r.push(x[i:i + 1234]) for i in range(0, len(x), 1234)] + [r.flush()]
    chunked = np.concatenate(parts)
    assert len(chunked) == len(whole)
    assert np.abs(chunked - whole).max() < 1e-5


@pytest.mark.parametrize("suffix,codec,rate", [
    (".flac", "flac", 22050), (".mp3", "libmp3lame", 44100), (".m4a", "aac", 48000), (".ogg", "libopus", 48000)])
def test_compressed_formats(tmp_path, suffix, codec, rate):
    tone = sine(440, 1.5, rate)
    path = write_audio(tmp_path / f"tone{suffix}", np.stack([tone, tone], 1), rate, codec, layout="stereo")
    wav = audio.load_audio(path)
    assert abs(len(wav) / 16000 - 1.5) < 0.1  # encoders pad a little
    spectrum = np.abs(np.fft.rfft(wav[4000:20000]))
    assert abs(np.fft.rfftfreq(16000, 1 / 16000)[spectrum.argmax()] - 440) < 2


def test_audio_track_of_a_video(tmp_path):
    frames = [np.full((64, 64, 3), 100, np.uint8)] * 25
    path = write_video(tmp_path / "clip.mp4", frames, audio=sine(300, 1.0, 16000), audio_rate=16000)
    wav = audio.load_audio(path)
    assert abs(len(wav) / 16000 - 1.0) < 0.1


def test_int16_wav_scaling(tmp_path):
    pcm = (sine(200, 0.5, 16000) * 32767).astype(np.int16)
    soundfile.write(tmp_path / "a.wav", pcm, 16000, subtype="PCM_16")
    wav = audio.load_audio(tmp_path / "a.wav")
    assert np.allclose(wav, pcm / 32768.0, atol=1e-7)  # librosa's scaling


@pytest.mark.parametrize("content,message", [
    (None, "not found"), (b"", "empty"), (b"this is not audio" * 100, "cannot decode audio")])
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "x.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MediaError, match=message):
        audio.load_audio(path)


def test_truncated_file(tmp_path):
    tone = sine(440, 1.0, 44100)
    full = write_audio(tmp_path / "full.m4a", tone, 44100, "aac")
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(full.read_bytes()[:200])
    with pytest.raises(MediaError):
        audio.load_audio(cut)


def test_video_without_audio(tmp_path):
    path = write_video(tmp_path / "silent.mp4", [np.zeros((32, 32, 3), np.uint8)] * 5)
    with pytest.raises(MediaError, match="no audio"):
        audio.load_audio(path)
