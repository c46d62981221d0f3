"""Reading a TFLite flatbuffer into a small graph model that the converter and its op handlers share.

A :class:`TFLiteGraph` is the graph's tensors (constants already decoded, fp16 kept as
fp16, sparse ones densified), its ops in execution order and its input and output
tensor indices. Needs the ``tflite`` package (the flatbuffer schema), at export time only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .wheel import FaceModelExportError


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    value: np.ndarray | None  # known at conversion time (weights, folded constants)


@dataclass
class Op:
    opcode: str  # the builtin op's name, or the custom op's
    version: int
    inputs: list[int]
    outputs: list[int]
    raw: object  # the tflite.Operator, for its options


@dataclass
class TFLiteGraph:
    """One TFLite subgraph: tensors by index, ops in order, and the graph's input and output indices."""

    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]


def _tflite():
    try:
        import tflite
    except ImportError:
        raise FaceModelExportError("reading MediaPipe's .tflite files needs the 'tflite' package: "
                                   "pip install 'iplap[export]' (or pip install tflite)") from None
    return tflite


def read_tflite(data: bytes) -> TFLiteGraph:
    """The single subgraph of the TFLite flatbuffer ``data``."""
    model = _tflite().Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise FaceModelExportError("expected a single-subgraph TFLite model")
    graph = model.Subgraphs(0)
    return TFLiteGraph(_read_tensors(model, graph), _read_ops(model, graph),
                       [int(k) for k in graph.InputsAsNumpy()], [int(k) for k in graph.OutputsAsNumpy()])


def _read_tensors(model, graph) -> list[Tensor]:
    tflite = _tflite()
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
        tensors.append(Tensor(t.Name().decode(), shape, value))
    return tensors


def _read_ops(model, graph) -> list[Op]:
    builtin_names = {v: k for k, v in vars(_tflite().BuiltinOperator).items() if not k.startswith("_")}
    ops = []
    for j in range(graph.OperatorsLength()):
        op = graph.Operators(j)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        opcode = builtin_names[builtin]
        if opcode == "CUSTOM":
            opcode = code.CustomCode().decode()
        ops.append(Op(opcode, code.Version(), [int(k) for k in op.InputsAsNumpy()],
                      [int(k) for k in op.OutputsAsNumpy()], op))
    return ops


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


def builtin_options(op: Op, cls_name: str):
    """The builtin op's options table, read as the schema class ``cls_name`` (``"Conv2DOptions"``)."""
    table = op.raw.BuiltinOptions()
    options = getattr(_tflite(), cls_name)()
    options.Init(table.Bytes, table.Pos)
    return options


def custom_options(op: Op) -> dict:
    """A custom op's options (a flexbuffer map), or ``{}``."""
    from flatbuffers import flexbuffers

    if not op.raw.CustomOptionsLength():
        return {}
    return flexbuffers.Loads(bytes(op.raw.CustomOptionsAsNumpy()))
