"""What kind of artifact an ONNX file is, read from the graph alone.

An auditor rarely holds the float32 training export: the file that ships is cast to float16 or
bfloat16, quantized to int8 (static QDQ, static QOperator, dynamic), or rewritten by onnxruntime's
optimizers (contrib fused ops, the ``com.microsoft.nchwc`` blocked layout) -- or several of these at
once. :func:`artifact_kind` names the combination from the nodes, the initializers, the Cast targets
and the declared value types; nothing is run.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto

from onnxxai.proto.walk import subgraphs

__all__ = ["ArtifactKind", "artifact_kind", "compute_float_types", "graph_depth", "FLOAT_WIDTH"]

#: Float element types a graph computes in -> (name, machine epsilon 2**-mantissa_bits).
FLOAT_WIDTH: dict[int, tuple[str, float]] = {
    TensorProto.DOUBLE: ("float64", 2.0**-52),
    TensorProto.FLOAT: ("float32", 2.0**-23),
    TensorProto.FLOAT16: ("float16", 2.0**-10),
    TensorProto.BFLOAT16: ("bfloat16", 2.0**-7),
}

#: Quantized-operator (QOperator) ops: ONNX's and onnxruntime's contrib ones.
_QOPERATOR = {
    "QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul", "QLinearConcat",
    "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu",
    "QLinearSoftmax", "QLinearReduceMean", "QLinearWhere", "QAttention", "QEmbedLayerNormalization",
}
#: Ops of dynamic quantization (activations quantized at run time).
_DYNAMIC = {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM", "MatMulIntegerToFloat"}
#: Integer ops that follow a DynamicQuantizeLinear in dynamic graphs (also usable on their own).
_INTEGER = {"ConvInteger", "MatMulInteger"}
_QDQ = {"QuantizeLinear", "DequantizeLinear"}
_CONTRIB = ("com.microsoft", "com.microsoft.nchwc")
_QUANT_BITS = {
    TensorProto.INT8: "int8", TensorProto.UINT8: "int8", TensorProto.INT16: "int16", TensorProto.UINT16: "int16",
    TensorProto.INT4: "int4", TensorProto.UINT4: "int4", TensorProto.FLOAT8E4M3FN: "float8",
    TensorProto.FLOAT8E5M2: "float8", TensorProto.FLOAT8E4M3FNUZ: "float8", TensorProto.FLOAT8E5M2FNUZ: "float8",
}


@dataclass(frozen=True)
class ArtifactKind:
    """What a file is: ``precision`` (the narrowest float type the graph computes in), ``io`` (the
    float type of its float inputs/outputs), ``quantization`` (e.g. "int8 static QDQ", None for
    none), ``optimized`` (onnxruntime contrib fused ops or nchwc layout found: their op types)."""

    precision: str
    io: str | None
    quantization: tuple[str, ...] = ()
    optimized: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """One line, e.g. ``float16 (float32 I/O)``, ``int8 static QDQ``, ``float32, onnxruntime-optimized``."""
        parts = []
        if self.quantization:
            parts.extend(self.quantization)
            if self.precision != "float32":
                parts.append(f"{self.precision} float parts")
        else:
            io = f" ({self.io} I/O)" if self.io is not None and self.io != self.precision else ""
            parts.append(self.precision + io)
        if self.optimized:
            parts.append("onnxruntime-optimized")
        return ", ".join(parts)

    def __str__(self) -> str:
        return self.name

    def to_dict(self) -> dict:
        return {"name": self.name, "precision": self.precision, "io": self.io,
                "quantization": list(self.quantization), "optimized": list(self.optimized)}


def _graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for body in subgraphs(node):
            yield from _graphs(body)


def _nodes(model: onnx.ModelProto):
    for graph in _graphs(model.graph):
        yield from graph.node


def compute_float_types(model: onnx.ModelProto) -> frozenset[int]:
    """The float element types the graph holds values in: initializers, Constant values, Cast
    targets, graph inputs/outputs and declared (or inferred) value types, subgraphs included."""
    found: set[int] = set()
    for graph in _graphs(model.graph):
        found.update(t.data_type for t in graph.initializer)
        found.update(t.values.data_type for t in graph.sparse_initializer)
        for value in (*graph.input, *graph.output, *graph.value_info):
            if value.type.HasField("tensor_type"):
                found.add(value.type.tensor_type.elem_type)
        for node in graph.node:
            for attr in node.attribute:
                if attr.name == "to" and node.op_type in ("Cast",):
                    found.add(attr.i)
                elif attr.type == onnx.AttributeProto.TENSOR:
                    found.add(attr.t.data_type)
    return frozenset(found & set(FLOAT_WIDTH))


def _narrowest(types) -> str | None:
    floats = [t for t in types if t in FLOAT_WIDTH]
    return FLOAT_WIDTH[max(floats, key=lambda t: FLOAT_WIDTH[t][1])][0] if floats else None


def _quantization(model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> tuple[str, ...]:
    ops = {n.op_type for n in nodes}
    kinds = []
    types: dict[str, int] = {}
    for graph in _graphs(model.graph):
        types.update({t.name: t.data_type for t in graph.initializer})
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
                types[node.output[0]] = node.attribute[0].t.data_type

    def bits(names) -> str:
        found = sorted({_QUANT_BITS[types[n]] for n in names if n in types and types[n] in _QUANT_BITS})
        return "/".join(found) or "int8"

    if ops & _DYNAMIC:
        kinds.append("int8 dynamic")
    elif ops & _INTEGER:
        kinds.append("int8 integer ops")
    qop = [n for n in nodes if n.op_type in _QOPERATOR]
    if qop:
        zero_points = [n.input[i] for n in qop for i in range(len(n.input)) if "zero_point" in n.input[i]]
        kinds.append(f"{bits(zero_points)} static QOperator")
    # QDQ format dequantizes constant (weight) tensors; QOperator and dynamic graphs have Q/DQ only at
    # the borders of their integer ops, around activations.
    qdq = [n for n in nodes if n.op_type in _QDQ]
    weights = [n for n in qdq if n.op_type == "DequantizeLinear" and n.input[0] in types]
    if weights or (qdq and not kinds):
        zero_points = [n.input[2] for n in qdq if len(n.input) > 2 and n.input[2]]
        kinds.append(f"{bits(zero_points)} static QDQ")
    return tuple(kinds)


def artifact_kind(model: onnx.ModelProto) -> ArtifactKind:
    """Name what kind of deployed artifact ``model`` is, from the graph alone (see :class:`ArtifactKind`)."""
    nodes = list(_nodes(model))
    precision = _narrowest(compute_float_types(model)) or "float32"
    io = _narrowest(
        v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output) if v.type.HasField("tensor_type")
    )
    quantized_contrib = _QOPERATOR | _DYNAMIC | _QDQ | _INTEGER
    optimized = sorted({
        f"{n.domain}::{n.op_type}" for n in nodes if n.domain in _CONTRIB and n.op_type not in quantized_contrib
    })
    return ArtifactKind(precision, io, _quantization(model, nodes), tuple(optimized))


def graph_depth(model: onnx.ModelProto) -> int:
    """The number of nodes on the longest path from a graph input to a graph output (top level;
    a node holding subgraphs counts once)."""
    depth: dict[str, int] = {}
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        d = 1 + max((depth.get(name, 0) for name in node.input if name), default=0)
        for name in node.output:
            depth[name] = d
    return max(depth.values(), default=0)
