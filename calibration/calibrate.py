"""``iplap calibrate``: an fp32 bundle -> an int8, bf16 or fp16 bundle that passed the accuracy gate.

Steps (:func:`calibrate`):

1. record: run the fp32 pipeline (onnxruntime) on the calibration clips and keep every
   graph's real inputs; run it on the held-out clips and keep its faces and landmarks;
2. for each backend, build the candidate graphs (onnxruntime: static QDQ; OpenVINO: NNCF;
   or the fp16 IR / the bf16 hint) and render the held-out frames with them;
3. gate: compare with fp32 (:mod:`.evaluate`). Where it fails, graphs fall back to fp32 one
   at a time, the most sensitive first (each graph's sensitivity is the error of
   quantizing it alone), until the gate passes; with nothing left to quantize, it fails;
4. write the bundle (temporary folder, then one rename), with the recipe, the data's
   identity, the metrics and what was kept in fp32 in its manifest. A failed gate writes
   nothing and raises :class:`GateError`.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import IplapError
from ..runtime.backends import BackendConfig, InferenceModel, load_model, openvino_core
from ..runtime.bundle import GRAPH_BY_NAME, Bundle, package_versions
from ..runtime.constants import BACKENDS, DEFAULT_REFS
from ..runtime.pipeline import Pipeline, PipelineConfig
from .bundle import GraphFiles, check_destination, check_source, write_bundle
from .evaluate import Evaluator, Metrics
from .quantize_ort import QuantizedGraph
from .recipe import DataBudget, Gate, Recipe
from .record import GRAPH_NAMES, Clip, Recording, assign_roles, default_clips, record

log = logging.getLogger(__name__)

#: The OpenVINO inference precision hint each bundle precision is meant to run with (the
#: manifest's ``openvino_inference_precision``). int8 asks for f32 so that the layers kept
#: in float run as the gate measured them, also on CPUs whose default is bf16.
OPENVINO_HINT = {"int8": "f32", "bf16": "bf16", "fp16": "f16"}
#: An int8 bundle's float work (normalisation, modulation, activations, the layers kept in
#: float) may run in bf16 on OpenVINO where the CPU has it (AMX-BF16 or AVX512-BF16): kept
#: only if the whole bundle, run so, passes the gate and loses at most this much face PSNR
#: against the f32 hint's measurement.
MAX_FLOAT_HINT_LOSS_DB = 0.5


class GateError(IplapError):
    """The calibrated graphs are not accurate enough on the held-out data; nothing was written."""


class UnverifiableError(IplapError):
    """The requested precision cannot be executed here, so the gate cannot measure it."""


@dataclass(frozen=True)
class CalibrateConfig:
    """What ``iplap calibrate`` does.

    Attributes:
        bundle: the fp32 bundle (from ``iplap export``).
        out_dir: the calibrated bundle folder to create.
        clips: calibration clips; empty: the shipped samples (see :func:`default_clips`).
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
            and the face PSNR is within :data:`MAX_FLOAT_HINT_LOSS_DB` of f32's; the manifest
            records the measurement either way.
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
    float_hint: str | None = "bf16"

    def backend_config(self, backend: str, precision: str | None = "f32") -> BackendConfig:
        if backend == "onnxruntime":
            return BackendConfig("onnxruntime", threads=self.threads)
        return BackendConfig("openvino", device=self.device, threads=self.threads, precision=precision)


@dataclass
class Variant:
    """A graph's candidate for one backend: its file (None: the source file with another
    precision hint) and the loaded model."""

    graph: str
    model: InferenceModel
    info: QuantizedGraph | None = None
    files: GraphFiles = field(default_factory=GraphFiles)


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
    float_hint: dict | None = None  # int8 on OpenVINO: the bf16 trial for the float work (see _try_float_hint)

    def to_dict(self) -> dict:
        return {"metrics": None if self.metrics is None else {**self.metrics.to_dict(),
                                                               "executed_precision": self.executed_precision},
                "sensitivity": {g: m.to_dict() for g, m in self.sensitivity.items()},
                "fallback": self.fallback}


@dataclass
class CalibrationResult:
    bundle: Bundle
    backends: dict[str, BackendResult]
    recording: dict
    seconds: float


