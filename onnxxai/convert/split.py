"""Split from opset 18 on, which adds the ``num_outputs`` attribute."""

from __future__ import annotations

import math

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import constant_input, result
from onnxxai.convert.registry import register


class OnnxSplit(torch.nn.Module):
    """ONNX Split: explicit sizes (static or a run-time tensor) or ``n_outputs`` ceil-sized chunks."""

    def __init__(self, axis: int, n_outputs: int, sizes: list[int] | None) -> None:
        super().__init__()
        self.axis, self.n_outputs, self.sizes = axis, n_outputs, sizes

    def forward(self, x: torch.Tensor, split: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        sizes = self.sizes if split is None else [int(s) for s in split.tolist()]
        if sizes is None:
            length = x.shape[self.axis]
            chunk = math.ceil(length / self.n_outputs)
            sizes = [min(chunk, max(length - i * chunk, 0)) for i in range(self.n_outputs)]
        return tuple(torch.split(x, sizes, dim=self.axis))


@register("Split", (18,))
def convert_split_18(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Split-18: sizes from the optional ``split`` input, else ``num_outputs`` (or the output count)."""
    sizes = constant_input(node, graph, 1)
    dynamic = len(node.input_values) > 1 and node.input_values[1] and sizes is None
    n_outputs = int(node.attributes.get("num_outputs", len(node.output_values)))
    module = OnnxSplit(int(node.attributes.get("axis", 0)), n_outputs, None if sizes is None else [int(s) for s in sizes.tolist()])
    return result(module, node, 2 if dynamic else 1)
