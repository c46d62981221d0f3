"""The landmark generator, torch-free: four graphs, each run as often as its input changes.

=====================  ======================  ================================================
graph                  runs                    computes
=====================  ======================  ================================================
landmark_mel_encoder   once per frame          a frame's mel window -> a 512-d embedding
landmark_pose_encoder  once per face frame     a face frame's 74 pose points -> an embedding
landmark_ref_encoder   once per avatar         the 15 reference landmark sets -> embeddings
landmark_fusion        once per window         the transformer over [refs | 5 mels | 5 poses]
                                               and the heads: 5 frames' 57 jaw and lip points
=====================  ======================  ================================================

The original runs all of it for every 5-frame window, so each frame's mel and pose were
encoded five times and the references once per window. The split computes the same
function (the encoders are per token; the goldens prove it), and a stream keeps what was
encoded in an :class:`Encodings` cache, so that a frame costs one mel encode and one
fusion: cheap enough to predict the lips of every frame, rendered or not (the in-between
frames of :mod:`.inbetween`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np

from ..errors import BundleError
from .backends import BackendConfig, InferenceModel, for_bundle, load_model
from .bundle import GRAPH_BY_NAME, LANDMARK_GRAPH_NAMES, Bundle


def load_graph(bundle: Bundle, name: str, config: BackendConfig) -> InferenceModel:
    """One graph of ``bundle`` on ``config``'s backend, its inputs and outputs checked by name."""
    expected = GRAPH_BY_NAME[name]
    config = for_bundle(config, bundle.openvino_hint(name))
    model = load_model(bundle.graph_file(name, config.backend), config, expected.output_names)
    if set(model.input_names) != set(expected.input_names) or set(model.output_names) != set(expected.output_names):
        raise BundleError(f"{bundle.root}: graph {name!r} has inputs {model.input_names} and outputs "
                          f"{model.output_names}, not those this iplap expects")
    return model


def _f32(array) -> np.ndarray:
    return np.ascontiguousarray(array, np.float32)


class LandmarkGenerator:
    """Lip and jaw landmarks: the four graphs of the module's table."""

    #: The graphs it runs, by name.
    GRAPH_NAMES = LANDMARK_GRAPH_NAMES

    def __init__(self, bundle: Bundle, config: BackendConfig):
        self.models = {name: load_graph(bundle, name, config) for name in self.GRAPH_NAMES}

    def with_models(self, models: Mapping[str, InferenceModel]) -> LandmarkGenerator:
        """A generator running ``models`` (by graph name) in place of these graphs; this one is unchanged."""
        unknown = sorted(set(models) - set(self.GRAPH_NAMES))
        if unknown:
            raise KeyError(f"the landmark generator has no graph {unknown[0]!r}")
        other = LandmarkGenerator.__new__(LandmarkGenerator)
        other.models = {**self.models, **models}
        return other

    def encode_mels(self, mels: np.ndarray) -> np.ndarray:
        """(n, 1, 80, 16) mel windows -> (n, 512)."""
        return self.models["landmark_mel_encoder"].run({"mels": _f32(mels)})["mel_embedding"]

    def encode_poses(self, pose: np.ndarray) -> np.ndarray:
        """(n, 2, 74) pose landmarks -> (n, 512)."""
        return self.models["landmark_pose_encoder"].run({"pose": _f32(pose)})["pose_embedding"]

    def encode_references(self, ref_pose: np.ndarray, ref_content: np.ndarray) -> np.ndarray:
        """(n, 2, 74) and (n, 2, 57) reference landmarks -> (n, 512)."""
        feeds = {"ref_pose": _f32(ref_pose), "ref_content": _f32(ref_content)}
        return self.models["landmark_ref_encoder"].run(feeds)["ref_embedding"]

    def fuse(self, ref_emb: np.ndarray, mel_emb: np.ndarray, pose_emb: np.ndarray) -> np.ndarray:
        """(B, 15, 512), (B, 5, 512), (B, 5, 512) embeddings -> content (B*5, 2, 57)."""
        feeds = {"ref_embedding": _f32(ref_emb), "mel_embedding": _f32(mel_emb), "pose_embedding": _f32(pose_emb)}
        return self.models["landmark_fusion"].run(feeds)["content"]

    def predict(self, mels: np.ndarray, pose: np.ndarray, ref_pose: np.ndarray,
                ref_content: np.ndarray) -> np.ndarray:
        """The original's call, every part encoded afresh: (B, 5, 1, 80, 16), (B, 5, 2, 74),
        (B, 15, 2, 74), (B, 15, 2, 57) -> (B*5, 2, 57)."""
        (b, t), n_ref = mels.shape[:2], ref_pose.shape[1]
        mel_emb = self.encode_mels(mels.reshape(b * t, *mels.shape[2:])).reshape(b, t, -1)
        pose_emb = self.encode_poses(pose.reshape(b * t, *pose.shape[2:])).reshape(b, t, -1)
        ref_emb = self.encode_references(ref_pose.reshape(b * n_ref, *ref_pose.shape[2:]),
                                         ref_content.reshape(b * n_ref, *ref_content.shape[2:])).reshape(b, n_ref, -1)
        return self.fuse(ref_emb, mel_emb, pose_emb)


