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

A second stack, the **SPADE block** (``block="spade"``), is the renderer's own building
block at the same size: per layer a conditioning convolution (no activation, as in the
original), the gamma and beta convolutions on its output, instance norm of the main
input modulated as ``norm + norm * gamma + beta``, LeakyReLU(0.2) and the main
convolution: four convolutions and one modulation (the ratio of ``SPADELayer`` +
``SPADE``'s convolution in ``models/renderer.py``), quantized the same way. Timed in turn
with the plain stack, it says what the backend makes of the float work that every
renderer convolution carries: the rate a renderer graph could reach if everything but
that work were free. On OpenVINO its int8 model runs with the bf16 hint, as the int8
bundles' float work does where the calibration gate kept it (the CPU plugin falls back
to f32 where the CPU has no bf16).

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

from ..limits import Backend

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")
#: The stacks (``CeilingConfig.blocks``) and the convolutions in one layer of each.
BLOCK_CONVS = {"conv": 1, "spade": 4}
#: OpenVINO's inference precision hint per stack and precision (see the module docstring).
OPENVINO_HINTS = {("conv", "fp32"): "f32", ("conv", "int8"): "f32", ("spade", "fp32"): "f32", ("spade", "int8"): "bf16"}


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
        blocks: the stacks timed (in turn, call by call): ``"conv"`` (convolution + ReLU),
            ``"spade"`` (the renderer's SPADE block, see the module docstring), which has
            ``layers // 4`` layers (at least one), so as many convolutions.
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
    blocks: tuple[str, ...] = ("conv", "spade")

    def __post_init__(self):
        unknown = [b for b in self.blocks if b not in BLOCK_CONVS]
        if unknown or not self.blocks:
            raise ValueError(f"ceiling blocks must be among {', '.join(BLOCK_CONVS)}, got {self.blocks}")

    @classmethod
    def from_dict(cls, values: dict) -> CeilingConfig:
        """The config of ``dataclasses.asdict`` (or its JSON, where ``blocks`` is a list)."""
        return cls(**{**values, **({"blocks": tuple(values["blocks"])} if "blocks" in values else {})})

    def block_layers(self, block: str) -> int:
        """Layers of the ``block`` stack: as many convolutions as the plain stack has, or more."""
        return self.layers if block == "conv" else max(1, self.layers // BLOCK_CONVS[block])

    def block_gmac(self, block: str) -> float:
        """Multiply-adds of one run of the ``block`` stack, in 10^9."""
        convs = self.block_layers(block) * BLOCK_CONVS[block]
        return self.batch * convs * self.size ** 2 * self.channels ** 2 * 9 / 1e9

    @property
    def gmac(self) -> float:
        """Multiply-adds of one run of the plain stack, in 10^9."""
        return self.block_gmac("conv")

    def describe(self, block: str) -> str:
        c, s, n = self.channels, self.size, self.block_layers(block)
        if block == "conv":
            return f"{n} x Conv 3x3 {c}->{c} + ReLU at {s}x{s}, batch {self.batch}"
        return (f"{n} x SPADE block (conditioning, gamma, beta and main Conv 3x3 {c}->{c}, instance norm, "
                f"modulation, LeakyReLU) at {s}x{s}, batch {self.batch}")

    @staticmethod
    def input_names(block: str) -> tuple[str, ...]:
        """The graph inputs of the ``block`` stack (the keys of :meth:`inputs`)."""
        return ("x",) if block == "conv" else ("x", "cond")

    def inputs(self, block: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Random inputs of the ``block`` stack: non-negative, as the renderer's convolutions
        see after a (leaky) ReLU; the SPADE block's main input centred on zero (instance
        norm comes first), its conditioning image in [0, 1)."""
        shape = (self.batch, self.channels, self.size, self.size)
        if block == "conv":
            return {"x": rng.random(shape, dtype=np.float32)}
        return {"x": rng.standard_normal(shape, dtype=np.float32), "cond": rng.random(shape, dtype=np.float32)}


def conv_stack_onnx(path: Path, config: CeilingConfig, seed: int = 0, block: str = "conv") -> Path:
    """Write the fp32 ``block`` stack as ONNX: input ``x`` (B, C, S, S) (and ``cond`` for
    the SPADE block) -> output ``y``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    b, c, s = config.batch, config.channels, config.size
    nodes, initializers = [], []

    def conv(name: str, source: str) -> str:
        # He-scaled weights keep the activations' range steady through the stack.
        weight = (rng.standard_normal((c, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
        bias = (rng.standard_normal(c) * 0.01).astype(np.float32)
        initializers.extend([numpy_helper.from_array(weight, f"{name}.weight"),
                             numpy_helper.from_array(bias, f"{name}.bias")])
        nodes.append(helper.make_node("Conv", [source, f"{name}.weight", f"{name}.bias"], [name],
                                      name=f"/{name}/Conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        return name

    def op(kind: str, inputs: list[str], name: str, **attributes) -> str:
        nodes.append(helper.make_node(kind, inputs, [name], name=f"/{name}/{kind}", **attributes))
        return name

    current = "x"
    if block == "conv":
        for k in range(config.layers):
            current = op("Relu", [conv(f"conv{k}", current)], f"relu{k}")
    else:  # SPADELayer -> LeakyReLU -> conv, as models/renderer.py's SPADE
        initializers.extend([numpy_helper.from_array(np.ones(c, np.float32), "norm.scale"),
                             numpy_helper.from_array(np.zeros(c, np.float32), "norm.bias")])
        for k in range(config.block_layers(block)):
            hidden = conv(f"spade{k}/conv1", "cond")
            gamma, beta = conv(f"spade{k}/gamma", hidden), conv(f"spade{k}/beta", hidden)
            norm = op("InstanceNormalization", [current, "norm.scale", "norm.bias"], f"spade{k}/norm", epsilon=1e-5)
            scaled = op("Mul", [norm, gamma], f"spade{k}/scaled")
            modulated = op("Add", [op("Add", [norm, scaled], f"spade{k}/residual"), beta], f"spade{k}/modulated")
            current = conv(f"conv{k}", op("LeakyRelu", [modulated], f"spade{k}/act", alpha=0.2))
    nodes.append(helper.make_node("Identity", [current], ["y"], name="/output/Identity"))
    spec = [b, c, s, s]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, spec) for name in config.input_names(block)]
    graph = helper.make_graph(nodes, f"{block}_stack", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, spec)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="iplap.ceiling")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_models(folder: Path, config: CeilingConfig) -> dict[tuple[str, str, str], Path]:
    """Each stack of ``config.blocks`` for each (backend, precision): fp32 and int8 ONNX,
    fp32 and int8 IR, by (block, backend, precision). The int8 files are made with the
    bundles' quantizers and their default options."""
    from ..calibration.quantize_ort import quantize_onnx
    from ..calibration.quantize_ov import quantize_ir
    from ..calibration.recipe import GraphRecipe, NncfOptions, OrtOptions
    from ..calibration.record import SampleStore
    from ..telemetry import import_openvino

    ov = import_openvino()
    files = {}
    for block in config.blocks:
        onnx_fp32 = conv_stack_onnx(folder / f"{block}.onnx", config, block=block)
        ir_fp32 = folder / f"{block}.xml"
        ov.save_model(ov.convert_model(str(onnx_fp32)), str(ir_fp32), compress_to_fp16=False)
        store = SampleStore(folder / f"{block}-samples", f"{block}_stack")
        rng = np.random.default_rng(1)
        for _ in range(config.calibration_samples):
            store.add(config.inputs(block, rng))
        files[block, Backend.ONNXRUNTIME, "fp32"] = onnx_fp32
        files[block, Backend.ONNXRUNTIME, "int8"] = quantize_onnx(onnx_fp32, folder / f"{block}.int8.onnx", store,
                                                            GraphRecipe(), OrtOptions()).path
        files[block, Backend.OPENVINO, "fp32"] = ir_fp32
        files[block, Backend.OPENVINO, "int8"] = quantize_ir(ir_fp32, folder / f"{block}.int8.xml", store,
                                                       GraphRecipe(), NncfOptions()).path
    return files


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
    block: str = "conv"

    @property
    def gmac_per_s(self) -> float:
        """The burst ceiling: from the fastest run."""
        return self.gmac / self.seconds_min

    def to_dict(self) -> dict:
        return {**asdict(self), "gmac_per_s": self.gmac_per_s}


def measure_ceiling(backends: tuple[str, ...], threads: tuple[int, ...], device: str = "CPU",
                    config: CeilingConfig | None = None, files: dict[tuple[str, str, str], Path] | None = None,
                    precisions: tuple[str, ...] = PRECISIONS) -> list[CeilingResult]:
    """Time every stack of ``config.blocks`` for every backend, precision and thread count
    (interleaved, call by call).

    ``files``: the models of :func:`build_models`, made once for several measurements (a
    benchmark measures the ceiling between its configurations too); made here if not given."""
    from ..runtime.backends import BackendConfig, load_model

    config = config or CeilingConfig()
    feeds = {block: config.inputs(block, np.random.default_rng(2)) for block in config.blocks}
    with tempfile.TemporaryDirectory(prefix="iplap-ceiling-") as tmp:
        files = files or build_models(Path(tmp), config)
        keys = [(k, b, p, t) for k in config.blocks for b in backends for p in precisions for t in threads]
        models = {}
        for block, backend, precision, t in keys:
            openvino = backend == Backend.OPENVINO
            backend_config = BackendConfig(backend, device=device if openvino else "CPU", threads=t,
                                           inference_precision=OPENVINO_HINTS[block, precision] if openvino else None)
            models[block, backend, precision, t] = load_model(files[block, backend, precision], backend_config)
    times: dict[tuple, list[float]] = {k: [] for k in keys}
    for k in keys:
        for _ in range(config.warmup):
            models[k].run(feeds[k[0]])
    for _ in range(config.repeats):
        for k in keys:
            start = time.perf_counter()
            models[k].run(feeds[k[0]])
            times[k].append(time.perf_counter() - start)
    sustained = {k: [] for k in keys}
    for _ in range(config.windows if config.window_seconds > 0 else 0):
        for k in keys:
            sustained[k].append(config.block_gmac(k[0]) * _runs_for(models[k], feeds[k[0]], config.window_seconds))
    results = [CeilingResult(b, p, t, config.block_gmac(k), statistics.median(times[k, b, p, t]),
                             min(times[k, b, p, t]), max(times[k, b, p, t]), max(sustained[k, b, p, t], default=None),
                             block=k) for k, b, p, t in keys]
    for r in results:
        log.info("ceiling %s %s %s t=%d: %.1f GMAC/s (burst), %s sustained", r.block, r.backend, r.precision,
                 r.threads, r.gmac_per_s, f"{r.sustained_gmac_per_s:.1f}" if r.sustained_gmac_per_s else "no")
    return results


def ceiling_result(ceiling: dict, backend: str, precision: str, threads: int, block: str = "conv") -> dict | None:
    """The entry of a ceiling measurement (``measure_ceiling_run``'s or merged) for a backend,
    precision, thread count and stack; None where it has none. Entries without a block
    (measured before there were two stacks) are the plain stack's."""
    return next((e for e in ceiling.get("results", ()) if e["backend"] == backend and e["precision"] == precision
                 and e["threads"] == threads and e.get("block", "conv") == block), None)


def _runs_for(model, feeds: dict[str, np.ndarray], seconds: float) -> float:
    """Runs per second of ``model`` run back to back for at least ``seconds``."""
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        model.run(feeds)
        runs += 1
    return runs / elapsed
