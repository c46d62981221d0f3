"""Writing a calibrated bundle: the fp32 bundle's files with some graph files replaced.

The new bundle is assembled in a temporary folder beside the destination and moved into
place in one rename, so a failed or rejected calibration leaves nothing behind. The
manifest keeps the source's format, constants, checkpoints and graph specs; each replaced
graph entry points to its new files, and every file's sha256 is recomputed, so
:meth:`iplap.runtime.bundle.Bundle.load` accepts it unchanged.
"""

from __future__ import annotations

import copy
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import BundleError
from ..runtime.bundle import FORMAT_KEYS, FORMAT_VERSION, Bundle, check_destination, write_bundle_atomically

log = logging.getLogger(__name__)


class AlreadyQuantizedError(BundleError):
    """The source bundle is not an fp32 export (it was calibrated or quantized already)."""


def check_source(bundle: Bundle) -> None:
    """Refuse anything but an fp32 export: quantizing twice compounds the error, and the
    gate compares against fp32, which a quantized bundle no longer has."""
    precision = bundle.manifest.get("precision", "fp32")
    quantization = bundle.manifest.get("quantization")
    if precision != "fp32" or quantization:
        source = (quantization or {}).get("source_bundle", {}).get("path") if isinstance(quantization, dict) else None
        hint = f" ({source})" if source else ""
        raise AlreadyQuantizedError(f"{bundle.root} is already a {precision} bundle; calibrate the fp32 bundle "
                                    f"it was made from{hint}")
    if bundle.manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{bundle.root}: bundle format version {bundle.manifest.get('format_version')} is not "
                          f"{FORMAT_VERSION}")


@dataclass(frozen=True)
class GraphFiles:
    """New files for one graph (either may be None: that backend keeps the source file)."""

    onnx: Path | None = None
    openvino: Path | None = None  # the .xml; its .bin sits beside it


def write_bundle(source: Bundle, bundle_dir: Path, tag: str, replacements: dict[str, GraphFiles], manifest_update: dict,
                 overwrite: bool = False, keep: tuple[str, ...] | None = None) -> Bundle:
    """Write ``source`` with ``replacements`` to ``bundle_dir``; new files are named ``GRAPH.TAG.onnx`` and
    ``openvino/GRAPH.TAG.xml``. ``manifest_update`` is merged into the top level of the manifest.
    ``keep``: the backends whose files the new bundle holds (default: all the source holds)."""
    bundle_dir = Path(bundle_dir)
    check_destination(bundle_dir, overwrite)
    manifest = copy.deepcopy(source.manifest)
    manifest.update(copy.deepcopy(manifest_update))
    dropped = _drop_formats(manifest, source, keep)
    replacements = {g: GraphFiles(f.onnx if "onnx" in _keys(manifest, g) else None,
                                  f.openvino if "openvino" in _keys(manifest, g) else None)
                    for g, f in replacements.items()}
    replaced: dict[str, str] = {}  # source rel path -> new rel path
    sources: dict[str, Path] = {}  # new rel path -> file to copy
    for graph, files in replacements.items():
        entry = manifest["graphs"][graph]
        if files.onnx is not None:
            rel = f"{graph}.{tag}.onnx"
            replaced[entry["onnx"]] = rel
            sources[rel] = files.onnx
            entry["onnx"] = rel
        if files.openvino is not None:
            rel = f"openvino/{graph}.{tag}.xml"
            old_xml = entry["openvino"]
            replaced[old_xml] = rel
            replaced[old_xml[:-4] + ".bin"] = rel[:-4] + ".bin"
            sources[rel] = files.openvino
            sources[rel[:-4] + ".bin"] = files.openvino.with_suffix(".bin")
            entry["openvino"] = rel
        entry.pop("max_error_vs_torch", None)  # an fp32 export check; the gate's figures replace it

    def fill(work: Path) -> dict:
        for rel in source.manifest["files"]:
            if rel not in replaced and rel not in dropped:
                _copy(source.root / rel, work / rel)
        for rel, path in sources.items():
            _copy(path, work / rel)
        return manifest

    return write_bundle_atomically(bundle_dir, fill)


def _keys(manifest: dict, graph: str) -> set[str]:
    return set(manifest["graphs"][graph])


def _drop_formats(manifest: dict, source: Bundle, keep: tuple[str, ...] | None) -> set[str]:
    """Take the files of the backends not in ``keep`` out of ``manifest``; their paths."""
    if keep is None:
        return set()
    dropped = set()
    for backend in set(source.backends) - set(keep):
        key = FORMAT_KEYS[backend]
        for entry in manifest["graphs"].values():
            rel = entry.pop(key)
            dropped |= {rel, rel[:-4] + ".bin"} if rel.endswith(".xml") else {rel}
        face = manifest.get("face_models", {})
        for name in [n for n, rel in face.items() if rel.endswith(".onnx") == (key == "onnx")]:
            dropped.add(face.pop(name))
    return dropped


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
