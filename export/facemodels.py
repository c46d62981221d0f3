"""MediaPipe's face models, taken from the pinned mediapipe wheel and converted to ONNX and OpenVINO IR.

IP_LAP's landmarks are MediaPipe FaceMesh points (0.10.21, ``refine_landmarks=True``). The
runtime needs the same numbers without mediapipe or TensorFlow, so this module:

1. finds the mediapipe 0.10.21 wheel (an explicit path, ``$IPLAP_MEDIAPIPE_WHEEL``, or a
   ``pip download`` into a cache folder) and reads the ``.tflite`` files out of the zip;
2. checks each file's sha256 against the pinned hash;
3. converts each graph with a small TFLite -> ONNX converter (below). The attention mesh
   model uses three MediaPipe custom ops, which are written out with standard ONNX ops:

   * ``Landmarks2TransformMatrix`` (v2): rotation from two landmarks, the rotated extent of
     a landmark subset, and the 4x4 matrix that maps a small output grid onto it, all as
     elementwise ops, Gather and ReduceMin/ReduceMax (cos/sin come from the normalised
     eye/mouth vector, so no atan2 is needed);
   * ``TransformTensorBilinear`` (v2): the sampling grid from that matrix, ``GridSample``
     (bilinear, zeros, ``align_corners=1`` so grid units are pixel centres), multiplied by
     the op's "whole sample is zero when the point falls outside the map" mask;
   * ``TransformLandmarks`` (v2): a 2x2 MatMul plus translation.

   ``PRELU`` becomes ``relu(x) + alpha * min(x, 0)`` (bit-identical, and twice as fast in
   onnxruntime); fp16 weights are widened to fp32 (exactly) and sparse ones densified;

4. checks the ONNX graphs: each detector against OpenVINO running the ``.tflite`` itself
   (OpenVINO reads the detectors but not the mesh, for its custom ops); the mesh through
   the whole runtime pipeline (both backends) against landmarks mediapipe 0.10.21 gave on
   the sample photo (a few points stored below; ``tests/test_face.py`` checks all 478 on
   every golden image);
5. writes ``NAME.onnx`` and ``openvino/NAME.xml`` (fp32, ``compress_to_fp16=False``), each
   with its provenance (wheel version, tflite sha256) in the metadata.

The ONNX graphs keep the TFLite signature: the same input and output names, NHWC input,
and the TFLite output shapes; inside, activations are NCHW.

Needs ``onnx``, ``openvino`` and ``tflite`` (the flatbuffer schema) at export time only.

Why one long module: the steps above share one private model of a TFLite graph (its
tensors, ops and buffers), which the converter's op handlers and the checks both read;
nothing outside this module uses it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import IplapError
from ..runtime.constants import BACKENDS

log = logging.getLogger(__name__)

MEDIAPIPE_VERSION = "0.10.21"
WHEEL_ENV = "IPLAP_MEDIAPIPE_WHEEL"
CACHE_ENV = "IPLAP_CACHE"
OPSET = 17


class FaceModelExportError(IplapError):
    """The mediapipe wheel is missing or altered, or a converted face model does not check out."""


@dataclass(frozen=True)
class FaceModelSource:
    """One ``.tflite`` file inside the mediapipe wheel."""

    name: str
    member: str
    sha256: str


DETECTOR = FaceModelSource(
    "face_detection_short_range", "mediapipe/modules/face_detection/face_detection_short_range.tflite",
    "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8")
MESH = FaceModelSource(
    "face_landmark_with_attention", "mediapipe/modules/face_landmark/face_landmark_with_attention.tflite",
    "e06a804e0144f9929eda782122916b35d60c697c3c9344013ca2bbe76a6ce2b4")
FULL_RANGE_DETECTOR = FaceModelSource(
    "face_detection_full_range_sparse", "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
    "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1")
SOURCES = (DETECTOR, MESH, FULL_RANGE_DETECTOR)


# -- the wheel ---------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "iplap")


def locate_wheel(wheel: Path | None = None, cache_dir: Path | None = None) -> Path:
    """The mediapipe 0.10.21 wheel: ``wheel``, else ``$IPLAP_MEDIAPIPE_WHEEL``, else a cached download."""
    if wheel is None and os.environ.get(WHEEL_ENV):
        wheel = Path(os.environ[WHEEL_ENV])
    if wheel is not None:
        wheel = Path(wheel)
        if not wheel.is_file():
            raise FaceModelExportError(f"mediapipe wheel not found: {wheel}")
        return wheel
    folder = (cache_dir or default_cache_dir()) / "wheels"
    found = sorted(folder.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    log.info("downloading mediapipe==%s into %s (for its face models)", MEDIAPIPE_VERSION, folder)
    cmd = [sys.executable, "-m", "pip", "download", f"mediapipe=={MEDIAPIPE_VERSION}", "--no-deps",
           "--only-binary=:all:", "--dest", str(folder), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(folder.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise FaceModelExportError(f"cannot download mediapipe=={MEDIAPIPE_VERSION}: {tail[0]}; "
                                   f"download a wheel yourself and set {WHEEL_ENV}")
    return found[0]


def read_model(wheel: Path, source: FaceModelSource) -> bytes:
    """The ``.tflite`` bytes of ``source``, checked against the pinned sha256."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(source.member)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise FaceModelExportError(f"{wheel.name} has no readable {source.member}: {exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != source.sha256:
        raise FaceModelExportError(f"{source.member} in {wheel.name} has sha256 {digest}, expected {source.sha256} "
                                   f"(mediapipe {MEDIAPIPE_VERSION})")
    return data


# -- TFLite -> ONNX ----------------------------------------------------------------------------

_FUSED = {0: None, 1: "Relu", 2: "relu_n1_to_1", 3: "relu6"}


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    value: np.ndarray | None  # known at conversion time (weights, folded constants)


@dataclass
class _Op:
    opcode: str  # the builtin op's name, or the custom op's
    version: int
    inputs: list[int]
    outputs: list[int]
    raw: object  # the tflite.Operator, for its options


def _tflite():
    try:
        import tflite
    except ImportError:
        raise FaceModelExportError("reading MediaPipe's .tflite files needs the 'tflite' package: "
                                   "pip install 'iplap[export]' (or pip install tflite)") from None
    return tflite


def _read_tflite(data: bytes) -> tuple[list[_Tensor], list[_Op], list[int], list[int]]:
    tflite = _tflite()

    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise FaceModelExportError("expected a single-subgraph TFLite model")
    graph = model.Subgraphs(0)
    builtin_names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    dtypes = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
              tflite.TensorType.INT32: np.int32, tflite.TensorType.INT64: np.int64}
    tensors = []
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        value = None
        raw = model.Buffers(t.Buffer()).DataAsNumpy() if t.Buffer() > 0 else 0
        if not isinstance(raw, int) and raw.size:
            flat = np.frombuffer(raw.tobytes(), dtype=dtypes[t.Type()])
            value = _densify(flat, t.Sparsity(), shape) if t.Sparsity() is not None else flat.reshape(shape)
        tensors.append(_Tensor(t.Name().decode(), shape, value))
    ops = []
    for j in range(graph.OperatorsLength()):
        op = graph.Operators(j)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        opcode = builtin_names[builtin]
        if opcode == "CUSTOM":
            opcode = code.CustomCode().decode()
        ops.append(_Op(opcode, code.Version(), [int(k) for k in op.InputsAsNumpy()],
                       [int(k) for k in op.OutputsAsNumpy()], op))
    return tensors, ops, [int(k) for k in graph.InputsAsNumpy()], [int(k) for k in graph.OutputsAsNumpy()]


