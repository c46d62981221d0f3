"""The accuracy gate on one backend: candidates against fp32, graphs falling back until it passes.

Where the quantized graphs together fail the gate, graphs return to fp32 one at a time, the
most sensitive first (each graph's sensitivity is the error of quantizing it alone), until
the gate passes; with one graph left that still fails, the gate fails. An int8 bundle that
passes on OpenVINO is then tried with its float work in bf16 (:func:`try_float_hint`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import IplapError
from ..limits import Backend
from ..runtime.backends import load_model, openvino_core
from ..runtime.bundle import GRAPH_BY_NAME, Bundle
from .candidates import Variant, VariantMaker, executed_precision, variant_maker
from .config import CalibrateConfig
from .evaluate import Evaluator, Metrics
from .recipe import F32_HINT, MAX_FLOAT_HINT_LOSS_DB, OPENVINO_HINT, Gate
from .record import GRAPH_NAMES, Recording

log = logging.getLogger(__name__)


class GateError(IplapError):
    """The calibrated graphs are not accurate enough on the held-out data; nothing was written."""


class UnverifiableError(IplapError):
    """The requested precision cannot be executed here, so the gate cannot measure it."""


@dataclass
class BackendResult:
    """The outcome on one backend."""

    backend: str
    metrics: Metrics | None  # None: nothing changed on this backend
    variants: dict[str, Variant]  # the graphs that are not fp32
    executed_precision: str
    sensitivity: dict[str, Metrics] = field(default_factory=dict)
    fallback: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    float_hint: dict | None = None  # int8 on OpenVINO: the bf16 trial for the float work (see try_float_hint)

    def to_dict(self) -> dict:
        return {"metrics": None if self.metrics is None else {**self.metrics.to_dict(),
                                                               "executed_precision": self.executed_precision},
                "sensitivity": {g: m.to_dict() for g, m in self.sensitivity.items()},
                "fallback": self.fallback}


def check_executable(config: CalibrateConfig, source: Bundle) -> str:
    """For bf16/fp16: the precision OpenVINO runs here; refuses when it is not the one asked for."""
    precision = config.recipe.precision
    hint = OPENVINO_HINT[precision]
    model = load_model(source.graph_file("reference_encoder", Backend.OPENVINO),
                       config.backend_config(Backend.OPENVINO, hint))
    executed = executed_precision(model)
    if executed != hint:
        try:
            device = openvino_core().get_property(config.device, "FULL_DEVICE_NAME")
        except RuntimeError:  # AUTO and other virtual devices have no name of their own
            device = config.device
        message = (f"OpenVINO runs {executed}, not {hint}, on {config.device} ({device}): this device has no "
                   f"{precision} arithmetic, so the gate would measure {executed} only")
        if not config.allow_unverified:
            where = "--device GPU (an Intel GPU)" if precision == "fp16" else "a CPU with AVX512_BF16 or AMX"
            raise UnverifiableError(f"{message}; calibrate where it runs ({where}), or pass --allow-unverified to "
                                    "write it with the f32 measurement")
        log.warning("%s (written anyway: --allow-unverified)", message)
    return executed


def _badness(metrics: Metrics, gate: Gate) -> float:
    """How far a solo-quantized graph is from the gate (> 1: it fails on its own)."""
    return max(gate.min_psnr / max(metrics.face_psnr_db, 1e-6),
               metrics.landmark_mean_px / max(gate.max_landmark_mean_px, 1e-9))


@dataclass
class Selection:
    """The graphs that stay quantized, and how the gate judged them."""

    graphs: list[str]
    metrics: Metrics
    failures: list[str]
    fallback: list[dict] = field(default_factory=list)


def select_graphs(candidates: list[str], evaluate: Callable[[list[str]], Metrics], solo: Callable[[str], Metrics],
                  gate: Gate, fallback: bool = True) -> Selection:
    """Quantize ``candidates`` together; while the gate fails (and ``fallback``), return the
    most sensitive graph (worst alone, by :func:`_badness`) to fp32. At least one graph stays:
    when even one alone fails, the gate fails."""
    current = list(candidates)
    metrics = evaluate(current)
    failures = gate.failures(metrics.to_dict())
    selection = Selection(current, metrics, failures)
    if not failures or not fallback:
        return selection
    order = sorted(current, key=lambda g: _badness(solo(g), gate), reverse=True)
    while failures and len(current) > 1:
        graph = order.pop(0)
        current = [g for g in current if g != graph]
        selection.fallback.append({"graph": graph, "kept": "fp32", "because": "; ".join(failures),
                                   "alone": solo(graph).to_dict()})
        log.info("%s falls back to fp32 (%s)", graph, "; ".join(failures))
        metrics = evaluate(current)
        failures = gate.failures(metrics.to_dict())
    selection.graphs, selection.metrics, selection.failures = current, metrics, failures
    return selection


class _Trial:
    """One backend's candidates, each built once, measured alone (kept in the result's
    sensitivity) or together."""

    def __init__(self, make: VariantMaker, evaluator: Evaluator, result: BackendResult, precision: str):
        self.make, self.evaluator, self.result, self.precision = make, evaluator, result, precision
        self.variants: dict[str, Variant] = {}

    def variant(self, graph: str) -> Variant:
        if graph not in self.variants:
            self.variants[graph] = self.make(graph)
        return self.variants[graph]

    def solo(self, graph: str) -> Metrics:
        sensitivity = self.result.sensitivity
        if graph not in sensitivity:
            sensitivity[graph] = self.evaluator.evaluate({graph: self.variant(graph).model})
            log.info("%s sensitivity, %s alone in %s: %s", self.result.backend, graph, self.precision,
                     sensitivity[graph])
        return sensitivity[graph]

    def together(self, graphs: list[str]) -> Metrics:
        metrics = self.evaluator.evaluate({g: self.variant(g).model for g in graphs})
        log.info("%s, %s (%s): %s", self.result.backend, self.precision, ", ".join(graphs), metrics)
        return metrics


def calibrate_backend(config: CalibrateConfig, source: Bundle, backend: str, evaluator: Evaluator,
                      recording: Recording, work: Path) -> BackendResult:
    """Build ``backend``'s candidates and gate them; ``failures`` in the result: the gate failed."""
    make = variant_maker(config, source, backend, recording, work)
    if make is None:
        log.info("%s: %s leaves the onnxruntime graphs in fp32", backend, config.recipe.precision)
        return BackendResult(backend, None, {}, F32_HINT)
    precision = config.recipe.precision
    # int8 follows the recipe's per-graph choice; bf16 and fp16 change every graph.
    candidates = config.recipe.quantized_graphs if precision == "int8" else list(GRAPH_NAMES)
    if not candidates:
        raise IplapError("the recipe quantizes no graph")
    result = BackendResult(backend, None, {}, F32_HINT)
    trial = _Trial(make, evaluator, result, precision)
    if config.sensitivity:
        for graph in (GRAPH_NAMES if precision == "int8" else candidates):
            trial.solo(graph)
    # bf16 is one inference hint for the whole bundle: a graph cannot fall back alone.
    selection = select_graphs(candidates, trial.together, trial.solo, config.gate,
                              config.fallback and precision != "bf16")
    result.metrics, result.failures, result.fallback = selection.metrics, selection.failures, selection.fallback
    result.variants = {g: trial.variant(g) for g in selection.graphs}
    result.executed_precision = executed_precision(result.variants[selection.graphs[0]].model)
    if backend == Backend.OPENVINO and precision == "int8" and config.float_hint and not result.failures:
        try_float_hint(config, result, evaluator)
    return result


