"""The face a render starts from, a photo or a video, decided once, by content.

:func:`face_is_photo` decides (the file's bytes, not its name: a photo named ``.mp4`` is a
photo). :func:`open_face` gives the :class:`FaceSource` of a face file, and
:func:`avatar_face` that of a prepared :class:`~iplap.runtime.avatar.Avatar`: a
:class:`PhotoSource` or a :class:`VideoSource`, with one interface that ``prepare``,
``render`` and ``stream`` use: the frames to track, the 25 fps timeline, a reader of
frames by index (for the references and while rendering), and the progress total.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from ..errors import MediaError
from .avatar import Avatar
from .files import check_input_file
from .media.probe import container_kind, unreadable
from .media import FrameTimeline, MediaSource, StillFrames, VideoFrames, VideoScan, as_bgr, read_image
from .reports import StageClock


def face_is_photo(path: str | Path) -> bool:
    """Whether the face file at ``path`` is a photo, by its content (never its name).

    True for a file OpenCV reads as an image (``cv2.haveImageReader`` reads its header
    bytes), False for a file PyAV opens with a video stream (not through FFmpeg's image or
    text demuxers, which FFmpeg picks by the name); a one-line :class:`MediaError` naming
    the file for anything else, and for a folder, a missing or an empty file.
    """
    import av

    path = Path(path)
    check_input_file(path, "face")
    if cv2.haveImageReader(str(path)):
        return True
    try:
        with av.open(str(path)) as container:
            if container.streams.video and not _still_or_text(container.format.name):
                return False
    except (av.FFmpegError, OSError, ValueError) as exc:
        if container_kind(path) is not None:  # a video (or audio) container FFmpeg cannot read: damaged
            raise MediaError(unreadable(path, "video", exc)) from None
    raise MediaError(f"{path.name} is neither a photo nor a video")


def _still_or_text(demuxer: str) -> bool:
    """FFmpeg's image demuxers (chosen by the file's name, e.g. any ``.png``) and its text
    renderer (``tty``, any ``.txt``) show "a video stream" for files that are not videos:
    an image OpenCV cannot read is no photo either."""
    return any(name == "image2" or name.endswith("_pipe") or name == "tty" for name in demuxer.split(","))


class FaceSource(ABC):
    """A face file (a photo or a video), as prepare, render and stream read it."""

    #: A photo is one frame; a video many.
    is_photo: bool
    #: Whether tracking it is long enough for a progress bar.
    shows_tracking_bar: bool

    def __init__(self, source: MediaSource, name: str):
        self.source, self.name = source, name

    @abstractmethod
    def track_frames(self, clock: StageClock) -> Iterable[np.ndarray]:
        """The 25 fps frames in order, once, for face tracking."""

    @property
    @abstractmethod
    def timeline(self) -> FrameTimeline:
        """Which source frame each 25 fps frame shows (for a video: known once tracked)."""

    @abstractmethod
    def progress_total(self) -> int | None:
        """The frames tracking will visit (an estimate for a video, ``None`` where unknown)."""

    @abstractmethod
    def frames(self) -> StillFrames | VideoFrames:
        """A fresh reader of the 25 fps frames by index (close it, or use it in ``with``)."""


class PhotoSource(FaceSource):
    """A photo: one frame, decoded once."""

    is_photo = True
    shows_tracking_bar = False

    def __init__(self, source: MediaSource, name: str):
        super().__init__(source, name)
        self._image: np.ndarray | None = None

    def image(self) -> np.ndarray:
        if self._image is None:
            self._image = read_image(self.source) if not callable(self.source) else _decode(self.source)
        return self._image

    def track_frames(self, clock: StageClock) -> Iterable[np.ndarray]:
        with clock.time("decode"):
            return [self.image()]

    @property
    def timeline(self) -> FrameTimeline:
        return FrameTimeline([0.0], [0], [0])  # as StillFrames's

    def progress_total(self) -> int | None:
        return 1

    def frames(self) -> StillFrames:
        return StillFrames(self.image())


class VideoSource(FaceSource):
    """A video, converted to 25 fps; its timeline comes from tracking (or from an avatar)."""

    is_photo = False
    shows_tracking_bar = True

    def __init__(self, source: MediaSource, name: str, timeline: FrameTimeline | None = None):
        super().__init__(source, name)
        self._timeline = timeline
        self._scan: VideoScan | None = None

    def track_frames(self, clock: StageClock) -> Iterable[np.ndarray]:
        self._scan = VideoScan(self.source)
        return self._scan

    @property
    def timeline(self) -> FrameTimeline:
        if self._timeline is None:
            if self._scan is None:
                raise RuntimeError("the video's timeline is known once its frames are tracked")
            return self._scan.timeline
        return self._timeline

    def progress_total(self) -> int | None:
        return None if self._scan is None else self._scan.estimated_frames

    def frames(self) -> VideoFrames:
        return VideoFrames(self.source, self.timeline)


def open_face(path: str | Path) -> FaceSource:
    """The face file at ``path``, a photo or a video by its content; a :class:`MediaError`
    for a missing, empty or unreadable file."""
    path = Path(path)
    return PhotoSource(path, path.name) if face_is_photo(path) else VideoSource(path, path.name)


def avatar_face(avatar: Avatar) -> FaceSource:
    """The face file of a prepared avatar (on disk, or kept inside the avatar file)."""
    source = avatar.source_path or avatar.open_source
    if avatar.is_image:
        return PhotoSource(source, avatar.source_name)
    return VideoSource(source, avatar.source_name, avatar.timeline)


def _decode(open_file) -> np.ndarray:
    with open_file() as f:
        data = np.frombuffer(f.read(), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise MediaError("the avatar's face image cannot be decoded")
    return as_bgr(image)


__all__ = ["FaceSource", "PhotoSource", "VideoSource", "avatar_face", "face_is_photo", "open_face"]
