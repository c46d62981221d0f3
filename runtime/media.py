"""Media in and out, in-process (PyAV and OpenCV; no ffmpeg command-line tool).

In: a face image or video. Videos are converted to 25 fps by timestamp, as ffmpeg's
``fps`` filter does (output frame k shows the source frame nearest before time
(k + 0.5) / 25), which also handles variable frame rates. :class:`VideoFrames` reads
the converted frames in any order (the ping-pong order goes backwards) with a bounded
cache: going back seeks to a keyframe and decodes a block forward, so memory does not
grow with the video's length.

Out: :class:`VideoWriter` encodes H.264 into an mp4 beside the destination, muxes the
speech as AAC, and renames the file into place only when everything succeeded.

Input and output live in one module because they share PyAV's container handling and the
25 fps timeline (:class:`FrameTimeline`); whether a face file is a photo or a video is
decided in :mod:`.face_source`.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Callable, Union

import cv2
import numpy as np

from ..errors import MediaError, first_line
from .audio import Speech
from .constants import FPS
from .files import create_temp_file, move_into_place

log = logging.getLogger(__name__)

#: Names of photo files, for listing a folder (calibration data); a face file itself is told apart
#: by its content (:func:`iplap.runtime.face_source.face_is_photo`).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Any decoded image (gray, BGRA, 16-bit) -> contiguous uint8 BGR."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(image)


def read_image(path: Path) -> np.ndarray:
    data = np.fromfile(str(path), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise MediaError(f"cannot decode image {path}: not an image, or truncated")
    return as_bgr(image)


def _check_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise MediaError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise MediaError(f"{what} is empty: {path}")


@dataclass
class FrameTimeline:
    """The 25 fps timeline of a source: which source frame each output frame shows."""

    source_times: list[float] = field(default_factory=list)  # seconds from the first frame
    source_pts: list[int] = field(default_factory=list)  # in the stream's time base
    frame_of: list[int] = field(default_factory=list)  # output index -> source index

    def __len__(self) -> int:
        return len(self.frame_of)


class TimelineBuilder:
    """Maps source frames to 25 fps output frames as they are decoded (nearest rounding)."""

    def __init__(self, fps: float = FPS):
        self.fps = fps
        self.timeline = FrameTimeline()
        self._t0: float | None = None

    def add(self, time_s: float, pts: int) -> list[int]:
        """Register a source frame; returns the output indices the previous source frame covers."""
        if self._t0 is None:
            self._t0 = time_s
        t = time_s - self._t0
        tl = self.timeline
        emitted = []
        if tl.source_times:
            t = max(t, tl.source_times[-1])  # keep it monotonic on broken timestamps
            emitted = self._emit_until(t)
        tl.source_times.append(t)
        tl.source_pts.append(pts)
        return emitted

    def _emit_until(self, next_time: float) -> list[int]:
        tl = self.timeline
        emitted = []
        # As ffmpeg's fps filter: a source frame at time t takes output slot round(t * fps)
        # (halves up), and output k shows the latest source frame whose slot is <= k.
        while len(tl.frame_of) + 0.5 <= next_time * self.fps:
            tl.frame_of.append(len(tl.source_times) - 1)
            emitted.append(len(tl.frame_of) - 1)
        return emitted

    def finish(self, duration: float | None = None) -> list[int]:
        """End of stream: the last frame lasts its nominal duration."""
        tl = self.timeline
        if not tl.source_times:
            return []
        if duration is None:
            steps = np.diff(tl.source_times)
            duration = float(np.median(steps)) if len(steps) else 1.0 / self.fps
        emitted = self._emit_until(tl.source_times[-1] + max(duration, 1e-6))
        if not tl.frame_of:  # a single very short frame still makes one output frame
            tl.frame_of.append(0)
            emitted.append(0)
        return emitted


#: A face file: a path, or a callable that opens a fresh binary file object (e.g. inside an avatar).
MediaSource = Union[Path, Callable[[], BinaryIO]]


class _Opened:
    """A PyAV input container together with the file object it reads, closed together."""

    def __init__(self, source: MediaSource, what: str):
        import av

        self.file = None
        try:
            if callable(source):
                self.file = source()
                self.container = av.open(self.file)
            else:
                self.container = av.open(str(source))
        except (av.FFmpegError, OSError, ValueError) as exc:
            self._close_file()
            raise MediaError(f"cannot open {_name(source)} as {what}: {first_line(exc)}") from None

    def _close_file(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def close(self) -> None:
        self.container.close()
        self._close_file()


def _name(source: MediaSource) -> str:
    return str(source) if not callable(source) else getattr(source, "name", "the face file")


def _open_container(source: MediaSource) -> _Opened:
    opened = _Opened(source, "video")
    if not opened.container.streams.video:
        opened.close()
        raise MediaError(f"{_name(source)} has no video stream")
    return opened



class VideoScan:
    """A single forward pass over a video, yielding its 25 fps frames in order."""

    def __init__(self, source: MediaSource, fps: float = FPS):
        if not callable(source):
            _check_file(Path(source), "face video")
        self.path = source
        self.builder = TimelineBuilder(fps)
        #: Output frames the video should give, from its duration (known once iteration starts).
        self.estimated_frames: int | None = None

    @property
    def timeline(self) -> FrameTimeline:
        return self.builder.timeline

    def __iter__(self):
        import av

        opened = _open_container(self.path)
        container = opened.container
        previous = None
        try:
            stream = container.streams.video[0]
            self.estimated_frames = _estimated_frames(container, stream, self.builder.fps)
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                pts = frame.pts if frame.pts is not None else len(self.timeline.source_pts)
                time_s = float(frame.time) if frame.time is not None else pts / FPS
                emitted = self.builder.add(time_s, pts)
                for _ in emitted:
                    yield previous
                previous = as_bgr(frame.to_ndarray(format="bgr24"))
            if previous is None:
                raise MediaError(f"no video frames in {_name(self.path)}")
            duration = None
            if stream.average_rate:
                duration = 1.0 / float(stream.average_rate)
            for _ in self.builder.finish(duration):
                yield previous
        except av.FFmpegError as exc:
            raise MediaError(f"cannot decode video {_name(self.path)}: {first_line(exc)}") from None
        finally:
            opened.close()


def _estimated_frames(container, stream, fps: float) -> int | None:
    """The number of frames at ``fps`` that the stream's (or container's) duration gives."""
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / 1_000_000  # av.time_base
    else:
        return None
    return max(1, int(round(seconds * fps)))


class VideoFrames:
    """Random access to the 25 fps frames of a video, with a bounded cache.

    Forward access decodes on; access behind the decode position seeks to the keyframe
    before a block of ``block`` frames and decodes that block, so walking backwards
    (ping-pong) costs one seek per block.
    """

    def __init__(self, source: MediaSource, timeline: FrameTimeline, cache_frames: int = 48, block: int = 24):
        self.path = source if callable(source) else Path(source)
        self.timeline = timeline
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()  # by source index
        self.capacity = max(cache_frames, block + 2)
        self.block = block
        self._container = None
        self._decoder = None
        self._next_source = 0  # source index the decoder will produce next
        self._pts_index = {pts: i for i, pts in enumerate(timeline.source_pts)}

    def __len__(self) -> int:
        return len(self.timeline)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = self._decoder = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getitem__(self, k: int) -> np.ndarray:
        source = self.timeline.frame_of[k]
        frame = self.cache.get(source)
        if frame is not None:
            self.cache.move_to_end(source)
            return frame
        if self._decoder is None or source < self._next_source or source > self._next_source + 4 * self.capacity:
            self._seek(max(0, source - self.block + 1))
        return self._decode_until(source)

    def _seek(self, source: int) -> None:
        import av

        if self._container is None:
            self._container = _open_container(self.path)
        stream = self._container.container.streams.video[0]
        try:
            self._container.container.seek(int(self.timeline.source_pts[source]), stream=stream, backward=True, any_frame=False)
        except av.FFmpegError as exc:
            raise MediaError(f"cannot seek in {_name(self.path)}: {first_line(exc)}") from None
        self._decoder = self._container.container.decode(stream)
        self._next_source = -1  # unknown until the first frame arrives
        self._keep_from = source

    def _decode_until(self, source: int) -> np.ndarray:
        import av

        keep_from = getattr(self, "_keep_from", 0)
        try:
            for frame in self._decoder:
                index = self._pts_index.get(frame.pts)
                if index is None:
                    continue
                self._next_source = index + 1
                if index >= keep_from or index == source:
                    self._store(index, as_bgr(frame.to_ndarray(format="bgr24")))
                if index >= source:
                    break
        except av.FFmpegError as exc:
            raise MediaError(f"cannot decode video {_name(self.path)}: {first_line(exc)}") from None
        if source not in self.cache:
            raise MediaError(f"{_name(self.path)}: frame {source} could not be decoded again (the file changed?)")
        return self.cache[source]

    def _store(self, index: int, frame: np.ndarray) -> None:
        self.cache[index] = frame
        self.cache.move_to_end(index)
        while len(self.cache) > self.capacity:
            self.cache.popitem(last=False)


class StillFrames:
    """A single image as a one-frame video."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.timeline = FrameTimeline([0.0], [0], [0])

    def __len__(self) -> int:
        return 1

    def __getitem__(self, k: int) -> np.ndarray:
        return self.image

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- output ---------------------------------------------------------------------------------


