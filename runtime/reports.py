"""What renders and streams give back: :class:`Frame`, :class:`RenderReport`, and the
:class:`StageClock` that times their stages."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .constants import FIRST_RENDER_FRAMES, FPS


@dataclass
class Frame:
    """One output video frame."""

    index: int  # position in the output video (25 fps)
    image: np.ndarray  # (H, W, 3) uint8 BGR
    rendered: int  # which render produced it (constants.frames_of_render: the first fills 0, 1, 2)
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, for this render
    face: np.ndarray | None = None  # (3, 128, 128) float32: the renderer's output before paste-back
    content: np.ndarray | None = None  # (5, 2, 57): the predicted lip and jaw landmarks of the window
    passed_through: bool = False  # no face in this frame of the face video: left as it is
    inbetween: bool = False  # made from keyframes (runtime.keyframes), not by the renderer

    @property
    def time(self) -> float:
        return self.index / FPS


#: The renderer's graphs run once per frame, whose times add up to "renderer graphs" in reports.
PER_FRAME_GRAPHS = ("flow_modulations", "flow_head", "translation")
#: Stages that run several renderer graphs as one model (``BackendConfig.fuse_flow``), and those graphs.
FUSED_STAGES = {"flow": ("flow_modulations", "flow_head")}
#: Every stage name under which renderer graphs' time is reported.
RENDERER_STAGES = (*PER_FRAME_GRAPHS, *FUSED_STAGES)


@dataclass
class RenderReport:
    """What a render did. ``seconds`` covers every stage, the face's preparation included
    (decode, face, references) when it was not an avatar; the stages add up to about
    ``wall_seconds``."""

    path: Path | None
    frames: int
    seconds: dict[str, float]  # total per stage
    wall_seconds: float
    first_frame_seconds: float

    @property
    def seconds_per_frame(self) -> float:
        rendered = max(1, self.frames - (FIRST_RENDER_FRAMES - 1))  # the first render's frames count once
        return self.wall_seconds / rendered


class _StageTimer:
    def __init__(self, clock: StageClock, stage: str):
        self.clock, self.stage = clock, stage

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.clock.add(self.stage, time.perf_counter() - self.start)


class StageClock:
    """Accumulates seconds per named stage (one per render: not shared between threads)."""

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)

    def add(self, stage: str, seconds: float) -> None:
        self.totals[stage] += seconds

    def time(self, stage: str) -> _StageTimer:
        return _StageTimer(self, stage)

    def since(self, before: dict[str, float]) -> dict[str, float]:
        """The seconds per stage added since ``before`` (a copy of ``totals``), where any."""
        return {k: v - before.get(k, 0.0) for k, v in self.totals.items() if v - before.get(k, 0.0) > 0}


__all__ = ["FUSED_STAGES", "Frame", "PER_FRAME_GRAPHS", "RENDERER_STAGES", "RenderReport", "StageClock"]