def _densify(values: np.ndarray, sparsity, shape: tuple[int, ...]) -> np.ndarray:
    """A sparse TFLite constant (dense dims, then CSR dims, no blocks) -> the dense array."""
    tflite = _tflite()

    order = list(sparsity.TraversalOrderAsNumpy())
    if order != list(range(len(shape))) or sparsity.BlockMapLength():
        raise FaceModelExportError("sparse tensors with a traversal order or blocks are not supported")
    dense = np.zeros(shape, values.dtype)
    metas = [sparsity.DimMetadata(d) for d in range(sparsity.DimMetadataLength())]

    def vector(table, vector_type):
        holder = {tflite.SparseIndexVector.Int32Vector: tflite.Int32Vector,
                  tflite.SparseIndexVector.Uint16Vector: tflite.Uint16Vector,
                  tflite.SparseIndexVector.Uint8Vector: tflite.Uint8Vector}[vector_type]()
        holder.Init(table.Bytes, table.Pos)
        return holder.ValuesAsNumpy()

    seg = [vector(m.ArraySegments(), m.ArraySegmentsType()) if m.Format() == 1 else None for m in metas]
    idx = [vector(m.ArrayIndices(), m.ArrayIndicesType()) if m.Format() == 1 else None for m in metas]
    cursor = 0

    def walk(dim: int, flat_prefix: int, coords: tuple[int, ...]):
        nonlocal cursor
        if dim == len(shape):
            dense[coords] = values[cursor]
            cursor += 1
            return
        if metas[dim].Format() == 0:  # DENSE
            for k in range(metas[dim].DenseSize()):
                walk(dim + 1, flat_prefix * metas[dim].DenseSize() + k, coords + (k,))
        else:  # SPARSE_CSR: segment flat_prefix lists the stored coordinates of this dim
            for p in range(int(seg[dim][flat_prefix]), int(seg[dim][flat_prefix + 1])):
                walk(dim + 1, p, coords + (int(idx[dim][p]),))

    walk(0, 0, ())
    if cursor != values.size:
        raise FaceModelExportError("sparse tensor does not match its metadata")
    return dense


