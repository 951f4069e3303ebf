"""Bitwise and bit-shift ops on integer tensors, and BitCast.

torch has no bitwise/shift kernels for uint16/32/64, so those tensors are reinterpreted (``view``)
as the signed type of the same width: and/or/xor/not and left shifts act on the same bits, and the
logical right shift is built from the arithmetic one with a mask. Every result is exact; none of
these ops is differentiable (integer outputs).
"""

from __future__ import annotations

import onnx
import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import result
from onnxxai.convert.registry import register, since
from onnxxai.proto.dtypes import TORCH_NATIVE

#: unsigned dtype -> signed dtype of the same width (the bits torch can operate on)
_SIGNED_VIEW = {torch.uint8: torch.int8, torch.uint16: torch.int16, torch.uint32: torch.int32, torch.uint64: torch.int64}
_SIGNED = (torch.int8, torch.int16, torch.int32, torch.int64)


def _as_signed(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself (signed or bool) or its bits viewed as the signed type of the same width."""
    return x.view(_SIGNED_VIEW[x.dtype]) if x.dtype in _SIGNED_VIEW else x


def _check_integer(op: str, x: torch.Tensor) -> None:
    if x.dtype not in _SIGNED_VIEW and x.dtype not in _SIGNED and x.dtype != torch.bool:
        raise NotImplementedError(f"{op} on {x.dtype} tensors is not supported (integer types only)")


class BitwiseBinary(torch.nn.Module):
    """ONNX BitwiseAnd / BitwiseOr / BitwiseXor with numpy broadcasting, for every integer type."""

    _OPS = {"BitwiseAnd": torch.bitwise_and, "BitwiseOr": torch.bitwise_or, "BitwiseXor": torch.bitwise_xor}

    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        _check_integer(self.op, a)
        return self._OPS[self.op](_as_signed(a), _as_signed(b)).view(a.dtype)


class BitwiseNot(torch.nn.Module):
    """ONNX BitwiseNot: flips every bit, for every integer type."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_integer("BitwiseNot", x)
        return torch.bitwise_not(_as_signed(x)).view(x.dtype)


class BitShift(torch.nn.Module):
    """ONNX BitShift (opset 11/28 semantics): arithmetic right shift for signed types, logical for
    unsigned; a shift that is negative or at least the bit width gives what sign extension alone
    gives (-1 for a right shift of a negative value, else 0). Left shifts wrap around."""

    def __init__(self, direction: str) -> None:
        super().__init__()
        self.direction = direction

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.dtype not in _SIGNED_VIEW and x.dtype not in _SIGNED:
            raise NotImplementedError(f"BitShift on {x.dtype} tensors is not supported (integer types only)")
        width = torch.iinfo(x.dtype).bits
        xs, ys = torch.broadcast_tensors(_as_signed(x), _as_signed(y.to(x.dtype)))
        valid = (ys >= 0) & (ys < width)
        s = torch.where(valid, ys, 0)
        if self.direction == "LEFT":
            out = torch.where(valid, xs << s, 0)
        elif x.dtype in _SIGNED:
            out = xs >> torch.where(valid, ys, width - 1)
        else:
            # logical right shift on the signed view: clear the s sign-extended high bits
            sign_bit = torch.tensor(torch.iinfo(xs.dtype).min, dtype=xs.dtype)
            high = sign_bit >> (s - 1).clamp(min=0)
            out = torch.where(valid, torch.where(s == 0, xs, (xs >> s) & ~high), 0)
        return out.view(x.dtype)


@register("BitwiseAnd", since(1))
@register("BitwiseOr", since(1))
@register("BitwiseXor", since(1))
def convert_bitwise_binary(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """BitwiseAnd / BitwiseOr / BitwiseXor (opset 18)."""
    return result(BitwiseBinary(node.operation_type), node)


@register("BitwiseNot", since(1))
def convert_bitwise_not(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """BitwiseNot (opset 18)."""
    return result(BitwiseNot(), node)


@register("BitShift", since(1))
def convert_bit_shift(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """BitShift (opset 11, 28): direction LEFT or RIGHT."""
    direction = node.attributes.get("direction")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("LEFT", "RIGHT"):
        raise NotImplementedError(f"BitShift with direction={direction!r} is not supported")
    return result(BitShift(direction), node)


class BitCast(torch.nn.Module):
    """ONNX BitCast: the same bytes read as another type of the same width (``Tensor.view(dtype)``;
    torch, like ONNX, uses the little-endian layout on every platform it runs on)."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.element_size() != torch.empty((), dtype=self.dtype).element_size():
            raise ValueError(f"BitCast from {x.dtype} to {self.dtype}: the bit widths differ")
        return x.contiguous().view(self.dtype)


@register("BitCast", since(1))
def convert_bit_cast(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """BitCast (opset 26) to any type torch can hold (not string, int4/uint4, float4, float8e8m0)."""
    to = int(node.attributes["to"])
    if to not in TORCH_NATIVE:
        raise NotImplementedError(f"BitCast with to={onnx.TensorProto.DataType.Name(to)} is not supported")
    return result(BitCast(TORCH_NATIVE[to]), node)
