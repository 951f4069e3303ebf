"""Quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear (the integer arithmetic ops
live in :mod:`onnxxai.convert.qlinear`).

Forward passes are exact: they reproduce ONNX's reference bit for bit (round half to even, saturation
to the target range, scales in their own precision). Element types follow :mod:`onnxxai.proto.dtypes`:
float8 types are torch's, int4/uint4/int2/uint2 live in int8/uint8 containers.

Gradients. Rounding has zero derivative almost everywhere, so a quantized graph taken literally has
no useful gradient. A QuantizeLinear whose output only feeds DequantizeLinear nodes (the QDQ pattern
of quantized deployments) therefore returns its integer values in a float tensor ("fake quant") and
uses a straight-through estimator: the round step passes the gradient unchanged and the clamp to
the target range passes it wherever the value rounds into the range without being clipped, so the
backward of quantize->dequantize is the identity where ``qmin - 1/2 <= x / scale + zero_point <= qmax + 1/2``
and zero outside (:func:`onnxxai.convert.qlinear.saturate_surrogate`). The forward
values are unchanged. The same holds where the output feeds quantized integer ops (QLinearConv,
QGemm, ... whose own gradients are straight-through, see :mod:`onnxxai.convert.qlinear`). A
QuantizeLinear whose output goes elsewhere (or is a graph output) returns the exact integer/float8
dtype, which carries no gradient.
"""

from __future__ import annotations

import torch
from onnx import TensorProto
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import elem_type, result
from onnxxai.convert.cast import to_float4e2m1
from onnxxai.convert.qlinear import INT_RANGES, MS, StraightThrough, container, float_container_ok, saturate_surrogate
from onnxxai.convert.registry import register, since
from onnxxai.proto.dtypes import TORCH_DTYPES, TORCH_FLOAT8

_INT_RANGES = INT_RANGES
_FLOAT8_TYPES = (TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E5M2FNUZ)


def _broadcast_param(value: torch.Tensor, shape: torch.Size, axis: int, block_size: int) -> torch.Tensor:
    """Scale or zero point shaped to broadcast against ``shape``: per tensor, per axis or blocked."""
    if value.dim() == 0 or value.numel() == 1:
        return value.reshape(())
    axis = axis % len(shape)
    if block_size:
        return value.repeat_interleave(block_size, dim=axis).narrow(axis, 0, shape[axis])
    dims = [1] * len(shape)
    dims[axis] = value.numel()
    return value.reshape(dims)


