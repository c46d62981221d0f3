"""The live WebSocket's messages: parsing what the client sends, encoding what it gets.

Nothing here touches a socket or a thread; :mod:`.live` runs a one-shot session and
:mod:`.live_continuous` a continuous one (their docstrings give each mode's protocol).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

from .. import AudioFormat
from ..errors import IplapError, one_line
from .errors import ApiError

#: The sample formats a client may send (and gets back with its frames).
FORMATS = {"f32le": np.dtype("<f4"), "s16le": np.dtype("<i2")}
#: The live WebSocket's modes (``?mode=``): one reply per session, or an always-on avatar.
MODES = ("oneshot", "continuous")


def parse_mode(value: str | None) -> str:
    """``?mode=`` of ``/api/live``: ``oneshot`` (the default) or ``continuous``; else a 400."""
    if value in (None, ""):
        return MODES[0]
    if value not in MODES:
        raise ApiError(400, f"mode must be one of {', '.join(MODES)}, got {_shown(value)}")
    return value


@dataclass(frozen=True)
class StartMessage:
    """``{"type": "start", "sample_rate", "channels", "format"}``, checked."""

    sample_rate: int
    channels: int
    format: str

    @property
    def dtype(self) -> np.dtype:
        return FORMATS[self.format]

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample frame (all channels)."""
        return self.dtype.itemsize * self.channels

    @property
    def bytes_per_second(self) -> int:
        return self.frame_bytes * self.sample_rate

    @classmethod
    def parse(cls, text: str) -> StartMessage:
        data = parse_json(text, "the first message must be JSON: {\"type\": \"start\", \"sample_rate\", "
                                "\"channels\", \"format\"}")
        if data.get("type") != "start":
            raise ApiError(400, "the first message must be {\"type\": \"start\", ...}")
        rate, channels, fmt = data.get("sample_rate"), data.get("channels", 1), data.get("format", "f32le")
        try:
            AudioFormat(rate, channels)
        except IplapError as exc:  # the audio contract's own words
            raise ApiError(400, exc.message) from None
        if not isinstance(fmt, str) or fmt not in FORMATS:
            raise ApiError(400, f"format must be one of {', '.join(FORMATS)}, got {_shown(fmt)}")
        return cls(rate, channels, fmt)


def _shown(value) -> str:
    """A client's value in a message: JSON as it was sent, cut short."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_json(text: str, complaint: str) -> dict:
    """A text message as a JSON object, or a 400 saying ``complaint``."""
    try:
        data = json.loads(text)
    except ValueError:
        raise ApiError(400, complaint) from None
    if not isinstance(data, dict):
        raise ApiError(400, complaint)
    return data


def message_type(text: str) -> str | None:
    """The ``type`` of a JSON text message, or None when it is not one."""
    try:
        data = parse_json(text, "")
    except ApiError:
        return None
    kind = data.get("type")
    return kind if isinstance(kind, str) else None


@dataclass
class Outgoing:
    """A message waiting to be sent: a frame's picture (or none) and the audio from ``audio_time``."""

    type: str  # "frame", or "audio" for the speech after the last frame
    index: int | None
    time: float | None
    jpeg: bytes
    audio: bytes
    audio_time: float
    extra: dict | None = None  # more header fields (continuous mode: speaking, turn, held)

    def encode(self) -> bytes:
        header = json.dumps({"type": self.type, "index": self.index, "time": self.time, "jpeg": len(self.jpeg),
                             "audio": len(self.audio), "audio_time": round(self.audio_time, 6),
                             **(self.extra or {})}).encode()
        return struct.pack(">I", len(header)) + header + self.jpeg + self.audio


def ready_message(fps: int, width: int, height: int, start: StartMessage, **extra) -> str:
    return json.dumps({"type": "ready", "fps": fps, "width": width, "height": height,
                       "sample_rate": start.sample_rate, "channels": start.channels, "format": start.format,
                       **extra})


def error_message(message: str) -> str:
    return json.dumps({"type": "error", "message": one_line(message)})


@dataclass
class SentStats:
    """What the closing message reports."""

    frames: int = 0
    dropped_frames: int = 0
    max_pending_frames: int = 0
    first_audio: float | None = None
    first_frame: float | None = None
    last_frame: float | None = None

    def summary(self) -> dict:
        latency = None if self.first_frame is None or self.first_audio is None else self.first_frame - self.first_audio
        span = None if self.first_frame is None or self.last_frame is None else self.last_frame - self.first_frame
        fps = (self.frames - 1) / span if span and self.frames > 1 else None
        return {"type": "end", "frames": self.frames, "dropped_frames": self.dropped_frames,
                "first_frame_latency_s": None if latency is None else round(latency, 4),
                "fps": None if fps is None else round(fps, 3), "max_pending_frames": self.max_pending_frames}


def event_message(kind: str, turn: int | None, **fields) -> str:
    """A continuous session's playback event: ``playback_started`` or ``playback_finished``."""
    return json.dumps({"type": kind, "turn": turn, **fields})


def continuous_summary(kind: str, sent: SentStats, played, max_queued_seconds: float) -> dict:
    """A continuous session's ``stats`` (after each reply) or closing ``end`` message: what the
    always-on session played (``played``: an :class:`iplap.LiveStats` snapshot, as its
    ``as_dict()`` says it) and what was sent (``sent``, the outbox's count: its ``frames`` are
    the frames sent)."""
    summary = sent.summary()
    del summary["first_frame_latency_s"]  # per turn here: latencies_s
    return {**played.as_dict(), **summary, "type": kind, "mode": "continuous",
            "max_queued_speech_s": max_queued_seconds}
