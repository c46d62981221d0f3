"""What a calibrated bundle records and replaces: its graph files and its manifest.

The manifest keeps the source bundle's entries and adds each graph's precision per backend,
the recipe, the data's identity, the gate's measurements, what fell back to fp32 and why,
and the machine the gate was measured on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import __version__
from ..limits import Backend
from ..provenance import machine_info, tool_versions
from ..runtime.backends import openvino_core
from ..runtime.bundle import Bundle
from .bundle import GraphFiles
from .config import CalibrateConfig
from .gate import BackendResult
from .recipe import OPENVINO_HINT, Recipe
from .record import GRAPH_NAMES, Recording


def calibration_tool_versions() -> dict[str, str]:
    return tool_versions(("onnx", "onnxruntime", "openvino", "nncf"))  # the packages, not the backends


def replacements(results: dict[str, BackendResult]) -> dict[str, GraphFiles]:
    """The calibrated files of each graph that has any, both backends' together."""
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


def _graphs_entry(recipe: Recipe, results: dict[str, BackendResult]) -> dict[str, dict]:
    """Per graph: its precision on each backend, the layers kept in float, and why."""
    precision = recipe.precision
    entries = {}
    for graph in GRAPH_NAMES:
        reason = recipe.graph(graph).reason if precision == "int8" else f"{precision} on OpenVINO"
        fell_back = {b: step["because"] for b, r in results.items() for step in r.fallback if step["graph"] == graph}
        if fell_back:
            reason += "; kept fp32 by the gate on " + ", ".join(f"{b} ({why})" for b, why in fell_back.items())
        entries[graph] = {
            **{b: _graph_precision(precision, r, graph) for b, r in results.items()},
            "excluded_nodes": {b: r.variants[graph].info.excluded for b, r in results.items()
                               if graph in r.variants and r.variants[graph].info is not None},
            "reason": reason,
        }
    return entries


def _float_hint(results: dict[str, BackendResult]) -> dict | None:
    openvino = results.get(Backend.OPENVINO)
    return openvino.float_hint if openvino is not None else None


def _manifest_graphs(source: Bundle, results: dict[str, BackendResult], entries: dict[str, dict]) -> dict:
    """The source bundle's graph entries, with each graph's precision per backend."""
    graphs = {name: dict(entry) for name, entry in source.manifest["graphs"].items()}
    trial = _float_hint(results)
    for graph, entry in graphs.items():
        entry["precision"] = {b: entries[graph][b] for b in results}
        if trial and trial["kept"] and graph in trial["graphs"]:
            entry["openvino_inference_precision"] = trial["tried"]  # what Bundle.openvino_hint reads
    return graphs


def bundle_manifest(config: CalibrateConfig, source: Bundle, recording: Recording,
                    results: dict[str, BackendResult]) -> dict:
    """What the calibrated bundle's manifest adds to (or changes in) the source's."""
    recipe = config.recipe
    entries = _graphs_entry(recipe, results)
    trial = _float_hint(results)
    return {
        "precision": recipe.precision,
        "openvino_inference_precision": OPENVINO_HINT[recipe.precision],
        "graphs": _manifest_graphs(source, results, entries),
        "quantization": {
            "tool": f"iplap {__version__} calibrate",
            "versions": calibration_tool_versions(),
            "source_bundle": {"id": source.bundle_id, "path": str(Path(source.root).resolve()), "precision": "fp32"},
            "recipe": recipe.to_dict(),
            "graphs": entries,
            "gate": {**config.gate.to_dict(), "passed": True,
                     "measured_on": "held-out clips, end to end, against fp32"},
            "metrics": {b: r.to_dict()["metrics"] for b, r in results.items()},
            "sensitivity": {b: r.to_dict()["sensitivity"] for b, r in results.items() if r.sensitivity},
            "fallback": {b: r.fallback for b, r in results.items() if r.fallback},
            **({"openvino_float_hint": trial} if trial else {}),
            "calibration_data": {**recording.summary(), "budget": dataclasses.asdict(config.budget)},
            "machine": machine(config.device),
        },
    }


def machine(device: str) -> dict:
    """Where the gate was measured: integer and bf16 arithmetic differ between CPUs."""
    info = {**machine_info(), "openvino_device": device}
    try:
        core = openvino_core()
        info["openvino_cpu"] = core.get_property("CPU", "FULL_DEVICE_NAME")
        info["openvino_cpu_capabilities"] = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception as exc:  # noqa: BLE001 - informational only; OpenVINO raises untyped errors
        info["openvino_cpu"] = f"unknown ({type(exc).__name__})"
    return info
