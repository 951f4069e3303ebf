"""Reduce* ops from opset 18 on, where ``axes`` moved from an attribute to an optional input."""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import constant_input, result
from onnxxai.convert.registry import register


def _prod(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    for d in sorted(dims, reverse=True):
        x = torch.prod(x, dim=d, keepdim=keepdim)
    return x


_REDUCTIONS = {
    "ReduceMean": lambda x, d, k: torch.mean(x, dim=d, keepdim=k),
    "ReduceSum": lambda x, d, k: torch.sum(x, dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: torch.amax(x, dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: torch.amin(x, dim=d, keepdim=k),
    "ReduceProd": _prod,
    "ReduceL1": lambda x, d, k: torch.sum(torch.abs(x), dim=d, keepdim=k),
    "ReduceL2": lambda x, d, k: torch.sqrt(torch.sum(x * x, dim=d, keepdim=k)),
    "ReduceSumSquare": lambda x, d, k: torch.sum(x * x, dim=d, keepdim=k),
    "ReduceLogSum": lambda x, d, k: torch.log(torch.sum(x, dim=d, keepdim=k)),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
}


class OnnxReduce(torch.nn.Module):
    """ONNX Reduce* (opset >= 18): reduce over ``axes`` (static, or given at run time as a tensor)."""

    def __init__(self, op_type: str, axes: list[int] | None, keepdims: bool, noop_with_empty_axes: bool) -> None:
        super().__init__()
        self.op_type = op_type
        self.axes = axes
        self.keepdims = keepdims
        self.noop_with_empty_axes = noop_with_empty_axes

    def forward(self, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
        dims = self.axes if axes is None else [int(a) for a in axes.tolist()]
        if not dims:
            if self.noop_with_empty_axes:
                return x
            dims = list(range(x.dim()))
        dims = [d % x.dim() for d in dims] if x.dim() else []
        if not dims:
            return x
        if self.op_type in ("ReduceMax", "ReduceMin") and any(x.shape[d] == 0 for d in dims):
            return _empty_extremum(x, dims, self.keepdims, self.op_type == "ReduceMax")
        return _REDUCTIONS[self.op_type](x, dims, self.keepdims)


def _empty_extremum(x: torch.Tensor, dims: list[int], keepdims: bool, is_max: bool) -> torch.Tensor:
    """ReduceMax/Min over an empty set: the identity, per the ONNX spec (-inf / +inf for floats,
    the dtype's lowest / highest value for integers, False / True for bool), which torch refuses."""
    shape = [1 if d in dims else n for d, n in enumerate(x.shape)] if keepdims else [n for d, n in enumerate(x.shape) if d not in dims]
    if x.dtype == torch.bool:
        value = not is_max
    elif x.dtype.is_floating_point:
        value = float("-inf") if is_max else float("inf")
    else:
        info = torch.iinfo(x.dtype)
        value = info.min if is_max else info.max
    return torch.full(shape, value, dtype=x.dtype, device=x.device)


def convert_reduce_18(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Reduce* with axes as an optional second input; a constant axes input becomes static."""
    axes = constant_input(node, graph, 1)
    keepdims = bool(node.attributes.get("keepdims", 1))
    noop = bool(node.attributes.get("noop_with_empty_axes", 0))
    has_dynamic_axes = len(node.input_values) > 1 and node.input_values[1] and axes is None
    module = OnnxReduce(node.operation_type, None if axes is None else [int(a) for a in axes.tolist()], keepdims, noop)
    return result(module, node, 2 if has_dynamic_axes else 1)


for _op in _REDUCTIONS:
    if _op != "ReduceSum":  # ReduceSum took axes as an input since opset 13; onnx2torch handles it
        # ReduceMax/ReduceMin-20 add bool support only
        register(_op, (18, 20) if _op in ("ReduceMax", "ReduceMin") else (18,))(convert_reduce_18)
