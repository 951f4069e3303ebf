"""GridSample (opset 16/20/22) for 4-D inputs and (not cubic) 5-D inputs, on torch's grid_sample."""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.converters._util import register_all_versions, result

_MODES = {"bilinear": "bilinear", "linear": "bilinear", "nearest": "nearest", "bicubic": "bicubic", "cubic": "bicubic"}
_PADDING = ("zeros", "border", "reflection")


class GridSample(torch.nn.Module):
    """Sample ``x`` (N, C, H, W) at ``grid`` (N, H_out, W_out, 2) normalized coordinates (or 5-D)."""

    def __init__(self, mode: str, padding_mode: str, align_corners: bool) -> None:
        super().__init__()
        self.mode, self.padding_mode, self.align_corners = mode, padding_mode, align_corners

    def forward(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (4, 5) or (x.dim() == 5 and self.mode == "bicubic"):
            raise NotImplementedError(f"GridSample on rank-{x.dim()} inputs with mode {self.mode} is not supported")
        return torch.nn.functional.grid_sample(x, grid.to(x.dtype), mode=self.mode, padding_mode=self.padding_mode,
                                               align_corners=self.align_corners)


def _text(value, default: str) -> str:
    value = default if value is None else value
    return value.decode() if isinstance(value, bytes) else value


def convert_grid_sample(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """GridSample: modes (bi)linear, nearest, (bi)cubic; padding zeros, border, reflection."""
    mode = _text(node.attributes.get("mode"), "bilinear")
    padding = _text(node.attributes.get("padding_mode"), "zeros")
    if mode not in _MODES or padding not in _PADDING:
        raise NotImplementedError(f"GridSample mode={mode!r} padding_mode={padding!r} is not supported")
    return result(GridSample(_MODES[mode], padding, bool(int(node.attributes.get("align_corners", 0)))), node)


register_all_versions("GridSample", convert_grid_sample)
