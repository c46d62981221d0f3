"""Helpers that write small media files for tests, with PyAV (no ffmpeg binary needed)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_audio(path: Path, samples: np.ndarray, rate: int, codec: str, layout: str = "mono") -> Path:
    """Encode float samples (frames, channels) or (frames,) with ``codec`` into ``path``."""
    samples = np.asarray(samples, np.float32)
    if samples.ndim == 1:
        samples = samples[:, None]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = layout
        fmt = stream.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
        step = 4096
        for start in range(0, len(samples), step):
            chunk = np.ascontiguousarray(samples[start:start + step].T)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for resampled in resampler.resample(frame):
                container.mux(stream.encode(resampled))
        for resampled in resampler.resample(None):
            container.mux(stream.encode(resampled))
        container.mux(stream.encode(None))
    return path


def write_video(path: Path, frames, fps: float = 25, audio: np.ndarray | None = None, audio_rate: int = 16000,
                codec: str = "libx264", options: dict | None = None, audio_codec: str = "aac") -> Path:
    """BGR uint8 frames (and optional audio: (n,) mono or (n, 2) stereo) into a video file."""
    frames = list(frames)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        video.width, video.height = w, h
        video.pix_fmt = "yuv420p" if codec != "ffv1" else "bgr0"
        if options:
            video.options = options
        audio_stream = None
        if audio is not None:
            audio = np.asarray(audio, np.float32)
            layout = "stereo" if audio.ndim == 2 else "mono"
            audio_stream = container.add_stream(audio_codec, rate=audio_rate)
            audio_stream.layout = layout
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        container.mux(video.encode(None))
        if audio_stream is not None:
            resampler = av.AudioResampler(format=audio_stream.codec_context.codec.audio_formats[0].name,
                                          layout=layout, rate=audio_rate, frame_size=1024)
            samples = np.ascontiguousarray(audio.T if audio.ndim == 2 else audio[None])
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
            frame.sample_rate = audio_rate
            frame.pts = 0
            for resampled in resampler.resample(frame) + resampler.resample(None):
                container.mux(audio_stream.encode(resampled))
            container.mux(audio_stream.encode(None))
    return path


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def burst(rate: int, seconds: float = 1.2, at: float = 0.5, channels: int = 1) -> np.ndarray:
    """Quiet 200 Hz hum with a loud 1 kHz burst from ``at`` for 0.1 s: (n,) or (n, channels)."""
    t = np.arange(int(round(seconds * rate))) / rate
    x = 0.01 * np.sin(2 * np.pi * 200 * t)
    on = (t >= at) & (t < at + 0.1)
    x[on] += 0.5 * np.sin(2 * np.pi * 1000 * t[on])
    x = x.astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def decoded_audio(path: Path) -> tuple[np.ndarray, int, float, float]:
    """A media file's audio as decoders play it: mono samples, rate, the time of its first
    sample, and the time of the first video frame (seconds)."""
    with av.open(str(path)) as container:
        video_start = next(container.decode(container.streams.video[0])).time
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks, start = [], None
        for frame in container.decode(stream):
            if start is None:
                start = frame.time
            data = frame.to_ndarray()
            channels = frame.layout.nb_channels
            chunks.append(data.reshape(channels, -1).mean(0) if frame.format.is_planar
                          else data.reshape(-1, channels).mean(1))
        return np.concatenate(chunks), stream.codec_context.sample_rate, start, video_start
