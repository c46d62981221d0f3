"""``iplap calibrate``: an fp32 bundle -> an int8, bf16 or fp16 bundle that passed the accuracy gate.

Steps (:func:`calibrate`):

1. record: run the fp32 pipeline (onnxruntime) on the calibration clips and keep every
   graph's real inputs; run it on the held-out clips and keep its faces and landmarks
   (:mod:`.record`);
2. for each backend, build the candidate graphs (onnxruntime: static QDQ; OpenVINO: NNCF;
   or the fp16 IR / the bf16 hint; :mod:`.candidates`) and render the held-out frames with them;
3. gate: compare with fp32 (:mod:`.evaluate`, :mod:`.gate`). Where it fails, graphs fall
   back to fp32 one at a time, the most sensitive first (each graph's sensitivity is the
   error of quantizing it alone), until the gate passes; with nothing left to quantize, it fails;
4. write the bundle (temporary folder, then one rename), with the recipe, the data's
   identity, the metrics and what was kept in fp32 in its manifest (:mod:`.manifest`). A
   failed gate writes nothing and raises :class:`GateError`.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..limits import Backend
from ..runtime.bundle import Bundle
from ..runtime.pipeline import Pipeline, PipelineConfig
from .bundle import check_destination, check_source, write_bundle
from .config import CalibrateConfig
from .evaluate import Evaluator
from .gate import BackendResult, GateError, UnverifiableError, calibrate_backend, check_executable, select_graphs
from .manifest import bundle_manifest, replacements
from .record import Recording, assign_roles, default_clips, record


@dataclass
class CalibrationResult:
    bundle: Bundle
    backends: dict[str, BackendResult]
    recording: dict
    seconds: float


def calibrate(config: CalibrateConfig) -> CalibrationResult:
    """Record, quantize, gate and write; raises :class:`GateError` (nothing written) when
    the gate fails."""
    start = time.perf_counter()
    source = Bundle.load(config.bundle)
    check_source(source)
    check_destination(Path(config.out_dir), config.overwrite)
    if config.recipe.precision in ("bf16", "fp16"):
        check_executable(config, source)
    if config.workdir is not None:
        Path(config.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="iplap-calibrate-", dir=config.workdir) as tmp:
        work = Path(tmp)
        clips = list(config.clips) or default_clips(work / "clips")
        clips = assign_roles(clips, config.budget.heldout_fraction)
        backends = config.backends(source)
        recorder = Backend.ONNXRUNTIME if Backend.ONNXRUNTIME in source.backends else Backend.OPENVINO
        fp32 = _pipeline(config, source, recorder)
        recording = record(fp32, clips, config.budget, work)
        results = _gate_backends(config, source, fp32, recording, work, backends)
        bundle = write_bundle(source, Path(config.out_dir), config.recipe.precision, replacements(results),
                              bundle_manifest(config, source, recording, results), overwrite=config.overwrite,
                              keep=backends)
    return CalibrationResult(bundle, results, recording.summary(), time.perf_counter() - start)


def _pipeline(config: CalibrateConfig, source: Bundle, backend: str) -> Pipeline:
    """The fp32 pipeline on ``backend``: what the candidates are measured against."""
    return Pipeline(source, PipelineConfig(backend=config.backend_config(backend), refs=config.refs))


def _gate_backends(config: CalibrateConfig, source: Bundle, fp32: Pipeline, recording: Recording,
                   work: Path, backends: tuple[Backend, ...]) -> dict[str, BackendResult]:
    """Each backend's gated candidates; the first backend that fails the gate raises :class:`GateError`."""
    results = {}
    for backend in backends:
        pipeline = fp32 if backend == fp32.config.backend.backend else _pipeline(config, source, backend)
        result = calibrate_backend(config, source, backend, Evaluator(pipeline, recording.heldout),
                                   recording, work / backend)
        if result.failures:  # no bundle can be written: stop before the next backend's work
            fell = f" after falling back {', '.join(s['graph'] for s in result.fallback)} to fp32" \
                if result.fallback else ""
            raise GateError(f"the {config.recipe.precision} graphs fail the accuracy gate on {backend}{fell}: "
                            f"{'; '.join(result.failures)} (held-out data, against fp32); nothing was written")
        results[backend] = result
    return results


__all__ = ["BackendResult", "CalibrateConfig", "CalibrationResult", "GateError", "UnverifiableError", "calibrate",
           "select_graphs"]
