"""Integer arithmetic torch lacks kernels for: Add, Sub, Mul, Div, Mod, Max, Min and the comparisons
on uint16/32/64.

When type information says an input is such a type, the op computes in int64 and casts back: exact
for uint16/uint32; for uint64 the bits are reinterpreted as int64, which is exact for add/sub/mul
(wrap-around modulo 2**64) and, with the sign bit flipped, for order (max, min, comparisons); div
and mod on uint64 values >= 2**63 raise NotImplementedError at run time rather than compute a wrong
value. Every other input type goes to onnx2torch's converter unchanged (these converters extend it).
"""

from __future__ import annotations

import torch
from onnx import TensorProto
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import elem_type
from onnxxai.convert.registry import register, since

__all__ = ["UnsignedAsInt64", "convert_unsigned"]

_UNSIGNED = {TensorProto.UINT16: torch.uint16, TensorProto.UINT32: torch.uint32, TensorProto.UINT64: torch.uint64}
_ARITHMETIC = ("Add", "Sub", "Mul")
_DIVISION = ("Div", "Mod")
_ORDER = ("Max", "Min", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Equal")
_SIGN = -(2**63)


class UnsignedAsInt64(torch.nn.Module):
    """Run ``inner`` (a converted op) on uint16/32/64 inputs by computing in int64 and casting back.

    ``mode``: "wrap" (add/sub/mul: modular arithmetic is the same in int64), "order" (uint64 with
    the sign bit flipped, which maps unsigned order onto signed order), "divide" (exact while
    uint64 values are below 2**63, refused otherwise). ``value_outputs`` are the outputs that hold
    values of the input type (cast back); the others (bool, indices) pass through.
    """

    def __init__(self, inner: torch.nn.Module, dtype: torch.dtype, mode: str, value_outputs: tuple[int, ...]) -> None:
        super().__init__()
        self.inner, self.dtype, self.mode, self.value_outputs = inner, dtype, mode, value_outputs

    def _to_int64(self, t):  # noqa: ANN001, ANN202
        if not isinstance(t, torch.Tensor) or t.dtype != self.dtype:
            return t
        if self.dtype != torch.uint64:
            return t.to(torch.int64)
        v = t.view(torch.int64)
        if self.mode == "order":
            return v ^ _SIGN
        if self.mode == "divide" and bool((v < 0).any()):
            raise NotImplementedError("Div/Mod on uint64 values >= 2**63 is not supported")
        return v

    def _back(self, t: torch.Tensor) -> torch.Tensor:
        if t.dtype != torch.int64:
            return t
        if self.dtype != torch.uint64:
            return t.to(self.dtype)
        return (t ^ _SIGN if self.mode == "order" else t).view(torch.uint64)

    def forward(self, *args):  # noqa: ANN002, ANN201
        out = self.inner(*[self._to_int64(a) for a in args])
        if isinstance(out, (tuple, list)):
            return type(out)(self._back(o) if i in self.value_outputs else o for i, o in enumerate(out))
        return self._back(out)

    def extra_repr(self) -> str:
        return f"{self.dtype} via int64, mode={self.mode}"


def convert_unsigned(node: OnnxNode, graph: OnnxGraph, fallback) -> OperationConverterResult:  # noqa: ANN001
    """Wrap the op's usual converter in :class:`UnsignedAsInt64` when an input is uint16/32/64."""
    converted = fallback(node, graph)
    types = {elem_type(graph, name) for name in node.input_values if name}
    unsigned = [_UNSIGNED[t] for t in types if t in _UNSIGNED]
    if not unsigned:
        return converted
    op = node.operation_type
    mode = "wrap" if op in _ARITHMETIC else "divide" if op in _DIVISION else "order"
    value_outputs = (0,)  # the one output
    module = UnsignedAsInt64(converted.torch_module, unsigned[0], mode, value_outputs)
    return OperationConverterResult(torch_module=module, onnx_mapping=converted.onnx_mapping)


for _op in _ARITHMETIC + _DIVISION + _ORDER:
    register(_op, since(1), extends=True)(convert_unsigned)
