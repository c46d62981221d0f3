"""Uploaded media checked against the service's limits before anything is decoded whole.

A face upload is a photo (PNG, JPEG, WebP, BMP or GIF: its size is read from its header, so a
small file that would decode to gigabytes is refused unread) or a video (its size from the
container, its frames counted by demuxing, which decodes nothing). Speech is decoded with a
cap on its duration, so 200 MB of low-bitrate audio cannot become tens of GB of samples.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from .. import IplapError, LimitError, face_is_photo, load_speech
from .errors import ApiError


@dataclass(frozen=True)
class FaceLimits:
    max_frames: int
    max_pixels: int


def check_face(path: Path, name: str, limits: FaceLimits) -> bool:
    """Whether the face at ``path`` is a photo (else a video), within ``limits``; 422 for a
    file that is neither, 413 beyond a limit. ``name`` is the client's name for the file."""
    try:
        photo = face_is_photo(path)
    except IplapError:
        raise ApiError(422, f"{name}: the face must be a photo or a video (this file is neither)") from None
    if photo:
        width, height = photo_size(path)
        _check_pixels(name, width, height, limits)
    else:
        _check_video(path, name, limits)
    return photo


def _check_pixels(name: str, width: int, height: int, limits: FaceLimits) -> None:
    if width * height > limits.max_pixels:
        raise ApiError(413, f"{name} is {width} x {height} pixels; the limit is {limits.max_pixels} pixels "
                            "(width x height)")


def _check_video(path: Path, name: str, limits: FaceLimits) -> None:
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            _check_pixels(name, stream.codec_context.width, stream.codec_context.height, limits)
            frames = 0
            for packet in container.demux(stream):
                frames += packet.size > 0
                if frames > limits.max_frames:
                    raise ApiError(413, f"{name} has more than {limits.max_frames} frames, the limit")
    except ApiError:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError):
        raise ApiError(422, f"{name}: the face video cannot be read") from None


def photo_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, JPEG, WebP, BMP or GIF from its header; 422 for other photos
    and for a header cut short."""
    try:
        return _header_size(path)
    except (struct.error, ValueError, OSError):
        raise ApiError(422, "the photo's header cannot be read (a damaged or truncated file)") from None


def _header_size(path: Path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(64)
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            return struct.unpack(">II", head[16:24])
        if head.startswith((b"GIF87a", b"GIF89a")):
            return struct.unpack("<HH", head[6:10])
        if head.startswith(b"BM") and len(head) >= 26:
            width, height = struct.unpack("<ii", head[18:26])
            return abs(width), abs(height)
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return _webp_size(head)
        if head.startswith(b"\xff\xd8"):
            f.seek(2)
            return _jpeg_size(f)
    raise ApiError(422, "a face photo must be a PNG, JPEG, WebP, BMP or GIF file")


def _webp_size(head: bytes) -> tuple[int, int]:
    kind = head[12:16]
    if kind == b"VP8X":
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if kind == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if kind == b"VP8 ":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    raise ApiError(422, "the WebP photo's header cannot be read")


_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(f) -> tuple[int, int]:
    """Walk the JPEG's markers to its frame header (SOFn)."""
    for _ in range(10000):
        byte = f.read(1)
        while byte == b"\xff":
            byte = f.read(1)
        if not byte:
            break
        marker = byte[0]
        if marker in (0x01, *range(0xD0, 0xD9)):  # markers without a length
            continue
        length_bytes = f.read(2)
        if len(length_bytes) < 2:
            break
        length = struct.unpack(">H", length_bytes)[0]
        if marker in _JPEG_FRAMES:
            data = f.read(5)
            if len(data) < 5:
                break
            height, width = struct.unpack(">HH", data[1:5])
            return width, height
        f.seek(length - 2, 1)
    raise ApiError(422, "the JPEG photo's header cannot be read")


def check_speech(path: Path, name: str, max_seconds: float) -> None:
    """Decode the uploaded speech (at most ``max_seconds`` of it) and check it, naming the
    client's file in any message."""
    try:
        load_speech(path, max_seconds=max_seconds, name=name).check()
    except IplapError as exc:
        raise ApiError(413 if isinstance(exc, LimitError) else 422, exc.message) from None

