"""Writing: the mp4 output, H.264 video with the speech as AAC, and the checks made before it.

:class:`VideoWriter` encodes into a temporary file beside the destination and renames it
into place only when everything succeeded. :func:`check_output_path` and
:func:`check_audio_encoder` let a caller fail before any rendering, not after minutes of it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from ...errors import MediaError, first_line
from ...limits import DEFAULT_CRF, check_crf
from ..audio import Speech
from ..constants import FPS
from ..files import create_temp_file, move_into_place

log = logging.getLogger(__name__)

#: Sample rates the AAC encoder takes; speech at another rate is resampled to the next one up.
AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
AAC_FRAME = 1024  # samples per AAC frame: the encoder takes exactly this many at a time


def check_output_path(path: Path) -> None:
    """Fail early, before any work, when the output cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise MediaError(f"output path is a folder: {path}")
    if not path.parent.is_dir():
        raise MediaError(f"output folder does not exist: {path.parent}")
    if not os.access(path.parent, os.W_OK):
        raise MediaError(f"output folder is not writable: {path.parent}")
    if path.exists() and not os.access(path, os.W_OK):
        raise MediaError(f"output file is not writable: {path}")


@dataclass(frozen=True)
class AudioTrackFormat:
    """How speech is stored in the output: AAC at its own rate where AAC allows, in its own
    layout where that is mono or stereo (other layouts are mixed down to stereo)."""

    rate: int
    layout: str

    @classmethod
    def for_speech(cls, speech: Speech) -> AudioTrackFormat:
        rate = next((r for r in AAC_RATES if r >= speech.sample_rate), AAC_RATES[-1])
        layout = speech.layout if speech.layout in ("mono", "stereo") else "stereo"
        return cls(rate, layout)

    @property
    def channels(self) -> int:
        return 1 if self.layout == "mono" else 2

    @property
    def bit_rate(self) -> int:
        return min(128000, 6 * self.rate * self.channels)  # AAC allows at most 6144 bits per 1024 samples


def check_audio_encoder(speech: Speech) -> AudioTrackFormat:
    """Open an AAC encoder as ``speech``'s output track needs it: speech the muxer cannot
    take fails here, before any rendering, not after minutes of it."""
    import av

    fmt = AudioTrackFormat.for_speech(speech)
    try:
        context = av.CodecContext.create("aac", "w")
        context.sample_rate, context.layout, context.format = fmt.rate, fmt.layout, "fltp"
        context.bit_rate = fmt.bit_rate
        context.open()
    except (av.FFmpegError, ValueError) as exc:
        raise MediaError(f"cannot encode the audio of {speech.name} ({speech.sample_rate} Hz, {speech.layout}) "
                         f"as AAC: {first_line(exc)}") from None
    return fmt


class AudioTrack:
    """Encodes speech samples into an AAC stream of a container, a stretch at a time.

    The samples are the decoded speech itself (no second decode of the file), cut into
    whole AAC frames here, so a source whose frames have other sizes (mp3: 1152) is fine.
    Where the output rate or layout differs from the speech's, libswresample converts
    them for the output only; the model's input is never touched by this.
    """

    def __init__(self, container, speech: Speech):
        import av

        self.speech = speech
        self.format = fmt = check_audio_encoder(speech)
        self.stream = container.add_stream("aac", rate=fmt.rate)
        self.stream.layout = fmt.layout
        self.stream.bit_rate = fmt.bit_rate
        self._container = container
        self._converter = None
        if (fmt.rate, fmt.layout) != (speech.sample_rate, speech.layout):
            self._converter = av.AudioResampler(format="fltp", layout=fmt.layout, rate=fmt.rate)
        self._position = 0  # source samples consumed
        self._pending = np.zeros((0, fmt.channels), np.float32)  # converted, not yet a whole frame
        self._pts = 0  # output samples encoded
        self.done = False

    def write_until(self, seconds: float | None) -> None:
        """Encode the speech up to ``seconds`` (all of it, and flush, for None)."""
        import av

        if self.done:
            return
        samples = self.speech.samples
        stop = samples.shape[0] if seconds is None else min(samples.shape[0], int(round(seconds * self.speech.sample_rate)))
        try:
            if stop > self._position:
                self._queue(self._convert(samples[self._position:stop]))
                self._position = stop
            if seconds is None:
                self._flush()
            else:
                self._encode(final=False)
        except av.FFmpegError as exc:
            raise MediaError(f"cannot encode the audio of {self.speech.name}: {first_line(exc)}") from None

    def _flush(self) -> None:
        if self._converter is not None:
            self._queue(self._frames_to_array(self._converter.resample(None)))
        self._encode(final=True)
        for packet in self.stream.encode(None):
            self._container.mux(packet)
        self.done = True

    def _convert(self, block: np.ndarray) -> np.ndarray:
        if self._converter is None:
            return block
        import av

        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block.T), format="fltp", layout=self.speech.layout)
        frame.sample_rate = self.speech.sample_rate
        return self._frames_to_array(self._converter.resample(frame))

    def _frames_to_array(self, frames) -> np.ndarray:
        if not frames:
            return np.zeros((0, self.format.channels), np.float32)
        return np.concatenate([f.to_ndarray().T for f in frames]).astype(np.float32, copy=False)

    def _queue(self, block: np.ndarray) -> None:
        if block.shape[0]:
            self._pending = np.concatenate([self._pending, block]) if self._pending.shape[0] else block

    def _encode(self, final: bool) -> None:
        import av

        whole = (self._pending.shape[0] // AAC_FRAME) * AAC_FRAME
        count = self._pending.shape[0] if final else whole
        for start in range(0, count, AAC_FRAME):
            block = self._pending[start:min(start + AAC_FRAME, count)]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block.T), format="fltp", layout=self.format.layout)
            frame.sample_rate = self.format.rate
            frame.pts = self._pts
            frame.time_base = Fraction(1, self.format.rate)
            self._pts += block.shape[0]
            for packet in self.stream.encode(frame):
                self._container.mux(packet)
        self._pending = self._pending[count:]


