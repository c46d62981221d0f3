"""Each graph's candidate for one backend: the quantized, compressed or re-hinted graph, loaded.

onnxruntime: static QDQ (int8 only; bf16 and fp16 leave its graphs fp32). OpenVINO: NNCF
(int8, from the bundle's IR, or from its ONNX graph rewritten where the recipe says so),
the IR with fp16 weights (fp16), or the same IR run with the bf16 hint (bf16).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..limits import Backend
from ..runtime.backends import InferenceModel, load_model
from ..runtime.bundle import GRAPH_BY_NAME, Bundle
from .bundle import GraphFiles
from .config import CalibrateConfig
from .quantize_ort import QuantizedGraph
from .recipe import F32_HINT, OPENVINO_HINT
from .record import Recording

#: Builds one graph's candidate, by graph name.
VariantMaker = Callable[[str], "Variant"]


@dataclass
class Variant:
    """A graph's candidate for one backend: its file (None: the source file with another
    precision hint) and the loaded model."""

    graph: str
    model: InferenceModel
    info: QuantizedGraph | None = None
    files: GraphFiles = field(default_factory=GraphFiles)


def executed_precision(model: InferenceModel) -> str:
    """The inference precision OpenVINO actually compiled ``model`` with (one of
    :data:`iplap.limits.INFERENCE_PRECISIONS`)."""
    compiled = getattr(model, "compiled", None)
    if compiled is None:
        return F32_HINT  # onnxruntime: float ops run in fp32
    return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


def variant_maker(config: CalibrateConfig, source: Bundle, backend: str, recording: Recording,
                  work: Path) -> VariantMaker | None:
    """How to build a graph's candidate for ``backend``; None: this precision leaves the backend's files as they are."""
    precision = config.recipe.precision
    if backend == Backend.ONNXRUNTIME:
        return _ort_int8(config, source, recording, work) if precision == "int8" else None
    if precision == "int8":
        return _openvino_int8(config, source, recording, work)
    if precision == "fp16":
        return _openvino_fp16(config, source, work)
    return _openvino_hinted(config, source)


def _load(path: Path, config: CalibrateConfig, backend: str, graph: str, hint: str | None = F32_HINT):
    return load_model(path, config.backend_config(backend, hint), GRAPH_BY_NAME[graph].output_names)


def _meta(source: Bundle, graph: str) -> dict:
    return {"source_bundle": source.bundle_id, "graph": graph}


def _ort_int8(config: CalibrateConfig, source: Bundle, recording: Recording, work: Path) -> VariantMaker:
    from .quantize_ort import quantize_onnx

    recipe, backend = config.recipe, Backend.ONNXRUNTIME

    def make(graph: str) -> Variant:
        info = quantize_onnx(source.graph_file(graph, backend), work / f"{graph}.int8.onnx",
                             recording.stores[graph], recipe.graph(graph), recipe.ort, _meta(source, graph))
        return Variant(graph, _load(info.path, config, backend, graph), info, GraphFiles(onnx=info.path))

    return make


def _openvino_int8(config: CalibrateConfig, source: Bundle, recording: Recording, work: Path) -> VariantMaker:
    from .quantize_ov import quantize_ir, rewritten_ir

    recipe, backend, hint = config.recipe, Backend.OPENVINO, OPENVINO_HINT["int8"]

    def make(graph: str) -> Variant:
        ir = source.graph_file(graph, backend)
        if recipe.nncf.rewrites:  # from the bundle's ONNX graph, rewritten, converted as the exporter does
            ir = rewritten_ir(source.graph_file(graph, Backend.ONNXRUNTIME), work / "rewritten" / f"{graph}.xml",
                              recipe.nncf.rewrites)
        info = quantize_ir(ir, work / f"{graph}.int8.xml", recording.stores[graph],
                           recipe.graph(graph), recipe.nncf, _meta(source, graph))
        return Variant(graph, _load(info.path, config, backend, graph, hint), info, GraphFiles(openvino=info.path))

    return make


def _openvino_fp16(config: CalibrateConfig, source: Bundle, work: Path) -> VariantMaker:
    from .quantize_ov import compress_ir_fp16

    backend, hint = Backend.OPENVINO, OPENVINO_HINT["fp16"]

    def make(graph: str) -> Variant:
        path = compress_ir_fp16(source.graph_file(graph, backend), work / f"{graph}.fp16.xml", _meta(source, graph))
        return Variant(graph, _load(path, config, backend, graph, hint), None, GraphFiles(openvino=path))

    return make


def _openvino_hinted(config: CalibrateConfig, source: Bundle) -> VariantMaker:
    """bf16: the same IR, run with the bf16 hint."""
    backend, hint = Backend.OPENVINO, OPENVINO_HINT[config.recipe.precision]

    def make(graph: str) -> Variant:
        return Variant(graph, _load(source.graph_file(graph, backend), config, backend, graph, hint))

    return make
