"""Audio decoding, resampling and the numpy mel spectrogram."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from conftest import golden
from iplap.errors import MediaError
from iplap.runtime import audio
from mediautil import burst, decoded_audio, sine, write_audio, write_video

# About ten times the max error measured against the goldens (printed by the tests, -s): mel
# 2.4e-7 at 16 kHz and after resampling; the resampled wave is bit-exact (0), bounded at 1e-6.
MEL_TOLERANCE = 3e-6
WAVE_TOLERANCE = 1e-6


def test_mel_matches_golden():
    g = golden("mel")
    mel = audio.melspectrogram(g["pcm"].astype(np.float32) / 32768)
    assert mel.shape == g["mel"].shape
    error = float(np.abs(mel - g["mel"]).max())
    print(f"16 kHz mel: max error {error:.2e}")
    assert error <= MEL_TOLERANCE


def test_mel_filterbank_is_slaney():
    fb = audio.mel_filterbank()
    assert fb.shape == (80, 401)
    assert np.all(fb >= 0)
    freqs = np.linspace(0, 8000, 401)
    assert fb[:, freqs < 55].max() == 0 and fb[:, freqs > 7600].max() == 0
    # Slaney normalisation: each triangle has area 1 / ... i.e. peak * width / 2 == 1 (in Hz).
    widths = np.array([(freqs[row > 0].max() - freqs[row > 0].min()) for row in fb])
    assert np.all(fb.max(axis=1) * widths < 2.2)


def _original_windows(n_mel_frames: int) -> list[int]:
    """The original's loop over mel chunks: start int(i * 80 / 25) while 16 frames fit."""
    starts, i = [], 0
    while int(i * 80.0 / 25) + 16 <= n_mel_frames:
        starts.append(int(i * 80.0 / 25))
        i += 1
    return starts


@pytest.mark.parametrize("n_mel", [15, 16, 17, 19, 100, 354, 1001])
def test_mel_windows_follow_the_original(n_mel):
    windows = audio.MelWindows(frames=np.zeros((80, n_mel), np.float32))
    starts = _original_windows(n_mel)
    assert audio.count_windows(n_mel) == windows.available == len(starts)
    assert [windows.start(w) for w in range(len(starts))] == starts
    assert _original_windows(100)[:6] == [0, 3, 6, 9, 12, 16]


def test_wav_16k(data_dir):
    wav = audio.load_audio(data_dir.parent.parent / "samples" / "speech_16k.wav")
    assert wav.dtype == np.float32 and wav.ndim == 1 and len(wav) == 70619


def test_stereo_44k_is_read_as_the_original_reads_it(data_dir):
    """librosa.load(sr=16000) under librosa 0.9.2: channels averaged, resampy kaiser_best."""
    g = golden("mel_resampled")
    wav = audio.load_audio(data_dir / "speech_44k_stereo.wav")
    assert wav.shape == g["wav_speech_44k_stereo"].shape
    wave_error = float(np.abs(wav - g["wav_speech_44k_stereo"]).max())
    mel = audio.melspectrogram(wav)
    mel_error = float(np.abs(mel - g["mel_speech_44k_stereo"]).max())
    print(f"44.1 kHz stereo: wave max error {wave_error:.2e}, mel max error {mel_error:.2e}")
    assert wave_error <= WAVE_TOLERANCE and mel_error <= MEL_TOLERANCE


def test_speech_keeps_its_own_rate_and_channels(data_dir):
    speech = audio.load_speech(data_dir / "speech_44k_stereo.wav")
    assert (speech.sample_rate, speech.channels, speech.layout) == (44100, 2, "stereo")
    assert speech.samples.dtype == np.float32
    assert speech.mono().dtype == np.float32


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
    (None, "not found"), (b"", "empty"), (b"this is not audio" * 100, "^x.wav is not an audio file that FFmpeg can read \\(invalid data")])
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
    with pytest.raises(MediaError, match=r"^cut.m4a is a damaged or truncated MP4/MOV file \("):
        audio.load_audio(cut)


def test_video_without_audio(tmp_path):
    path = write_video(tmp_path / "silent.mp4", [np.zeros((32, 32, 3), np.uint8)] * 5)
    with pytest.raises(MediaError, match="no audio"):
        audio.load_audio(path)


# -- speech in every format, out in the mp4 ------------------------------------------------------

