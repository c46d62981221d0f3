"""What ``iplap bench`` measures: its :class:`BenchConfig`, the configurations of the grid
(:class:`Case`, :func:`grid_cases`), and what measuring one gives (:class:`CaseResult`,
:class:`Accuracy`, or :class:`Skipped` for a measurement that was not made)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import IplapError
from ..limits import BACKENDS, DEFAULT_REFS, Backend
from . import BENCH_REFS
from .ceiling import CeilingConfig

STAGES = ("landmarks", "sketches", "flow_modulations", "flow_head", "flow", "warp", "translation", "blend", "decode", "encode")
#: Graphs that run once per distinct reference on every frame (batch N).
PER_REFERENCE_GRAPHS = ("flow_head",)
#: The original release's configuration, which every setting is also compared with.
ORIGINAL_REFS = DEFAULT_REFS


@dataclass(frozen=True)
class Skipped:
    """A measurement that was not made, and why (``results.json`` writes it as ``"skipped: why"``)."""

    reason: str = ""

    def __str__(self) -> str:
        return f"skipped: {self.reason}" if self.reason else "skipped"


@dataclass(frozen=True)
class BenchConfig:
    """What ``iplap bench`` measures.

    Attributes:
        bundles: model bundles to compare (one per precision); the fp32 one is the reference.
        out_dir: folder for results.json, results.md and the plots.
        backends: inference backends to run.
        device: OpenVINO device.
        refs: numbers of references N.
        threads: thread counts.
        frames: rendered frames timed per repeat.
        repeats: rounds: in each, every configuration runs once in a fresh process and
            times ``frames`` renders after ``warmup`` untimed ones.
        clip_seconds: length of the face clip made from the sample photo.
        torch_baseline: time the original torch renderer when torch is installed.
        renderer_checkpoint: the checkpoint for that baseline (default: stand-in weights,
            which cost the same: the time depends on the architecture, not the values).
        ceiling: measure the machine's convolution ceiling before the grid and after it.
        ceiling_config: the convolution stack of the ceiling and its repeats.
        budget: seconds per frame: recommend the most accurate setting within it.
        min_psnr: dB against the original configuration: recommend the fastest setting at or above it.
        command: the command line that started the run, written above the tables.
    """

    bundles: tuple[Path, ...]
    out_dir: Path
    backends: tuple[str, ...] = BACKENDS
    device: str = "CPU"
    refs: tuple[int, ...] = BENCH_REFS
    threads: tuple[int, ...] = (os.cpu_count() or 1,)
    frames: int = 4
    repeats: int = 3
    warmup: int = 1
    clip_seconds: float = 1.0
    torch_baseline: bool = True
    renderer_checkpoint: Path | None = None
    ceiling: bool = True
    ceiling_config: CeilingConfig = field(default_factory=CeilingConfig)
    budget: float | None = None
    min_psnr: float | None = None
    command: str | None = None

    def __post_init__(self):
        if self.budget is not None and self.min_psnr is not None:
            raise IplapError("give a time budget or a PSNR floor, not both")
        if self.budget is not None and self.budget <= 0:
            raise IplapError(f"the time budget must be positive, got {self.budget:g} s/frame")

    @classmethod
    def quick(cls, bundles, out_dir, **kwargs) -> "BenchConfig":
        """A fast grid for smoke tests: N=5, two frames, one repeat, a short ceiling."""
        values = dict(refs=(5,), frames=2, repeats=1, warmup=1, clip_seconds=0.4,
                      ceiling_config=CeilingConfig(layers=4, repeats=3, warmup=1, calibration_samples=2,
                                                   window_seconds=0.2, windows=1))
        values.update(kwargs)
        return cls(tuple(bundles), Path(out_dir), **values)


@dataclass(frozen=True)
class Case:
    bundle: str
    precision: str
    backend: str
    device: str
    refs: int
    threads: int
    name: str = ""  # the bundle's folder name, where two bundles have the same precision

    @property
    def label(self) -> str:
        return f"{self.setting} t={self.threads}"

    @property
    def setting(self) -> str:
        """The label without the thread count."""
        device = f" {self.device}" if self.backend == Backend.OPENVINO else ""
        name = f" ({self.name})" if self.name else ""
        return f"{self.backend}{device} {self.precision}{name} N={self.refs}"


@dataclass
class Accuracy:
    """Rendered faces and landmarks against a reference render of the same frames."""

    psnr: float  # worst frame, dB (inf: identical)
    ssim: float  # worst frame
    landmark_max_px: float
    landmark_mean_px: float


@dataclass
class CaseResult:
    case: Case
    seconds_per_frame: float
    seconds_min: float
    seconds_max: float
    stages: dict[str, float]
    first_frame_seconds: float
    prepare_seconds: float
    peak_rss_mb: float
    stages_min: dict[str, float] | None = None  # each stage's fastest frame
    distinct_refs: int | None = None  # the references whose flow is computed every frame
    psnr: float | None = None
    ssim: float | None = None
    landmark_max_px: float | None = None
    landmark_mean_px: float | None = None
    vs_original: Accuracy | None = None
    graphs: dict[str, dict] | None = None  # PER_FRAME_GRAPHS: gmac, seconds, gmac_per_s, share of the ceiling
    speedup_vs_torch: float | None = None
    error: str | None = None
    outputs: str | None = None  # the npz of its faces and landmarks (this run only)


def grid_cases(config: BenchConfig, bundles: dict) -> tuple[list[Case], Case | None]:
    """Every configuration of the grid, and the original configuration (the fp32 bundle on
    onnxruntime at N=25 and the most threads; None without an fp32 bundle)."""
    precisions = [b.precision for b in bundles.values()]
    names = {path: Path(path).name if precisions.count(b.precision) > 1 else "" for path, b in bundles.items()}
    cases = [Case(path, b.precision, backend, config.device if backend == Backend.OPENVINO else "CPU", refs, threads,
                  names[path])
             for refs in config.refs for path, b in bundles.items() for backend in config.backends
             for threads in config.threads]
    fp32 = fp32_bundle(bundles)
    original = Case(fp32, "fp32", Backend.ONNXRUNTIME, "CPU", ORIGINAL_REFS, max(config.threads), names[fp32]) \
        if fp32 else None
    return cases, original


def fp32_bundle(bundles: dict) -> str | None:
    """The path of the fp32 bundle (the reference), if one was given."""
    return next((p for p, b in bundles.items() if b.precision == "fp32"), None)
