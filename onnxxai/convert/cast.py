"""Cast and CastLike, for every opset version and every element type torch can hold exactly.

onnx2torch's Cast knows only the classic dtypes. Ours adds bfloat16, uint16/32/64, the four float8
types of opset 19 (``saturate`` honoured) and the sub-byte integers int4/uint4/int2/uint2, which
torch has no dtype for: they are carried in int8/uint8 tensors holding the same values (a cast to
them wraps modulo 2**bits, as ONNX's reference does). The element-type tables live in
:mod:`onnxxai.proto.dtypes`; :class:`Cast` is shared with the quantization family.

float4e2m1 and float8e8m0 have no torch dtype either: they are carried in float32 tensors holding
exactly the representable values. A cast to float4e2m1 rounds half to even onto its 15 values
(±0, ±0.5, ..., ±6), saturating beyond ±6 (infinities included) and mapping NaN to -0, as ONNX's
reference (ml_dtypes) does; a cast to float8e8m0 keeps only the float32 exponent byte, rounded per
``round_mode`` (up/down/nearest) and ``saturate``, bit for bit as ``onnx.numpy_helper.to_float8e8m0``.

Refused: float6 and string targets.
"""

from __future__ import annotations

import torch
from onnx import TensorProto
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import elem_type, result
from onnxxai.convert.registry import register, since
from onnxxai.proto.dtypes import FLOAT32_CARRIED, SUB_BYTE, TORCH_DTYPES, TORCH_FLOAT8

__all__ = ["Cast", "CastLike", "cast_module", "to_float4e2m1", "to_float8e8m0"]

#: float8e4m3fn has no infinity: without saturation, magnitudes that round past 448 become NaN.
#: (448 + 480) / 2 = 464 rounds to even, i.e. down to 448. torch's own conversion saturates for this
#: type; for the three others it already gives inf/NaN on overflow, as ONNX's saturate=0 asks.
_E4M3FN_OVERFLOW = 464.0


def to_float4e2m1(x: torch.Tensor) -> torch.Tensor:
    """float4e2m1 values of ``x`` (round half to even, saturate at ±6, NaN -> -0) in float32."""
    x = x.to(torch.float32)
    a = x.abs()
    step = torch.where(a < 2, torch.full_like(a, 0.5), torch.where(a < 4, torch.ones_like(a), torch.full_like(a, 2.0)))
    q = (torch.round(a / step) * step).clamp(max=6.0)
    q = torch.where(torch.isnan(a), torch.full_like(a, -0.0), torch.copysign(q, x))
    return q


def to_float8e8m0(x: torch.Tensor, saturate: bool = True, round_mode: str = "up") -> torch.Tensor:
    """float8e8m0 values of ``x`` (a power of two 2**(e-127), or NaN for e=255) in float32,
    computed on the float32 bits as ONNX's reference does."""
    bits = x.to(torch.float32).view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    exponent = (bits >> 23) & 0xFF
    normal = exponent != 0xFF
    if round_mode == "nearest":
        g = (bits & 0x400000) > 0
        r = (bits & 0x200000) > 0
        sticky = (bits & 0x1FFFFF) > 0
        round_up = g & (r | sticky | (exponent > 0)) & normal
    elif round_mode == "up":
        round_up = ((bits & 0x7FFFFF) > 0) & normal
    elif round_mode == "down":
        round_up = torch.zeros_like(normal)
    else:
        raise NotImplementedError(f"Cast with round_mode={round_mode} is not supported")
    if saturate:
        round_up = round_up & (exponent != 0xFE)
    exponent = (exponent + round_up.to(torch.int64)) & 0xFF
    value = torch.exp2(exponent.to(torch.float64) - 127.0).to(torch.float32)
    return torch.where(exponent == 0xFF, torch.full_like(value, float("nan")), value)