def tool_versions() -> dict[str, str]:
    return {"iplap": __version__, **package_versions(("onnx", "onnxruntime", "openvino", "nncf"))}


def executed_precision(model: InferenceModel) -> str:
    """The inference precision OpenVINO actually compiled ``model`` with ("f32", "bf16", "f16")."""
    compiled = getattr(model, "compiled", None)
    if compiled is None:
        return "f32"  # onnxruntime: float ops run in fp32
    return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


def check_executable(config: CalibrateConfig, source: Bundle) -> str:
    """For bf16/fp16: the precision OpenVINO runs here; refuses when it is not the one asked for."""
    precision = config.recipe.precision
    hint = OPENVINO_HINT[precision]
    model = load_model(source.graph_file("reference_encoder", "openvino"), config.backend_config("openvino", hint))
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


def calibrate(config: CalibrateConfig) -> CalibrationResult:
    """Record, quantize, gate and write; raises :class:`GateError` (nothing written) when
    the gate fails."""
    start = time.perf_counter()
    source = Bundle.load(config.bundle)
    check_source(source)
    check_destination(Path(config.out_dir), config.overwrite)
    recipe = config.recipe
    if recipe.precision in ("bf16", "fp16"):
        check_executable(config, source)
    if config.workdir is not None:
        Path(config.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="iplap-calibrate-", dir=config.workdir) as tmp:
        work = Path(tmp)
        clips = list(config.clips) or default_clips(work / "clips")
        clips = assign_roles(clips, config.budget.heldout_fraction)
        fp32 = Pipeline(source, PipelineConfig(backend=config.backend_config("onnxruntime"), refs=config.refs))
        recording = record(fp32, clips, config.budget, work)
        results = {}
        for backend in BACKENDS:
            pipeline = fp32 if backend == "onnxruntime" else Pipeline(
                source, PipelineConfig(backend=config.backend_config("openvino"), refs=config.refs))
            result = _calibrate_backend(config, source, backend, Evaluator(pipeline, recording.heldout),
                                        recording, work / backend)
            if result.failures:  # no bundle can be written: stop before the next backend's work
                fell = f" after falling back {', '.join(s['graph'] for s in result.fallback)} to fp32" \
                    if result.fallback else ""
                raise GateError(f"the {recipe.precision} graphs fail the accuracy gate on {backend}{fell}: "
                                f"{'; '.join(result.failures)} (held-out data, against fp32); nothing was written")
            results[backend] = result
        bundle = write_bundle(source, Path(config.out_dir), recipe.precision,
                              _replacements(results), _manifest(config, source, recording, results),
                              overwrite=config.overwrite)
    return CalibrationResult(bundle, results, recording.summary(), time.perf_counter() - start)


def _variant_maker(config: CalibrateConfig, source: Bundle, backend: str, recording: Recording,
                   work: Path) -> Callable[[str], Variant] | None:
    """How to build a graph's candidate for ``backend``; None: this precision leaves the backend's files as they are."""
    precision = config.recipe.precision
    recipe = config.recipe
    meta = {"source_bundle": source.bundle_id}
    if backend == "onnxruntime":
        if precision != "int8":
            return None
        from .quantize_ort import quantize_onnx

        def make(graph: str) -> Variant:
            info = quantize_onnx(source.graph_file(graph, backend), work / f"{graph}.int8.onnx",
                                 recording.stores[graph], recipe.graph(graph), recipe.ort, {**meta, "graph": graph})
            model = load_model(info.path, config.backend_config(backend), GRAPH_BY_NAME[graph].output_names)
            return Variant(graph, model, info, GraphFiles(onnx=info.path))

        return make
    hint = OPENVINO_HINT[precision]
    if precision == "int8":
        from .quantize_ov import quantize_ir, rewritten_ir

        def make(graph: str) -> Variant:
            ir = source.graph_file(graph, backend)
            if recipe.nncf.rewrites:  # from the bundle's ONNX graph, rewritten, converted as the exporter does
                ir = rewritten_ir(source.graph_file(graph, "onnxruntime"), work / "rewritten" / f"{graph}.xml",
                                  recipe.nncf.rewrites)
            info = quantize_ir(ir, work / f"{graph}.int8.xml", recording.stores[graph],
                               recipe.graph(graph), recipe.nncf, {**meta, "graph": graph})
            model = load_model(info.path, config.backend_config(backend, hint), GRAPH_BY_NAME[graph].output_names)
            return Variant(graph, model, info, GraphFiles(openvino=info.path))

        return make
    if precision == "fp16":
        from .quantize_ov import compress_ir_fp16

        def make(graph: str) -> Variant:
            path = compress_ir_fp16(source.graph_file(graph, backend), work / f"{graph}.fp16.xml",
                                    {**meta, "graph": graph})
            model = load_model(path, config.backend_config(backend, hint), GRAPH_BY_NAME[graph].output_names)
            return Variant(graph, model, None, GraphFiles(openvino=path))

        return make

    def make(graph: str) -> Variant:  # bf16: the same IR, run with the bf16 hint
        model = load_model(source.graph_file(graph, backend), config.backend_config(backend, hint),
                           GRAPH_BY_NAME[graph].output_names)
        return Variant(graph, model)

    return make


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


