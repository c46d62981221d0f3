"""TFLite -> ONNX: one :class:`Converter` per graph, with a handler per TFLite op.

The ONNX graph keeps the TFLite signature (the same input and output names, NHWC input,
the TFLite output shapes); inside, 4-D activations are NCHW, so constants that meet them
are transposed once here and layouts change only at the graph's edges and around
reshapes and slices. fp16 weights are widened to fp32 (exactly) and sparse ones were
densified by the reader. MediaPipe's custom ops are written with standard ONNX ops by
:mod:`.mediapipe_ops`; ``PRELU`` becomes ``relu(x) + alpha * min(x, 0)`` (see its handler).
"""

from __future__ import annotations

import numpy as np

from ... import __version__
from .. import OPSET
from .mediapipe_ops import landmarks_to_matrix, transform_landmarks, transform_tensor_bilinear
from .tflite_reader import Op, Tensor, builtin_options, custom_options, read_tflite
from .wheel import FaceModelExportError

#: TFLite's fused activation codes -> what they become (``None``: no activation).
_FUSED = {0: None, 1: "Relu", 2: "relu_n1_to_1", 3: "relu6"}


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _to_nchw(value: np.ndarray) -> np.ndarray:
    """Constants that meet 4-D activations: NHWC -> NCHW (lower ranks broadcast over channels last)."""
    if value.ndim == 4:
        return value.transpose(0, 3, 1, 2)
    return value


