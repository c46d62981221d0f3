"""Export one graph to ONNX and OpenVINO IR, and check both against PyTorch.

The TorchScript-based exporter (``dynamo=False``) is used on purpose: with torch pinned
to 2.13 it gives compact graphs of standard ops (Conv, InstanceNormalization,
DepthToSpace, LayerNormalization) with dynamic batch axes, and needs no onnxscript.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from . import OPSET
from ..errors import IplapError
from ..limits import Backend
from .graphs import ExportableGraph

log = logging.getLogger(__name__)

#: A converted graph passes when |ours - torch| <= ATOL + RTOL * |torch| everywhere.
ATOL, RTOL = 1e-4, 1e-4


class ExportCheckError(IplapError):
    """An exported graph does not compute what the PyTorch model computes."""


@dataclass
class GraphExport:
    name: str
    onnx: Path
    openvino: Path
    max_error: dict[str, float] = field(default_factory=dict)


def _as_tuple(value) -> tuple[torch.Tensor, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def export_onnx(graph: ExportableGraph, path: Path, example: tuple[torch.Tensor, ...], opset: int = OPSET,
                metadata: dict[str, str] | None = None) -> Path:
    import onnx

    spec = graph.spec
    dynamic = {t.name: {0: "batch"} for t in spec.inputs + spec.outputs if t.shape[0] == "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notes of the TorchScript exporter
        with torch.no_grad():
            torch.onnx.export(graph.module, example, str(path), input_names=spec.input_names,
                              output_names=spec.output_names, dynamic_axes=dynamic, opset_version=opset,
                              do_constant_folding=True, dynamo=False)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    props = {"producer": f"iplap {__version__}", "graph": spec.name, **(metadata or {})}
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    model.producer_name, model.producer_version = "iplap", __version__
    onnx.save(model, str(path))
    return path


def convert_openvino(onnx_path: Path, xml_path: Path, metadata: dict[str, str] | None = None) -> Path:
    from ..telemetry import import_openvino

    ov = import_openvino()
    model = ov.convert_model(str(onnx_path))
    for key, value in (metadata or {}).items():
        model.set_rt_info(str(value), ["iplap", key])
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    # compress_to_fp16 defaults to True: an fp32 bundle must keep fp32 weights.
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def reference_outputs(graph: ExportableGraph, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in _as_tuple(graph.module(*inputs))]


def max_error(ours: list[np.ndarray], reference: list[np.ndarray], names: list[str], where: str) -> float:
    """Largest absolute difference; raises ExportCheckError when a tolerance is exceeded."""
    worst = 0.0
    for name, a, b in zip(names, ours, reference):
        if a.shape != b.shape:
            raise ExportCheckError(f"{where}: output {name} has shape {a.shape}, PyTorch gives {b.shape}")
        diff = np.abs(a.astype(np.float64) - b)
        bad = diff > ATOL + RTOL * np.abs(b)
        if bad.any() or not np.isfinite(a).all():
            raise ExportCheckError(f"{where}: output {name} differs from PyTorch by up to {diff.max():.3g}")
        worst = max(worst, float(diff.max()))
    return worst


def check_graph(graph: ExportableGraph, onnx_path: Path, xml_path: Path,
                cases: list[tuple[torch.Tensor, ...]]) -> dict[str, float]:
    """Run the ONNX file in onnxruntime and the IR in OpenVINO (CPU, f32) on every case."""
    from ..runtime.backends import BackendConfig, load_model

    spec = graph.spec
    errors = {}
    for backend, path in ((Backend.ONNXRUNTIME, onnx_path), (Backend.OPENVINO, xml_path)):
        model = load_model(path, BackendConfig(backend=backend, inference_precision="f32"), spec.output_names)
        worst = 0.0
        for i, case in enumerate(cases):
            outputs = model.run({n: t.numpy() for n, t in zip(spec.input_names, case)})
            ours = [outputs[n] for n in spec.output_names]
            worst = max(worst, max_error(ours, reference_outputs(graph, case), spec.output_names,
                                         f"{spec.name} ({backend}, check {i})"))
        errors[backend] = worst
    return errors


def export_graph(graph: ExportableGraph, out_dir: Path, cases: list[tuple[torch.Tensor, ...]],
                 opset: int = OPSET, metadata: dict[str, str] | None = None) -> GraphExport:
    """ONNX + IR of one graph under ``out_dir``, both checked on ``cases`` (the first is the example)."""
    start = time.perf_counter()
    onnx_path = export_onnx(graph, out_dir / f"{graph.spec.name}.onnx", cases[0], opset, metadata)
    xml_path = convert_openvino(onnx_path, out_dir / "openvino" / f"{graph.spec.name}.xml", metadata)
    errors = check_graph(graph, onnx_path, xml_path, cases)
    size = onnx_path.stat().st_size / 2**20
    log.info("exported %s: %.1f MiB, max |error| onnxruntime %.2g, openvino %.2g (%.1f s)", graph.spec.name,
             size, errors[Backend.ONNXRUNTIME], errors[Backend.OPENVINO], time.perf_counter() - start)
    return GraphExport(graph.spec.name, onnx_path, xml_path, errors)