def _soundfile(subtype, fmt=None):
    def write(path, x, rate):
        soundfile.write(path, x, rate, subtype=subtype, format=fmt)
    return write


def _pyav(codec):
    def write(path, x, rate):
        write_audio(path, x, rate, codec, layout="stereo" if x.ndim == 2 and x.shape[1] == 2 else "mono")
    return write


def _video_track(path, x, rate):
    write_video(path, [np.full((64, 64, 3), 90, np.uint8)] * 30, audio=x, audio_rate=rate)


#: name: (file suffix, writer, sample rate, channels). Every audio PyAV decodes must work as speech.
SPEECH_FORMATS = {
    "wav_u8_8k_mono": (".wav", _soundfile("PCM_U8"), 8000, 1),
    "wav_s16_16k_mono": (".wav", _soundfile("PCM_16"), 16000, 1),
    "wav_s16_11k_stereo": (".wav", _soundfile("PCM_16"), 11025, 2),
    "wav_float_22k_mono": (".wav", _soundfile("FLOAT"), 22050, 1),
    "wav_s24_44k_stereo": (".wav", _soundfile("PCM_24"), 44100, 2),
    "wav_s32_48k_stereo": (".wav", _soundfile("PCM_32"), 48000, 2),
    "wav_s16_37800_mono": (".wav", _soundfile("PCM_16"), 37800, 1),  # a rate AAC lacks: encoded at 44.1 kHz
    "flac_32k_stereo": (".flac", _soundfile("PCM_16"), 32000, 2),
    "flac_48k_5.1": (".flac", _soundfile("PCM_24"), 48000, 6),  # mixed down to stereo for the output
    "mp3_16k_mono": (".mp3", _pyav("libmp3lame"), 16000, 1),
    "mp3_44k_stereo": (".mp3", _pyav("libmp3lame"), 44100, 2),
    "m4a_aac_8k_mono": (".m4a", _pyav("aac"), 8000, 1),
    "m4a_aac_48k_stereo": (".m4a", _pyav("aac"), 48000, 2),
    "ogg_vorbis_44k_stereo": (".ogg", _soundfile("VORBIS", "OGG"), 44100, 2),
    "opus_16k_mono": (".opus", _pyav("libopus"), 16000, 1),
    "opus_48k_stereo": (".opus", _pyav("libopus"), 48000, 2),
    "mp4_video_track_aac_44k_stereo": (".mp4", _video_track, 44100, 2),
}
BURST_AT = 0.5
FRAME_S = 1 / 25


@pytest.mark.parametrize("name", sorted(SPEECH_FORMATS))
def test_speech_format_is_muxed_in_sync(tmp_path, name):
    """Decode once; the mel comes from the samples, and the output's AAC track is encoded from
    the same samples at their own rate: its duration is the speech's, and a burst at 0.5 s
    is heard at 0.5 s of the video (within one frame)."""
    from iplap.runtime.media import AudioTrackFormat, VideoWriter

    suffix, write, rate, channels = SPEECH_FORMATS[name]
    path = tmp_path / f"speech{suffix}"
    write(path, burst(rate, 1.2, BURST_AT, channels), rate)
    speech = audio.load_speech(path)
    assert speech.sample_rate in (rate, 48000)  # opus always decodes at 48 kHz
    assert speech.channels == channels
    wav = speech.for_model()
    assert abs(len(wav) / 16000 - speech.duration) < 1e-3
    frames = audio.count_windows(audio.mel_frame_count(wav.size))
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 64, 64, speech=speech) as writer:
        for _ in range(frames):
            writer.write(np.zeros((64, 64, 3), np.uint8))
    samples, out_rate, start, video_start = decoded_audio(out)
    expected = AudioTrackFormat.for_speech(speech)
    assert out_rate == expected.rate and expected.rate >= speech.sample_rate
    duration = len(samples) / out_rate
    onset = start + np.argmax(np.abs(samples) > 0.25) / out_rate
    print(f"{name}: {speech.sample_rate} Hz x{speech.channels} -> AAC {out_rate} Hz {expected.layout}; "
          f"A/V offset {1000 * (onset - video_start - BURST_AT):+.1f} ms, duration {duration:.3f} s "
          f"(speech {speech.duration:.3f} s)")
    assert abs(onset - video_start - BURST_AT) <= FRAME_S
    assert abs(duration - speech.duration) <= FRAME_S + 1024 / out_rate  # AAC pads its last frame
