"""Quantized tensors inside a converted graph: integer ranges, where a quantized tensor may travel in a
float container, onnxruntime's requantization, and the straight-through combination of an exact
integer result with a differentiable float surrogate.

Why float containers: torch integer tensors carry no gradient. A quantized tensor whose consumers all
read it as a number (quantized ops, DequantizeLinear, Cast, or ops that only move values such as
MaxPool and Reshape) therefore travels as a float tensor holding the exact integer values (float64
for int32 accumulators, so every value stays exact); its gradient is that of the op's dequantized
float surrogate. A quantized tensor that leaves the graph, or reaches any other op, keeps its exact
integer dtype.
"""

from __future__ import annotations

import torch
from onnx import TensorProto
from onnx2torch.onnx_graph import OnnxGraph

#: Integer quantization ranges (sub-byte types included).
INT_RANGES: dict[int, tuple[int, int]] = {
    TensorProto.UINT8: (0, 255), TensorProto.INT8: (-128, 127), TensorProto.UINT16: (0, 65535),
    TensorProto.INT16: (-32768, 32767), TensorProto.UINT4: (0, 15), TensorProto.INT4: (-8, 7),
    TensorProto.UINT2: (0, 3), TensorProto.INT2: (-2, 1),
}

#: op type -> indices of the inputs that read a quantized tensor as numbers (a float container works)
QUANTIZED_INPUTS: dict[str, tuple[int, ...]] = {
    "DequantizeLinear": (0,), "Cast": (0,), "QLinearConv": (0, 3), "QLinearMatMul": (0, 3), "QGemm": (0, 3),
    "QLinearAdd": (0, 3), "QLinearMul": (0, 3), "QLinearGlobalAveragePool": (0,), "QLinearAveragePool": (0,),
    "QLinearSigmoid": (0,), "QLinearLeakyRelu": (0,), "QLinearSoftmax": (0,), "ConvInteger": (0, 1),
    "MatMulInteger": (0, 1),
}
#: ops that only move values: a float container passes through them (op type -> data input indices;
#: None for every input)
PASS_THROUGH: dict[str, tuple[int, ...] | None] = {
    "MaxPool": (0,), "Flatten": (0,), "Reshape": (0,), "Transpose": (0,), "Squeeze": (0,), "Unsqueeze": (0,),
    "Identity": (0,), "Slice": (0,), "Split": (0,), "Gather": (0,), "Expand": (0,), "Tile": (0,),
    "DepthToSpace": (0,), "SpaceToDepth": (0,), "Concat": None,
}


def _reads_as_number(op: str, index: int) -> bool:
    if op == "QLinearConcat":
        return index >= 2 and (index - 2) % 3 == 0
    return index in QUANTIZED_INPUTS.get(op, ())


def float_container_ok(graph: OnnxGraph, name: str, _seen: frozenset[str] = frozenset()) -> bool:
    """Whether the quantized tensor ``name`` may travel as a float tensor holding its integer values:
    it is not a graph output, and every consumer reads it as numbers (directly, or through ops that
    only move values, whose outputs obey the same rule)."""
    if name in graph.output_values or name in _seen:
        return False
    consumers = [(node, i) for node in graph.nodes.values() for i, v in enumerate(node.input_values) if v == name]
    if not consumers:
        return False
    for node, index in consumers:
        op = node.operation_type
        if _reads_as_number(op, index):
            continue
        if op not in PASS_THROUGH or (PASS_THROUGH[op] is not None and index not in PASS_THROUGH[op]):
            return False
        outputs = node.output_values if op == "Split" else node.output_values[:1]
        if not all(float_container_ok(graph, out, _seen | {name}) for out in outputs):
            return False
    return True


def container(x: torch.Tensor) -> torch.dtype:
    """The float dtype a quantized result travels in next to ``x``: float64 stays float64, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def integers(x: torch.Tensor) -> torch.Tensor:
    """The exact integer values of a quantized tensor (integer dtype or float container) as int64."""
    return x.detach().to(torch.int64)


def wants_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd records and any of ``tensors`` is a float tensor that requires grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def straight_through(exact: torch.Tensor, surrogate: torch.Tensor | None) -> torch.Tensor:
    """``exact``'s values with ``surrogate``'s gradient (``exact`` itself when there is no surrogate)."""
    if surrogate is None:
        return exact
    return surrogate + (exact.to(surrogate.dtype) - surrogate).detach()


def f32(x: torch.Tensor | float) -> torch.Tensor:
    """``x`` as float32 (scales are float32 numbers in onnxruntime's kernels)."""
    return torch.as_tensor(x).detach().to(torch.float32)


def fma32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """float32 fused multiply-add ``a * b + c`` rounded once (exact product and sum in float64: right
    whenever the exact sum fits 53 bits, as it does for 8-bit operands and float32 scales)."""
    return (a.to(torch.float64) * b.to(torch.float64) + c.to(torch.float64)).to(torch.float32)


def requantize(acc: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | int, qmin: int, qmax: int) -> torch.Tensor:
    """onnxruntime's MlasRequantizeOutput: the int32 accumulator converted to float32, times the float32
    ``scale``, rounded half to even, plus ``zero_point``, saturated to [qmin, qmax]; float64 result."""
    value = acc.to(torch.float64).to(torch.float32) * f32(scale)
    zp = zero_point.to(torch.float64) if isinstance(zero_point, torch.Tensor) else float(zero_point)
    return (torch.round(value).to(torch.float64) + zp).clamp(qmin, qmax)


def quantize_mlas(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | int, qmin: int, qmax: int) -> torch.Tensor:
    """onnxruntime's MlasQuantizeLinear on float32 ``x``: ``x / scale`` in float32, rounded half to even,
    plus ``zero_point``, saturated; float64 result."""
    zp = zero_point.to(torch.float64) if isinstance(zero_point, torch.Tensor) else float(zero_point)
    return (torch.round(f32(x) / f32(scale)).to(torch.float64) + zp).clamp(qmin, qmax)
