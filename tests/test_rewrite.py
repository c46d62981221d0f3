"""The exact graph rewrites applied before quantization compute what the original graph computes.

Tiny ONNX graphs are built here, rewritten, and run on onnxruntime and OpenVINO against the
original on random inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from iplap.calibration.recipe import NncfOptions, OrtOptions, RecipeError  # noqa: E402
from iplap.calibration.rewrite import block_narrow_convs, fold_spade_residual  # noqa: E402
from iplap.runtime.backends import BackendConfig, load_model  # noqa: E402


def _model(nodes, inputs, outputs, initializers):
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _tensor(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _run(model, feeds, tmp_path, backend, name):
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    out = load_model(path, BackendConfig(backend, threads=1, inference_precision="f32" if backend == "openvino" else None))
    return out.run(feeds)


def _conv_model(out_channels, kernel, size, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((out_channels, 8, kernel, kernel)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "w")]
    inputs = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(out_channels).astype(np.float32), "b"))
        inputs.append("b")
    conv = helper.make_node("Conv", inputs, ["y"], name="/head/conv_4/Conv", kernel_shape=[kernel, kernel],
                            pads=[kernel // 2] * 4)
    return _model([conv], [_tensor("x", ["batch", 8, size, size])], [_tensor("y", ["batch", out_channels, size, size])],
                  inits)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("out_channels, kernel, bias", [(2, 7, True), (1, 7, False), (3, 5, True)])
def test_blocked_narrow_conv_computes_the_same(tmp_path, backend, out_channels, kernel, bias):
    original = _conv_model(out_channels, kernel, 16, bias)
    rewritten = _conv_model(out_channels, kernel, 16, bias)
    assert block_narrow_convs(rewritten) == 1
    ops = [(n.op_type, n.name) for n in rewritten.graph.node]
    assert ops == [("SpaceToDepth", "/head/conv_4/SpaceToDepth"), ("Conv", "/head/conv_4/Conv"),
                   ("DepthToSpace", "/head/conv_4/DepthToSpace")]  # names kept: recipe patterns still match
    x = {"x": np.random.default_rng(1).standard_normal((2, 8, 16, 16)).astype(np.float32)}
    want = _run(original, x, tmp_path, backend, "a")["y"]
    got = _run(rewritten, x, tmp_path, backend, "b")["y"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("out_channels, kernel, size", [(2, 3, 16), (16, 7, 16), (2, 7, 18)])
def test_wide_small_or_odd_sized_convs_are_left_alone(out_channels, kernel, size):
    model = _conv_model(out_channels, kernel, size)
    assert block_narrow_convs(model) == 0
    assert [n.op_type for n in model.graph.node] == ["Conv"]


def test_one_dimensional_convs_are_left_alone():
    """The landmark generator's landmark encoders are 1-D convolutions (3-D weights): a
    recipe that quantizes it (``--graphs all``) must not trip over them."""
    weight = np.random.default_rng(0).standard_normal((2, 8, 7)).astype(np.float32)
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="/pose_encoder/Conv", kernel_shape=[7], pads=[3, 3])
    model = _model([conv], [_tensor("x", ["batch", 8, 16])], [_tensor("y", ["batch", 2, 16])],
                   [numpy_helper.from_array(weight, "w")])
    assert block_narrow_convs(model) == 0
    assert [n.op_type for n in model.graph.node] == ["Conv"]


def _spade_model(gamma_from_conv: bool):
    """n = InstanceNorm(x); n + n * gamma + beta, as torch exports SPADE's modulation."""
    rng = np.random.default_rng(2)
    c = 4
    inits = [numpy_helper.from_array(np.ones(c, np.float32), "scale"),
             numpy_helper.from_array(np.zeros(c, np.float32), "shift")]
    nodes = [helper.make_node("InstanceNormalization", ["x", "scale", "shift"], ["n"], name="/instance_norm/In")]
    inputs = [_tensor("x", ["batch", c, 8, 8]), _tensor("beta", [1, c, 8, 8])]
    if gamma_from_conv:
        inits += [numpy_helper.from_array(rng.standard_normal((c, 3, 3, 3)).astype(np.float32), "gw"),
                  numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "gb")]
        nodes.append(helper.make_node("Conv", ["cond", "gw", "gb"], ["gamma"], name="/gamma/Conv", kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1]))
        inputs.append(_tensor("cond", [1, 3, 8, 8]))
    else:
        inputs.append(_tensor("gamma", [1, c, 8, 8]))
    nodes += [helper.make_node("Mul", ["n", "gamma"], ["m"], name="/Mul"),
              helper.make_node("Add", ["n", "m"], ["a"], name="/Add"),
              helper.make_node("Add", ["a", "beta"], ["y"], name="/Add_1")]
    return _model(nodes, inputs, [_tensor("y", ["batch", c, 8, 8])], inits)


@pytest.mark.parametrize("gamma_from_conv", [False, True])
def test_folded_spade_residual_computes_the_same(tmp_path, gamma_from_conv):
    rng = np.random.default_rng(3)
    feeds = {"x": rng.standard_normal((3, 4, 8, 8)).astype(np.float32),
             "beta": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)}
    feeds["cond" if gamma_from_conv else "gamma"] = rng.standard_normal(
        (1, 3, 8, 8) if gamma_from_conv else (1, 4, 8, 8)).astype(np.float32)
    rewritten = _spade_model(gamma_from_conv)
    assert fold_spade_residual(rewritten) == 1
    ops = [n.op_type for n in rewritten.graph.node]
    # One full-size Add fewer; a graph input gamma gets 1 added on its own (batch 1) size.
    assert ops.count("Add") == (2 if not gamma_from_conv else 1)
    want = _run(_spade_model(gamma_from_conv), feeds, tmp_path, "onnxruntime", "a")["y"]
    got = _run(rewritten, feeds, tmp_path, "onnxruntime", "b")["y"]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_recipes_name_known_rewrites_only():
    assert OrtOptions().rewrites == ("block_narrow_convs", "fold_spade_residual")
    assert NncfOptions().rewrites == ("block_narrow_convs",)
    with pytest.raises(RecipeError, match="unknown graph rewrite 'fuse_everything'"):
        OrtOptions(rewrites=("fuse_everything",))