def _options(op: _Op, cls_name: str):
    table = op.raw.BuiltinOptions()
    options = getattr(_tflite(), cls_name)()
    options.Init(table.Bytes, table.Pos)
    return options


def _custom_options(op: _Op) -> dict:
    from flatbuffers import flexbuffers

    if not op.raw.CustomOptionsLength():
        return {}
    return flexbuffers.Loads(bytes(op.raw.CustomOptionsAsNumpy()))


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class _Converter:
    """Builds one ONNX graph from a TFLite graph; 4-D activations are NCHW inside it."""

    def __init__(self, tensors: list[_Tensor]):
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
    def convert(self, op: _Op) -> None:
        handler = getattr(self, "op_" + op.opcode, None)
        if handler is None:
            raise FaceModelExportError(f"TFLite op {op.opcode} is not supported by this converter")
        out = handler(op)
        if out is not None:
            self.names[op.outputs[0]] = out

    def fold(self, op: _Op, value: np.ndarray) -> None:
        self.tensors[op.outputs[0]].value = value

    def op_DEQUANTIZE(self, op: _Op):
        src = self.tensors[op.inputs[0]].value
        if src is None or src.dtype != np.float16:
            raise FaceModelExportError("only float16 constant DEQUANTIZE is supported")
        self.fold(op, src.astype(np.float32))

    def op_DENSIFY(self, op: _Op):
        self.fold(op, self.constant_of(op.inputs[0]))  # already dense (see _densify)

    def _conv(self, op: _Op, weight: np.ndarray, group: int, options) -> str:
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

    def op_CONV_2D(self, op: _Op):
        kernel = self.constant_of(op.inputs[1]).astype(np.float32)  # OHWI
        return self._conv(op, kernel.transpose(0, 3, 1, 2), 1, _options(op, "Conv2DOptions"))

    def op_DEPTHWISE_CONV_2D(self, op: _Op):
        kernel = self.constant_of(op.inputs[1]).astype(np.float32)  # 1, H, W, C*multiplier
        channels = self.tensors[op.inputs[0]].shape[3]
        return self._conv(op, kernel.transpose(3, 0, 1, 2), channels, _options(op, "DepthwiseConv2DOptions"))

    def _binary(self, op: _Op, onnx_op: str, options_cls: str | None):
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
        return self.fused(out, _options(op, options_cls).FusedActivationFunction()) if options_cls else out

    def op_ADD(self, op: _Op):
        return self._binary(op, "Add", "AddOptions")

    def op_MUL(self, op: _Op):
        return self._binary(op, "Mul", "MulOptions")

    def op_RELU(self, op: _Op):
        return self.node("Relu", [self.value(op.inputs[0])], "relu")

    def op_PRELU(self, op: _Op):
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

    def op_PAD(self, op: _Op):
        pads = self.constant_of(op.inputs[1]).astype(np.int64)  # rank x (before, after)
        if len(self.tensors[op.inputs[0]].shape) == 4:
            pads = pads[[0, 3, 1, 2]]
        onnx_pads = np.concatenate([pads[:, 0], pads[:, 1]])
        return self.node("Pad", [self.value(op.inputs[0]), self.const(onnx_pads, "pads")], "pad", mode="constant")

    def op_MAX_POOL_2D(self, op: _Op):
        options = _options(op, "Pool2DOptions")
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

    def op_RESHAPE(self, op: _Op):
        src_shape = self.tensors[op.inputs[0]].shape
        dst_shape = self.tensors[op.outputs[0]].shape
        shape = self.const(np.array(dst_shape, np.int64), "shape")
        if len(src_shape) == 4 and src_shape[1] == src_shape[2] == 1 and len(dst_shape) != 4:
            return self.node("Reshape", [self.value(op.inputs[0]), shape], "reshape")  # NCHW == NHWC order
        out = self.node("Reshape", [self.to_nhwc(op.inputs[0]), shape], "reshape")
        return self.from_nhwc(out, len(dst_shape))

    def op_CONCATENATION(self, op: _Op):
        options = _options(op, "ConcatenationOptions")
        rank = len(self.tensors[op.outputs[0]].shape)
        axis = options.Axis() % rank
        if rank == 4:
            axis = [0, 2, 3, 1][axis]
        out = self.node("Concat", [self.value(i) for i in op.inputs], "concat", axis=axis)
        return self.fused(out, options.FusedActivationFunction())

    def op_STRIDED_SLICE(self, op: _Op):
        options = _options(op, "StridedSliceOptions")
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

    def op_RESIZE_BILINEAR(self, op: _Op):
        options = _options(op, "ResizeBilinearOptions")
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

    def op_DEPTH_TO_SPACE(self, op: _Op):
        block = _options(op, "DepthToSpaceOptions").BlockSize()
        # TensorFlow's NHWC depth_to_space orders channels as ONNX's DCR mode does.
        return self.node("DepthToSpace", [self.value(op.inputs[0])], "d2s", blocksize=block, mode="DCR")

    # MediaPipe custom ops (version 2 of each, as in face_landmark_with_attention.tflite) --------
    def op_Landmarks2TransformMatrix(self, op: _Op):
        if op.version != 2:
            raise FaceModelExportError(f"Landmarks2TransformMatrix v{op.version} is not supported")
        attrs = _custom_options(op)
        subset = list(attrs["subset_idxs"])
        if len(subset) % 2:  # MediaPipe pairs the indices and repeats an odd last one
            subset.append(subset[-1])
        return _landmarks_to_matrix(self, self.value(op.inputs[0]), attrs, subset)

    def op_TransformTensorBilinear(self, op: _Op):
        if op.version != 2:
            raise FaceModelExportError(f"TransformTensorBilinear v{op.version} is not supported")
        attrs = _custom_options(op)
        _, height, width, _ = self.tensors[op.inputs[0]].shape
        return _transform_tensor_bilinear(self, self.value(op.inputs[0]), self.value(op.inputs[1]),
                                          (height, width), (int(attrs["output_height"]), int(attrs["output_width"])))

    def op_TransformLandmarks(self, op: _Op):
        if op.version != 2:
            raise FaceModelExportError(f"TransformLandmarks v{op.version} is not supported")
        dims = self.tensors[op.inputs[0]].shape[-1]
        return _transform_landmarks(self, self.value(op.inputs[0]), self.value(op.inputs[1]), dims)


