"""Padding and cropping: Pad of every opset (pads as attributes (2) or inputs (11), optional ``axes``
input (18), ``wrap`` mode (19)) on any rank, and CenterCropPad (opset 18).

onnx2torch's Pad goes through ``torch.nn.functional.pad``, whose reflect and replicate modes refuse
a pad on the first two axes of the input (so a rank-1 or rank-2 input, as audio front ends pad) and
whose Pad-2 converter reads the constant from the wrong attribute; one module here covers every
version: index gathers for reflect/edge/wrap, ``F.pad`` for constant (negative pads crop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import int_list, result
from onnxxai.convert.registry import register, since

_MODES = ("constant", "reflect", "edge", "wrap")


def _source_index(n: int, begin: int, end: int, mode: str, device: torch.device) -> torch.Tensor:
    j = torch.arange(-begin, n + end, device=device)
    if mode == "edge":
        return j.clamp(0, n - 1)
    if mode == "wrap":
        return torch.remainder(j, n)
    period = 2 * (n - 1)  # reflect, without repeating the edge
    if period == 0:
        return torch.zeros_like(j)
    j = torch.remainder(j, period)
    return torch.where(j >= n, period - j, j)


class OnnxPad(torch.nn.Module):
    """ONNX Pad of any version: pads/constant/axes given as tensors (opset 11+), or fixed at
    construction (``pads``/``value``, Pad-2's attributes); any rank, negative pads crop."""

    def __init__(self, mode: str = "constant", pads: list[int] | None = None, value: float = 0.0) -> None:
        super().__init__()
        self.mode = mode
        self.static_pads = None if pads is None else [int(p) for p in pads]
        self.value = float(value)

    def forward(
        self,
        x: torch.Tensor,
        pads: torch.Tensor | None = None,
        constant_value: torch.Tensor | None = None,
        axes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        rank = x.dim()
        pad_list = self.static_pads if pads is None else [int(p) for p in pads.tolist()]
        assert pad_list is not None, "Pad needs its pads"
        axes_list = list(range(rank)) if axes is None else [int(a) % rank for a in axes.tolist()]
        k = len(axes_list)
        begins = dict(zip(axes_list, pad_list[:k]))
        ends = dict(zip(axes_list, pad_list[k:]))
        if self.mode == "constant":
            torch_pads: list[int] = []
            for d in reversed(range(rank)):
                torch_pads += [begins.get(d, 0), ends.get(d, 0)]
            value = self.value if constant_value is None or constant_value.numel() == 0 else constant_value.item()
            return F.pad(x, torch_pads, mode="constant", value=value)
        for d in axes_list:
            b, e = begins[d], ends[d]
            if b < 0:
                x, b = x.narrow(d, -b, x.shape[d] + b), 0
            if e < 0:
                x, e = x.narrow(d, 0, x.shape[d] + e), 0
            if b or e:
                x = x.index_select(d, _source_index(x.shape[d], b, e, self.mode, x.device))
        return x


def _pad_mode(node: OnnxNode) -> str:
    mode = node.attributes.get("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode not in _MODES:
        raise NotImplementedError(f"Pad mode {mode!r} is not supported (supported: {', '.join(_MODES)})")
    return mode


@register("Pad", (18, 19, 21, 23, 24, 25))
def convert_pad_18(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Pad with pads, constant_value and axes as inputs, modes constant/reflect/edge/wrap."""
    return result(OnnxPad(_pad_mode(node)), node)


@register("Pad", (11, 13), replaces=True)
def convert_pad_11(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Pad-11/13 (pads and constant_value as inputs) on any rank: onnx2torch's refuses reflect/edge
    padding of a rank-1/2 input and of the first two axes of any input."""
    return result(OnnxPad(_pad_mode(node)), node)


@register("Pad", (2,), replaces=True)
def convert_pad_2(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Pad-2 (pads and value as attributes) on any rank; onnx2torch's reads the constant from an
    attribute Pad-2 does not have, and refuses reflect/edge on the first two axes."""
    module = OnnxPad(_pad_mode(node), pads=list(node.attributes["pads"]), value=float(node.attributes.get("value", 0.0)))
    return result(module, node)


# --------------------------------------------------------------------------------------------------
# CenterCropPad (opset 18)


class CenterCropPad(torch.nn.Module):
    """Center crop (start rounded down) or zero-pad (odd extra pixel on the right) each of ``axes``
    to the length in ``shape``; other axes are unchanged."""

    def __init__(self, axes: list[int] | None) -> None:
        super().__init__()
        self.axes = axes

    def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        target = int_list(shape)
        axes = list(range(x.dim())) if self.axes is None else [a % x.dim() for a in self.axes]
        if len(axes) != len(target):
            raise ValueError(f"CenterCropPad: {len(target)} target lengths for axes {axes}")
        for axis, want in zip(axes, target):
            have = x.shape[axis]
            if want < have:
                x = x.narrow(axis, (have - want) // 2, want)
            elif want > have:
                before = (want - have) // 2
                pads = [0, 0] * (x.dim() - 1 - axis) + [before, want - have - before]
                x = F.pad(x, pads)
        return x


@register("CenterCropPad", since(1))
def convert_center_crop_pad(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """CenterCropPad (opset 18): optional axes (negative allowed)."""
    axes = node.attributes.get("axes")
    return result(CenterCropPad(list(axes) if isinstance(axes, list) else None), node)
