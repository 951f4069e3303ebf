"""Tensor ops onnx2torch lacks or limits: SpaceToDepth, DepthToSpace in DCR mode, OneHot, Range with
the input's dtype, Det, and OptionalGetElement / OptionalHasElement on plain tensors."""

from __future__ import annotations

import math

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import result
from onnxxai.convert.registry import register, since


def _mode(node: OnnxNode, op: str) -> str:
    mode = node.attributes.get("mode", "DCR")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode not in ("DCR", "CRD"):
        raise NotImplementedError(f"{op} with mode={mode!r} is not supported")
    return mode


class _BlockRearrangement(torch.nn.Module):
    """Moves ``blocksize`` x ``blocksize`` blocks between the spatial axes and channels of an NCHW
    tensor, in DCR (depth-column-row, the ONNX default) or CRD (column-row-depth) order."""

    def __init__(self, blocksize: int, mode: str = "DCR") -> None:
        super().__init__()
        self.blocksize, self.mode = blocksize, mode


class SpaceToDepth(_BlockRearrangement):
    """Move ``blocksize`` x ``blocksize`` spatial blocks of an NCHW tensor into channels, ordered
    depth-column-row (DCR, the ONNX default) or column-row-depth (CRD, opset 28)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        b = self.blocksize
        blocks = x.reshape(n, c, h // b, b, w // b, b)
        order = (0, 3, 5, 1, 2, 4) if self.mode == "DCR" else (0, 1, 3, 5, 2, 4)
        return blocks.permute(order).reshape(n, c * b * b, h // b, w // b)


class DepthToSpace(_BlockRearrangement):
    """Inverse of :class:`SpaceToDepth`: channels of an NCHW tensor into ``blocksize`` x ``blocksize``
    spatial blocks, DCR (the ONNX default, which onnx2torch refuses) or CRD (torch's pixel_shuffle)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        b = self.blocksize
        if self.mode == "DCR":
            blocks = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
        else:
            blocks = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
        return blocks.reshape(n, c // (b * b), h * b, w * b)


@register("SpaceToDepth", since(1))
def convert_space_to_depth(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """SpaceToDepth-1/13 (DCR) and -28 (mode DCR or CRD)."""
    return result(SpaceToDepth(int(node.attributes["blocksize"]), _mode(node, "SpaceToDepth")), node)


@register("DepthToSpace", since(1), replaces=True)
def convert_depth_to_space(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """DepthToSpace-1 (DCR) and -11/13/28 (mode DCR or CRD)."""
    return result(DepthToSpace(int(node.attributes["blocksize"]), _mode(node, "DepthToSpace")), node)


class OneHot(torch.nn.Module):
    """``values[1]`` where the index along the new ``axis`` equals ``indices`` (negative indices count
    from ``depth``; indices outside [-depth, depth-1] give an all-off row), ``values[0]`` elsewhere.
    Differentiable in ``values``."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, indices: torch.Tensor, depth: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        n = int(depth.reshape(-1)[0].to(torch.int64))
        idx = indices.to(torch.int64)
        idx = torch.where(idx < 0, idx + n, idx)
        axis = self.axis % (indices.dim() + 1)
        classes = torch.arange(n, device=indices.device).reshape([n] + [1] * (indices.dim() - axis))
        hot = idx.unsqueeze(axis) == classes
        return torch.where(hot, values[1], values[0])


@register("OneHot", since(1))
def convert_one_hot(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """OneHot-9/11/28 (axis attribute, default -1)."""
    return result(OneHot(int(node.attributes.get("axis", -1))), node)


class Range(torch.nn.Module):
    """``start + i * delta`` for i < max(ceil((limit - start) / delta), 0), in the input's dtype.

    Floats are computed in float64 (float16/bfloat16 in the ``stash_type`` precision, as Range-27
    says), so the values match numpy's arange; the output is differentiable in start and delta."""

    def __init__(self, stash: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.stash = stash

    def forward(self, start: torch.Tensor, limit: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        start, limit, delta = start.reshape(()), limit.reshape(()), delta.reshape(())
        if not start.is_floating_point():
            return torch.arange(int(start), int(limit), int(delta), dtype=start.dtype, device=start.device)
        first, end, step = (float(v.detach()) for v in (start, limit, delta))
        n = max(math.ceil((end - first) / step), 0)
        work = self.stash if start.dtype in (torch.float16, torch.bfloat16) else torch.float64
        steps = torch.arange(n, dtype=work, device=start.device)
        return (start.to(work) + steps * delta.to(work)).to(start.dtype)


@register("Range", since(1), replaces=True)
def convert_range(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Range-11 and -27 (stash_type 1 = float32 or 11 = float64 for float16/bfloat16 inputs).

    Replaces onnx2torch's Range-11, whose output is always int64 or the default float dtype."""
    stash = int(node.attributes.get("stash_type", 1))
    dtypes = {1: torch.float32, 11: torch.float64}
    if stash not in dtypes:
        raise NotImplementedError(f"Range with stash_type={stash} is not supported")
    return result(Range(dtypes[stash]), node)


class Det(torch.nn.Module):
    """Determinant of the trailing square matrices (batched over leading dimensions)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            return torch.linalg.det(x.float()).to(x.dtype)
        return torch.linalg.det(x)


@register("Det", since(1))
def convert_det(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Det-11/22."""
    return result(Det(), node)


class TensorAsOptional(torch.nn.Module):
    """OptionalGetElement / OptionalHasElement applied to a plain tensor (the only optional form a
    converted torch graph carries): the tensor itself, or True; False when there is no input."""

    def __init__(self, has_element: bool) -> None:
        super().__init__()
        self.has_element = has_element

    def forward(self, x: torch.Tensor | None = None) -> torch.Tensor:
        if x is None:  # no input at all: an empty optional
            return torch.tensor(False)
        return torch.tensor(True, device=x.device) if self.has_element else x


@register("OptionalGetElement", since(1))
def convert_optional_get_element(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """OptionalGetElement of a tensor: the identity (optional- and sequence-typed values are refused
    earlier, as non-tensor values)."""
    return result(TensorAsOptional(False), node)


@register("OptionalHasElement", since(1))
def convert_optional_has_element(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """OptionalHasElement of a tensor input: True; without an input: False."""
    present = bool(node.input_values and node.input_values[0])
    return result(TensorAsOptional(True), node, n_inputs=1 if present else 0)