#: Sample rates the AAC encoder takes; speech at another rate is resampled to the next one up.
AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
AAC_FRAME = 1024  # samples per AAC frame: the encoder takes exactly this many at a time


@dataclass(frozen=True)
class AudioTrackFormat:
    """How speech is stored in the output: AAC at its own rate where AAC allows, in its own
    layout where that is mono or stereo (other layouts are mixed down to stereo)."""

    rate: int
    layout: str

    @classmethod
    def for_speech(cls, speech: Speech) -> "AudioTrackFormat":
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
                if self._converter is not None:
                    self._queue(self._frames_to_array(self._converter.resample(None)))
                self._encode(final=True)
                for packet in self.stream.encode(None):
                    self._container.mux(packet)
                self.done = True
            else:
                self._encode(final=False)
        except av.FFmpegError as exc:
            raise MediaError(f"cannot encode the audio of {self.speech.name}: {first_line(exc)}") from None

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

    def __init__(self, path: Path, width: int, height: int, fps: int = FPS, crf: int = 18,
                 speech: Speech | None = None, preset: str = "medium"):
        import av

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
            self.lossless = crf == 0
            codec = "libx264rgb" if self.lossless else "libx264"
            self.stream = self.container.add_stream(codec, rate=fps)
            self.pad_w, self.pad_h = (width, height) if self.lossless else (width + width % 2, height + height % 2)
            self.stream.width, self.stream.height = self.pad_w, self.pad_h
            self.stream.pix_fmt = "bgr24" if self.lossless else "yuv420p"
            # Frames carry pts in 1/fps; the muxer may pick another stream time base.
            self.time_base = Fraction(1, fps)
            self.stream.time_base = self.time_base
            self.stream.options = {"crf": str(crf), "preset": preset}
            self.fps = fps
            self.audio = AudioTrack(self.container, speech) if speech is not None else None
        except BaseException:
            self._cleanup()
            raise

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


def read_video_frames(path: Path) -> list[np.ndarray]:
    """All frames of a (small) video as BGR arrays, for tests and tools."""
    import av

    with av.open(str(path)) as container:
        return [as_bgr(f.to_ndarray(format="bgr24")) for f in container.decode(container.streams.video[0])]


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
