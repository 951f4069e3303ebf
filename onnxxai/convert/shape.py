"""Shape ops: Size, which onnx2torch lacks, and those whose onnx2torch converters miss a case:
Flatten (onnx2torch's is not 2-D for axis <= 0 and fails on an input of rank <= axis, e.g. the rank-1
tensor a transformers BERT export flattens), Reshape with allowzero=1, Unsqueeze (opset 13+) with a 0-d
axes tensor."""

from __future__ import annotations

import math

import torch
from onnx2torch.node_converters.unsqueeze import OnnxUnsqueezeStaticAxes
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

from onnxxai.convert._util import result
from onnxxai.convert.registry import register, since


class OnnxFlatten(torch.nn.Module):
    """ONNX Flatten: always 2-D, ``(prod(shape[:axis]), prod(shape[axis:]))``, axis 0 included."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axis = self.axis % x.dim() if x.dim() and self.axis < 0 else self.axis
        return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@register("Flatten", (9, 11, 13), replaces=True)
def convert_flatten(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Flatten, every axis: onnx2torch's ``torch.flatten`` is not 2-D for axis <= 0, and for axis >= 1 it
    flattens from dimension 1, which a rank-1 input (axis 1: shape ``(n, 1)``) or an input of rank ==
    axis (shape ``(prod, 1)``) does not have (IndexError)."""
    return result(OnnxFlatten(int(node.attributes.get("axis", 1))), node)


class ReshapeAllowZero(torch.nn.Module):
    """Reshape with ``allowzero=1``: a 0 in the shape is a zero-size axis, not 'copy this axis'."""

    def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        return torch.reshape(x, [int(s) for s in shape.tolist()])


@register("Reshape", (14,), extends=True)
def convert_reshape(node: OnnxNode, graph: OnnxGraph, fallback) -> OperationConverterResult:
    """Reshape: onnx2torch's module, or ours for allowzero=1 (which onnx2torch refuses)."""
    if int(node.attributes.get("allowzero", 0)) == 1:
        return result(ReshapeAllowZero(), node)
    return fallback(node, graph)


class UnsqueezeDynamicAxes(torch.nn.Module):
    """Unsqueeze with ``axes`` computed at run time (a 1-D or 0-d tensor; negative axes count from
    the output's rank)."""

    def forward(self, x: torch.Tensor, axes: torch.Tensor) -> torch.Tensor:
        rank = x.dim() + axes.numel()
        for axis in sorted(int(a) % rank for a in axes.reshape(-1).tolist()):
            x = x.unsqueeze(axis)
        return x


@register("Unsqueeze", (13,), extends=True)
def convert_unsqueeze(node: OnnxNode, graph: OnnxGraph, fallback) -> OperationConverterResult:
    """Unsqueeze (opset 13+): ours when the axes input is a 0-d tensor or not a constant (onnx2torch
    iterates over the constant's ``tolist()``, which is an int for a 0-d tensor); else onnx2torch's."""
    try:
        axes = get_const_value(node.input_values[1], graph)
    except KeyError:
        return result(UnsqueezeDynamicAxes(), node)
    if isinstance(axes, torch.Tensor) and axes.dim() == 0:
        # torch.unsqueeze counts a negative axis from the output's rank, as ONNX does
        return OperationConverterResult(torch_module=OnnxUnsqueezeStaticAxes(axes=[int(axes)]),
                                        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values))
    return fallback(node, graph)


class Size(torch.nn.Module):
    """The number of elements, as an int64 scalar."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


@register("Size", since(1))
def convert_size(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Size: element count of the input."""
    return result(Size(), node)
