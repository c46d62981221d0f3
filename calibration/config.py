"""What ``iplap calibrate`` is asked to do (:class:`CalibrateConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import IplapError
from ..limits import DEFAULT_REFS, Backend, check_refs
from ..runtime.bundle import FORMAT_KEYS
from ..runtime.backends import BackendConfig
from .recipe import BF16_HINT, F32_HINT, DataBudget, Gate, Recipe
from .record import Clip


@dataclass(frozen=True)
class CalibrateConfig:
    """What ``iplap calibrate`` does.

    Attributes:
        bundle: the fp32 bundle (from ``iplap export``).
        out_dir: the calibrated bundle folder to create.
        clips: calibration clips; empty: the shipped samples (see :func:`.record.default_clips`).
        recipe: precision and what to quantize how (:class:`Recipe`).
        gate: accuracy thresholds (:class:`Gate`).
        budget: frames and samples used (:class:`DataBudget`).
        refs: N, the number of reference images (as the bundle will be used).
        threads: inference threads (0: all cores).
        device: OpenVINO device the openvino candidates are gated on.
        sensitivity: measure every graph's solo sensitivity and write it into the manifest
            (otherwise it is measured only when the gate fails and a graph must fall back).
        fallback: let graphs fall back to fp32 until the gate passes (off: the recipe as given).
        allow_unverified: write a bf16/fp16 bundle even where this machine cannot execute
            that precision (the gate then measures f32 compute only).
        overwrite: replace an existing bundle at ``out_dir``.
        workdir: folder for recorded samples and candidates (default: a temporary folder).
        float_hint: for an int8 bundle, the OpenVINO precision hint to try for its float
            work (``"bf16"``; None: keep f32). Kept where the device runs it, the gate passes
            and the face PSNR is within :data:`.recipe.MAX_FLOAT_HINT_LOSS_DB` of f32's; the
            manifest records the measurement either way.
    """

    bundle: Path
    out_dir: Path
    clips: tuple[Clip, ...] = ()
    recipe: Recipe = field(default_factory=Recipe)
    gate: Gate = field(default_factory=Gate)
    budget: DataBudget = field(default_factory=DataBudget)
    refs: int = DEFAULT_REFS
    threads: int = 0
    device: str = "CPU"
    sensitivity: bool = False
    fallback: bool = True
    allow_unverified: bool = False
    overwrite: bool = False
    workdir: Path | None = None
    float_hint: str | None = BF16_HINT
    #: The backends' formats to calibrate and keep (``"onnx"``, ``"openvino"``); None: all the
    #: source bundle holds. A box that runs one backend ships a bundle of that format only.
    formats: tuple[str, ...] | None = None

    def __post_init__(self):
        check_refs(self.refs)

    def backends(self, source) -> tuple[Backend, ...]:
        """The backends to calibrate: those of ``formats`` that the source bundle holds."""
        chosen = tuple(b for b in source.backends if self.formats is None or FORMAT_KEYS[b] in self.formats)
        if not chosen:
            raise IplapError(f"{source.root.name} holds no {' or '.join(self.formats)} graphs to calibrate "
                             f"(it holds {', '.join(FORMAT_KEYS[b] for b in source.backends)})")
        return chosen

    def backend_config(self, backend: str, precision: str | None = F32_HINT) -> BackendConfig:
        if backend == Backend.ONNXRUNTIME:
            return BackendConfig(Backend.ONNXRUNTIME, threads=self.threads)
        return BackendConfig(Backend.OPENVINO, device=self.device, threads=self.threads,
                             inference_precision=precision)
