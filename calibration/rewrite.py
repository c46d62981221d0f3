"""Exact rewrites of an fp32 ONNX graph, applied before it is quantized.

Each rewrite computes the same function (in real arithmetic; float rounding may differ in
the last bits) in a form that the quantized graph runs faster. They were chosen from
per-operator profiles of the int8 renderer graphs (``iplap bench`` reports each graph's
share of the machine's convolution ceiling; see docs/benchmarks.md):

``block_narrow_convs``
    A large-kernel convolution with very few output channels (``flow_head``'s ``conv_4``
    and ``conv_5.2``, ``translation``'s ``conv_last``: 7x7 to 1-3 channels, kept in float
    by the recipe) wastes most of its time: both backends compute output channels in
    blocks of 8 or 16, so a 2-channel convolution costs as much as a 16-channel one. It
    becomes SpaceToDepth(4) -> a 3x3 convolution with 16 times the channels ->
    DepthToSpace(4): the same sums over the same products (and zeros), about 3x the
    multiply-adds but no empty blocks, 3-5x faster.
``fold_spade_residual``
    SPADE's ``norm + norm * gamma + beta`` becomes ``norm * (1 + gamma) + beta``, one
    full-size addition fewer per SPADE layer. ``1 + gamma`` is computed on gamma itself:
    folded into the bias of the convolution that makes it, or, where gamma is a graph
    input (``flow_head``: batch 1, broadcast over the N references), added there. Only for
    onnxruntime, which runs every element-wise op as its own pass; OpenVINO fuses the
    original chain better than this one (measured).

Node names are kept (new nodes are named under the name of the node they replace), so
the recipe's exclusion patterns select the same layers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)

#: Block size of :func:`block_narrow_convs` (4: a 7x7 kernel becomes 3x3).
BLOCK = 4
#: Convolutions with at most this many output channels are blocked.
NARROW_CHANNELS = 4


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _spatial_shapes(model) -> dict[str, list[int]]:
    """Static (H, W) of every 4-D tensor whose spatial size shape inference knows."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model)
    shapes = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4 and all(d.HasField("dim_value") for d in dims[2:]):
            shapes[value.name] = [dims[2].dim_value, dims[3].dim_value]
    return shapes


