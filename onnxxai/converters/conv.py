"""Conv whose weight (or bias) is computed by the graph rather than stored as an initializer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.converters._util import extend_converter, result, torch_pads


class ConvDynamicWeight(torch.nn.Module):
    """ONNX Conv with explicit (possibly asymmetric) pads and run-time weights."""

    def __init__(self, strides: list[int], pads: list[int], dilations: list[int], groups: int) -> None:
        super().__init__()
        rank = len(strides)
        self.strides, self.dilations, self.groups = strides, dilations, groups
        self.torch_pads = torch_pads(pads)
        self.conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if any(self.torch_pads):
            x = F.pad(x, self.torch_pads)
        return self.conv(x, weight, bias, self.strides, 0, self.dilations, self.groups)


def convert_conv(node: OnnxNode, graph: OnnxGraph, fallback) -> OperationConverterResult:
    """Conv: onnx2torch's nn.ConvNd when weight and bias are initializers, ours otherwise."""
    params = [name for name in node.input_values[1:3] if name]
    if all(name in graph.initializers for name in params):
        return fallback(node, graph)
    attrs = node.attributes
    auto_pad = attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    kernel = attrs.get("kernel_shape")
    if kernel is None:
        raise NotImplementedError("Conv with a run-time weight needs the kernel_shape attribute")
    rank = len(kernel)
    if auto_pad not in ("NOTSET", "", "VALID"):
        raise NotImplementedError(f"Conv with a run-time weight and auto_pad={auto_pad} (input size unknown)")
    module = ConvDynamicWeight(
        [int(s) for s in attrs.get("strides", [1] * rank)],
        [int(p) for p in attrs.get("pads", [0] * 2 * rank)] if auto_pad != "VALID" else [0] * 2 * rank,
        [int(d) for d in attrs.get("dilations", [1] * rank)],
        int(attrs.get("group", 1)),
    )
    return result(module, node)


for _v in (1, 11):
    extend_converter("Conv", _v, convert_conv)
