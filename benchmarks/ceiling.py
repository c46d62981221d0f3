"""This machine's practical convolution throughput: the ceiling the renderer graphs are measured against.

A fixed stack of 3x3 convolutions the size of the renderer's largest layers (eight
256 -> 256 convolutions at 64 x 64, each followed by a ReLU, batch 1) is built as an ONNX model in code,
then quantized exactly as ``iplap calibrate`` quantizes the bundles' graphs (onnxruntime:
``quantize_onnx`` with the default :class:`~iplap.calibration.recipe.OrtOptions`; OpenVINO:
``quantize_ir``, NNCF with the default :class:`~iplap.calibration.recipe.NncfOptions`), and
timed on both backends, fp32 and int8, at each thread count, through the runtime's own
model factory (:func:`iplap.runtime.backends.load_model`), so the sessions have the
pipeline's settings. The configurations take turns call by call, so that other load on the
machine slows them alike.

The result is GMAC/s (10^9 multiply-adds per second) per backend, precision and thread
count: what a graph made only of such convolutions would reach here. A renderer graph's
share of it says how much of its time goes to anything else (normalisation, element-wise
arithmetic, layout changes, quantize/dequantize steps, layers kept in float).

Needs onnx and nncf (the ``calibrate`` extra).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class CeilingConfig:
    """The convolution stack and how it is timed.

    Eight layers: with fewer, the fixed cost of each run (quantizing the float input,
    reordering it into the backend's blocked layout, and back at the end) weighs on the
    figure; it is measured, on a machine with AMX, to keep rising up to about eight.

    Attributes:
        layers: 3x3 convolutions in the stack.
        channels: input and output channels of each.
        size: height and width of the feature map.
        batch: images per run.
        repeats: timed runs per configuration (after ``warmup`` untimed ones); the fastest
            sets the burst ceiling (other load on the machine only ever slows a run).
        window_seconds, windows: the sustained ceiling: runs back to back for this long,
            ``windows`` times per configuration (taking turns window by window); the best
            window's rate. A shared host has fast and slow phases: one run of the stack
            (10-30 ms) can fall in a fast one that no stream lasting seconds sees
            throughout (docs/bench/live_grid.json, a Xeon with AMX, OpenVINO int8:
            fastest run 1741 GMAC/s, median run 771, best 2 s window 856), so a live
            stream, timed over rounds of seconds, is compared with windows as long (0: no
            sustained ceiling).
        calibration_samples: random inputs the int8 ranges are calibrated on.
    """

    layers: int = 8
    channels: int = 256
    size: int = 64
    batch: int = 1
    repeats: int = 15
    warmup: int = 2
    calibration_samples: int = 4
    window_seconds: float = 2.0
    windows: int = 3

    @property
    def gmac(self) -> float:
        """Multiply-adds of one run, in 10^9."""
        return self.batch * self.layers * self.size ** 2 * self.channels ** 2 * 9 / 1e9


def conv_stack_onnx(path: Path, config: CeilingConfig, seed: int = 0) -> Path:
    """Write the fp32 stack as ONNX: input ``x`` (B, C, S, S) -> output ``y``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    b, c, s = config.batch, config.channels, config.size
    nodes, initializers = [], []
    current = "x"
    for k in range(config.layers):
        # He-scaled weights keep the activations' range steady through the stack.
        weight = (rng.standard_normal((c, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
        bias = (rng.standard_normal(c) * 0.01).astype(np.float32)
        initializers += [numpy_helper.from_array(weight, f"conv{k}.weight"),
                         numpy_helper.from_array(bias, f"conv{k}.bias")]
        out = "y" if k == config.layers - 1 else f"relu{k}"
        nodes += [helper.make_node("Conv", [current, f"conv{k}.weight", f"conv{k}.bias"], [f"conv{k}"],
                                   name=f"/conv{k}/Conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"conv{k}"], [out], name=f"/relu{k}/Relu")]
        current = out
    graph = helper.make_graph(nodes, "conv_stack",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [b, c, s, s])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [b, c, s, s])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="iplap.ceiling")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_models(folder: Path, config: CeilingConfig) -> dict[tuple[str, str], Path]:
    """The stack for each (backend, precision): fp32 and int8 ONNX, fp32 and int8 IR. The
    int8 files are made with the bundles' quantizers and their default options."""
    from ..calibration.quantize_ort import quantize_onnx
    from ..calibration.quantize_ov import quantize_ir
    from ..calibration.recipe import GraphRecipe, NncfOptions, OrtOptions
    from ..calibration.record import SampleStore
    from ..telemetry import import_openvino

    ov = import_openvino()
    onnx_fp32 = conv_stack_onnx(folder / "stack.onnx", config)
    ir_fp32 = folder / "stack.xml"
    ov.save_model(ov.convert_model(str(onnx_fp32)), str(ir_fp32), compress_to_fp16=False)
    # Non-negative inputs, as the renderer's convolutions see after a (leaky) ReLU.
    store = SampleStore(folder / "samples", "conv_stack")
    rng = np.random.default_rng(1)
    for _ in range(config.calibration_samples):
        store.add({"x": rng.random((config.batch, config.channels, config.size, config.size), dtype=np.float32)})
    onnx_int8 = quantize_onnx(onnx_fp32, folder / "stack.int8.onnx", store, GraphRecipe(), OrtOptions()).path
    ir_int8 = quantize_ir(ir_fp32, folder / "stack.int8.xml", store, GraphRecipe(), NncfOptions()).path
    return {("onnxruntime", "fp32"): onnx_fp32, ("onnxruntime", "int8"): onnx_int8,
            ("openvino", "fp32"): ir_fp32, ("openvino", "int8"): ir_int8}


@dataclass
class CeilingResult:
    backend: str
    precision: str
    threads: int
    gmac: float  # per run
    seconds: float  # median per run
    seconds_min: float
    seconds_max: float
    sustained_gmac_per_s: float | None = None  # the best window of back-to-back runs

    @property
    def gmac_per_s(self) -> float:
        """The burst ceiling: from the fastest run."""
        return self.gmac / self.seconds_min

    def to_dict(self) -> dict:
        return {**asdict(self), "gmac_per_s": self.gmac_per_s}


def measure_ceiling(backends: tuple[str, ...], threads: tuple[int, ...], device: str = "CPU",
                    config: CeilingConfig | None = None, files: dict[tuple[str, str], Path] | None = None,
                    precisions: tuple[str, ...] = PRECISIONS) -> list[CeilingResult]:
    """Time the stack for every backend, precision and thread count (interleaved).

    ``files``: the models of :func:`build_models`, made once for several measurements (a
    benchmark measures the ceiling between its configurations too); made here if not given."""
    from ..runtime.backends import BackendConfig, load_model

    config = config or CeilingConfig()
    x = np.random.default_rng(2).random((config.batch, config.channels, config.size, config.size), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="iplap-ceiling-") as tmp:
        files = files or build_models(Path(tmp), config)
        keys = [(b, p, t) for b in backends for p in precisions for t in threads]
        models = {}
        for backend, precision, t in keys:
            backend_config = BackendConfig(backend, device=device if backend == "openvino" else "CPU", threads=t,
                                           precision="f32" if backend == "openvino" else None)
            models[backend, precision, t] = load_model(files[backend, precision], backend_config)
    times: dict[tuple, list[float]] = {k: [] for k in keys}
    for k in keys:
        for _ in range(config.warmup):
            models[k].run({"x": x})
    for _ in range(config.repeats):
        for k in keys:
            start = time.perf_counter()
            models[k].run({"x": x})
            times[k].append(time.perf_counter() - start)
    sustained = {k: [] for k in keys}
    for _ in range(config.windows if config.window_seconds > 0 else 0):
        for k in keys:
            sustained[k].append(config.gmac * _runs_for(models[k], x, config.window_seconds))
    results = [CeilingResult(b, p, t, config.gmac, statistics.median(times[b, p, t]), min(times[b, p, t]),
                             max(times[b, p, t]), max(sustained[b, p, t], default=None)) for b, p, t in keys]
    for r in results:
        log.info("ceiling %s %s t=%d: %.1f GMAC/s (burst), %s sustained", r.backend, r.precision, r.threads,
                 r.gmac_per_s, f"{r.sustained_gmac_per_s:.1f}" if r.sustained_gmac_per_s else "no")
    return results


def _runs_for(model, x: np.ndarray, seconds: float) -> float:
    """Runs per second of ``model`` run back to back for at least ``seconds``."""
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        model.run({"x": x})
        runs += 1
    return runs / elapsed
