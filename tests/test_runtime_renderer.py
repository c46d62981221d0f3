"""The torch-free runtime reproduces the goldens on both backends."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import golden
from iplap.errors import BackendError
from iplap.runtime.backends import BackendConfig, load_model
from iplap.runtime.bundle import Bundle

# About ten times the max error measured against the goldens on either backend (printed by
# the tests, -s): landmarks 1.4e-6, face 2.8e-6, h1 2.6e-6, h2 9.2e-7, reference 3.9e-6.
TOL = {"predict_content": 2e-5, "generated_face": 3e-5, "wrapped_h1": 3e-5, "wrapped_h2": 1e-5, "wrapped_ref": 4e-5}
BACKENDS = ["onnxruntime", "openvino"]


@pytest.fixture(scope="module")
def bundle(bundle_dir):
    return Bundle.load(bundle_dir)


@pytest.mark.parametrize("streams", [1, 2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_renderer_matches_golden(bundle, backend, streams):
    """The exact path, also with the graphs built for two calls at once (a live session's
    renders in flight), two of them running concurrently."""
    from concurrent.futures import ThreadPoolExecutor

    from iplap.runtime.renderer import Renderer

    g = golden("renderer")
    renderer = Renderer(bundle, BackendConfig(backend=backend, threads=2, streams=streams))
    refs = renderer.encode_references(g["ref_N_frame_img"][0], g["ref_N_frame_sketch"][0])
    args = (refs, g["face_frame_img"][0, 0], g["target_sketches"][0], g["audio_mels"][0, 0, 0])
    with ThreadPoolExecutor(streams) as pool:
        outs = list(pool.map(lambda _: renderer.render(*args), range(streams)))
    out = outs[0]
    assert all(np.array_equal(o.face, out.face) for o in outs)
    got = {"generated_face": out.face[None], "wrapped_h1": out.wrapped_h1, "wrapped_h2": out.wrapped_h2,
           "wrapped_ref": out.wrapped_ref}
    for name, value in got.items():
        assert value.shape == g[name].shape, name
        error = float(np.abs(value - g[name]).max())
        print(f"{backend} streams={streams} {name}: max error {error:.2e}")
        assert error <= TOL[name], name
    flow_stages = {"flow"} if backend == "openvino" else {"flow_modulations", "flow_head"}  # fused on OpenVINO
    assert set(out.seconds) == flow_stages | {"warp", "translation"}


def test_fused_flow_equals_the_two_graphs(bundle):
    """OpenVINO's fused flow (flow_modulations + flow_head as one model, compiled per
    number of distinct references) computes what the two graphs compute, for a photo's
    one reference and for all the golden's; graphs swapped in that are not OpenVINO's own (a
    recording wrapper) run one after the other again."""
    from iplap.runtime.backends import ComposedOpenVINOModel
    from iplap.runtime.renderer import Renderer

    g = golden("renderer")
    fused = Renderer(bundle, BackendConfig(backend="openvino", threads=2))
    apart = Renderer(bundle, BackendConfig(backend="openvino", threads=2, fuse_flow=False))
    assert isinstance(fused.flow, ComposedOpenVINOModel) and apart.flow is None
    args = (g["face_frame_img"][0, 0], g["target_sketches"][0], g["audio_mels"][0, 0, 0])
    for rows in ([0], list(range(len(g["ref_N_frame_img"][0])))):
        images, sketches = g["ref_N_frame_img"][0][rows], g["ref_N_frame_sketch"][0][rows]
        a, b = (r.render(r.encode_references(images, sketches), *args) for r in (fused, apart))
        for name in ("face", "wrapped_h1", "wrapped_h2", "wrapped_ref"):
            error = float(np.abs(getattr(a, name) - getattr(b, name)).max())
            print(f"{len(rows)} references, {name}: fused against apart {error:.2e}")
            assert error <= 1e-4, name
        assert "flow" in a.seconds and "flow_head" in b.seconds

    class Wrapper:
        def __init__(self, model):
            self.model, self.input_names, self.output_names = model, model.input_names, model.output_names

        def run(self, feeds):
            return self.model.run(feeds)

    assert fused.with_models({"flow_head": Wrapper(fused.flow_head)}).flow is None
    assert fused.with_models({"translation": Wrapper(fused.translation)}).flow is fused.flow


def test_fused_flow_needs_the_same_settings(bundle):
    from iplap.runtime.backends import compose_openvino
    from iplap.runtime.bundle import MODULATION_NAMES

    f32 = load_model(bundle.graph_file("flow_modulations", "openvino"), BackendConfig(backend="openvino"))
    bf16 = load_model(bundle.graph_file("flow_head", "openvino"), BackendConfig(backend="openvino", inference_precision="bf16"))
    assert compose_openvino(f32, bf16, MODULATION_NAMES, "h2") is None
    ort = load_model(bundle.graph_file("flow_head", "onnxruntime"), BackendConfig())
    assert compose_openvino(f32, ort, MODULATION_NAMES, "h2") is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_landmark_generator_matches_golden(bundle, backend):
    from iplap.runtime.landmark_generator import LandmarkGenerator

    g = golden("landmark_generator")
    out = LandmarkGenerator(bundle, BackendConfig(backend=backend)).predict(g["T_mels"], g["T_pose"], g["Nl_pose"],
                                                                            g["Nl_content"])
    error = float(np.abs(out - g["predict_content"]).max())
    print(f"{backend} landmark generator: max error {error:.2e}")
    assert error <= TOL["predict_content"]


class _Counting:
    """A graph model that counts the rows it was given."""

    def __init__(self, model):
        self.model, self.rows = model, 0
        self.input_names, self.output_names = model.input_names, model.output_names

    def run(self, feeds):
        self.rows += len(next(iter(feeds.values())))
        return self.model.run(feeds)


def test_stream_encodings_give_the_window_predictions_encoding_each_frame_once(bundle):
    """A stream's cached encodings give what the whole-window call gives, with each mel
    window and face frame encoded once and the references once for the stream."""
    from iplap.runtime.landmark_generator import Encodings, LandmarkGenerator

    g = golden("landmark_generator")
    base = LandmarkGenerator(bundle, BackendConfig())
    counting = {name: _Counting(model) for name, model in base.models.items()}
    generator = base.with_models(counting)
    rng = np.random.default_rng(0)
    mel_windows, poses = rng.uniform(-4, 4, (12, 1, 80, 16)), g["T_pose"][0]
    encodings = Encodings(generator, g["Nl_pose"][:1], g["Nl_content"][:1])
    worst = 0.0
    for i in range(8):  # renders 0..7: windows max(0, i + k - 2), face frames pinged over 5
        windows = [max(0, i + k - 2) for k in range(5)]
        frames = [(i + k) % 5 for k in range(5)]
        mels, pose = mel_windows[windows], poses[frames]
        got = encodings.content(windows, mels, frames, pose)
        want = base.predict(mels[None], pose[None], g["Nl_pose"][:1], g["Nl_content"][:1])
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst <= TOL["predict_content"]
    assert counting["landmark_mel_encoder"].rows == 10  # windows 0..9, each once
    assert counting["landmark_pose_encoder"].rows == 5
    assert counting["landmark_ref_encoder"].rows == 15
    assert counting["landmark_fusion"].rows == 8
    # several windows in one batch (the frames between two keyframes): the same landmarks
    windows = [([max(0, i + k - 2) for k in range(5)], [(i + k) % 5 for k in range(5)]) for i in (3, 4, 5)]
    batched = encodings.contents([(w, mel_windows[w], f, poses[f]) for w, f in windows])
    for (w, f), got in zip(windows, batched):
        want = base.predict(mel_windows[w][None], poses[f][None], g["Nl_pose"][:1], g["Nl_content"][:1])
        assert float(np.abs(got - want).max()) <= TOL["predict_content"]
    assert counting["landmark_fusion"].rows == 8 + 3
    # streams of one avatar that share encodings (a live session's turns) encode the references
    # and face frames once between them; each its own mel windows
    shared: dict = {}
    for _ in range(2):
        turn = Encodings(generator, g["Nl_pose"][:1], g["Nl_content"][:1], shared)
        turn.content([0, 0, 0, 1, 2], mel_windows[[0, 0, 0, 1, 2]], [0, 1, 2, 3, 4], poses)
    assert counting["landmark_ref_encoder"].rows == 15 + 15
    assert counting["landmark_pose_encoder"].rows == 5 + 5
    assert counting["landmark_mel_encoder"].rows == 10 + 3 + 3


def test_an_embedding_cache_stays_bounded():
    from iplap.runtime.landmark_generator import EmbeddingCache

    cache = EmbeddingCache(lambda x: x * 2, capacity=4)
    for start in range(10):
        keys = list(range(start, start + 3))
        np.testing.assert_array_equal(cache.get(keys, np.array(keys, float)), np.array(keys, float) * 2)
    assert len(cache) == 4


_NO_TORCH = """
import sys
for name in ("torch", "onnx", "nncf"):
    sys.modules[name] = None