def blocked_weights(weight: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """The 3x3 (generally K x K) weights over SpaceToDepth(block) channels that give the same
    output as ``weight`` (Co, Ci, k, k) with 'same' zero padding, in DepthToSpace (DCR) order.

    Output pixel (Y*block + a, X*block + b), channel o, is channel (a*block + b)*Co + o of
    the blocked convolution; input pixel (Y'*block + i, X'*block + j), channel c, is channel
    (i*block + j)*Ci + c of SpaceToDepth's output.
    """
    co, ci, kh, kw = weight.shape
    r = kh // 2
    lo, hi = -((r + block - 1) // block), (block - 1 + r) // block
    size = hi - lo + 1
    out = np.zeros((block * block * co, block * block * ci, size, size), weight.dtype)
    for a in range(block):
        for b in range(block):
            for i in range(block):
                for j in range(block):
                    for dy in range(lo, hi + 1):
                        ky = dy * block + i - a + r
                        if not 0 <= ky < kh:
                            continue
                        for dx in range(lo, hi + 1):
                            kx = dx * block + j - b + r
                            if 0 <= kx < kw:
                                rows = slice((a * block + b) * co, (a * block + b + 1) * co)
                                cols = slice((i * block + j) * ci, (i * block + j + 1) * ci)
                                out[rows, cols, dy - lo, dx - lo] = weight[:, :, ky, kx]
    return out


def block_narrow_convs(model, block: int = BLOCK, max_channels: int = NARROW_CHANNELS) -> int:
    """Rewrite every narrow large-kernel convolution (see the module docstring); returns how many."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    spatial = _spatial_shapes(model)
    nodes, count = [], 0
    for node in graph.node:
        weight = numpy_helper.to_array(initializers[node.input[1]]) if (
            node.op_type == "Conv" and node.input[1] in initializers) else None
        if weight is None or not _blockable(node, weight, spatial.get(node.input[0]), block, max_channels):
            nodes.append(node)
            continue
        co = weight.shape[0]
        base = node.name.rsplit("/", 1)[0] if "/" in node.name else node.name
        blocked = blocked_weights(weight, block)
        pad = blocked.shape[2] // 2
        weight_name = f"{node.input[1]}.blocked{block}"
        graph.initializer.append(numpy_helper.from_array(blocked, weight_name))
        inputs = [f"{base}/SpaceToDepth_output_0", weight_name]
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(initializers[node.input[2]])
            bias_name = f"{node.input[2]}.blocked{block}"
            graph.initializer.append(numpy_helper.from_array(np.tile(bias, block * block), bias_name))
            inputs.append(bias_name)
        nodes += [
            helper.make_node("SpaceToDepth", [node.input[0]], [inputs[0]], name=f"{base}/SpaceToDepth",
                             blocksize=block),
            helper.make_node("Conv", inputs, [f"{base}/Conv_blocked_output_0"], name=node.name,
                             kernel_shape=list(blocked.shape[2:]), pads=[pad] * 4),
            helper.make_node("DepthToSpace", [f"{base}/Conv_blocked_output_0"], [node.output[0]],
                             name=f"{base}/DepthToSpace", blocksize=block, mode="DCR"),
        ]
        log.debug("blocked %s: %d output channels -> %d", node.name, co, co * block * block)
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused_initializers(model)
    return count


def _blockable(node, weight: np.ndarray, hw: list[int] | None, block: int, max_channels: int) -> bool:
    if weight.ndim != 4:  # only 2-D convolutions (the landmark generator has 1-D ones)
        return False
    co, _, kh, kw = weight.shape
    attrs = _attributes(node)
    if co > max_channels or kh != kw or kh % 2 == 0 or kh < 5 or hw is None or any(s % block for s in hw):
        return False
    if attrs.get("group", 1) != 1 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return False
    r = kh // 2
    return (list(attrs.get("strides", [1, 1])) == [1, 1]
            and list(attrs.get("dilations", [1, 1])) == [1, 1] and list(attrs.get("pads", [0] * 4)) == [r] * 4)


def fold_spade_residual(model) -> int:
    """Rewrite every ``n + n * gamma`` after an InstanceNormalization to ``n * (1 + gamma)``
    (see the module docstring); returns how many."""
    from onnx import helper, numpy_helper

    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    initializers = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    before: dict[int, object] = {}  # id(node) -> a node to insert before it
    dropped: set[int] = set()
    count = 0
    for mul in graph.node:
        if mul.op_type != "Mul" or len(mul.input) != 2:
            continue
        norm, gamma = mul.input
        if producers.get(norm) is None or producers[norm].op_type != "InstanceNormalization":
            norm, gamma = gamma, norm
            if producers.get(norm) is None or producers[norm].op_type != "InstanceNormalization":
                continue
        users = consumers.get(norm, [])
        residual = [u for u in users if u.op_type == "Add" and sorted(u.input) == sorted([norm, mul.output[0]])]
        if len(users) != 2 or len(residual) != 1 or residual[0].output[0] in outputs \
                or len(consumers.get(mul.output[0], [])) != 1:
            continue
        add = residual[0]
        source = producers.get(gamma)
        bias = initializers.get(source.input[2]) if source is not None and source.op_type == "Conv" \
            and len(source.input) > 2 else None
        if bias is not None and len(consumers.get(gamma, [])) == 1 and len(consumers.get(bias.name, [])) == 1:
            bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(1), bias.name))
        else:
            one = f"{mul.name}/one"
            graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), one))
            plus = f"{mul.name}/one_plus_gamma"
            before[id(mul)] = helper.make_node("Add", [gamma, one], [plus], name=f"{mul.name}/OnePlusGamma")
            mul.input[list(mul.input).index(gamma)] = plus
        for user in consumers.get(add.output[0], []):
            for k, name in enumerate(user.input):
                if name == add.output[0]:
                    user.input[k] = mul.output[0]
        dropped.add(id(add))
        count += 1
    nodes = []
    for node in graph.node:
        if id(node) in dropped:
            continue
        if id(node) in before:
            nodes.append(before[id(node)])
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def _drop_unused_initializers(model) -> None:
    used = {name for n in model.graph.node for name in n.input}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


#: The rewrites by name, as recipes list them.
REWRITES: dict[str, Callable] = {"block_narrow_convs": block_narrow_convs, "fold_spade_residual": fold_spade_residual}


def rewrite_onnx(source, dest, names: tuple[str, ...]) -> dict[str, int]:
    """Apply the named rewrites to the ONNX file ``source``, write ``dest``; returns each
    rewrite's count of rewritten places."""
    import onnx

    model = onnx.load(str(source))
    counts = {name: REWRITES[name](model) for name in names}
    onnx.checker.check_model(model)
    onnx.save(model, str(dest))
    return counts
