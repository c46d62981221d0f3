"""``iplap bundle info``: what a bundle holds, in words (or JSON): its format and precision,
the backends it can run on, each graph's files and size, the face models, what produced it,
and, for a calibrated bundle, its gate and its measurements."""

from __future__ import annotations

from pathlib import Path

from .bundle import FORMAT_KEYS, Bundle

MB = 1e6


def _size(root: Path, rel: str | None) -> int:
    if rel is None:
        return 0
    path = root / rel
    size = path.stat().st_size
    if rel.endswith(".xml"):
        size += path.with_suffix(".bin").stat().st_size
    return size


def describe(bundle: Bundle) -> dict:
    """Everything ``iplap bundle info`` shows, as JSON-ready values (sizes in bytes)."""
    manifest, root = bundle.manifest, bundle.root
    graphs = {}
    for name, entry in manifest.get("graphs", {}).items():
        graphs[name] = {"files": {str(b): entry.get(key) for b, key in FORMAT_KEYS.items() if key in entry},
                        "bytes": {str(b): _size(root, entry.get(key)) for b, key in FORMAT_KEYS.items()
                                  if key in entry},
                        "precision": entry.get("precision", {str(b): "fp32" for b in bundle.backends}),
                        "openvino_hint": bundle.openvino_hint(name)}
    face = manifest.get("face_models", {})
    quantization = manifest.get("quantization") or {}
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return {
        "path": str(root), "format_version": manifest.get("format_version"), "id": bundle.bundle_id[:16],
        "precision": bundle.precision, "openvino_inference_precision": bundle.openvino_inference_precision,
        "backends": [str(b) for b in bundle.backends], "created": manifest.get("created"),
        "versions": manifest.get("versions", {}), "checkpoints": manifest.get("checkpoints", {}),
        "graphs": graphs, "face_models": {"files": sum(not rel.endswith(".bin") for rel in face.values()), "bytes": sum(_size(root, rel) for rel in face.values()
                                                                           if not rel.endswith(".bin"))},
        "gate": {"thresholds": quantization.get("gate"), "metrics": quantization.get("metrics")} if quantization
        else None,
        "bytes": total,
    }


def lines(info: dict) -> list[str]:
    """``describe``'s dict as the lines ``iplap bundle info`` prints."""
    out = [f"{info['path']}: iplap bundle (format {info['format_version']}, id {info['id']}), {info['precision']}"
           + (f", OpenVINO float work in {info['openvino_inference_precision']} where a graph does not say"
              if info["openvino_inference_precision"] else ""),
           f"backends: {', '.join(info['backends']) or 'none'}; {info['bytes'] / MB:.1f} MB in all; made "
           f"{info['created'] or '?'} with " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
           "", f"{'graph':20s} " + " ".join(f"{b:>27s}" for b in info["backends"])]
    for name, graph in info["graphs"].items():
        cells = [f"{graph['bytes'].get(b, 0) / MB:8.1f} MB {_precision(graph, b):>14s}" for b in info["backends"]]
        out.append(f"{name:20s} " + " ".join(f"{c:>27s}" for c in cells))
    face = info["face_models"]
    out.append(f"{'face models':20s} {face['files']} files, {face['bytes'] / MB:.1f} MB")
    if info["gate"]:
        gate = info["gate"]
        out += ["", "accuracy gate (held-out clips, end to end, against fp32): "
                + ", ".join(f"{k} {v}" for k, v in (gate["thresholds"] or {}).items() if k != "measured_on")]
        for backend, metrics in (gate["metrics"] or {}).items():
            shown = "unchanged (fp32)" if metrics is None else ", ".join(
                f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
            out.append(f"  {backend}: {shown}")
    for name, checkpoint in info["checkpoints"].items():
        out.append(f"checkpoint {name}: {checkpoint.get('file')} sha256 {str(checkpoint.get('sha256'))[:16]}...")
    return out


def _precision(graph: dict, backend: str) -> str:
    """A graph's precision on ``backend``, with the float work's where OpenVINO's differs (int8/bf16)."""
    precision = graph["precision"].get(backend, "fp32")
    hint = graph.get("openvino_hint")
    return f"{precision}/{hint}" if backend == "openvino" and hint and hint != "f32" else precision


__all__ = ["describe", "lines"]
