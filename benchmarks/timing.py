"""Timing rendered frames while the pipeline streams: shared by the benchmarks."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def _status_mb(field: str) -> float | None:
    """A memory figure of /proc/self/status (Linux), MB; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """This process's resident memory now, MB (``VmRSS``; NaN where there is no /proc)."""
    value = _status_mb("VmRSS")
    return float("nan") if value is None else value


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB.

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this address space.
    ``ru_maxrss`` is not used there: it survives ``execve``, so a child process started by a
    large parent reports the parent's size at fork time as its own peak.
    """
    value = _status_mb("VmHWM")
    if value is not None:
        return value
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if peak > 2**31 else peak / 1024  # bytes on macOS, KiB elsewhere


@dataclass
class RenderTimes:
    walls: list[float] = field(default_factory=list)  # seconds per timed render
    stages: list[dict[str, float]] = field(default_factory=list)  # per timed render, encode included
    first_frame_seconds: float | None = None  # from the start of streaming to the first frame
    faces: list[np.ndarray] = field(default_factory=list)  # the renderer's faces of the timed renders
    contents: list[np.ndarray] = field(default_factory=list)  # their predicted landmarks


def time_renders(pipeline, avatar, wav: np.ndarray, warmup: int, count: int, writer=None,
                 keep_outputs: bool = False) -> RenderTimes:
    """Stream ``wav``; time renders ``warmup .. warmup + count - 1`` (each frame encoded with ``writer``)."""
    times = RenderTimes()
    start = last = time.perf_counter()
    rendered = -1
    for frame in pipeline.stream(avatar, [wav]):
        if times.first_frame_seconds is None:
            times.first_frame_seconds = time.perf_counter() - start
        encode = 0.0
        if writer is not None:
            t0 = time.perf_counter()
            writer.write(frame.image)
            encode = time.perf_counter() - t0
        if frame.rendered == rendered:  # the first render fills three frames
            continue
        rendered = frame.rendered
        now = time.perf_counter()
        if rendered >= warmup:
            times.walls.append(now - last)
            times.stages.append({**frame.seconds, "encode": encode})
            if keep_outputs:
                times.faces.append(frame.face)
                times.contents.append(frame.content)
        last = now
        if rendered >= warmup + count - 1:
            break
    return times