def _to_nchw(value: np.ndarray) -> np.ndarray:
    """Constants that meet 4-D activations: NHWC -> NCHW (lower ranks broadcast over channels last)."""
    if value.ndim == 4:
        return value.transpose(0, 3, 1, 2)
    return value


def _scalar_pick(cv: _Converter, vec: str, index: int, hint: str) -> str:
    """Element ``index`` of the last axis of a (1, ..., k) tensor, keeping the axis (-> (1, ..., 1))."""
    return cv.node("Slice", [vec, cv.const(np.array([index], np.int64)), cv.const(np.array([index + 1], np.int64)),
                             cv.const(np.array([-1], np.int64))], hint)


def _landmarks_to_matrix(cv: _Converter, landmarks: str, attrs: dict, subset: list[int]) -> str:
    """Landmarks2TransformMatrix v2: (1, N, 3) landmarks -> (1, 4, 4) matrix from output grid to input."""
    f32 = np.float32
    xy = cv.node("Slice", [landmarks, cv.const(np.array([0], np.int64)), cv.const(np.array([2], np.int64)),
                           cv.const(np.array([2], np.int64))], "l2tm_xy")  # (1, N, 2)
    left = cv.node("Gather", [xy, cv.const(np.array([int(attrs["left_rotation_idx"])], np.int64))], "l2tm_left", axis=1)
    right = cv.node("Gather", [xy, cv.const(np.array([int(attrs["right_rotation_idx"])], np.int64))], "l2tm_right",
                    axis=1)
    vec = cv.node("Sub", [right, left], "l2tm_vec")  # (1, 1, 2)
    dx, dy = _scalar_pick(cv, vec, 0, "l2tm_dx"), _scalar_pick(cv, vec, 1, "l2tm_dy")  # (1, 1, 1)
    norm = cv.node("Sqrt", [cv.node("ReduceSum", [cv.node("Mul", [vec, vec], "l2tm_sq"),
                                                  cv.const(np.array([2], np.int64))], "l2tm_ss", keepdims=1)],
                   "l2tm_norm")
    positive = cv.node("Greater", [norm, cv.const(f32(0))], "l2tm_pos")
    safe = cv.node("Max", [norm, cv.const(f32(1e-30))], "l2tm_safe")
    # angle = atan2(dy, dx); atan2(0, 0) = 0 as in std::atan2
    cos_a = cv.node("Where", [positive, cv.node("Div", [dx, safe], "l2tm_ca"), cv.const(f32(1))], "l2tm_cos_a")
    sin_a = cv.node("Where", [positive, cv.node("Div", [dy, safe], "l2tm_sa"), cv.const(f32(0))], "l2tm_sin_a")
    # rotation r = target - angle
    target = float(attrs.get("target_rotation_radians", 0.0))
    ct, st = cv.const(f32(np.cos(target))), cv.const(f32(np.sin(target)))
    c = cv.node("Add", [cv.node("Mul", [ct, cos_a], "m"), cv.node("Mul", [st, sin_a], "m")], "l2tm_c")
    s = cv.node("Sub", [cv.node("Mul", [st, cos_a], "m"), cv.node("Mul", [ct, sin_a], "m")], "l2tm_s")

    pts = cv.node("Gather", [xy, cv.const(np.array(subset, np.int64))], "l2tm_subset", axis=1)  # (1, K, 2)
    px, py = _scalar_pick(cv, pts, 0, "l2tm_px"), _scalar_pick(cv, pts, 1, "l2tm_py")  # (1, K, 1)
    rx = cv.node("Sub", [cv.node("Mul", [c, px], "m"), cv.node("Mul", [s, py], "m")], "l2tm_rx")
    ry = cv.node("Add", [cv.node("Mul", [s, px], "m"), cv.node("Mul", [c, py], "m")], "l2tm_ry")
    x_max = cv.node("ReduceMax", [rx], "l2tm_xmax", axes=[1], keepdims=1)
    x_min = cv.node("ReduceMin", [rx], "l2tm_xmin", axes=[1], keepdims=1)
    y_max = cv.node("ReduceMax", [ry], "l2tm_ymax", axes=[1], keepdims=1)
    y_min = cv.node("ReduceMin", [ry], "l2tm_ymin", axes=[1], keepdims=1)
    crop_w = cv.node("Sub", [x_max, x_min], "l2tm_w")
    crop_h = cv.node("Sub", [y_max, y_min], "l2tm_h")
    half = cv.const(f32(0.5))
    mx = cv.node("Mul", [cv.node("Add", [x_min, x_max], "a"), half], "l2tm_mx")
    my = cv.node("Mul", [cv.node("Add", [y_min, y_max], "a"), half], "l2tm_my")
    # centre back in the unrotated frame (rotation by -r)
    cx = cv.node("Add", [cv.node("Mul", [c, mx], "m"), cv.node("Mul", [s, my], "m")], "l2tm_cx")
    cy = cv.node("Sub", [cv.node("Mul", [c, my], "m"), cv.node("Mul", [s, mx], "m")], "l2tm_cy")
    out_w, out_h = float(attrs["output_width"]), float(attrs["output_height"])
    sx = cv.node("Mul", [crop_w, cv.const(f32(float(attrs["scale_x"]) / out_w))], "l2tm_sx")
    sy = cv.node("Mul", [crop_h, cv.const(f32(float(attrs["scale_y"]) / out_h))], "l2tm_sy")
    # shift(cx, cy) * rotate(-r) * scale(sx, sy) * shift(-out_w / 2, -out_h / 2)
    m00 = cv.node("Mul", [c, sx], "l2tm_m00")
    m01 = cv.node("Mul", [s, sy], "l2tm_m01")
    m10 = cv.node("Neg", [cv.node("Mul", [s, sx], "m")], "l2tm_m10")
    m11 = cv.node("Mul", [c, sy], "l2tm_m11")
    hw, hh = cv.const(f32(-out_w / 2)), cv.const(f32(-out_h / 2))
    m03 = cv.node("Add", [cx, cv.node("Add", [cv.node("Mul", [m00, hw], "m"), cv.node("Mul", [m01, hh], "m")], "a")],
                  "l2tm_m03")
    m13 = cv.node("Add", [cy, cv.node("Add", [cv.node("Mul", [m10, hw], "m"), cv.node("Mul", [m11, hh], "m")], "a")],
                  "l2tm_m13")
    zero, one = cv.const(np.zeros((1, 1, 1), f32)), cv.const(np.ones((1, 1, 1), f32))
    cells = [m00, m01, zero, m03, m10, m11, zero, m13, zero, zero, one, zero, zero, zero, zero, one]
    flat = cv.node("Concat", cells, "l2tm_cells", axis=2)  # (1, 1, 16)
    return cv.node("Reshape", [flat, cv.const(np.array([1, 4, 4], np.int64))], "l2tm_matrix")