class Converter:
    """Builds one ONNX graph from a TFLite graph; 4-D activations are NCHW inside it."""

    def __init__(self, tensors: list[Tensor]):
        self.tensors = tensors
        self.nodes: list = []
        self.initializers: list = []
        self.names: dict[int, str] = {}
        self.counter = 0

    # helpers -----------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        # "~" sorts after letters: OpenVINO names a fused output tensor by the smallest of its
        # names (get_any_name), which must stay the TFLite output name.
        self.counter += 1
        return f"~{hint}_{self.counter}"

    def const(self, value: np.ndarray, hint: str = "const") -> str:
        from onnx import numpy_helper

        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op_type: str, inputs: list[str], hint: str, **attrs) -> str:
        from onnx import helper

        out = self.fresh(hint)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def value(self, index: int) -> str:
        """The ONNX name holding tensor ``index`` (a constant becomes an initializer, NCHW if 4-D)."""
        if index not in self.names:
            tensor = self.tensors[index]
            if tensor.value is None:
                raise FaceModelExportError(f"tensor {tensor.name} is used before it is computed")
            arr = tensor.value.astype(np.float32) if tensor.value.dtype == np.float16 else tensor.value
            self.names[index] = self.const(_to_nchw(arr), "w")
        return self.names[index]

    def fused(self, name: str, code: int) -> str:
        if code not in _FUSED:
            raise FaceModelExportError(f"unsupported fused activation {code}")
        if _FUSED[code] is None:
            return name
        if _FUSED[code] == "Relu":
            return self.node("Relu", [name], "relu")
        lo, hi = (-1.0, 1.0) if _FUSED[code] == "relu_n1_to_1" else (0.0, 6.0)
        return self.node("Clip", [name, self.const(np.float32(lo)), self.const(np.float32(hi))], "clip")

    def to_nhwc(self, index: int) -> str:
        name = self.value(index)
        if len(self.tensors[index].shape) != 4:
            return name
        return self.node("Transpose", [name], "nhwc", perm=[0, 2, 3, 1])

    def from_nhwc(self, name: str, rank: int) -> str:
        return self.node("Transpose", [name], "nchw", perm=[0, 3, 1, 2]) if rank == 4 else name

    def constant_of(self, index: int) -> np.ndarray:
        value = self.tensors[index].value
        if value is None:
            raise FaceModelExportError(f"{self.tensors[index].name} must be a constant")
        return value

    # ops ---------------------------------------------------------------------------------
    def convert(self, op: Op) -> None:
        handler = getattr(self, "op_" + op.opcode, None)
        if handler is None:
            raise FaceModelExportError(f"TFLite op {op.opcode} is not supported by this converter")
        out = handler(op)
        if out is not None:
            self.names[op.outputs[0]] = out

    def fold(self, op: Op, value: np.ndarray) -> None:
        self.tensors[op.outputs[0]].value = value

    def op_DEQUANTIZE(self, op: Op):
        src = self.tensors[op.inputs[0]].value
        if src is None or src.dtype != np.float16:
            raise FaceModelExportError("only float16 constant DEQUANTIZE is supported")
        self.fold(op, src.astype(np.float32))

    def op_DENSIFY(self, op: Op):
        self.fold(op, self.constant_of(op.inputs[0]))  # already dense (see _densify)

    def _conv(self, op: Op, weight: np.ndarray, group: int, options) -> str:
        shape = self.tensors[op.inputs[0]].shape
        kh, kw = weight.shape[2], weight.shape[3]
        sh, sw = options.StrideH(), options.StrideW()
        dh, dw = options.DilationHFactor(), options.DilationWFactor()
        if options.Padding() == 0:  # SAME
            top, bottom = _same_pads(shape[1], kh, sh, dh)
            left, right = _same_pads(shape[2], kw, sw, dw)
        else:
            top = bottom = left = right = 0
        inputs = [self.value(op.inputs[0]), self.const(weight.astype(np.float32), "kernel")]
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            inputs.append(self.const(self.constant_of(op.inputs[2]).astype(np.float32), "bias"))
        out = self.node("Conv", inputs, "conv", kernel_shape=[kh, kw], strides=[sh, sw], dilations=[dh, dw],
                        pads=[top, left, bottom, right], group=group)
        return self.fused(out, options.FusedActivationFunction())

    def op_CONV_2D(self, op: Op):
        kernel = self.constant_of(op.inputs[1]).astype(np.float32)  # OHWI
        return self._conv(op, kernel.transpose(0, 3, 1, 2), 1, builtin_options(op, "Conv2DOptions"))

    def op_DEPTHWISE_CONV_2D(self, op: Op):
        kernel = self.constant_of(op.inputs[1]).astype(np.float32)  # 1, H, W, C*multiplier
        channels = self.tensors[op.inputs[0]].shape[3]
        return self._conv(op, kernel.transpose(3, 0, 1, 2), channels, builtin_options(op, "DepthwiseConv2DOptions"))

    def _binary(self, op: Op, onnx_op: str, options_cls: str | None):
        ranks = [len(self.tensors[i].shape) for i in op.inputs]
        operands = []
        for index, other in zip(op.inputs, reversed(ranks), strict=True):
            value = self.tensors[index].value
            if other == 4 and len(self.tensors[index].shape) < 4:
                if value is None:
                    raise FaceModelExportError(f"{op.opcode}: broadcasting an activation against a 4-D one")
                # NHWC broadcasting aligns trailing axes (channels last): pad to rank 4, then to NCHW
                value = value.astype(np.float32).reshape((1,) * (4 - value.ndim) + value.shape)
                operands.append(self.const(value.transpose(0, 3, 1, 2), "w"))
            else:
                operands.append(self.value(index))
        out = self.node(onnx_op, operands, onnx_op.lower())
        return self.fused(out, builtin_options(op, options_cls).FusedActivationFunction()) if options_cls else out

    def op_ADD(self, op: Op):
        return self._binary(op, "Add", "AddOptions")

    def op_MUL(self, op: Op):
        return self._binary(op, "Mul", "MulOptions")

    def op_RELU(self, op: Op):
        return self.node("Relu", [self.value(op.inputs[0])], "relu")

    def op_PRELU(self, op: Op):
        # relu(x) + alpha * min(x, 0): bit-identical to PRelu (one of the two terms is an exact
        # zero), and twice as fast in onnxruntime, whose PRelu kernel leaves the NCHWc layout
        # its convolutions use (a reorder before and after each of the 73 PRelus).
        alpha = self.constant_of(op.inputs[1]).astype(np.float32)
        if len(self.tensors[op.inputs[0]].shape) == 4:
            alpha = alpha.reshape(-1)[:, None, None] if alpha.size > 1 else alpha.reshape(1, 1, 1)
        x = self.value(op.inputs[0])
        negative = self.node("Min", [x, self.const(np.float32(0.0), "zero")], "prelu_neg")
        scaled = self.node("Mul", [negative, self.const(alpha, "alpha")], "prelu_scaled")
        return self.node("Add", [self.node("Relu", [x], "prelu_pos"), scaled], "prelu")

    def op_PAD(self, op: Op):
        pads = self.constant_of(op.inputs[1]).astype(np.int64)  # rank x (before, after)
        if len(self.tensors[op.inputs[0]].shape) == 4:
            pads = pads[[0, 3, 1, 2]]
        onnx_pads = np.concatenate([pads[:, 0], pads[:, 1]])
        return self.node("Pad", [self.value(op.inputs[0]), self.const(onnx_pads, "pads")], "pad", mode="constant")

    def op_MAX_POOL_2D(self, op: Op):
        options = builtin_options(op, "Pool2DOptions")
        shape = self.tensors[op.inputs[0]].shape
        kh, kw, sh, sw = options.FilterHeight(), options.FilterWidth(), options.StrideH(), options.StrideW()
        if options.Padding() == 0:
            top, bottom = _same_pads(shape[1], kh, sh, 1)
            left, right = _same_pads(shape[2], kw, sw, 1)
        else:
            top = bottom = left = right = 0
        out = self.node("MaxPool", [self.value(op.inputs[0])], "maxpool", kernel_shape=[kh, kw], strides=[sh, sw],
                        pads=[top, left, bottom, right])
        return self.fused(out, options.FusedActivationFunction())

    def op_RESHAPE(self, op: Op):
        src_shape = self.tensors[op.inputs[0]].shape
        dst_shape = self.tensors[op.outputs[0]].shape
        shape = self.const(np.array(dst_shape, np.int64), "shape")
        if len(src_shape) == 4 and src_shape[1] == src_shape[2] == 1 and len(dst_shape) != 4:
            return self.node("Reshape", [self.value(op.inputs[0]), shape], "reshape")  # NCHW == NHWC order
        out = self.node("Reshape", [self.to_nhwc(op.inputs[0]), shape], "reshape")
        return self.from_nhwc(out, len(dst_shape))

    def op_CONCATENATION(self, op: Op):
        options = builtin_options(op, "ConcatenationOptions")
        rank = len(self.tensors[op.outputs[0]].shape)
        axis = options.Axis() % rank
        if rank == 4:
            axis = [0, 2, 3, 1][axis]
        out = self.node("Concat", [self.value(i) for i in op.inputs], "concat", axis=axis)
        return self.fused(out, options.FusedActivationFunction())

    def op_STRIDED_SLICE(self, op: Op):
        options = builtin_options(op, "StridedSliceOptions")
        if options.EllipsisMask() or options.NewAxisMask() or options.ShrinkAxisMask():
            raise FaceModelExportError("STRIDED_SLICE with ellipsis, new-axis or shrink masks is not supported")
        shape = self.tensors[op.inputs[0]].shape
        begin, end, strides = (self.constant_of(i).astype(np.int64) for i in op.inputs[1:4])
        for axis in range(len(shape)):
            if options.BeginMask() >> axis & 1:
                begin[axis] = 0 if strides[axis] > 0 else shape[axis] - 1
            if options.EndMask() >> axis & 1:
                end[axis] = shape[axis] if strides[axis] > 0 else -shape[axis] - 1
        if tuple(self.tensors[op.outputs[0]].shape) == tuple(shape) and np.all(strides == 1):
            return self.node("Identity", [self.value(op.inputs[0])], "slice")
        out = self.node("Slice", [self.to_nhwc(op.inputs[0]), self.const(begin, "starts"), self.const(end, "ends"),
                                  self.const(np.arange(len(shape), dtype=np.int64), "axes"),
                                  self.const(strides, "steps")], "slice")
        return self.from_nhwc(out, len(shape))

    def op_RESIZE_BILINEAR(self, op: Op):
        options = builtin_options(op, "ResizeBilinearOptions")
        if options.AlignCorners():
            mode = "align_corners"
        elif options.HalfPixelCenters():
            mode = "half_pixel"
        else:
            mode = "asymmetric"
        n, h, w, c = self.tensors[op.outputs[0]].shape
        sizes = self.const(np.array([n, c, h, w], np.int64), "sizes")
        return self.node("Resize", [self.value(op.inputs[0]), "", "", sizes], "resize", mode="linear",
                         coordinate_transformation_mode=mode)

    def op_DEPTH_TO_SPACE(self, op: Op):
        block = builtin_options(op, "DepthToSpaceOptions").BlockSize()
        # TensorFlow's NHWC depth_to_space orders channels as ONNX's DCR mode does.
        return self.node("DepthToSpace", [self.value(op.inputs[0])], "d2s", blocksize=block, mode="DCR")

    # MediaPipe custom ops (version 2 of each, as in face_landmark_with_attention.tflite) --------
    def op_Landmarks2TransformMatrix(self, op: Op):
        if op.version != 2:
            raise FaceModelExportError(f"Landmarks2TransformMatrix v{op.version} is not supported")
        attrs = custom_options(op)
        subset = list(attrs["subset_idxs"])
        if len(subset) % 2:  # MediaPipe pairs the indices and repeats an odd last one
            subset.append(subset[-1])
        return landmarks_to_matrix(self, self.value(op.inputs[0]), attrs, subset)

    def op_TransformTensorBilinear(self, op: Op):
        if op.version != 2:
            raise FaceModelExportError(f"TransformTensorBilinear v{op.version} is not supported")
        attrs = custom_options(op)
        _, height, width, _ = self.tensors[op.inputs[0]].shape
        return transform_tensor_bilinear(self, self.value(op.inputs[0]), self.value(op.inputs[1]),
                                         (height, width), (int(attrs["output_height"]), int(attrs["output_width"])))

    def op_TransformLandmarks(self, op: Op):
        if op.version != 2:
            raise FaceModelExportError(f"TransformLandmarks v{op.version} is not supported")
        dims = self.tensors[op.inputs[0]].shape[-1]
        return transform_landmarks(self, self.value(op.inputs[0]), self.value(op.inputs[1]), dims)


