"""Convolutions whose weight (or bias) is computed by the graph rather than stored as an initializer:
Conv and ConvTranspose with run-time weights, and CausalConvWithState (opset 27)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.node_converters.registry import add_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import extend_converter, result, torch_pads

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _auto_pad(attrs: dict) -> str:
    value = attrs.get("auto_pad", "NOTSET")
    value = value.decode() if isinstance(value, bytes) else str(value)
    return "NOTSET" if value == "" else value


def _ints(values, rank: int, default: int) -> list[int]:
    return [int(v) for v in values] if values is not None else [default] * rank


def same_pads(sizes: list[int], kernel: list[int], strides: list[int], dilations: list[int], upper: bool) -> list[int]:
    """ONNX pads ``[b1, ..., e1, ...]`` for auto_pad SAME_UPPER/SAME_LOWER: output size ceil(size / stride),
    the odd pad at the end (UPPER) or at the beginning (LOWER)."""
    begin, end = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if upper else large)
        end.append(large if upper else small)
    return begin + end


class ConvDynamicWeight(torch.nn.Module):
    """ONNX Conv with run-time weights: explicit (possibly asymmetric) pads or auto_pad SAME/VALID.

    The spatial rank and kernel size come from the weight at run time, so the ``kernel_shape``,
    ``strides``, ``pads`` and ``dilations`` attributes may all be absent (None means ONNX's default).
    """

    def __init__(self, strides: list[int] | None, pads: list[int] | None, dilations: list[int] | None,
                 groups: int, auto_pad: str = "NOTSET") -> None:
        super().__init__()
        self.strides, self.pads, self.dilations, self.groups, self.auto_pad = strides, pads, dilations, groups, auto_pad

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        rank = weight.dim() - 2
        strides = self.strides or [1] * rank
        dilations = self.dilations or [1] * rank
        if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads = same_pads(list(x.shape[2:]), list(weight.shape[2:]), strides, dilations, self.auto_pad == "SAME_UPPER")
        else:
            pads = self.pads or [0] * 2 * rank
        padding = torch_pads(pads)
        if any(padding):
            x = F.pad(x, padding)
        return _CONV[rank](x, weight, bias, strides, 0, dilations, self.groups)


def _run_time_parameters(node: OnnxNode, graph: OnnxGraph) -> bool:
    """Whether the weight or bias is computed by the graph rather than stored as an initializer."""
    return not all(name in graph.initializers for name in node.input_values[1:3] if name)


def _checked_auto_pad(attrs: dict, op: str) -> str:
    auto_pad = _auto_pad(attrs)
    if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise NotImplementedError(f"{op} with auto_pad={auto_pad} is not supported")
    return auto_pad


def convert_conv(node: OnnxNode, graph: OnnxGraph, fallback) -> OperationConverterResult:
    """Conv: onnx2torch's nn.ConvNd when weight and bias are initializers, ours otherwise."""
    if not _run_time_parameters(node, graph):
        return fallback(node, graph)
    attrs = node.attributes
    auto_pad = _checked_auto_pad(attrs, "Conv")
    pads = attrs.get("pads")
    module = ConvDynamicWeight(
        [int(s) for s in attrs["strides"]] if "strides" in attrs else None,
        [int(p) for p in pads] if pads is not None and auto_pad == "NOTSET" else None,
        [int(d) for d in attrs["dilations"]] if "dilations" in attrs else None,
        int(attrs.get("group", 1)),
        auto_pad,
    )
    return result(module, node)


class ConvTransposeDynamicWeight(torch.nn.Module):
    """ONNX ConvTranspose with run-time weights (and bias), any rank 1-3.

    Computes the full transposed convolution (no padding), then crops ``pads`` (or extends with
    zeros where the requested ``output_shape`` or ``output_padding`` asks for more) and adds the bias
    everywhere, which is ONNX's definition; torch's ``padding`` only takes symmetric pads.
    """

    def __init__(self, strides: list[int] | None, pads: list[int] | None, dilations: list[int] | None, groups: int,
                 output_padding: list[int] | None, output_shape: list[int] | None, auto_pad: str = "NOTSET") -> None:
        super().__init__()
        self.strides, self.pads, self.dilations, self.groups = strides, pads, dilations, groups
        self.output_padding, self.output_shape, self.auto_pad = output_padding, output_shape, auto_pad

    def _pads(self, sizes: list[int], kernel: list[int], strides: list[int], dilations: list[int],
              output_padding: list[int]) -> list[int]:
        """ONNX pads [b1, ..., e1, ...] on the full output (negative: extend it)."""
        rank = len(sizes)
        if self.output_shape is None and self.auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
            return self.pads or [0] * 2 * rank
        target = self.output_shape[-rank:] if self.output_shape is not None else [n * s for n, s in zip(sizes, strides)]
        begin, end = [], []
        for n, k, s, d, a, out in zip(sizes, kernel, strides, dilations, output_padding, target):
            total = s * (n - 1) + a + (k - 1) * d + 1 - out
            if total < 0:  # a larger output: zeros (plus bias) at the end
                begin.append(0)
                end.append(total)
            elif self.auto_pad == "SAME_UPPER":
                begin.append(total // 2)
                end.append(total - total // 2)
            else:
                begin.append(total - total // 2)
                end.append(total // 2)
        return begin + end

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        rank = weight.dim() - 2
        strides = self.strides or [1] * rank
        dilations = self.dilations or [1] * rank
        output_padding = self.output_padding or [0] * rank
        pads = self._pads(list(x.shape[2:]), list(weight.shape[2:]), strides, dilations, output_padding)
        y = _CONV_TRANSPOSE[rank](x, weight, None, strides, 0, 0, self.groups, dilations)
        crop: list[int] = []  # F.pad order, last axis first; negative values crop
        for i in reversed(range(rank)):
            crop += [-pads[i], output_padding[i] - pads[rank + i]]
        if any(crop):
            y = F.pad(y, crop)
        if bias is not None:
            y = y + bias.reshape(1, -1, *[1] * rank)
        return y


def convert_conv_transpose(node: OnnxNode, graph: OnnxGraph, fallback) -> OperationConverterResult:
    """ConvTranspose: onnx2torch's nn.ConvTransposeNd when weight and bias are initializers, ours otherwise."""
    if not _run_time_parameters(node, graph):
        return fallback(node, graph)
    attrs = node.attributes
    auto_pad = _checked_auto_pad(attrs, "ConvTranspose")

    def ints(name: str) -> list[int] | None:
        return [int(v) for v in attrs[name]] if name in attrs else None

    module = ConvTransposeDynamicWeight(
        ints("strides"), ints("pads") if auto_pad == "NOTSET" else None, ints("dilations"), int(attrs.get("group", 1)),
        ints("output_padding"), ints("output_shape"), auto_pad,
    )
    return result(module, node)


class CausalConvWithState(torch.nn.Module):
    """ONNX CausalConvWithState (opset 27): stateful causal depthwise 1-D convolution (Mamba, Gated DeltaNet).

    The input (B, C, L) is prefixed with ``past_state`` (B, C, k-1) or zeros, convolved depthwise with
    the (C, 1, k) weight without padding, optionally passed through SiLU; the second output is the
    last k-1 positions of the prefixed input, the state for the next call.
    """

    def __init__(self, silu: bool) -> None:
        super().__init__()
        self.silu = silu

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                past_state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        k = weight.shape[-1]
        if past_state is None:
            past_state = x.new_zeros(x.shape[0], x.shape[1], k - 1)
        padded = torch.cat([past_state, x], dim=2)
        y = F.conv1d(padded, weight, bias, groups=x.shape[1])
        if self.silu:  # in at least float32, as ONNX's function body does for float16
            y = F.silu(y.to(torch.promote_types(y.dtype, torch.float32))).to(y.dtype)
        return y, padded[:, :, padded.shape[2] - (k - 1):]


def convert_causal_conv_with_state(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """CausalConvWithState-27 with activation none, silu or swish (the same function)."""
    activation = node.attributes.get("activation", "none")
    activation = activation.decode() if isinstance(activation, bytes) else str(activation)
    if activation not in ("none", "silu", "swish"):
        raise NotImplementedError(f"CausalConvWithState with activation={activation} is not supported")
    return result(CausalConvWithState(activation != "none"), node)


for _v in (1, 11):
    extend_converter("Conv", _v, convert_conv)
    extend_converter("ConvTranspose", _v, convert_conv_transpose)
add_converter(operation_type="CausalConvWithState", version=27)(convert_causal_conv_with_state)