def _transform_tensor_bilinear(cv: _Converter, features: str, matrix: str, in_hw: tuple[int, int],
                               out_hw: tuple[int, int]) -> str:
    """TransformTensorBilinear v2: sample (1, C, H, W) at the matrix-mapped output grid -> (1, C, oh, ow)."""
    f32 = np.float32
    height, width = in_hw
    out_h, out_w = out_hw
    rows = cv.node("Slice", [matrix, cv.const(np.array([0, 0], np.int64)), cv.const(np.array([2, 4], np.int64)),
                             cv.const(np.array([1, 2], np.int64))], "ttb_rows")  # (1, 2, 4)
    # v2 samples at pixel centres: T -> S * T * A with A = +0.5 and S = -0.5 translations
    a = cv.node("Slice", [rows, cv.const(np.array([0], np.int64)), cv.const(np.array([1], np.int64)),
                          cv.const(np.array([2], np.int64))], "ttb_a")  # (1, 2, 1): column 0
    b = cv.node("Slice", [rows, cv.const(np.array([1], np.int64)), cv.const(np.array([2], np.int64)),
                          cv.const(np.array([2], np.int64))], "ttb_b")
    t = cv.node("Slice", [rows, cv.const(np.array([3], np.int64)), cv.const(np.array([4], np.int64)),
                          cv.const(np.array([2], np.int64))], "ttb_t")
    half = cv.const(f32(0.5))
    t = cv.node("Sub", [cv.node("Add", [t, cv.node("Add", [cv.node("Mul", [a, half], "m"),
                                                          cv.node("Mul", [b, half], "m")], "a")], "a"), half], "ttb_t2")
    grid_x = np.tile(np.arange(out_w, dtype=f32), out_h)[None, None, :]  # (1, 1, oh*ow), row-major
    grid_y = np.repeat(np.arange(out_h, dtype=f32), out_w)[None, None, :]
    coords = cv.node("Add", [cv.node("Add", [cv.node("Mul", [a, cv.const(grid_x)], "m"),
                                             cv.node("Mul", [b, cv.const(grid_y)], "m")], "a"), t],
                     "ttb_coords")  # (1, 2, oh*ow): x row, y row
    limit = cv.const(np.array([[[width - 1]], [[height - 1]]], f32).reshape(1, 2, 1))
    inside = cv.node("And", [cv.node("GreaterOrEqual", [coords, cv.const(f32(0))], "ge"),
                             cv.node("LessOrEqual", [coords, limit], "le")], "ttb_in")
    inside = cv.node("Cast", [inside], "ttb_inf", to=1)
    mask = cv.node("ReduceMin", [inside], "ttb_mask", axes=[1], keepdims=1)  # (1, 1, oh*ow)
    mask = cv.node("Reshape", [mask, cv.const(np.array([1, 1, out_h, out_w], np.int64))], "ttb_mask4")
    # align_corners=1: grid -1 and +1 are the centres of the first and last pixels
    scale = cv.const(np.array([2.0 / (width - 1), 2.0 / (height - 1)], f32).reshape(1, 2, 1))
    grid = cv.node("Sub", [cv.node("Mul", [coords, scale], "m"), cv.const(f32(1))], "ttb_norm")
    grid = cv.node("Transpose", [grid], "ttb_gridT", perm=[0, 2, 1])  # (1, oh*ow, 2)
    grid = cv.node("Reshape", [grid, cv.const(np.array([1, out_h, out_w, 2], np.int64))], "ttb_grid")
    sampled = cv.node("GridSample", [features, grid], "ttb_sample", mode="bilinear", padding_mode="zeros",
                      align_corners=1)
    return cv.node("Mul", [sampled, mask], "ttb_out")


