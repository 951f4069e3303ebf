"""Element-wise functions onnx2torch lacks: hyperbolic functions, Mish, Swish, ThresholdedRelu, Shrink,
and Hardmax."""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import result
from onnxxai.convert.registry import register, since


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


@register("Hardmax", since(13))
def convert_hardmax(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Hardmax-13 (a single axis; earlier versions flatten and are not supported)."""
    return result(Hardmax(int(node.attributes.get("axis", -1))), node)


for _op in _FUNCTIONS:
    register(_op, since(1))(convert_elementwise)
