"""Quantized activations on the data path: which integer tensors of an int8 file carry a float value,
and how to read it.

An int8 file (onnxruntime's QDQ after fusion into QLinear ops, its QOperator format, its dynamic
quantization) moves activations between layers as integers. The integer output ``q`` of a
QuantizeLinear or of a QLinear / com.microsoft Q* op with constant ``y_scale`` and ``y_zero_point``
stands for the float value ``scale * (q - zero_point)``; ops that only move values (MaxPool, Reshape,
Flatten, ...) keep that reading. The converters give such tensors the straight-through gradient of
their dequantized surrogate (:mod:`onnxxai.convert.qlinear`, :mod:`onnxxai.convert.quantize`), so
they are data paths like float tensors: :class:`~onnxxai.graph.dataflow.DataFlow` counts them, and
GradCAM reads them dequantized, with the gradient with respect to the dequantized value.

Integer data with no constant reading -- the int32 accumulators of ConvInteger / MatMulInteger, the
uint8 output of DynamicQuantizeLinear (its scale is computed at run time), a Concat of tensors with
different scales -- still carries the path (its float consumers depend on the input through it)
but has no :class:`Quantization`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from onnxxai.convert.qlinear import MS, PASS_THROUGH
from onnxxai.proto.dtypes import FLOAT_TYPES

__all__ = ["Quantization", "QUANTIZED_OUTPUTS", "INTEGER_PATH_OPS", "quantized_outputs", "constant_value"]

#: (domain, op) -> indices of the inputs holding the output's scale and zero point
QUANTIZED_OUTPUTS: dict[tuple[str, str], tuple[int, int]] = {
    ("", "QuantizeLinear"): (1, 2), (MS, "QuantizeLinear"): (1, 2),
    ("", "QLinearConv"): (6, 7), ("", "QLinearMatMul"): (6, 7),
    (MS, "QGemm"): (7, 8), (MS, "QLinearAdd"): (6, 7), (MS, "QLinearMul"): (6, 7), (MS, "QLinearConcat"): (0, 1),
    (MS, "QLinearGlobalAveragePool"): (3, 4), (MS, "QLinearAveragePool"): (3, 4), (MS, "QLinearSigmoid"): (3, 4),
    (MS, "QLinearLeakyRelu"): (3, 4), (MS, "QLinearSoftmax"): (3, 4),
}
#: (domain, op) of integer arithmetic whose integer outputs carry the path without a constant reading
INTEGER_PATH_OPS: set[tuple[str, str]] = {
    ("", "DynamicQuantizeLinear"), ("", "ConvInteger"), ("", "MatMulInteger"),
}


@dataclass(frozen=True)
class Quantization:
    """How integer tensor ``tensor`` reads as float: ``scale * (q - zero_point)``, per tensor or along
    ``axis``; ``node`` / ``op_type`` name the node that fixed the scale (the quantizing op)."""

    tensor: str
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int
    node: str
    op_type: str

    def same_reading(self, other: Quantization) -> bool:
        """Whether ``other`` reads its integers with the same scale, zero point and axis (a per-tensor value
        stored as a scalar or as a one-element vector reads the same; the axis matters only per axis)."""
        if self.scale.size == other.scale.size == 1 and self.zero_point.size == other.zero_point.size == 1:
            return (bool(np.array_equal(self.scale.reshape(-1), other.scale.reshape(-1)))
                    and bool(np.array_equal(self.zero_point.reshape(-1), other.zero_point.reshape(-1))))
        return (self.axis == other.axis and self.scale.shape == other.scale.shape
                and self.zero_point.shape == other.zero_point.shape
                and bool(np.array_equal(self.scale, other.scale)) and bool(np.array_equal(self.zero_point, other.zero_point)))

    def __str__(self) -> str:
        # a per-tensor reading may be stored as a one-element vector (shape [1]): read its one value
        scale = (f"{float(self.scale.reshape(-1)[0]):.6g}" if self.scale.size == 1
                 else f"{self.scale.size} scales (axis {self.axis})")
        zp = f"{int(self.zero_point.reshape(-1)[0])}" if self.zero_point.size == 1 else "per axis"
        return f"scale {scale}, zero point {zp} ({self.op_type} {self.node!r})"


def constant_value(model: onnx.ModelProto, name: str, producers: dict[str, onnx.NodeProto] | None = None,
                   ) -> np.ndarray | None:
    """The value of initializer or Constant-node output ``name`` (None when it is computed)."""
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    node = producers.get(name) if producers is not None else next(
        (n for n in model.graph.node if name in n.output), None)
    if node is not None and node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
        for a in node.attribute:
            if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                return numpy_helper.to_array(a.t)
    return None


def _domain(node: onnx.NodeProto) -> str:
    """"" for the default domain; com.microsoft as normalization spells it (``MS``)."""
    if node.domain in ("", "ai.onnx"):
        return ""
    return MS if node.domain == "com.microsoft" else node.domain


def _axis(node: onnx.NodeProto) -> int:
    for a in node.attribute:
        if a.name == "axis":
            return int(onnx.helper.get_attribute_value(a))
    return 1


def quantized_outputs(model: onnx.ModelProto, node: onnx.NodeProto, path: dict[str, Quantization | None],
                      types: dict[str, int], constants: dict[str, np.ndarray | None],
                      producers: dict[str, onnx.NodeProto]) -> dict[str, Quantization | None]:
    """The integer outputs of ``node`` that carry the data path, given the integer path tensors found
    so far (``path``: tensor -> its reading, None when it has no constant one) and float path inputs.
    ``constants`` caches :func:`constant_value` lookups. Empty when ``node`` carries no integer path."""
    key = (_domain(node), node.op_type)
    # integer outputs; an unknown element type (shape inference gave none) counts as integer here
    outputs = [o for o in node.output if o and types.get(o, 0) not in FLOAT_TYPES]
    if not outputs or (key == (MS, "QGemm") and not (len(node.input) > 7 and node.input[7])):
        return {}  # QGemm without y_scale returns float

    def constant(name: str) -> np.ndarray | None:
        if name not in constants:
            constants[name] = constant_value(model, name, producers)
        return constants[name]

    if key in QUANTIZED_OUTPUTS:
        s, z = QUANTIZED_OUTPUTS[key]
        scale = constant(node.input[s]) if len(node.input) > s and node.input[s] else None
        if scale is None:
            return {o: None for o in outputs[:1]}
        if len(node.input) > z and node.input[z]:
            zp = constant(node.input[z])
            if zp is None:
                return {o: None for o in outputs[:1]}
        else:
            zp = np.zeros((), np.uint8)
        if np.ndim(scale) > 1 or any(a.name == "block_size" and a.i for a in node.attribute):
            return {o: None for o in outputs[:1]}  # blocked quantization: no per-tensor or per-axis reading
        axis = _axis(node) if key[1] == "QuantizeLinear" and scale.size > 1 else 1
        return {outputs[0]: Quantization(outputs[0], np.asarray(scale), np.asarray(zp), axis, node.name, node.op_type)}
    if key in INTEGER_PATH_OPS:
        return {o: None for o in outputs[:1]}
    if key[0] == "" and node.op_type in PASS_THROUGH:
        data = PASS_THROUGH[node.op_type]
        ins = [node.input[i] for i in (range(len(node.input)) if data is None else data) if i < len(node.input)]
        readings = [path[i] for i in ins if i in path]
        if not readings:
            return {}
        moved = node.output if node.op_type == "Split" else node.output[:1]
        first = readings[0]
        same = first is not None and len(readings) == len([i for i in ins if i]) and all(
            r is not None and first.same_reading(r) for r in readings)
        if same and first.scale.size > 1 and node.op_type not in ("MaxPool", "Identity"):
            same = False  # a per-axis reading survives only ops that keep every element on its axis entry
        return {o: (Quantization(o, first.scale, first.zero_point, first.axis, first.node, first.op_type) if same else None)
                for o in moved if o in outputs}
    return {}