def _float_container(x: torch.Tensor) -> torch.dtype:
    """Float dtype that holds every quantized integer value exactly (float64 stays float64)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class QuantizeLinear(StraightThrough):
    """``saturate(round(x / scale) + zero_point)`` to ``target`` (ONNX element type).

    ``fake`` keeps the result in a float tensor with a straight-through gradient (see the module
    docstring); otherwise the result has the target's exact dtype. In surrogate mode (see
    :func:`onnxxai.convert.qlinear.surrogate_forward`) a fake result is the unrounded surrogate.
    """

    def __init__(self, target: int, axis: int, block_size: int, saturate: bool, precision: int | None, fake: bool) -> None:
        super().__init__()
        self.target, self.axis, self.block_size, self.saturate, self.fake = target, axis, block_size, saturate, fake
        self.precision = TORCH_DTYPES[precision] if precision else None

    def forward(self, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None = None) -> torch.Tensor:
        scale = _broadcast_param(scale, x.shape, self.axis, self.block_size)
        if self.precision is not None:
            x, scale = x.to(self.precision), scale.to(self.precision)
        y = x / scale
        if self.target in _INT_RANGES:
            qmin, qmax = _INT_RANGES[self.target]
            box = _float_container(x)
            zp = 0.0 if zero_point is None else _broadcast_param(zero_point, x.shape, self.axis, self.block_size).to(box)
            exact = (torch.round(y).to(box) + zp).clamp(qmin, qmax)
            if not self.fake:
                return exact.detach().to(TORCH_DTYPES[self.target])
            # straight-through round; the clip passes the gradient wherever the value rounds into range
            surrogate = saturate_surrogate(y.to(box) + zp, qmin, qmax) if self.wants_surrogate(x, scale) else None
            return self.straight_through(exact, surrogate)
        if self.target == TensorProto.FLOAT4E2M1:
            # float4 lives in a float32 container; its zero point (a float4 value) is added before
            # rounding, and the cast saturates at ±6 whatever ``saturate`` says (ONNX's reference).
            if zero_point is not None:
                y = y + _broadcast_param(zero_point, x.shape, self.axis, self.block_size).to(y.dtype)
            q = to_float4e2m1(y)
            return self.straight_through(q.to(y.dtype), y) if self.fake else q
        dtype = TORCH_DTYPES[self.target]  # float8: zero point is zero by definition
        if self.saturate:
            limit = torch.finfo(dtype).max
            y = y.clamp(-limit, limit)
        q = y.to(dtype)
        if self.fake:
            return self.straight_through(q.to(y.dtype), y)
        return q

    def extra_repr(self) -> str:
        return f"to={TensorProto.DataType.Name(self.target)}, axis={self.axis}, block_size={self.block_size}, fake={self.fake}"


class DequantizeLinear(torch.nn.Module):
    """``(x - zero_point) * scale`` computed in float32 (as ONNX's reference), returned as ``dtype``
    (the scale's dtype unless ``output_dtype`` is set). ``ignore_zero_point`` for float4 inputs,
    whose zero point ONNX's reference ignores."""

    def __init__(self, axis: int, block_size: int, dtype: torch.dtype | None, ignore_zero_point: bool = False) -> None:
        super().__init__()
        self.axis, self.block_size, self.dtype = axis, block_size, dtype
        self.ignore_zero_point = ignore_zero_point

    def forward(self, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None = None) -> torch.Tensor:
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        dx = x.to(compute)
        if zero_point is not None and zero_point.dtype not in TORCH_FLOAT8 and not self.ignore_zero_point:
            dx = dx - _broadcast_param(zero_point, x.shape, self.axis, self.block_size).to(compute)
        y = dx * _broadcast_param(scale, x.shape, self.axis, self.block_size).to(compute)
        return y.to(self.dtype or scale.dtype)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, block_size={self.block_size}"


@register("QuantizeLinear", since(1))
def convert_quantize_linear(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """QuantizeLinear (10-25): per tensor, per axis and blocked; integer targets (int2..uint16) and
    float8 (``saturate``), float4e2m1 (float32 container); ``output_dtype`` and ``precision``.
    Refuses float6 targets."""
    attrs = node.attributes
    target = int(attrs.get("output_dtype", 0))
    if not target and len(node.input_values) > 2 and node.input_values[2]:
        target = elem_type(graph, node.input_values[2]) or 0
    if not target:
        target = elem_type(graph, node.output_values[0]) or TensorProto.UINT8
    if target not in _INT_RANGES and target not in _FLOAT8_TYPES and target != TensorProto.FLOAT4E2M1:
        raise NotImplementedError(f"QuantizeLinear with output type {TensorProto.DataType.Name(target)} is not supported")
    module = QuantizeLinear(target, int(attrs.get("axis", 1)), int(attrs.get("block_size", 0)),
                            bool(int(attrs.get("saturate", 1))), int(attrs.get("precision", 0)) or None,
                            fake=float_container_ok(graph, node.output_values[0]))
    return result(module, node)


@register("DequantizeLinear", since(1))
def convert_dequantize_linear(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """DequantizeLinear (10-25): per tensor, per axis and blocked; integer and float8 inputs;
    float4e2m1 inputs (float32 container, zero point ignored); ``output_dtype``. Refuses float6 inputs."""
    attrs = node.attributes
    source = elem_type(graph, node.input_values[0])
    float4 = source == TensorProto.FLOAT4E2M1
    if source is not None and source not in _INT_RANGES and source not in _FLOAT8_TYPES and source != TensorProto.INT32 and not float4:
        raise NotImplementedError(f"DequantizeLinear with input type {TensorProto.DataType.Name(source)} is not supported")
    out = int(attrs.get("output_dtype", 0))
    return result(DequantizeLinear(int(attrs.get("axis", 1)), int(attrs.get("block_size", 0)), TORCH_DTYPES[out] if out else None,
                                   ignore_zero_point=float4), node)


@register("QuantizeLinear", [1], domain=MS)
def convert_ms_quantize_linear(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft QuantizeLinear-1 (onnxruntime's QDQ with ``UseQDQContribOps``, e.g. 16-bit): ONNX's
    QuantizeLinear semantics."""
    return convert_quantize_linear(node, graph)


@register("DequantizeLinear", [1], domain=MS)
def convert_ms_dequantize_linear(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft DequantizeLinear-1 (onnxruntime's QDQ with ``UseQDQContribOps``): ONNX's semantics."""
    return convert_dequantize_linear(node, graph)


class DynamicQuantizeLinear(StraightThrough):
    """uint8 quantization with scale and zero point from the input's range (including 0), as
    onnxruntime computes it. With ``fake`` (the quantized output only feeds integer ops, see
    :mod:`onnxxai.convert.qlinear`) the values travel in a float tensor whose gradient is that of
    ``x / scale + zero_point`` inside [0, 255] with the scale (an output too) a function of the input's
    range and the zero point held constant, so the dequantized surrogate ``(q - zp) * scale`` has the
    input's gradient everywhere, the range's ends included."""

    def __init__(self, fake: bool = False) -> None:
        super().__init__()
        self.fake = fake

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xf = x.detach().to(torch.float32)
        hi = xf.max().clamp(min=0)
        lo = xf.min().clamp(max=0)
        scale = torch.where(hi == lo, torch.ones_like(hi), hi - lo) / 255.0
        zp = torch.round((0.0 - lo / scale).clamp(0, 255))
        y = (torch.round(xf / scale) + zp).clamp(0, 255)
        if not self.fake:
            return y.to(torch.uint8), scale.to(x.dtype), zp.to(torch.uint8)
        dtype = container(x)
        if not self.wants_surrogate(x):
            return y.to(dtype), scale.to(x.dtype), zp.to(torch.uint8)
        # the surrogate's scale follows the input's range (its gradient reaches the max and min entries,
        # which the clamp to [0, 255] otherwise cuts off); the zero point is rounded, so constant
        xs = x.to(dtype)
        hi_s, lo_s = xs.max().clamp(min=0), xs.min().clamp(max=0)
        scale_s = torch.where(hi_s == lo_s, torch.ones_like(hi_s), hi_s - lo_s) / 255.0
        surrogate = saturate_surrogate(xs / scale_s + zp.to(dtype), 0, 255)
        return (self.straight_through(y.to(dtype), surrogate), self.straight_through(scale.to(x.dtype), scale_s.to(x.dtype)),
                zp.to(torch.uint8))

    def extra_repr(self) -> str:
        return f"fake={self.fake}"


@register("DynamicQuantizeLinear", since(1))
def convert_dynamic_quantize_linear(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """DynamicQuantizeLinear-11 (uint8 output; a straight-through gradient when it feeds integer ops)."""
    return result(DynamicQuantizeLinear(fake=float_container_ok(graph, node.output_values[0])), node)


__all__ = ["QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"]