def _transform_landmarks(cv: _Converter, landmarks: str, matrix: str, dims: int) -> str:
    """TransformLandmarks v2: x, y of (1, N, dims) through the matrix's 2-D affine part; z passes."""
    linear = cv.node("Slice", [matrix, cv.const(np.array([0, 0], np.int64)), cv.const(np.array([2, 2], np.int64)),
                               cv.const(np.array([1, 2], np.int64))], "tl_lin")  # (1, 2, 2)
    shift = cv.node("Slice", [matrix, cv.const(np.array([0, 3], np.int64)), cv.const(np.array([2, 4], np.int64)),
                              cv.const(np.array([1, 2], np.int64))], "tl_shift")  # (1, 2, 1)
    xy = landmarks
    if dims == 3:
        xy = cv.node("Slice", [landmarks, cv.const(np.array([0], np.int64)), cv.const(np.array([2], np.int64)),
                               cv.const(np.array([2], np.int64))], "tl_xy")
    moved = cv.node("Add", [cv.node("MatMul", [xy, cv.node("Transpose", [linear], "tl_linT", perm=[0, 2, 1])], "mm"),
                            cv.node("Transpose", [shift], "tl_shiftT", perm=[0, 2, 1])], "tl_out")
    if dims == 3:
        z = cv.node("Slice", [landmarks, cv.const(np.array([2], np.int64)), cv.const(np.array([3], np.int64)),
                              cv.const(np.array([2], np.int64))], "tl_z")
        moved = cv.node("Concat", [moved, z], "tl_xyz", axis=2)
    return moved


