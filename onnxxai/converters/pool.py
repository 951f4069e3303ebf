"""Pooling: AveragePool with asymmetric or wide padding (any opset) and opset 19/22; GlobalMaxPool; LpPool."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from onnx2torch.node_converters.registry import add_converter, get_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.converters._util import extend_converter, register_all_versions, result, torch_pads


class OnnxAveragePoolPadded(torch.nn.Module):
    """Average pooling with explicit (possibly asymmetric) ONNX pads, counting or excluding the pad."""

    def __init__(self, kernel: list[int], strides: list[int], pads: list[int], count_include_pad: bool) -> None:
        super().__init__()
        rank = len(kernel)
        self.kernel, self.strides, self.count_include_pad = kernel, strides, count_include_pad
        self.torch_pads = torch_pads(pads)
        self.area = math.prod(kernel)
        self.pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank]

    def _window_sum(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.pad(x, self.torch_pads), self.kernel, self.strides) * self.area

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self._window_sum(x)
        if self.count_include_pad:
            return total / self.area
        count = self._window_sum(torch.ones_like(x[:1, :1]))
        return total / count


def convert_average_pool(node: OnnxNode, graph: OnnxGraph, fallback=None) -> OperationConverterResult:
    """AveragePool: our module for asymmetric or wide pads; onnx2torch's for the rest (dilations must be 1)."""
    attrs = node.attributes
    dilations = attrs.get("dilations")
    if dilations is not None and any(int(d) != 1 for d in dilations):
        raise NotImplementedError(f"AveragePool with dilations {list(dilations)} is not supported")
    pads = [int(p) for p in attrs.get("pads", [])]
    kernel = [int(k) for k in attrs["kernel_shape"]]
    auto_pad = attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    rank = len(kernel)
    # torch's pooling takes only symmetric pads of at most half the kernel: pad explicitly otherwise
    explicit = bool(pads) and (pads[:rank] != pads[rank:] or any(p > k // 2 for p, k in zip(pads, kernel)))
    if explicit and auto_pad in ("NOTSET", "") and not int(attrs.get("ceil_mode", 0)):
        strides = [int(s) for s in attrs.get("strides", [1] * rank)]
        return result(OnnxAveragePoolPadded(kernel, strides, pads, bool(int(attrs.get("count_include_pad", 0)))), node)
    base = fallback or get_converter(operation_type="AveragePool", version=11)
    return base(node, graph)


class GlobalMaxPool(torch.nn.Module):
    """Maximum over every spatial axis, keeping them as size 1 (Keras exports use it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(x, dim=tuple(range(2, x.dim())), keepdim=True)


def convert_global_max_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """GlobalMaxPool-1/22."""
    return result(GlobalMaxPool(), node)


register_all_versions("GlobalMaxPool", convert_global_max_pool)


class LpPool(torch.nn.Module):
    """(sum over the window of |x|^p)^(1/p), zero padding (which adds nothing to the sum)."""

    def __init__(self, kernel: list[int], strides: list[int], pads: list[int], p: float) -> None:
        super().__init__()
        self.window = OnnxAveragePoolPadded(kernel, strides, pads, count_include_pad=True)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.window._window_sum(x.abs() ** self.p) ** (1.0 / self.p)


def convert_lp_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """LpPool with explicit pads; auto_pad, ceil_mode and dilations other than 1 are refused."""
    attrs = node.attributes
    kernel = [int(k) for k in attrs["kernel_shape"]]
    rank = len(kernel)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "", "VALID") or int(attrs.get("ceil_mode", 0)) or any(int(d) != 1 for d in attrs.get("dilations", [])):
        raise NotImplementedError("LpPool with auto_pad SAME_*, ceil_mode or dilations is not supported")
    pads = [int(p) for p in attrs.get("pads", [0] * 2 * rank)]
    strides = [int(s) for s in attrs.get("strides", [1] * rank)]
    return result(LpPool(kernel, strides, pads, float(attrs.get("p", 2))), node)


register_all_versions("LpPool", convert_lp_pool)
for _v in (7, 10, 11):
    extend_converter("AveragePool", _v, convert_average_pool)
for _v in (19, 22):
    add_converter(operation_type="AveragePool", version=_v)(convert_average_pool)