def tflite_to_onnx(data: bytes, graph_name: str, metadata: dict[str, str] | None = None):
    """Convert one TFLite flatbuffer to an ONNX ModelProto with the same signature (NHWC input)."""
    import onnx
    from onnx import TensorProto, helper

    tflite_graph = read_tflite(data)
    tensors = tflite_graph.tensors
    cv = Converter(tensors)
    graph_inputs = []
    for index in tflite_graph.inputs:
        tensor = tensors[index]
        graph_inputs.append(helper.make_tensor_value_info(tensor.name, TensorProto.FLOAT, list(tensor.shape)))
        cv.names[index] = cv.from_nhwc(tensor.name, len(tensor.shape))
    for op in tflite_graph.ops:
        cv.convert(op)
    graph_outputs = []
    for index in tflite_graph.outputs:
        tensor = tensors[index]
        src = cv.to_nhwc(index)
        cv.nodes.append(helper.make_node("Identity", [src], [tensor.name], name=tensor.name))
        graph_outputs.append(helper.make_tensor_value_info(tensor.name, TensorProto.FLOAT, list(tensor.shape)))
    graph = helper.make_graph(cv.nodes, graph_name, graph_inputs, graph_outputs, cv.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="iplap", producer_version=__version__)
    model.ir_version = 8
    for key, value in {"graph": graph_name, **(metadata or {})}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.checker.check_model(model, full_check=True)
    return model