class Cast(torch.nn.Module):
    """Convert to ``dtype``; float8 targets saturate to ±max when ``saturate`` (ONNX's default),
    sub-byte integer targets (``bits``) wrap modulo 2**bits inside their int8/uint8 container,
    ``carried`` float4e2m1/float8e8m0 targets are rounded into a float32 container."""

    def __init__(self, dtype: torch.dtype, saturate: bool = True, bits: int = 0, signed: bool = False,
                 carried: int = 0, round_mode: str = "up") -> None:
        super().__init__()
        self.dtype, self.saturate, self.bits, self.signed = dtype, saturate, bits, signed
        self.carried, self.round_mode = carried, round_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.carried == TensorProto.FLOAT4E2M1:
            return to_float4e2m1(x)
        if self.carried == TensorProto.FLOAT8E8M0:
            return to_float8e8m0(x, self.saturate, self.round_mode)
        if self.bits:
            v = (x.trunc() if x.is_floating_point() else x).to(torch.int64)
            if self.signed:
                half = 1 << (self.bits - 1)
                v = torch.remainder(v + half, 1 << self.bits) - half
            else:
                v = torch.remainder(v, 1 << self.bits)
            return v.to(self.dtype)
        if self.dtype in TORCH_FLOAT8 and x.is_floating_point() and x.dtype not in TORCH_FLOAT8:
            if self.saturate:
                limit = torch.finfo(self.dtype).max
                return x.clamp(-limit, limit).to(self.dtype)
            y = x.to(self.dtype)
            if self.dtype == torch.float8_e4m3fn:
                y = torch.where(x.abs() > _E4M3FN_OVERFLOW, torch.full_like(y, float("nan")), y)
            return y
        return x.to(self.dtype)

    def extra_repr(self) -> str:
        extra = f", int{self.bits} container" if self.bits else ""
        if self.carried:
            extra = f", {TensorProto.DataType.Name(self.carried)} in float32, round_mode={self.round_mode}"
        return f"{self.dtype}, saturate={self.saturate}{extra}"


def cast_module(onnx_type: int, saturate: bool = True, op: str = "Cast", round_mode: str = "up") -> Cast:
    """The :class:`Cast` to ONNX element type ``onnx_type``; NotImplementedError for types torch cannot hold."""
    if onnx_type in FLOAT32_CARRIED:
        if round_mode not in ("up", "down", "nearest"):
            raise NotImplementedError(f"{op} with round_mode={round_mode} is not supported")
        return Cast(torch.float32, saturate=saturate, carried=onnx_type, round_mode=round_mode)
    if onnx_type not in TORCH_DTYPES:
        name = TensorProto.DataType.Name(onnx_type) if onnx_type in TensorProto.DataType.values() else str(onnx_type)
        raise NotImplementedError(f"{op} with to={name} is not supported")
    bits, signed = SUB_BYTE.get(onnx_type, (0, False))
    return Cast(TORCH_DTYPES[onnx_type], saturate=saturate, bits=bits, signed=signed)


@register("Cast", since(1), replaces=True)
def convert_cast(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Cast (all versions): ``to`` any type in :data:`TORCH_DTYPES` or float4e2m1/float8e8m0 (float32
    containers); ``saturate`` (19+) for float8; ``round_mode`` (24+) for float8e8m0."""
    saturate = bool(int(node.attributes.get("saturate", 1)))
    round_mode = node.attributes.get("round_mode", "up")
    if isinstance(round_mode, bytes):
        round_mode = round_mode.decode()
    return result(cast_module(int(node.attributes["to"]), saturate, round_mode=round_mode), node, n_inputs=1)


class CastLike(torch.nn.Module):
    """Cast the first input to the dtype of the second (used when the target type is unknown at
    conversion time; otherwise CastLike converts to :class:`Cast`)."""

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return x.to(like.dtype)


@register("CastLike", since(1))
def convert_cast_like(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """CastLike: the target element type is read from the second input's type info, so bfloat16,
    float8 (with ``saturate``) and int4/uint4/int2/uint2 behave as in Cast; without type info it
    falls back to the second input's run-time dtype (only with the default ``saturate=1``)."""
    saturate = bool(int(node.attributes.get("saturate", 1)))
    target = elem_type(graph, node.input_values[1])
    if target is not None:
        return result(cast_module(target, saturate, op="CastLike"), node, n_inputs=1)
    if not saturate:
        raise NotImplementedError("CastLike with saturate=0 is not supported")
    return result(CastLike(), node)
