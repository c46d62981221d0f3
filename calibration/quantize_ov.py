"""OpenVINO: NNCF post-training quantization of one IR, and fp16 weight compression.

``nncf.quantize`` inserts FakeQuantize operations into the fp32 IR, with ranges from the
recorded inputs (an ``nncf.Dataset`` over the sample store). The IR keeps its inputs,
outputs and names. OpenVINO's CPU plugin runs the quantized convolutions in int8 and
leaves the excluded layers in the inference precision (the manifest asks for f32).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path

from ..telemetry import decline_unless_chosen, import_openvino
from .quantize_ort import QuantizedGraph
from .recipe import GraphRecipe, NncfOptions
from .record import SampleStore

log = logging.getLogger(__name__)

#: Ops that NNCF quantizes through their weights: the ones that do the multiply-adds.
WEIGHTED_OPS = ("Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData")


@contextlib.contextmanager
def _nncf_output_to_stderr():
    """NNCF draws its progress bars on stdout and logs each step at INFO: progress goes to
    stderr here, and its log only at warning level or above."""
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        nncf_log.setLevel(level)


def quantize_ir(source: Path, dest: Path, store: SampleStore, recipe: GraphRecipe, options: NncfOptions,
                metadata: dict | None = None) -> QuantizedGraph:
    """Quantize the IR ``source`` (.xml) into ``dest`` (.xml + .bin), calibrated on ``store``."""
    decline_unless_chosen()  # before nncf's first import: it asks for telemetry consent then
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    ov = import_openvino()
    start = time.perf_counter()
    model = ov.Core().read_model(str(source))
    weighted = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in WEIGHTED_OPS]
    excluded = recipe.excluded(weighted)
    # A Conv's bias Add carries the Conv's ONNX name: ignore it too, so that NNCF puts no
    # quantizer between an excluded convolution and its bias.
    ignored = excluded + [op.get_friendly_name() for op in model.get_ordered_ops()
                          if op.get_type_name() not in WEIGHTED_OPS + ("Parameter", "Result", "Constant")
                          and recipe.excluded([op.get_friendly_name()])]
    overflow = {"disable": OverflowFix.DISABLE, "first_layer": OverflowFix.FIRST_LAYER,
                "enable": OverflowFix.ENABLE}[options.overflow_fix]
    advanced = AdvancedQuantizationParameters(overflow_fix=overflow,
                                              disable_bias_correction=not options.fast_bias_correction)
    preset = {"mixed": nncf.QuantizationPreset.MIXED,
              "performance": nncf.QuantizationPreset.PERFORMANCE}[options.preset]
    with _nncf_output_to_stderr():
        quantized = nncf.quantize(
            model, nncf.Dataset(store), preset=preset, target_device=nncf.TargetDevice.CPU, subset_size=len(store),
            fast_bias_correction=True, model_type=nncf.ModelType.TRANSFORMER if recipe.transformer else None,
            ignored_scope=nncf.IgnoredScope(names=ignored, types=list(options.float_types), validate=False),
            advanced_parameters=advanced)
    for key, value in {**(metadata or {}), "precision": "int8"}.items():
        quantized.set_rt_info(str(value), ["iplap", key])
    dest.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(dest), compress_to_fp16=False)  # fp32 for what stays float
    count = _quantized_weighted_ops(quantized)
    seconds = time.perf_counter() - start
    log.info("quantized %s for openvino: %d of %d ops int8, %d kept fp32 (%.1f s)", store.graph, count,
             len(weighted), len(excluded), seconds)
    return QuantizedGraph(store.graph, dest, excluded, count, seconds)


def rewritten_ir(onnx_source: Path, dest: Path, rewrites: tuple[str, ...]) -> Path:
    """The IR of the ONNX graph ``onnx_source`` after the exact ``rewrites`` (:mod:`.rewrite`),
    converted as ``iplap export`` converts it (fp32 weights)."""
    from .rewrite import rewrite_onnx

    ov = import_openvino()
    dest.parent.mkdir(parents=True, exist_ok=True)
    rewritten = dest.with_suffix(".onnx")
    counts = rewrite_onnx(onnx_source, rewritten, rewrites)
    log.debug("%s rewritten for openvino: %s", onnx_source.name, counts)
    ov.save_model(ov.convert_model(str(rewritten)), str(dest), compress_to_fp16=False)
    rewritten.unlink()
    return dest


def _quantized_weighted_ops(model) -> int:
    """Weighted ops whose weight passes through a FakeQuantize (or the int8 constant +
    convert that NNCF compresses it to)."""
    count = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() not in WEIGHTED_OPS:
            continue
        producer = op.input_value(1).get_node()
        seen = 0
        while producer.get_type_name() in ("Convert", "Subtract", "Multiply", "Reshape", "Transpose",
                                           "FakeQuantize") and seen < 6:
            if producer.get_type_name() == "FakeQuantize" or (
                    producer.get_type_name() == "Convert"
                    and producer.input_value(0).get_element_type().get_type_name() in ("i8", "u8")):
                count += 1
                break
            producer = producer.input_value(0).get_node()
            seen += 1
    return count


def compress_ir_fp16(source: Path, dest: Path, metadata: dict | None = None) -> Path:
    """The IR with its weights stored as fp16 (``compress_to_fp16=True``); on Intel GPUs it runs in f16."""
    ov = import_openvino()

    model = ov.Core().read_model(str(source))
    for key, value in {**(metadata or {}), "precision": "fp16"}.items():
        model.set_rt_info(str(value), ["iplap", key])
    dest.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(dest), compress_to_fp16=True)
    return dest
