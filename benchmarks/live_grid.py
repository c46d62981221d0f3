"""What ``iplap bench --live`` measures: its :class:`LiveBenchConfig` and the configurations
of its grid (:class:`LiveCase`, :func:`live_cases`), with each avatar kind's accuracy
reference (:func:`reference_case`)."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import IplapError
from ..limits import BACKENDS, Backend
from . import AVATARS, LIVE_REFS
from .ceiling import CeilingConfig


@dataclass(frozen=True)
class LiveBenchConfig:
    """What ``iplap bench --live`` measures.

    Attributes:
        bundles: model bundles (the fp32 one, if given, is the accuracy reference).
        out_dir: folder for live.json and live.md.
        backends, device, threads, refs, avatars: the grid.
        ov_precisions: OpenVINO inference precision hints to run each OpenVINO case with
            (None: the bundle's own, as ``iplap run`` would; ``f32`` exact; ``bf16`` where the
            CPU has it: the float work around int8 layers).
        fuse_flow: OpenVINO: run flow_modulations and flow_head as one model
            (``BackendConfig.fuse_flow``, the default), as two, or both for comparison.
        workers: renders in flight in the live session (``LiveConfig.workers``), the
            backend built for as many at once (``BackendConfig.streams``), the threads shared.
        frames: pictures timed without a clock, after the first render.
        realtime_seconds: length of the turn played on the wall clock.
        repeats: rounds (every configuration once per round, in a fresh process).
        clip_seconds: length of the face video made from the sample photo.
        ceiling, ceiling_config: the convolution ceiling, before and after the grid.
        inbetween: what frames between renders show on the clock (``LiveConfig.inbetween``):
            each mode is a configuration of its own.
        soak_seconds: after the grid, run each avatar's live choice for this long as an
            agent would (:func:`~.live_measure.soak_live`: replies, gaps, interruptions) and
            report its memory and latencies (0: no soak).
        command: the command line, written above the tables.
    """

    bundles: tuple[Path, ...]
    out_dir: Path
    backends: tuple[str, ...] = BACKENDS
    device: str = "CPU"
    threads: tuple[int, ...] = (os.cpu_count() or 1,)
    refs: tuple[int, ...] = LIVE_REFS
    avatars: tuple[str, ...] = AVATARS
    ov_precisions: tuple[str | None, ...] = (None,)
    fuse_flow: tuple[bool, ...] = (True,)
    workers: tuple[int, ...] = (1,)
    inbetween: tuple[str, ...] = ("warp",)
    frames: int = 12
    realtime_seconds: float = 3.0
    repeats: int = 2
    clip_seconds: float = 1.0
    ceiling: bool = True
    ceiling_config: CeilingConfig = field(default_factory=CeilingConfig)
    soak_seconds: float = 0.0
    command: str | None = None

    def __post_init__(self):
        unknown = [a for a in self.avatars if a not in AVATARS]
        if unknown:
            raise IplapError(f"unknown avatar kind {unknown[0]!r}: choose {' and/or '.join(AVATARS)}")
        if self.frames < 2:
            raise IplapError(f"the live benchmark times at least 2 frames, got {self.frames}")

    @classmethod
    def quick(cls, bundles, out_dir, **kwargs) -> LiveBenchConfig:
        """A smoke run: N=1, 3 timed frames, a 1 s turn on the clock, one round, a short ceiling."""
        values = dict(refs=(1,), frames=3, realtime_seconds=1.0, repeats=1, clip_seconds=0.4,
                      ceiling_config=CeilingConfig(layers=2, channels=64, repeats=3, warmup=1, window_seconds=0.2,
                                                   windows=1,
                                                   calibration_samples=2))
        values.update(kwargs)
        return cls(tuple(bundles), Path(out_dir), **values)


@dataclass(frozen=True)
class LiveCase:
    bundle: str
    precision: str
    backend: str
    device: str
    threads: int
    avatar: str  # photo or video
    refs: int
    hint: str | None = None  # OpenVINO inference precision hint (None: the bundle's)
    name: str = ""  # the bundle's folder name, where two bundles share a precision
    workers: int = 1  # renders in flight
    fuse_flow: bool = True  # OpenVINO: flow_modulations + flow_head as one model
    inbetween: str = "warp"  # LiveConfig.inbetween on the clock

    @property
    def label(self) -> str:
        openvino = self.backend == Backend.OPENVINO
        device = f" {self.device}" if openvino else ""
        device += "" if self.fuse_flow or not openvino else " unfused"
        hint = f" {self.hint}" if self.hint else ""
        name = f" ({self.name})" if self.name else ""
        workers = f" x{self.workers}" if self.workers > 1 else ""
        return (f"{self.avatar} {self.backend}{device} {self.precision}{hint}{name} N={self.refs} "
                f"t={self.threads}{workers} {self.inbetween}")

    @property
    def ceiling_precision(self) -> str:
        return "int8" if self.precision == "int8" else "fp32"


def live_cases(config: LiveBenchConfig, bundles: dict) -> list[LiveCase]:
    precisions = [b.precision for b in bundles.values()]
    names = {p: Path(p).name if precisions.count(b.precision) > 1 else "" for p, b in bundles.items()}
    cases = []
    for avatar in config.avatars:
        for refs in config.refs:
            for path, b in bundles.items():
                for backend in config.backends:
                    # The hints, the fusion and the device are OpenVINO's; onnxruntime runs once, on the CPU.
                    openvino = backend == Backend.OPENVINO
                    hints = config.ov_precisions if openvino else (None,)
                    fusions = config.fuse_flow if openvino else (True,)
                    device = config.device if openvino else "CPU"
                    for hint, fuse, threads, workers, mode in itertools.product(hints, fusions, config.threads,
                                                                                config.workers, config.inbetween):
                        cases.append(LiveCase(path, b.precision, backend, device, threads, avatar, refs,
                                              hint, names[path], workers, fuse, mode))
    return cases


def reference_case(cases: list[LiveCase], avatar: str) -> LiveCase | None:
    """The accuracy reference for an avatar kind: fp32 on onnxruntime, the largest N, the most threads."""
    fp32 = [c for c in cases if c.avatar == avatar and c.precision == "fp32" and c.backend == Backend.ONNXRUNTIME]
    return max(fp32, key=lambda c: (c.refs, c.threads), default=None)


__all__ = ["AVATARS", "LiveBenchConfig", "LiveCase", "live_cases", "reference_case"]
