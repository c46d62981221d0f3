"""Model bundles: a folder of graphs plus ``manifest.json``, and its checks on load.

A bundle holds one ONNX file and one OpenVINO IR per graph (see :data:`GRAPH_SPECS`), the
face-tracking models, and a manifest that records what produced them: the format
version, the checkpoints' sha256, every file's sha256, precision, opset, tool versions,
each graph's inputs and outputs, and the model constants. Loading checks the format
version and every file's hash, and names the file that is missing or changed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BundleError
from .audio import MelConfig
from .constants import (DEFAULT_REFS, FPS, IMAGE_SIZE, LANDMARK_EMBEDDING, MEL_WINDOW, N_LANDMARK_REFS, T_FRAMES,
                        Backend)
from ..provenance import sha256_file
from .files import create_temp_dir, replace_dir

log = logging.getLogger(__name__)

#: 2: the landmark generator is four graphs (per-frame encoders, per-window fusion).
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
#: Each backend's files in a bundle, by the manifest key (and ``--formats`` name) of a graph's file.
FORMAT_KEYS = {Backend.ONNXRUNTIME: "onnx", Backend.OPENVINO: "openvino"}


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output. ``"batch"`` marks the dynamic axis."""

    name: str
    shape: tuple[int | str, ...]
    value_range: tuple[float, float] = (0.0, 1.0)  # for random test inputs at export time


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


B = "batch"
_MEL = (-4.0, 4.0)
_SKETCH = (0.0, 224 / 255)
_EMB = LANDMARK_EMBEDDING
_EMBEDDED = (-3.0, 3.0)  # layer-normalised embeddings
#: Names of the 12 SPADE modulation maps of the flow network, in order.
MODULATION_NAMES = tuple(f"{block}_{param}{layer}" for block in ("spade1", "spade2", "spade4")
                         for layer in (1, 2) for param in ("gamma", "beta"))
_MOD_SHAPES = {"spade1": (1, 256, 64, 64), "spade2": (1, 256, 64, 64), "spade4": (1, 64, 128, 128)}


def _modulations(batch) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(n, (batch, *_MOD_SHAPES[n.split("_")[0]][1:]), (-1.0, 1.0)) for n in MODULATION_NAMES)


GRAPH_SPECS: tuple[GraphSpec, ...] = (
    GraphSpec("landmark_mel_encoder",
              (TensorSpec("mels", (B, 1, 80, 16), _MEL),), (TensorSpec("mel_embedding", (B, _EMB)),)),
    GraphSpec("landmark_pose_encoder",
              (TensorSpec("pose", (B, 2, 74)),), (TensorSpec("pose_embedding", (B, _EMB)),)),
    GraphSpec("landmark_ref_encoder",
              (TensorSpec("ref_pose", (B, 2, 74)), TensorSpec("ref_content", (B, 2, 57))),
              (TensorSpec("ref_embedding", (B, _EMB)),)),
    GraphSpec("landmark_fusion",
              (TensorSpec("ref_embedding", (B, N_LANDMARK_REFS, _EMB), _EMBEDDED),
               TensorSpec("mel_embedding", (B, T_FRAMES, _EMB), _EMBEDDED),
               TensorSpec("pose_embedding", (B, T_FRAMES, _EMB), _EMBEDDED)),
              (TensorSpec("content", (B, 2, 57)),)),  # batch here is B*5
    GraphSpec("reference_encoder",
              (TensorSpec("ref_image", (B, 3, 128, 128)), TensorSpec("ref_sketch", (B, 3, 128, 128), _SKETCH)),
              (TensorSpec("h1", (B, 32, 128, 128)), TensorSpec("h2", (B, 256, 64, 64)))),
    GraphSpec("flow_modulations",
              (TensorSpec("driving_sketches", (1, 15, 128, 128), _SKETCH),),
              _modulations(1)),
    GraphSpec("flow_head",
              (TensorSpec("h2", (B, 256, 64, 64)), *_modulations(1)),
              (TensorSpec("flow", (B, 2, 128, 128)), TensorSpec("weight", (B, 1, 128, 128)))),
    GraphSpec("translation",
              (TensorSpec("face", (1, 3, 128, 128)), TensorSpec("target_sketches", (1, 15, 128, 128), _SKETCH),
               TensorSpec("wrapped_ref", (1, 3, 128, 128)), TensorSpec("wrapped_h1", (1, 32, 128, 128)),
               TensorSpec("wrapped_h2", (1, 256, 64, 64)), TensorSpec("mel", (1, 1, 80, 16), _MEL)),
              (TensorSpec("generated_face", (1, 3, 128, 128)),)),
)
GRAPH_BY_NAME = {g.name: g for g in GRAPH_SPECS}
GRAPH_NAMES = tuple(GRAPH_BY_NAME)
#: The landmark generator's graphs (:class:`~.renderer.LandmarkGenerator`); the rest are the renderer's.
LANDMARK_GRAPH_NAMES = tuple(n for n in GRAPH_NAMES if n.startswith("landmark_"))
RENDERER_GRAPH_NAMES = tuple(n for n in GRAPH_NAMES if n not in LANDMARK_GRAPH_NAMES)

#: Model constants written into every manifest.
CONSTANTS = {
    "T": T_FRAMES, "Nl": N_LANDMARK_REFS, "default_refs": DEFAULT_REFS, "image_size": IMAGE_SIZE, "fps": FPS,
    "mel": {**{k: getattr(MelConfig(), k) for k in ("sample_rate", "n_fft", "hop", "win", "n_mels", "fmin", "fmax",
                                                      "preemphasis")},
            "window_frames": MEL_WINDOW},
}