def try_float_hint(config: CalibrateConfig, result: BackendResult, evaluator: Evaluator) -> None:
    """Gate the int8 bundle again with its int8 graphs compiled with ``config.float_hint``
    (the float work around their int8 layers; the graphs left in fp32, the landmark
    generator first, keep f32: their landmarks are what the gate checks most tightly);
    keep it (``result`` then holds that measurement, and the manifest names the hint per
    graph) if the device runs it, the gate passes and the face PSNR loses at most
    :data:`.recipe.MAX_FLOAT_HINT_LOSS_DB`. Records what was measured in ``result.float_hint``."""
    hint = config.float_hint
    backend_config = config.backend_config(Backend.OPENVINO, hint)
    models = {graph: load_model(v.files.openvino, backend_config, GRAPH_BY_NAME[graph].output_names)
              for graph, v in result.variants.items()}
    executed = executed_precision(next(iter(models.values())))
    record = {"tried": hint, "graphs": sorted(models), "f32_metrics": result.metrics.to_dict(), "kept": False}
    if executed != hint:
        record["because"] = f"OpenVINO runs {executed}, not {hint}, on {config.device}"
        log.info("openvino: %s for the float work not tried: %s", hint, record["because"])
        result.float_hint = record
        return
    metrics = evaluator.evaluate(models)
    record["metrics"] = metrics.to_dict()
    record["kept"], record["because"] = _float_hint_verdict(config.gate, result.metrics, metrics)
    if record["kept"]:
        result.metrics, result.executed_precision = metrics, executed
        for graph, variant in result.variants.items():
            variant.model = models[graph]
    log.info("openvino, int8 with %s float work: %s (%s)", hint, metrics, record["because"])
    result.float_hint = record


def _float_hint_verdict(gate: Gate, f32: Metrics, hinted: Metrics) -> tuple[bool, str]:
    """Whether the hinted measurement is kept, and why."""
    failures = gate.failures(hinted.to_dict())
    loss = f32.face_psnr_db - hinted.face_psnr_db
    if failures:
        return False, "the gate fails: " + "; ".join(failures)
    if loss > MAX_FLOAT_HINT_LOSS_DB:
        return False, f"face PSNR {loss:.2f} dB below f32's (at most {MAX_FLOAT_HINT_LOSS_DB:g})"
    if loss > 0:
        return True, f"passes the gate; face PSNR {-loss:+.2f} dB against f32's"
    return True, "passes the gate; face PSNR no lower than f32's"
