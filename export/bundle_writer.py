"""``iplap export``: checkpoints -> a verified model bundle.

The bundle is written into a temporary folder beside the destination and moved into
place only when every graph has passed its check, so a failed export leaves nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import IplapError
from ..provenance import tool_versions
from ..models import LANDMARK_GENERATOR_FILE, RENDERER_FILE, load_landmark_generator, load_renderer
from ..models.warp import fuse_warped
from ..runtime.bundle import (CONSTANTS, FORMAT_KEYS, FORMAT_VERSION, Bundle, GraphSpec, check_destination,
                              write_bundle_atomically)
from ..provenance import sha256_file
from .graphs import ExportableGraph, build_graphs, example_inputs
from .onnx_export import OPSET, export_graph

log = logging.getLogger(__name__)

GOLDEN_INPUTS = Path(__file__).resolve().parent / "golden_inputs.npz"


@dataclass(frozen=True)
class ExportConfig:
    """What ``iplap export`` does.

    Attributes:
        landmark_checkpoint: ``landmarkgenerator_checkpoint.pth`` (official or stand-in).
        renderer_checkpoint: ``renderer_checkpoint.pth``.
        out_dir: the bundle folder to create.
        opset: ONNX opset of every graph.
        face_models: also convert MediaPipe's face models into the bundle.
        mediapipe_wheel: a local mediapipe 0.10.21 wheel to take them from (else downloaded).
        overwrite: replace an existing bundle at ``out_dir``.
        formats: which backends' files the bundle keeps: ``"onnx"`` (onnxruntime) and/or
            ``"openvino"`` (the IR). Both are written and checked against PyTorch either way;
            a box that runs one backend ships the bundle of its format only (half the size).
    """

    landmark_checkpoint: Path
    renderer_checkpoint: Path
    out_dir: Path
    opset: int = OPSET
    face_models: bool = True
    mediapipe_wheel: Path | None = None
    overwrite: bool = False
    formats: tuple[str, ...] = tuple(FORMAT_KEYS.values())

    def __post_init__(self):
        unknown = [f for f in self.formats if f not in FORMAT_KEYS.values()]
        if unknown or not self.formats:
            raise IplapError(f"unknown bundle format {unknown[0] if unknown else 'none'!r}: choose "
                             f"{', '.join(FORMAT_KEYS.values())} or both")

    @classmethod
    def from_dir(cls, checkpoint_dir: Path, out_dir: Path, **kwargs) -> "ExportConfig":
        return cls(Path(checkpoint_dir) / LANDMARK_GENERATOR_FILE, Path(checkpoint_dir) / RENDERER_FILE, Path(out_dir),
                   **kwargs)


def golden_cases(landmark_generator, renderer) -> dict[str, tuple[torch.Tensor, ...]]:
    """Inputs of every graph on the reference golden data (as the original pipeline feeds them)."""
    with np.load(GOLDEN_INPUTS) as f:
        g = {k: torch.from_numpy(f[k]) for k in f.files}
    flow = renderer.flow_module
    ref_img, ref_sketch = g["renderer__ref_N_frame_img"][0], g["renderer__ref_N_frame_sketch"][0]
    driving = g["renderer__target_sketches"].flatten(1, 2)
    mels, pose, ref_pose, ref_content = (g[f"landmark_generator__{k}"] for k in ("T_mels", "T_pose", "Nl_pose",
                                                                                    "Nl_content"))
    lg = landmark_generator
    with torch.no_grad():
        b, t, n_ref = mels.shape[0], mels.shape[1], ref_pose.shape[1]
        mel_emb = lg.encode_mels(mels.flatten(0, 1)).reshape(b, t, -1)
        pose_emb = lg.encode_poses(pose.flatten(0, 1)).reshape(b, t, -1)
        ref_emb = lg.encode_references(ref_pose.flatten(0, 1), ref_content.flatten(0, 1)).reshape(b, n_ref, -1)
        h1, h2 = flow.encode_reference(ref_img, ref_sketch)
        mods = flow.modulations(driving)
        flow_px, weight = flow.predict_flow(h2, mods)
        w_h1, w_h2, w_ref = fuse_warped(h1[None], h2[None], ref_img[None], flow_px[None], weight[None])
    return {
        "landmark_mel_encoder": (mels.flatten(0, 1),),
        "landmark_pose_encoder": (pose.flatten(0, 1),),
        "landmark_ref_encoder": (ref_pose.flatten(0, 1), ref_content.flatten(0, 1)),
        "landmark_fusion": (ref_emb, mel_emb, pose_emb),
        "reference_encoder": (ref_img, ref_sketch),
        "flow_modulations": (driving,),
        "flow_head": (h2, *mods),
        "translation": (g["renderer__face_frame_img"][:, 0], driving, w_ref, w_h1, w_h2, g["renderer__audio_mels"][:, 0]),
    }


def check_cases(spec: GraphSpec, golden: tuple[torch.Tensor, ...], seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """Random inputs at two batch sizes (when the batch is dynamic), then the golden inputs."""
    generator = torch.Generator().manual_seed(seed)
    dynamic = any(t.shape[0] == "batch" for t in spec.inputs)
    return [example_inputs(spec, b, generator) for b in ((2, 3) if dynamic else (1,))] + [golden]


def export_tool_versions() -> dict[str, str]:
    return tool_versions(("torch", "onnx", "onnxruntime", "openvino"))


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def export_bundle(config: ExportConfig) -> Bundle:
    """Export, check and write a bundle; returns it loaded and verified."""
    bundle_dir = Path(config.out_dir)
    check_destination(bundle_dir, config.overwrite)
    landmark_generator = load_landmark_generator(config.landmark_checkpoint)
    renderer = load_renderer(config.renderer_checkpoint)
    checkpoints = {"landmark_generator": config.landmark_checkpoint, "renderer": config.renderer_checkpoint}
    checkpoint_info = {name: {"file": Path(p).name, "sha256": sha256_file(p)} for name, p in checkpoints.items()}
    metadata = {f"{name}_sha256": info["sha256"] for name, info in checkpoint_info.items()}
    metadata["precision"] = "fp32"

    def fill(work: Path) -> dict:
        golden = golden_cases(landmark_generator, renderer)
        graphs: dict[str, dict] = {}
        graph: ExportableGraph
        for graph in build_graphs(landmark_generator, renderer):
            spec = graph.spec
            result = export_graph(graph, work, check_cases(spec, golden[spec.name]), config.opset,
                                  {**metadata, "graph": spec.name})
            graphs[spec.name] = {
                "onnx": _rel(result.onnx, work), "openvino": _rel(result.openvino, work),
                "inputs": [{"name": t.name, "shape": list(t.shape)} for t in spec.inputs],
                "outputs": [{"name": t.name, "shape": list(t.shape)} for t in spec.outputs],
                "max_error_vs_torch": result.max_error,
            }
        face_models: dict[str, str] = {}
        if config.face_models:
            face_models = _export_face_models(work / "face", config.mediapipe_wheel, work)
        _keep_formats(work, graphs, face_models, config.formats)
        return {
            "format": "iplap-bundle",
            "format_version": FORMAT_VERSION,
            "created": None,  # set when the bundle is written
            "precision": "fp32",
            "quantization": None,
            "opset": config.opset,
            "versions": export_tool_versions(),
            "checkpoints": checkpoint_info,
            "constants": CONSTANTS,
            "graphs": graphs,
            "face_models": face_models,
        }

    return write_bundle_atomically(bundle_dir, fill)


def _keep_formats(work: Path, graphs: dict[str, dict], face_models: dict[str, str], formats: tuple[str, ...]) -> None:
    """Remove the files (and manifest entries) of the formats not kept: after every graph was
    checked on both backends, so a one-format bundle is checked as well as a full one."""
    for key in set(FORMAT_KEYS.values()) - set(formats):
        for entry in graphs.values():
            rel = entry.pop(key)
            for path in (work / rel, (work / rel).with_suffix(".bin")) if rel.endswith(".xml") else (work / rel,):
                path.unlink(missing_ok=True)
        for name in [n for n, rel in face_models.items() if (rel.endswith(".onnx")) == (key == "onnx")]:
            (work / face_models.pop(name)).unlink(missing_ok=True)


def _export_face_models(out_dir: Path, wheel: Path | None, root: Path) -> dict[str, str]:
    from .facemodels import export_face_models

    written = export_face_models(out_dir, wheel)
    return {name: _rel(Path(path), root) for name, path in written.items()}
