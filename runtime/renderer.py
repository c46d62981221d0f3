"""The torch-free renderer, split (the landmark generator is :mod:`.landmark_generator`).

The renderer computes the original's function in three parts (see
``iplap.export.graphs``): :meth:`Renderer.encode_references` once per video, then per
frame :meth:`Renderer.render`: the flow modulations (shared by all references), the flow
head batched over the N references, the Numba warp-and-fuse kernel, and the
translation network.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from . import warp
from .backends import BackendConfig, InferenceModel, compose_openvino
from .bundle import GRAPH_BY_NAME, MODULATION_NAMES, RENDERER_GRAPH_NAMES, Bundle
from .landmark_generator import LandmarkGenerator, load_graph

log = logging.getLogger(__name__)

#: Distinct references whose flow the flow head computes in one call. Its activations grow with
#: the batch (about 25 MB a reference in fp32: 640 MB for a video's 25), and the rows are
#: independent, so larger sets run in chunks of this many: the same numbers, bounded memory.
#: OpenVINO's fused flow (modulations and head in one model) serves sets up to this size.
FLOW_CHUNK = 5

@dataclass
class References:
    """What the renderer keeps per video: the features of the distinct references.

    ``index`` (N,) maps each of the N references to a row of the arrays. A photo gives N
    copies of one frame; its features and flow are computed once, and the warp kernel
    still sums N terms in the original's order, so the result is the original's.
    The warp kernel reads channels-last arrays; the flow head takes h2 channels-first.
    Both layouts of h2 are kept, since converting 25 x 256 x 64 x 64 floats every frame
    would cost more than the kernel itself.
    """

    h1: np.ndarray  # (U, 128, 128, 32)
    h2: np.ndarray  # (U, 64, 64, 256)
    h2_nchw: np.ndarray  # (U, 256, 64, 64)
    images: np.ndarray  # (U, 128, 128, 3)
    index: np.ndarray  # (N,) int64 into the U rows

    @property
    def count(self) -> int:
        return int(self.index.shape[0])

    @property
    def distinct(self) -> int:
        return int(self.h1.shape[0])


@dataclass
class RenderResult:
    face: np.ndarray  # (3, 128, 128) float32 in [0, 1]
    wrapped_h1: np.ndarray  # (1, 32, 128, 128)
    wrapped_h2: np.ndarray  # (1, 256, 64, 64)
    wrapped_ref: np.ndarray  # (1, 3, 128, 128)
    seconds: dict[str, float] = field(default_factory=dict)  # per stage


class Renderer:
    """The split renderer: loaded graphs, no state of a render, so one renderer serves any
    number of threads at once. ``config.threads`` also sets the warp kernel's threads."""

    def __init__(self, bundle: Bundle, config: BackendConfig):
        self.config = config
        self.reference_encoder = load_graph(bundle, "reference_encoder", config)
        self.flow_modulations = load_graph(bundle, "flow_modulations", config)
        self.flow_head = load_graph(bundle, "flow_head", config)
        self.translation = load_graph(bundle, "translation", config)
        self.flow = self._fused_flow()
        warp.warm_up()  # compile or load the kernel now, not on the first frame

    #: The graphs a renderer runs, as attributes of the same names.
    GRAPH_NAMES = RENDERER_GRAPH_NAMES

    def with_models(self, models: dict[str, InferenceModel]) -> Renderer:
        """A renderer running ``models`` (by graph name) in place of these graphs; this one is unchanged."""
        unknown = sorted(set(models) - set(self.GRAPH_NAMES))
        if unknown:
            raise KeyError(f"the renderer has no graph {unknown[0]!r}")
        other = copy.copy(self)
        for name, model in models.items():
            setattr(other, name, model)
        if {"flow_modulations", "flow_head"} & set(models):
            other.flow = other._fused_flow()
        return other

    def _fused_flow(self) -> InferenceModel | None:
        """flow_modulations and flow_head as one model, where the backend can join them
        (OpenVINO, ``config.fuse_flow``; see :class:`~iplap.runtime.backends.BackendConfig`),
        else None: the two graphs run one after the other."""
        if not self.config.fuse_flow:
            return None
        return compose_openvino(self.flow_modulations, self.flow_head, MODULATION_NAMES, "h2",
                                GRAPH_BY_NAME["flow_head"].output_names)

    def fused_for(self, distinct: int) -> bool:
        """Whether the flow of ``distinct`` references runs as OpenVINO's fused model."""
        return self.flow is not None and distinct <= FLOW_CHUNK

    def prepare(self, references: References) -> None:
        """Compile what rendering with ``references`` needs before the first frame (the
        fused flow model is compiled per number of distinct references)."""
        if self.fused_for(references.distinct):
            self.flow.compiled_for(references.distinct)

    def encode_references(self, images: np.ndarray, sketches: np.ndarray, index: np.ndarray | None = None,
                          batch: int = 5) -> References:
        """Distinct reference crops (U, 3, 128, 128) in [0, 1] and their sketches -> cached features.

        ``index`` (N,) lists which of the U crops each of the N references is (default: each once).
        """
        images = np.ascontiguousarray(images, np.float32)
        sketches = np.ascontiguousarray(sketches, np.float32)
        index = np.arange(len(images), dtype=np.int64) if index is None else np.asarray(index, np.int64)
        h1s, h2s = [], []
        for start in range(0, len(images), batch):  # bounded memory for large N
            out = self.reference_encoder.run({"ref_image": images[start:start + batch],
                                              "ref_sketch": sketches[start:start + batch]})
            h1s.append(warp.channels_last(out["h1"]))
            h2s.append(out["h2"])
        h2_nchw = np.ascontiguousarray(np.concatenate(h2s))
        return References(np.concatenate(h1s), warp.channels_last(h2_nchw), h2_nchw, warp.channels_last(images),
                          index)

    def render(self, references: References, face: np.ndarray, target_sketches: np.ndarray,
               mel: np.ndarray) -> RenderResult:
        """One frame. ``face`` (3, 128, 128) in [0, 1] (the lower half is masked inside),
        ``target_sketches`` (5, 3, 128, 128), ``mel`` (80, 16)."""
        seconds = {}
        t0 = time.perf_counter()
        driving = np.ascontiguousarray(np.asarray(target_sketches, np.float32).reshape(1, 15, 128, 128))
        if self.fused_for(references.distinct):
            head = self.flow.run({"driving_sketches": driving, "h2": references.h2_nchw})
            seconds["flow"] = time.perf_counter() - t0
        else:
            mods = self.flow_modulations.run({"driving_sketches": driving})
            t1 = time.perf_counter()
            head = self._flow_head(references.h2_nchw, {name: mods[name] for name in MODULATION_NAMES})
            seconds.update(flow_modulations=t1 - t0, flow_head=time.perf_counter() - t1)
        t2 = time.perf_counter()
        w_h1, w_h2, w_ref = warp.warp_and_fuse(head["flow"], head["weight"], references.h1, references.h2,
                                               references.images, references.index,
                                               self.config.threads_per_stream)
        t3 = time.perf_counter()
        out = self.translation.run({
            "face": np.ascontiguousarray(np.asarray(face, np.float32)[None]),
            "target_sketches": driving, "wrapped_ref": w_ref, "wrapped_h1": w_h1, "wrapped_h2": w_h2,
            "mel": np.ascontiguousarray(np.asarray(mel, np.float32).reshape(1, 1, 80, 16)),
        })
        t4 = time.perf_counter()
        seconds.update(warp=t3 - t2, translation=t4 - t3)
        return RenderResult(out["generated_face"][0], w_h1, w_h2, w_ref, seconds)

    def _flow_head(self, h2_nchw: np.ndarray, modulations: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The flow head over every distinct reference, :data:`FLOW_CHUNK` at a time."""
        if len(h2_nchw) <= FLOW_CHUNK:
            return self.flow_head.run({"h2": h2_nchw, **modulations})
        parts = [self.flow_head.run({"h2": h2_nchw[start:start + FLOW_CHUNK], **modulations})
                 for start in range(0, len(h2_nchw), FLOW_CHUNK)]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


@dataclass(frozen=True)
class Models:
    """The loaded graphs that a stream renders with: what a :class:`~.session.StreamSession`
    and a live session get from the pipeline that made them, and nothing else of it."""

    landmark_generator: LandmarkGenerator
    renderer: Renderer