def tflite_to_onnx(data: bytes, graph_name: str, metadata: dict[str, str] | None = None):
    """Convert one TFLite flatbuffer to an ONNX ModelProto with the same signature (NHWC input)."""
    import onnx
    from onnx import TensorProto, helper

    tensors, ops, inputs, outputs = _read_tflite(data)
    cv = _Converter(tensors)
    graph_inputs = []
    for index in inputs:
        tensor = tensors[index]
        graph_inputs.append(helper.make_tensor_value_info(tensor.name, TensorProto.FLOAT, list(tensor.shape)))
        cv.names[index] = cv.from_nhwc(tensor.name, len(tensor.shape))
    for op in ops:
        cv.convert(op)
    graph_outputs = []
    for index in outputs:
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


# -- checks ------------------------------------------------------------------------------------

#: MediaPipe 0.10.21 FaceMesh (static, refine_landmarks=True) on samples/astronaut.png: a few
#: landmarks (index: x, y normalised) to check the converted mesh against.
SAMPLE_LANDMARKS = {
    1: (0.43642187, 0.25393739), 33: (0.38127568, 0.19711463), 263: (0.49952674, 0.20367774),
    61: (0.39415824, 0.27190676), 291: (0.47849900, 0.27536461), 152: (0.43216010, 0.34657174),
    10: (0.44191417, 0.14001351), 468: (0.39741832, 0.19746043), 473: (0.48161137, 0.20208928)}
#: Largest allowed distance to MediaPipe's landmarks, in pixels of the 512 x 512 sample.
SAMPLE_TOLERANCE_PX = 0.25
#: Converted detector vs OpenVINO running the .tflite: |a - b| <= ATOL + RTOL * |b|.
ATOL, RTOL = 1e-3, 1e-4


def _sample_image() -> np.ndarray:
    import cv2

    from ..samples import FACE_IMAGE

    image = cv2.imread(str(FACE_IMAGE), cv2.IMREAD_COLOR)
    if image is None:
        raise FaceModelExportError(f"cannot read the sample photo {FACE_IMAGE}")
    return image