def _calibrate_backend(config: CalibrateConfig, source: Bundle, backend: str, evaluator: Evaluator,
                       recording: Recording, work: Path) -> BackendResult:
    make = _variant_maker(config, source, backend, recording, work)
    if make is None:
        log.info("%s: %s leaves the onnxruntime graphs in fp32", backend, config.recipe.precision)
        return BackendResult(backend, None, {}, "f32")
    cache: dict[str, Variant] = {}

    def variant(graph: str) -> Variant:
        if graph not in cache:
            cache[graph] = make(graph)
        return cache[graph]

    precision = config.recipe.precision
    # int8 follows the recipe's per-graph choice; bf16 and fp16 change every graph.
    candidates = config.recipe.quantized_graphs if precision == "int8" else list(GRAPH_NAMES)
    if not candidates:
        raise IplapError("the recipe quantizes no graph")
    result = BackendResult(backend, None, {}, "f32")

    def solo(graph: str) -> Metrics:
        if graph not in result.sensitivity:
            result.sensitivity[graph] = evaluator.evaluate({graph: variant(graph).model})
            log.info("%s sensitivity, %s alone in %s: %s", backend, graph, precision, result.sensitivity[graph])
        return result.sensitivity[graph]

    def evaluate(graphs: list[str]) -> Metrics:
        metrics = evaluator.evaluate({g: variant(g).model for g in graphs})
        log.info("%s, %s (%s): %s", backend, precision, ", ".join(graphs), metrics)
        return metrics

    if config.sensitivity:
        for graph in (GRAPH_NAMES if precision == "int8" else candidates):
            solo(graph)
    # bf16 is one inference hint for the whole bundle: a graph cannot fall back alone.
    selection = select_graphs(candidates, evaluate, solo, config.gate, config.fallback and precision != "bf16")
    result.metrics, result.failures, result.fallback = selection.metrics, selection.failures, selection.fallback
    result.variants = {g: variant(g) for g in selection.graphs}
    result.executed_precision = executed_precision(result.variants[selection.graphs[0]].model)
    if backend == "openvino" and precision == "int8" and config.float_hint and not result.failures:
        _try_float_hint(config, source, result, evaluator)
    return result


def _try_float_hint(config: CalibrateConfig, source: Bundle, result: BackendResult, evaluator: Evaluator) -> None:
    """Gate the int8 bundle again with its int8 graphs compiled with ``config.float_hint``
    (the float work around their int8 layers; the graphs left in fp32, the landmark
    generator first, keep f32: their landmarks are what the gate checks most tightly);
    keep it (``result`` then holds that measurement, and the manifest names the hint per
    graph) if the device runs it, the gate passes and the face PSNR loses at most
    :data:`MAX_FLOAT_HINT_LOSS_DB`. Records what was measured in ``result.float_hint``."""
    hint = config.float_hint
    backend_config = config.backend_config("openvino", hint)
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
    failures = config.gate.failures(metrics.to_dict())
    loss = result.metrics.face_psnr_db - metrics.face_psnr_db
    record["metrics"] = metrics.to_dict()
    if failures:
        record["because"] = "the gate fails: " + "; ".join(failures)
    elif loss > MAX_FLOAT_HINT_LOSS_DB:
        record["because"] = f"face PSNR {loss:.2f} dB below f32's (at most {MAX_FLOAT_HINT_LOSS_DB:g})"
    else:
        record.update(kept=True, because=f"passes the gate; face PSNR {-loss:+.2f} dB against f32's" if loss > 0
                      else "passes the gate; face PSNR no lower than f32's")
        result.metrics, result.executed_precision = metrics, executed
        for graph, variant in result.variants.items():
            variant.model = models[graph]
    log.info("openvino, int8 with %s float work: %s (%s)", hint, metrics, record["because"])
    result.float_hint = record


