"""What a media file is: the checks and the opened PyAV container that reading starts from.

Whether a face file is a photo or a video is decided in :mod:`..face_source`; this module
only says whether a file can be opened, whether it has a video stream, and how long it is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Union

from ...errors import MediaError, first_line

#: Names of photo files, for listing a folder (calibration data); a face file itself is told apart
#: by its content (:func:`iplap.runtime.face_source.face_is_photo`).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}

#: A face file: a path, or a callable that opens a fresh binary file object (e.g. inside an avatar).
MediaSource = Union[Path, Callable[[], BinaryIO]]


#: File signatures of the containers people give as faces and speech: (offset, bytes, name).
_SIGNATURES = (
    (4, b"ftyp", "MP4/MOV"), (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"), (0, b"RIFF", "RIFF (WAV/AVI)"),
    (0, b"FLV", "FLV"), (0, b"OggS", "Ogg"), (0, b"fLaC", "FLAC"), (0, b"ID3", "MP3"), (0, b"\xff\xfb", "MP3"),
    (0, b"\xff\xf3", "MP3"), (0, b"\xff\xf1", "AAC"), (0, b"\xff\xf9", "AAC"), (0, b"FORM", "AIFF"),
    (0, b"\x00\x00\x01\xba", "MPEG"), (0, b"\x00\x00\x01\xb3", "MPEG"), (0, b"\x30\x26\xb2\x75", "ASF/WMA"),
)


def container_kind(path: Path) -> str | None:
    """The media container ``path``'s first bytes announce (``"MP4/MOV"``, ``"Ogg"``, ...), or None:
    tells a damaged media file from one that is not media at all."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    return next((name for offset, magic, name in _SIGNATURES if head[offset:offset + len(magic)] == magic), None)


def ffmpeg_reason(exc: BaseException) -> str:
    """What went wrong in FFmpeg, in words (its message without the errno and file name)."""
    strerror = getattr(exc, "strerror", None)
    if strerror:
        return strerror[0].lower() + strerror[1:]
    return first_line(exc)


def unreadable(path: Path, what: str, exc: BaseException) -> str:
    """The one-line message for a ``what`` ("audio", "video") file FFmpeg cannot read: a damaged
    file of a known container is said to be damaged; anything else, not ``what`` at all."""
    kind, reason = container_kind(path), ffmpeg_reason(exc)
    if kind is not None:
        return f"{path.name} is a damaged or truncated {kind} file ({reason})"
    return f"{path.name} is not {'an' if what[0] in 'aeiou' else 'a'} {what} file that FFmpeg can read ({reason})"


def check_file(path: Path, what: str) -> None:
    """A missing or empty file fails here with its name, before PyAV's vaguer errors."""
    if not path.is_file():
        raise MediaError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise MediaError(f"{what} is empty: {path}")


def source_name(source: MediaSource) -> str:
    """How errors name ``source``: its path, or the opener's ``name`` where it has one."""
    return str(source) if not callable(source) else getattr(source, "name", "the face file")


class OpenedContainer:
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
            raise MediaError(f"cannot open {source_name(source)} as {what}: {first_line(exc)}") from None

    def _close_file(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def close(self) -> None:
        self.container.close()
        self._close_file()


def open_video(source: MediaSource) -> OpenedContainer:
    """``source`` opened, or a :class:`MediaError` where it is not media or has no video stream."""
    opened = OpenedContainer(source, "video")
    if not opened.container.streams.video:
        opened.close()
        raise MediaError(f"{source_name(source)} has no video stream")
    return opened


def estimated_frames(container, stream, fps: float) -> int | None:
    """The number of frames at ``fps`` that the stream's (or container's) duration gives."""
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / 1_000_000  # av.time_base
    else:
        return None
    return max(1, int(round(seconds * fps)))