def check_destination(bundle_dir: str | Path, overwrite: bool) -> None:
    """Refuse to replace an existing bundle unless asked to (checked before any long work)."""
    if Path(bundle_dir).exists() and not overwrite:
        raise BundleError(f"{bundle_dir} already exists; allow overwriting to replace it", setting="overwrite",
                          suggestion=True)


def write_bundle_atomically(bundle_dir: str | Path, fill: Callable[[Path], dict]) -> "Bundle":
    """Create the bundle folder ``bundle_dir`` all at once, or not at all.

    ``fill(work)`` writes the bundle's files into ``work``, a temporary folder beside
    ``bundle_dir``, and returns the manifest. Then the creation time and every file's sha256 are
    added, the manifest is written, and the folder replaces ``bundle_dir`` in one step (see
    :func:`~iplap.runtime.files.replace_dir`: an existing bundle is swapped out, never
    removed first). On any error the temporary folder is removed, so a failed export or
    calibration leaves nothing and an old bundle stays as it was.
    """
    bundle_dir = Path(bundle_dir)
    bundle_dir.parent.mkdir(parents=True, exist_ok=True)
    work = create_temp_dir(bundle_dir.parent, f".{bundle_dir.name}.")
    try:
        manifest = fill(work)
        manifest["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        manifest["files"] = {p.relative_to(work).as_posix(): sha256_file(p) for p in sorted(work.rglob("*"))
                             if p.is_file()}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        replace_dir(work, bundle_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("wrote bundle %s", bundle_dir)
    return Bundle.load(bundle_dir)


@dataclass
class Bundle:
    """A verified model bundle on disk."""

    root: Path
    manifest: dict = field(repr=False)

    @classmethod
    def load(cls, root: str | Path, verify: bool = True) -> "Bundle":
        """Read and check a bundle; raises :class:`BundleError` naming what is wrong."""
        root = Path(root)
        if not root.is_dir():
            raise BundleError(f"model bundle not found: {root} (make one with `iplap export`)")
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(f"{root} is not a model bundle: {MANIFEST} is missing")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{manifest_path}: not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != "iplap-bundle":
            raise BundleError(f"{manifest_path}: not an iplap bundle manifest")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(f"{root}: bundle format version {version} is not supported by this iplap "
                              f"(it reads version {FORMAT_VERSION}); export it again with `iplap export` "
                              "(and `iplap calibrate` for a quantized bundle)")
        bundle = cls(root, manifest)
        if verify:
            bundle.verify()
        return bundle

    def verify(self) -> None:
        files = self.manifest.get("files", {})
        if not files:
            raise BundleError(f"{self.root}: manifest lists no files")
        for rel, expected in files.items():
            path = self.root / rel
            if not path.is_file():
                raise BundleError(f"{self.root}: bundle file {rel} is missing")
            if sha256_file(path) != expected:
                raise BundleError(f"{self.root}: bundle file {rel} has changed (sha256 mismatch); "
                                  "it was modified or corrupted after export")

    @property
    def bundle_id(self) -> str:
        """Identity of the bundle's contents: a hash over every file's hash."""
        files = self.manifest["files"]
        return hashlib.sha256("".join(f"{k}:{files[k]};" for k in sorted(files)).encode()).hexdigest()

    @property
    def precision(self) -> str:
        return self.manifest.get("precision", "fp32")

    @property
    def openvino_inference_precision(self) -> str | None:
        """The OpenVINO precision hint the bundle was calibrated for (bf16 bundles), if any."""
        return self.manifest.get("openvino_inference_precision")

    def openvino_hint(self, graph: str) -> str | None:
        """The OpenVINO precision hint ``graph`` runs with: its own where calibration kept one
        for it (``openvino_inference_precision`` of its manifest entry: an int8 graph whose
        float work passed the gate in bf16), else the bundle's."""
        entry = self.manifest.get("graphs", {}).get(graph, {})
        return entry.get("openvino_inference_precision") or self.openvino_inference_precision

    @property
    def constants(self) -> dict:
        return self.manifest["constants"]

    @property
    def backends(self) -> tuple[Backend, ...]:
        """The backends this bundle has every graph's file for (``iplap export --formats``)."""
        graphs = self.manifest.get("graphs", {}).values()
        return tuple(b for b, key in FORMAT_KEYS.items() if graphs and all(key in g for g in graphs))

    def require(self, backend: str) -> None:
        """Refuse a backend whose files this bundle does not hold, saying what would work."""
        if backend not in self.backends:
            held = " and ".join(str(b) for b in self.backends) or "no backend"
            raise BundleError(f"{self.root.name} holds no {FORMAT_KEYS[Backend(backend)]} graphs (it was exported "
                              f"for {held}); run it with that backend, or export the bundle again with "
                              "--formats both", setting="backend", suggestion=str(self.backends[0])
                              if self.backends else None)

    def graph_file(self, graph: str, backend: str) -> Path:
        """The file of ``graph`` for ``backend`` (onnxruntime: the ONNX file; openvino: the IR)."""
        graphs = self.manifest.get("graphs", {})
        if graph not in graphs:
            raise BundleError(f"{self.root}: the bundle has no graph {graph!r}")
        key = FORMAT_KEYS[Backend(backend)]
        rel = graphs[graph].get(key)
        if rel is None:
            self.require(backend)
            raise BundleError(f"{self.root}: graph {graph!r} has no {key} file in this bundle")
        return self.root / rel