import numpy as np
from iplap.runtime.bundle import Bundle
from iplap.runtime.backends import BackendConfig
from iplap.runtime.renderer import Renderer
g = np.load(sys.argv[2])
r = Renderer(Bundle.load(sys.argv[1]), BackendConfig(backend=sys.argv[3]))
refs = r.encode_references(g["ref_N_frame_img"][0], g["ref_N_frame_sketch"][0])
out = r.render(refs, g["face_frame_img"][0, 0], g["target_sketches"][0], g["audio_mels"][0, 0, 0])
print(float(np.abs(out.face[None] - g["generated_face"]).max()))
"""


def test_golden_without_torch_imported(bundle_dir, data_dir):
    out = subprocess.run([sys.executable, "-c", _NO_TORCH, str(bundle_dir), str(data_dir / "golden_renderer.npz"),
                          "openvino"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip()) <= TOL["generated_face"]


def test_openvino_defaults_to_exact_f32():
    from iplap.runtime.backends import openvino_properties

    assert openvino_properties(BackendConfig(backend="openvino"))["INFERENCE_PRECISION_HINT"] == "f32"
    props = openvino_properties(BackendConfig(backend="openvino", threads=3, cache_dir=None))
    assert props["INFERENCE_NUM_THREADS"] == 3


def test_missing_openvino_device_lists_the_present_ones(bundle):
    with pytest.raises(BackendError, match=r"device 'NPU7' is not present; available: .*CPU"):
        load_model(bundle.graph_file("reference_encoder", "openvino"), BackendConfig(backend="openvino", device="NPU7"))


def test_openvino_cache_dir_is_used(bundle, tmp_path):
    cache = tmp_path / "ovcache"
    load_model(bundle.graph_file("reference_encoder", "openvino"), BackendConfig(backend="openvino", cache_dir=cache))
    assert any(cache.iterdir())


@pytest.mark.parametrize("kwargs,message", [
    ({"backend": "tensorrt"}, "unknown backend"), ({"backend": "onnxruntime", "device": "GPU"}, "CPU only"),
    ({"threads": -1}, "threads"), ({"inference_precision": "int4"}, "inference precision")])
def test_backend_config_validates(kwargs, message):
    with pytest.raises(BackendError, match=message):
        BackendConfig(**kwargs)


def test_distinct_references_equal_repeated_ones(bundle):
    """A reference repeated by index renders as the same reference given N times."""
    from iplap.runtime.renderer import Renderer

    g = golden("renderer")
    renderer = Renderer(bundle, BackendConfig(backend="onnxruntime", threads=2))
    images, sketches = g["ref_N_frame_img"][0], g["ref_N_frame_sketch"][0]
    index = np.array([0, 2, 2, 0, 2])
    compact = renderer.encode_references(images[[0, 2]], sketches[[0, 2]], index=np.array([0, 1, 1, 0, 1]))
    full = renderer.encode_references(images[index], sketches[index])
    args = (g["face_frame_img"][0, 0], g["target_sketches"][0], g["audio_mels"][0, 0, 0])
    assert compact.distinct == 2 and compact.count == 5
    assert np.abs(renderer.render(compact, *args).face - renderer.render(full, *args).face).max() < 1e-5


def test_bundle_precision_hint_is_used_unless_the_caller_chooses():
    from iplap.runtime.backends import for_bundle

    ov = BackendConfig(backend="openvino")
    assert for_bundle(ov, "bf16").inference_precision == "bf16"
    assert for_bundle(ov, None).inference_precision is None  # -> f32 in the properties
    assert for_bundle(BackendConfig(backend="openvino", inference_precision="f32"), "bf16").inference_precision == "f32"
    assert for_bundle(BackendConfig(backend="onnxruntime"), "bf16").inference_precision is None


def test_fused_flow_keeps_a_bounded_number_of_batches(bundle):
    """One compiled model per number of distinct references, the oldest dropped beyond
    COMPOSED_BATCHES_KEPT; a dropped batch compiles again when it comes back, with the
    same result, and each thread gets requests of the kept batches only."""
    from iplap.runtime.backends import COMPOSED_BATCHES_KEPT
    from iplap.runtime.renderer import Renderer

    flow = Renderer(bundle, BackendConfig(backend="openvino", threads=1)).flow
    rng = np.random.default_rng(0)
    driving = rng.uniform(0, 0.8, (1, 15, 128, 128)).astype(np.float32)
    h2 = rng.standard_normal((COMPOSED_BATCHES_KEPT + 1, 256, 64, 64)).astype(np.float32)
    first = flow.run({"driving_sketches": driving, "h2": h2[:1]})["flow"]
    for batch in range(2, COMPOSED_BATCHES_KEPT + 2):
        out = flow.run({"driving_sketches": driving, "h2": h2[:batch]})
        assert out["flow"].shape == (batch, 2, 128, 128) and out["weight"].shape == (batch, 1, 128, 128)
    assert sorted(flow._compiled) == list(range(2, COMPOSED_BATCHES_KEPT + 2))
    again = flow.run({"driving_sketches": driving, "h2": h2[:1]})["flow"]
    assert np.array_equal(again, first) and 1 in flow._compiled and len(flow._compiled) == COMPOSED_BATCHES_KEPT
    assert set(flow._local.requests) <= set(flow._compiled)