class EmbeddingCache:
    """Embeddings by key (a frame's index), at most ``capacity`` of them, the least recently
    used dropped first; safe for several threads (a live session's renders in flight)."""

    def __init__(self, encode: Callable[[np.ndarray], np.ndarray], capacity: int = 64):
        self._encode = encode
        self._capacity = int(capacity)
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, keys: Sequence[Hashable], inputs: np.ndarray) -> np.ndarray:
        """The embeddings of ``keys`` (``inputs[j]`` is key j's input), encoding the missing
        ones in one batch: (len(keys), 512)."""
        with self._lock:
            found = {k: self._items[k] for k in keys if k in self._items}
            for k in found:
                self._items.move_to_end(k)
        missing = [j for j, k in enumerate(keys) if k not in found and keys.index(k) == j]
        if missing:
            encoded = self._encode(inputs[missing])
            with self._lock:
                for row, j in enumerate(missing):
                    found[keys[j]] = self._items[keys[j]] = encoded[row]
                while len(self._items) > self._capacity:
                    self._items.popitem(last=False)
        return np.stack([found[k] for k in keys])


class Encodings:
    """What a stream has encoded: its mel windows' embeddings (by window index), its avatar's
    face frames' pose embeddings (by frame) and the reference embeddings (once).

    :meth:`content` is :meth:`LandmarkGenerator.predict` for one window, encoding only
    what no earlier window of the stream encoded. ``shared``: a dict that streams of one
    avatar and generator share (``StreamSetup.avatar_encodings``: a live session's turns), in
    which the reference and pose embeddings are kept, so that they are encoded once for all."""

    def __init__(self, generator: LandmarkGenerator, ref_pose: np.ndarray, ref_content: np.ndarray,
                 shared: dict | None = None):
        self.generator = generator
        shared = {} if shared is None else shared
        if "refs" not in shared:  # a race encodes them twice, the same
            shared["refs"] = generator.encode_references(ref_pose[0], ref_content[0])[None]  # (1, 15, 512)
        self.refs = shared["refs"]
        self.poses = shared.setdefault("poses", EmbeddingCache(generator.encode_poses))
        self.mels = EmbeddingCache(generator.encode_mels)

    def content(self, mel_windows: Sequence[int], mels: np.ndarray, frames: Sequence[int], pose: np.ndarray) -> np.ndarray:
        """The window's (5, 2, 57) content: ``mels`` (5, 1, 80, 16) are mel windows
        ``mel_windows``, ``pose`` (5, 2, 74) the poses of face frames ``frames``."""
        return self.contents([(mel_windows, mels, frames, pose)])[0]

    def contents(self, windows: Sequence[tuple[Sequence[int], np.ndarray, Sequence[int], np.ndarray]]) -> np.ndarray:
        """:meth:`content` of several windows (each ``(mel_windows, mels, frames, pose)``) in
        one call of each graph: (B, 5, 2, 57). A batch of windows costs less per window (the
        fusion's matrices are small for one)."""
        mel_keys = [w for window in windows for w in window[0]]
        frame_keys = [f for window in windows for f in window[2]]
        mel_emb = self.mels.get(mel_keys, np.concatenate([window[1] for window in windows]))
        pose_emb = self.poses.get(frame_keys, np.concatenate([window[3] for window in windows]))
        b = len(windows)
        refs = np.repeat(self.refs, b, axis=0)
        content = self.generator.fuse(refs, mel_emb.reshape(b, -1, mel_emb.shape[-1]),
                                      pose_emb.reshape(b, -1, pose_emb.shape[-1]))
        return content.reshape(b, -1, *content.shape[1:])


__all__ = ["EmbeddingCache", "Encodings", "LandmarkGenerator", "load_graph"]
