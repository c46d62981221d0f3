"""Timing rendered frames while the pipeline streams: shared by the benchmarks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np


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