class VideoWriter:
    """H.264 mp4 with the speech as AAC, written to a temporary file and renamed on success.

    ``crf=0`` writes lossless RGB H.264 (libx264rgb), for exact comparisons (browsers do
    not play it); other values write yuv420p (playable everywhere), padding odd sizes by
    one edge pixel. The audio is encoded after each video frame up to that frame's time,
    so the file is interleaved and memory stays flat however long the output is.
    """

    def __init__(self, path: Path, width: int, height: int, fps: int = FPS, crf: int = DEFAULT_CRF,
                 speech: Speech | None = None, preset: str = "medium"):
        import av

        check_crf(crf)
        self.path = Path(path)
        self.width, self.height = width, height
        check_output_path(self.path)
        try:
            self._tmp = create_temp_file(self.path.parent, f".{self.path.stem}.", ".mp4")
        except OSError as exc:
            raise MediaError(f"cannot write into {self.path.parent}: {exc.strerror}") from None
        self._done = False
        self.frames = 0
        try:
            self.container = av.open(str(self._tmp), "w", format="mp4")
            self._add_video_stream(fps, crf, preset)
            self.audio = AudioTrack(self.container, speech) if speech is not None else None
        except BaseException:
            self._cleanup()
            raise

    def _add_video_stream(self, fps: int, crf: int, preset: str) -> None:
        self.lossless = crf == 0
        codec = "libx264rgb" if self.lossless else "libx264"
        self.stream = self.container.add_stream(codec, rate=fps)
        width, height = self.width, self.height
        self.pad_w, self.pad_h = (width, height) if self.lossless else (width + width % 2, height + height % 2)
        self.stream.width, self.stream.height = self.pad_w, self.pad_h
        self.stream.pix_fmt = "bgr24" if self.lossless else "yuv420p"
        # Frames carry pts in 1/fps; the muxer may pick another stream time base.
        self.time_base = Fraction(1, fps)
        self.stream.time_base = self.time_base
        self.stream.options = {"crf": str(crf), "preset": preset}
        self.fps = fps

    def write(self, frame_bgr: np.ndarray) -> None:
        import av

        if frame_bgr.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame is {frame_bgr.shape[1]}x{frame_bgr.shape[0]}, writer is {self.width}x{self.height}")
        if (self.pad_w, self.pad_h) != (self.width, self.height):
            frame_bgr = cv2.copyMakeBorder(frame_bgr, 0, self.pad_h - self.height, 0, self.pad_w - self.width,
                                           cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_bgr), format="bgr24")
        frame.pts = self.frames
        frame.time_base = self.time_base
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1
        if self.audio is not None:
            self.audio.write_until(self.frames / self.fps)

    def close(self) -> Path:
        """Flush, encode the rest of the audio, and move the file into place."""
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        if self.audio is not None:
            self.audio.write_until(None)
        self.container.close()
        move_into_place(self._tmp, self.path)
        self._done = True
        return self.path

    def abort(self) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        container = getattr(self, "container", None)
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - the file is deleted anyway
                log.debug("closing a failed output", exc_info=True)
        self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        elif not self._done:
            self.abort()
