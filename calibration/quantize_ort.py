"""onnxruntime: static QDQ quantization of one ONNX graph from its recorded inputs.

The graph is first rewritten (:mod:`.rewrite`, the recipe's ``rewrites``: the same
function in a form that runs faster). The result keeps the graph's inputs, outputs and
node names; onnxruntime fuses each DequantizeLinear -> Conv -> QuantizeLinear into an
integer convolution when it loads it.
Weights: int8, per output channel (symmetric); activations: uint8, per tensor
(asymmetric), the U8S8 pairing that onnxruntime's x86 integer kernels run fastest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from .recipe import GraphRecipe, OrtOptions
from .record import SampleStore

log = logging.getLogger(__name__)


@dataclass
class QuantizedGraph:
    """A quantized graph file and what was done to it."""

    graph: str
    path: Path  # .onnx, or the IR's .xml
    excluded: list[str]  # node names kept in float
    quantized_ops: int  # multiply-add ops that became integer
    seconds: float

    def to_dict(self) -> dict:
        return {"excluded_nodes": self.excluded, "quantized_ops": self.quantized_ops,
                "seconds": round(self.seconds, 1)}


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a sample store."""

    def __init__(self, store: SampleStore):
        self._samples = iter(store)

    def get_next(self):
        return next(self._samples, None)


class _DropQuantizerChatter(logging.Filter):
    """onnxruntime's quantizer logs advice through the root logger ("Please consider
    pre-processing", "Expected bias ... to be an initializer"); keep it at debug level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "onnxruntime" in record.pathname and record.levelno < logging.ERROR:
            log.debug("onnxruntime: %s", record.getMessage())
            return False
        return True


@contextlib.contextmanager
def quiet_quantizer():
    root = logging.getLogger()
    chatter = _DropQuantizerChatter()
    root.addFilter(chatter)
    try:
        yield
    finally:
        root.removeFilter(chatter)


def quantize_onnx(source: Path, dest: Path, store: SampleStore, recipe: GraphRecipe, options: OrtOptions,
                  metadata: dict | None = None) -> QuantizedGraph:
    """Quantize the ONNX graph ``source`` into ``dest`` (QDQ), calibrated on ``store``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from .rewrite import rewrite_onnx

    start = time.perf_counter()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if options.rewrites:
        rewritten = dest.with_name(f"{dest.stem}.rewritten.onnx")
        counts = rewrite_onnx(source, rewritten, options.rewrites)
        log.debug("%s rewritten for onnxruntime: %s", store.graph, counts)
        source = rewritten
    model = onnx.load(str(source))
    names = [n.name for n in model.graph.node if n.op_type in options.op_types]
    excluded = recipe.excluded(names)
    op_types = list(options.op_types)
    if options.shuffle_in_int8:
        shuffles, float_fed = _shuffles(model, options.op_types, excluded)
        op_types.append("DepthToSpace")
        excluded_all = excluded + [n for n in shuffles if n in float_fed or recipe.excluded([n])]
    else:
        excluded_all = excluded
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[options.method]
    extra = {"WeightSymmetric": True, "ActivationSymmetric": False}
    if options.method == "percentile":
        extra["CalibPercentile"] = options.percentile
    if options.moving_average:
        extra["CalibMovingAverage"] = True
    with quiet_quantizer():
        quantize_static(model, str(dest), _Reader(store), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=op_types, per_channel=options.per_channel,
                        reduce_range=options.reduce_range, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=excluded_all, calibrate_method=method,
                        extra_options=extra)
    if options.rewrites:
        source.unlink()
    quantized = onnx.load(str(dest))
    _set_metadata(quantized, {**(metadata or {}), "precision": "int8",
                              "quantization": json.dumps({"tool": "onnxruntime.quantization.quantize_static",
                                                          "excluded_nodes": excluded})})
    onnx.save(quantized, str(dest))
    # A float op is quantized when a DequantizeLinear of a weight initializer feeds it.
    initializers = {i.name for i in quantized.graph.initializer}
    dequantized_weights = {n.output[0] for n in quantized.graph.node
                           if n.op_type == "DequantizeLinear" and n.input[0] in initializers}
    count = sum(1 for n in quantized.graph.node if n.op_type in options.op_types
                and any(i in dequantized_weights for i in n.input[1:2]))
    seconds = time.perf_counter() - start
    log.info("quantized %s for onnxruntime: %d of %d ops int8, %d kept fp32 (%.1f s)", store.graph, count,
             len(names), len(excluded), seconds)
    return QuantizedGraph(store.graph, dest, excluded, count, seconds)


def _shuffles(model, op_types: tuple[str, ...], excluded: list[str]) -> tuple[list[str], set[str]]:
    """The DepthToSpace nodes, and those among them whose input does not come straight from a
    quantized op (quantizing those would add a rounding step to a float path)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    shuffles = [n for n in model.graph.node if n.op_type == "DepthToSpace"]
    float_fed = set()
    for node in shuffles:
        producer = producers.get(node.input[0])
        if producer is None or producer.op_type not in op_types or producer.name in excluded:
            float_fed.add(node.name)
    return [n.name for n in shuffles], float_fed


def _set_metadata(model, props: dict) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for key, value in props.items():
        entry = existing.get(key) or model.metadata_props.add()
        entry.key, entry.value = key, str(value)