def _replacements(results: dict[str, BackendResult]) -> dict[str, GraphFiles]:
    files: dict[str, GraphFiles] = {}
    for result in results.values():
        for graph, v in result.variants.items():
            old = files.get(graph, GraphFiles())
            files[graph] = GraphFiles(onnx=v.files.onnx or old.onnx, openvino=v.files.openvino or old.openvino)
    return {g: f for g, f in files.items() if f.onnx is not None or f.openvino is not None}


def _graph_precision(precision: str, result: BackendResult, graph: str) -> str:
    if result.metrics is None or graph not in result.variants:
        return "fp32"
    return precision


def _manifest(config: CalibrateConfig, source: Bundle, recording: Recording,
              results: dict[str, BackendResult]) -> dict:
    recipe = config.recipe
    precision = recipe.precision
    graphs_entry = {}
    for graph in GRAPH_NAMES:
        reason = recipe.graph(graph).reason if precision == "int8" else f"{precision} on OpenVINO"
        fell_back = {b: step["because"] for b, r in results.items() for step in r.fallback if step["graph"] == graph}
        if fell_back:
            reason += "; kept fp32 by the gate on " + ", ".join(f"{b} ({why})" for b, why in fell_back.items())
        graphs_entry[graph] = {
            **{b: _graph_precision(precision, r, graph) for b, r in results.items()},
            "excluded_nodes": {b: r.variants[graph].info.excluded for b, r in results.items()
                               if graph in r.variants and r.variants[graph].info is not None},
            "reason": reason,
        }
    manifest_graphs = {name: dict(entry) for name, entry in source.manifest["graphs"].items()}
    for graph, entry in manifest_graphs.items():
        entry["precision"] = {b: graphs_entry[graph][b] for b in results}
        trial = results["openvino"].float_hint if "openvino" in results else None
        if trial and trial["kept"] and graph in trial["graphs"]:
            entry["openvino_inference_precision"] = trial["tried"]  # what Bundle.openvino_hint reads
    return {
        "precision": precision,
        "openvino_inference_precision": OPENVINO_HINT[precision],
        "graphs": manifest_graphs,
        "quantization": {
            "tool": f"iplap {__version__} calibrate",
            "versions": tool_versions(),
            "source_bundle": {"id": source.bundle_id, "path": str(Path(source.root).resolve()), "precision": "fp32"},
            "recipe": recipe.to_dict(),
            "graphs": graphs_entry,
            "gate": {**config.gate.to_dict(), "passed": True,
                     "measured_on": "held-out clips, end to end, against fp32"},
            "metrics": {b: r.to_dict()["metrics"] for b, r in results.items()},
            "sensitivity": {b: r.to_dict()["sensitivity"] for b, r in results.items() if r.sensitivity},
            "fallback": {b: r.fallback for b, r in results.items() if r.fallback},
            **({"openvino_float_hint": results["openvino"].float_hint}
               if "openvino" in results and results["openvino"].float_hint else {}),
            "calibration_data": {**recording.summary(), "budget": dataclasses.asdict(config.budget)},
            "machine": _machine(config.device),
        },
    }


def _machine(device: str) -> dict:
    """Where the gate was measured: integer and bf16 arithmetic differ between CPUs."""
    info = {"platform": platform.platform(), "machine": platform.machine(), "openvino_device": device}
    try:
        core = openvino_core()
        info["cpu"] = core.get_property("CPU", "FULL_DEVICE_NAME")
        info["openvino_cpu_capabilities"] = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception as exc:  # informational only; OpenVINO raises untyped errors
        info["cpu"] = f"unknown ({type(exc).__name__})"
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split()
        info["cpu_flags"] = sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni",
                                                             "avx512_bf16", "amx_bf16", "amx_int8"))
    except (OSError, IndexError):
        pass
    return info
