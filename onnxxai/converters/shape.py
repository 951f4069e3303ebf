"""Shape ops whose onnx2torch converters miss a case: Flatten with axis <= 0, Reshape with allowzero=1."""

from __future__ import annotations

import math

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.converters._util import extend_converter, result


class OnnxFlatten(torch.nn.Module):
    """ONNX Flatten: always 2-D, ``(prod(shape[:axis]), prod(shape[axis:]))``, axis 0 included."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axis = self.axis % x.dim() if x.dim() and self.axis < 0 else self.axis
        return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def convert_flatten(node: OnnxNode, graph: OnnxGraph, fallback) -> OperationConverterResult:
    """Flatten: ours for axis 0 and negative axes (onnx2torch's torch.flatten is not 2-D there)."""
    axis = int(node.attributes.get("axis", 1))
    if axis <= 0:
        return result(OnnxFlatten(axis), node)
    return fallback(node, graph)


for _v in (9, 11, 13):
    extend_converter("Flatten", _v, convert_flatten)


class ReshapeAllowZero(torch.nn.Module):
    """Reshape with ``allowzero=1``: a 0 in the shape is a zero-size axis, not 'copy this axis'."""

    def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        return torch.reshape(x, [int(s) for s in shape.tolist()])


def convert_reshape(node: OnnxNode, graph: OnnxGraph, fallback) -> OperationConverterResult:
    """Reshape: onnx2torch's module, or ours for allowzero=1 (which onnx2torch refuses)."""
    if int(node.attributes.get("allowzero", 0)) == 1:
        return result(ReshapeAllowZero(), node)
    return fallback(node, graph)


extend_converter("Reshape", 14, convert_reshape)
