"""The ceiling's stacks: the plain convolution stack and the renderer's SPADE block."""

from __future__ import annotations

import numpy as np
import pytest

from iplap.benchmarks.ceiling import BLOCK_CONVS, CeilingConfig, ceiling_result, conv_stack_onnx

pytest.importorskip("onnx")


def _run(path, feeds):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def test_the_spade_stack_computes_the_renderers_spade_block(tmp_path):
    """Each layer of the SPADE stack is models/renderer.py's SPADELayer (conditioning conv,
    gamma, beta, instance norm modulated) -> LeakyReLU(0.2) -> conv, with the stack's weights."""
    torch = pytest.importorskip("torch")
    import onnx
    from onnx import numpy_helper

    from iplap.models.renderer import SPADELayer

    config = CeilingConfig(layers=8, channels=16, size=12)
    assert config.block_layers("spade") == 2 and config.block_gmac("spade") == config.gmac  # as many convolutions
    path = conv_stack_onnx(tmp_path / "spade.onnx", config, block="spade")
    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in onnx.load(str(path)).graph.initializer}
    feeds = config.inputs("spade", np.random.default_rng(3))
    x, cond = (torch.from_numpy(feeds[k]) for k in ("x", "cond"))
    with torch.no_grad():
        for k in range(config.block_layers("spade")):
            layer = SPADELayer(config.channels, config.channels, config.channels)
            for part in ("conv1", "gamma", "beta"):
                getattr(layer, part).weight.copy_(weights[f"spade{k}/{part}.weight"])
                getattr(layer, part).bias.copy_(weights[f"spade{k}/{part}.bias"])
            x = torch.nn.functional.conv2d(torch.nn.functional.leaky_relu(layer(x, cond), 0.2),
                                           weights[f"conv{k}.weight"], weights[f"conv{k}.bias"], padding=1)
    np.testing.assert_allclose(_run(path, feeds), x.numpy(), rtol=1e-4, atol=1e-4)


def test_the_conv_stack_is_convolutions_and_relus(tmp_path):
    config = CeilingConfig(layers=3, channels=8, size=10)
    path = conv_stack_onnx(tmp_path / "conv.onnx", config)
    import onnx

    model = onnx.load(str(path))
    assert [n.op_type for n in model.graph.node] == ["Conv", "Relu"] * 3 + ["Identity"]
    assert config.gmac == pytest.approx(3 * 10 * 10 * 8 * 8 * 9 / 1e9)
    assert (_run(path, config.inputs("conv", np.random.default_rng(0))) >= 0).all()


def test_ceiling_config_checks_its_blocks_and_round_trips_through_json():
    with pytest.raises(ValueError, match="ceiling blocks"):
        CeilingConfig(blocks=("conv", "attention"))
    config = CeilingConfig(layers=2, blocks=("spade",))
    assert config.block_layers("spade") == 1 and BLOCK_CONVS["spade"] == 4  # at least one layer
    assert CeilingConfig.from_dict({**config.__dict__, "blocks": ["spade"]}) == config


def test_a_ceiling_entry_is_found_by_backend_precision_threads_and_stack():
    def entry(block, rate):
        return {"backend": "openvino", "precision": "int8", "threads": 2, "gmac_per_s": rate,
                **({"block": block} if block else {})}

    ceiling = {"results": [entry("spade", 1.0), entry(None, 2.0)]}  # no block: the plain stack (older reports)
    assert ceiling_result(ceiling, "openvino", "int8", 2)["gmac_per_s"] == 2.0
    assert ceiling_result(ceiling, "openvino", "int8", 2, "spade")["gmac_per_s"] == 1.0
    assert ceiling_result(ceiling, "openvino", "int8", 1) is None
