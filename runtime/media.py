"""Media in and out, in-process (PyAV and OpenCV; no ffmpeg command-line tool).

In: a face image or video. Videos are converted to 25 fps by timestamp, as ffmpeg's
``fps`` filter does (output frame k shows the source frame nearest before time
(k + 0.5) / 25), which also handles variable frame rates. :class:`VideoFrames` reads
the converted frames in any order (the ping-pong order goes backwards) with a bounded
cache: going back seeks to a keyframe and decodes a block forward, so memory does not
grow with the video's length.

Out: :class:`VideoWriter` encodes H.264 into an mp4 beside the destination, muxes the
speech as AAC, and renames the file into place only when everything succeeded.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Callable, Union

import cv2
import numpy as np

from ..errors import MediaError, first_line

log = logging.getLogger(__name__)

FPS = 25
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



def is_image_file(path: Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def scan_video(path: Path, fps: float = FPS):
    """Decode a video once, in order: yields (output index, BGR frame) at 25 fps.

    The returned generator's ``timeline`` (via :class:`VideoScan`) records the mapping
    for later random access.
    """
    return VideoScan(Path(path), fps)


class VideoScan:
    """A single forward pass over a video, yielding its 25 fps frames in order."""

    def __init__(self, source: MediaSource, fps: float = FPS):
        if not callable(source):
            _check_file(Path(source), "face video")
        self.path = source
        self.builder = TimelineBuilder(fps)

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


def move_into_place(tmp: str | Path, path: str | Path) -> None:
    """Rename a finished temporary file to ``path``, with the permissions a file created
    there plainly would get (``mkstemp`` makes it private to its owner)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


class VideoWriter:
    """H.264 mp4 with AAC audio, written to a temporary file and renamed on success.

    ``crf=0`` writes lossless RGB H.264 (libx264rgb), for exact comparisons; other values
    write yuv420p (playable everywhere), padding odd sizes by one edge pixel.
    """

    def __init__(self, path: Path, width: int, height: int, fps: int = FPS, crf: int = 18,
                 audio_path: Path | None = None, preset: str = "medium"):
        import av

        self.path = Path(path)
        self.width, self.height = width, height
        directory = self.path.parent
        if not directory.is_dir():
            raise MediaError(f"output folder does not exist: {directory}")
        if not os.access(directory, os.W_OK):
            raise MediaError(f"output folder is not writable: {directory}")
        if self.path.is_dir():
            raise MediaError(f"output path is a folder: {self.path}")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".mp4", dir=directory)
        except OSError as exc:
            raise MediaError(f"cannot write into {directory}: {exc.strerror}") from None
        os.close(fd)
        self._tmp = Path(tmp)
        self._done = False
        try:
            self.container = av.open(tmp, "w", format="mp4")
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
            self.audio_path = audio_path
            self._audio = self._add_audio(audio_path) if audio_path is not None else None
        except BaseException:
            self._cleanup()
            raise
        self.frames = 0

    def _add_audio(self, audio_path: Path):
        """Decode the speech again at its own rate and prepare an AAC stream for it."""
        import av

        try:
            source = av.open(str(audio_path))
        except (av.FFmpegError, OSError) as exc:
            raise MediaError(f"cannot open audio {audio_path}: {first_line(exc)}") from None
        if not source.streams.audio:
            source.close()
            raise MediaError(f"{audio_path} has no audio track")
        in_stream = source.streams.audio[0]
        rate = in_stream.codec_context.sample_rate or 16000
        channels = min(2, in_stream.codec_context.channels or 1)
        layout = "stereo" if channels == 2 else "mono"
        out = self.container.add_stream("aac", rate=rate)
        out.layout = layout
        out.bit_rate = min(128000, 6 * rate * channels)  # AAC allows at most 6144 bits per 1024 samples
        self._audio_frames = source.decode(in_stream)
        self._audio_pts = 0  # samples encoded so far
        self._audio_done = False
        return source, in_stream, out, av.AudioResampler(format="fltp", layout=layout, rate=rate)

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
        if self._audio is not None:
            self._mux_audio(self.frames / self.fps)

    def _mux_audio(self, until: float | None) -> None:
        """Encode the speech up to ``until`` seconds (all of it for None).

        Called after every video frame, so audio and video packets arrive interleaved: the
        muxer then never holds the whole video waiting for audio, and memory stays flat.
        """
        import av

        if self._audio_done:
            return
        source, in_stream, out, resampler = self._audio
        rate = out.codec_context.sample_rate
        try:
            while until is None or self._audio_pts < until * rate:
                frame = next(self._audio_frames, None)
                last = frame is None
                if not last:
                    frame.pts = None  # the resampler keeps its own continuous timeline
                for resampled in resampler.resample(None if last else frame):
                    resampled.pts = self._audio_pts
                    self._audio_pts += resampled.samples
                    for packet in out.encode(resampled):
                        self.container.mux(packet)
                if last:
                    for packet in out.encode(None):
                        self.container.mux(packet)
                    self._audio_done = True
                    source.close()
                    return
        except av.FFmpegError as exc:
            raise MediaError(f"cannot decode audio {self.audio_path}: {first_line(exc)}") from None

    def close(self) -> Path:
        """Flush, mux the audio, and move the file into place."""
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        if self._audio is not None:
            self._mux_audio(None)
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
        if self._audio_source_open() and not self._audio_done:
            self._audio[0].close()
        self._tmp.unlink(missing_ok=True)

    def _audio_source_open(self) -> bool:
        return getattr(self, "_audio", None) is not None

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