def _check_detector(data: bytes, onnx_path: Path, spec_name: str) -> float:
    """Largest difference between the ONNX graph (onnxruntime) and OpenVINO running the .tflite."""
    import tempfile

    from ..runtime.backends import BackendConfig, load_model
    from ..runtime.face.detector import FULL_RANGE, SHORT_RANGE, FaceDetector
    from ..telemetry import import_openvino

    ov = import_openvino()

    spec = SHORT_RANGE if spec_name == SHORT_RANGE.name else FULL_RANGE
    with tempfile.TemporaryDirectory() as tmp:
        tflite_path = Path(tmp) / f"{spec_name}.tflite"
        tflite_path.write_bytes(data)
        reference = ov.Core().compile_model(str(tflite_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    ours = FaceDetector(load_model(onnx_path, BackendConfig("onnxruntime")), spec)
    sample = _sample_image()
    worst = 0.0
    for image in (sample, sample[:, ::-1].copy(), np.full((300, 400, 3), 90, np.uint8)):
        tensor, _ = ours.input_tensor(image)
        got = ours.model.run({ours.input_name: tensor})
        want = reference(tensor)
        for port in reference.outputs:
            name = next(n for n in port.get_names() if n in got)
            a, b = got[name], want[port]
            bad = np.abs(a - b) > ATOL + RTOL * np.abs(b)
            if bad.any():
                raise FaceModelExportError(f"{spec_name}: output {name} differs from the .tflite by "
                                           f"{np.abs(a - b).max():.3g}")
            worst = max(worst, float(np.abs(a - b).max()))
    return worst


def _check_mesh(files: dict[str, Path], backend: str) -> float:
    """Largest distance (pixels) of the whole pipeline's landmarks on the sample photo to MediaPipe's."""
    from ..runtime.backends import BackendConfig
    from ..runtime.face.tracker import FaceTracker

    ext = ".onnx" if backend == "onnxruntime" else ".xml"
    prefix = "" if backend == "onnxruntime" else "openvino/"
    tracker = FaceTracker(files[f"{prefix}{DETECTOR.name}{ext}"], files[f"{prefix}{MESH.name}{ext}"],
                          BackendConfig(backend))
    image = _sample_image()
    found = tracker.process(image)
    if found is None:
        raise FaceModelExportError(f"the converted face models ({backend}) find no face in the sample photo")
    height, width = image.shape[:2]
    index = list(SAMPLE_LANDMARKS)
    want = np.array([SAMPLE_LANDMARKS[i] for i in index]) * [width, height]
    error = float(np.linalg.norm(found.points[index, :2] * [width, height] - want, axis=1).max())
    if error > SAMPLE_TOLERANCE_PX:
        raise FaceModelExportError(f"converted face mesh ({backend}) is {error:.3f} px from MediaPipe's landmarks "
                                   f"on the sample photo (allowed {SAMPLE_TOLERANCE_PX})")
    return error


def _write_openvino(onnx_path: Path, xml_path: Path, metadata: dict[str, str]) -> list[Path]:
    from ..telemetry import import_openvino

    ov = import_openvino()
    model = ov.convert_model(str(onnx_path))
    for key, value in metadata.items():
        model.set_rt_info(str(value), ["iplap", key])
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    # compress_to_fp16 defaults to True: these graphs must keep their fp32 weights.
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return [xml_path, xml_path.with_suffix(".bin")]


def export_face_models(out_dir: Path, wheel: Path | None = None, *, check: bool = True,
                       openvino_ir: bool = True) -> dict[str, Path]:
    """Extract, convert, check and write MediaPipe's face models.

    Writes ``NAME.onnx`` for the short-range detector, the attention mesh and the
    full-range detector, and (``openvino_ir``) ``openvino/NAME.xml`` + ``.bin``.
    Returns ``{path relative to out_dir: path}`` of every file written.
    """
    import onnx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = locate_wheel(wheel)
    log.info("face models from %s", wheel.name)
    written: dict[str, Path] = {}
    for source in SOURCES:
        start = time.perf_counter()
        data = read_model(wheel, source)
        metadata = {"producer": f"iplap {__version__}", "source": f"mediapipe {MEDIAPIPE_VERSION} {source.member}",
                    "source_sha256": source.sha256, "precision": "fp32", "opset": str(OPSET),
                    "converter": "iplap.export.facemodels (TFLite -> ONNX, MediaPipe custom ops as standard ops)"}
        model = tflite_to_onnx(data, source.name, metadata)
        onnx_path = out_dir / f"{source.name}.onnx"
        onnx.save(model, str(onnx_path))
        written[onnx_path.name] = onnx_path
        if check and source is not MESH:
            worst = _check_detector(data, onnx_path, source.name)
            log.info("%s matches the .tflite run by OpenVINO (max abs diff %.2g)", source.name, worst)
        if openvino_ir:
            for path in _write_openvino(onnx_path, out_dir / "openvino" / f"{source.name}.xml", metadata):
                written[str(path.relative_to(out_dir))] = path
        log.info("wrote %s (%.1f MB) in %.1f s", onnx_path.name, onnx_path.stat().st_size / 1e6,
                 time.perf_counter() - start)
    if check:
        for backend in BACKENDS if openvino_ir else ("onnxruntime",):
            error = _check_mesh(written, backend)
            log.info("face pipeline (%s) is within %.3f px of MediaPipe on the sample photo", backend, error)
    return written
