"""Element-wise functions onnx2torch lacks: hyperbolic functions, Mish, Swish, ThresholdedRelu, Shrink,
Hardmax, and the dtype/size ops CastLike and Size."""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import register_all_versions, result
from onnxxai.convert.cast import cast_module, elem_type


class Elementwise(torch.nn.Module):
    """``fn(x)`` for a named, attribute-free-at-run-time element-wise function."""

    def __init__(self, name: str, fn) -> None:
        super().__init__()
        self.name, self.fn = name, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


def _float_attr(node: OnnxNode, name: str, default: float) -> float:
    return float(node.attributes.get(name, default))


_FUNCTIONS = {
    "Acosh": lambda node: torch.acosh,
    "Asinh": lambda node: torch.asinh,
    "Atanh": lambda node: torch.atanh,
    "Cosh": lambda node: torch.cosh,
    "Sinh": lambda node: torch.sinh,
    "Mish": lambda node: torch.nn.functional.mish,
    "Swish": lambda node: (lambda x, a=_float_attr(node, "alpha", 1.0): x * torch.sigmoid(a * x)),
    "ThresholdedRelu": lambda node: (lambda x, a=_float_attr(node, "alpha", 1.0): torch.where(x > a, x, torch.zeros_like(x))),
    "Shrink": lambda node: (
        lambda x, lam=_float_attr(node, "lambd", 0.5), b=_float_attr(node, "bias", 0.0):
        torch.where(x < -lam, x + b, torch.where(x > lam, x - b, torch.zeros_like(x)))
    ),
}


def convert_elementwise(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Acosh, Asinh, Atanh, Cosh, Sinh, Mish, Swish(alpha), ThresholdedRelu(alpha), Shrink(lambd, bias)."""
    return result(Elementwise(node.operation_type, _FUNCTIONS[node.operation_type](node)), node)


class Hardmax(torch.nn.Module):
    """One-hot of the first maximum along ``axis`` (zero gradient almost everywhere, as in ONNX)."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = x.argmax(dim=self.axis, keepdim=True)
        return torch.zeros_like(x).scatter(self.axis, index, 1.0)


def convert_hardmax(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Hardmax-13 (a single axis; earlier versions flatten and are not supported)."""
    return result(Hardmax(int(node.attributes.get("axis", -1))), node)


class CastLike(torch.nn.Module):
    """Cast the first input to the dtype of the second (used when the target type is unknown at
    conversion time; otherwise CastLike converts to compat's :class:`Cast`)."""

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return x.to(like.dtype)


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


class Size(torch.nn.Module):
    """The number of elements, as an int64 scalar."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


def convert_size(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Size: element count of the input."""
    return result(Size(), node)


for _op in _FUNCTIONS:
    register_all_versions(_op, convert_elementwise)
register_all_versions("Hardmax", convert_hardmax, since=13)
register_all_versions("CastLike", convert_cast_like)
register_all_versions("Size", convert_size)
