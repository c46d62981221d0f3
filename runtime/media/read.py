"""Reading: images and videos decoded to BGR frames on the 25 fps timeline.

Videos are converted to 25 fps by timestamp, as ffmpeg's ``fps`` filter does (output
frame k shows the source frame nearest before time (k + 0.5) / 25), which also handles
variable frame rates. :class:`VideoScan` makes one forward pass and builds the
:class:`FrameTimeline`; :class:`VideoFrames` then reads the converted frames in any order
(the ping-pong order goes backwards) with a bounded cache: going back seeks to a keyframe
and decodes a block forward, so memory does not grow with the video's length.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ...errors import MediaError, first_line
from ..constants import FPS
from .probe import MediaSource, check_file, estimated_frames, open_video, source_name


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


def read_video_frames(path: Path) -> list[np.ndarray]:
    """All frames of a (small) video as BGR arrays, for tests and tools."""
    import av

    with av.open(str(path)) as container:
        return [as_bgr(f.to_ndarray(format="bgr24")) for f in container.decode(container.streams.video[0])]


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


class VideoScan:
    """A single forward pass over a video, yielding its 25 fps frames in order."""

    def __init__(self, source: MediaSource, fps: float = FPS):
        if not callable(source):
            check_file(Path(source), "face video")
        self.path = source
        self.builder = TimelineBuilder(fps)
        #: Output frames the video should give, from its duration (known once iteration starts).
        self.estimated_frames: int | None = None

    @property
    def timeline(self) -> FrameTimeline:
        return self.builder.timeline

    def __iter__(self):
        import av

        opened = open_video(self.path)
        container = opened.container
        previous = None
        try:
            stream = container.streams.video[0]
            self.estimated_frames = estimated_frames(container, stream, self.builder.fps)
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                pts = frame.pts if frame.pts is not None else len(self.timeline.source_pts)
                time_s = float(frame.time) if frame.time is not None else pts / FPS
                emitted = self.builder.add(time_s, pts)
                for _ in emitted:
                    yield previous
                previous = as_bgr(frame.to_ndarray(format="bgr24"))
            if previous is None:
                raise MediaError(f"no video frames in {source_name(self.path)}")
            duration = None
            if stream.average_rate:
                duration = 1.0 / float(stream.average_rate)
            for _ in self.builder.finish(duration):
                yield previous
        except av.FFmpegError as exc:
            raise MediaError(f"cannot decode video {source_name(self.path)}: {first_line(exc)}") from None
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
        self._keep_from = 0  # the first source index of the block being decoded
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
            self._container = open_video(self.path)
        container = self._container.container
        stream = container.streams.video[0]
        try:
            container.seek(int(self.timeline.source_pts[source]), stream=stream, backward=True, any_frame=False)
        except av.FFmpegError as exc:
            raise MediaError(f"cannot seek in {source_name(self.path)}: {first_line(exc)}") from None
        self._decoder = container.decode(stream)
        self._next_source = -1  # unknown until the first frame arrives
        self._keep_from = source

    def _decode_until(self, source: int) -> np.ndarray:
        import av

        try:
            for frame in self._decoder:
                index = self._pts_index.get(frame.pts)
                if index is None:
                    continue
                self._next_source = index + 1
                if index >= self._keep_from or index == source:
                    self._store(index, as_bgr(frame.to_ndarray(format="bgr24")))
                if index >= source:
                    break
        except av.FFmpegError as exc:
            raise MediaError(f"cannot decode video {source_name(self.path)}: {first_line(exc)}") from None
        if source not in self.cache:
            raise MediaError(f"{source_name(self.path)}: frame {source} could not be decoded again "
                             "(the file changed?)")
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
