"""Convolutions: Conv and ConvTranspose whose weight (or bias) is computed by the graph rather than
stored as an initializer, CausalConvWithState (opset 27), DeformConv (2-D, opsets 19/22) and Col2Im
(opset 18, the N-D ``fold`` that undoes im2col). Shape-like inputs are read at run time; every
module is built from differentiable torch ops, so gradients are exact."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import int_list, optional_result, result, torch_pads
from onnxxai.convert.registry import register, since

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


def _ints(attrs: dict, name: str) -> list[int] | None:
    return [int(v) for v in attrs[name]] if name in attrs else None


def conv_geometry(attrs: dict, op: str) -> tuple[list[int] | None, list[int] | None, list[int] | None, int, str]:
    """A convolution node's strides, explicit pads (None unless auto_pad is NOTSET), dilations, group and auto_pad."""
    auto_pad = _auto_pad(attrs)
    if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise NotImplementedError(f"{op} with auto_pad={auto_pad} is not supported")
    pads = _ints(attrs, "pads") if auto_pad == "NOTSET" else None
    return _ints(attrs, "strides"), pads, _ints(attrs, "dilations"), int(attrs.get("group", 1)), auto_pad


@register("Conv", (1, 11), extends=True)
def convert_conv(node: OnnxNode, graph: OnnxGraph, fallback) -> OperationConverterResult:
    """Conv: onnx2torch's nn.ConvNd when weight and bias are initializers, ours otherwise."""
    if not _run_time_parameters(node, graph):
        return fallback(node, graph)
    strides, pads, dilations, group, auto_pad = conv_geometry(node.attributes, "Conv")
    return result(ConvDynamicWeight(strides, pads, dilations, group, auto_pad), node)


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


@register("ConvTranspose", (1, 11), extends=True)
def convert_conv_transpose(node: OnnxNode, graph: OnnxGraph, fallback) -> OperationConverterResult:
    """ConvTranspose: onnx2torch's nn.ConvTransposeNd when weight and bias are initializers, ours otherwise."""
    if not _run_time_parameters(node, graph):
        return fallback(node, graph)
    attrs = node.attributes
    strides, pads, dilations, group, auto_pad = conv_geometry(attrs, "ConvTranspose")
    module = ConvTransposeDynamicWeight(strides, pads, dilations, group, _ints(attrs, "output_padding"),
                                        _ints(attrs, "output_shape"), auto_pad)
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


@register("CausalConvWithState", (27,))
def convert_causal_conv_with_state(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """CausalConvWithState-27 with activation none, silu or swish (the same function)."""
    activation = node.attributes.get("activation", "none")
    activation = activation.decode() if isinstance(activation, bytes) else str(activation)
    if activation not in ("none", "silu", "swish"):
        raise NotImplementedError(f"CausalConvWithState with activation={activation} is not supported")
    return result(CausalConvWithState(activation != "none"), node)


# --------------------------------------------------------------------------------------------------
# DeformConv (opsets 19, 22)


class DeformConv2d(torch.nn.Module):
    """ONNX DeformConv on 2-D images: each kernel tap samples the input bilinearly (zero outside,
    as grid_sample with align_corners=1) at its regular position plus a learned offset, optionally
    scaled by a mask, then a grouped convolution as a matmul. Differentiable in the input,
    offsets, mask, weight and bias."""

    def __init__(self, strides: list[int], pads: list[int], dilations: list[int], group: int, offset_group: int) -> None:
        super().__init__()
        self.strides, self.pads, self.dilations = strides, pads, dilations
        self.group, self.offset_group = group, offset_group

    def forward(self, x: torch.Tensor, weight: torch.Tensor, offset: torch.Tensor, bias: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        oc, cpg, kh, kw = weight.shape
        g, og = self.group, self.offset_group
        oh, ow = offset.shape[2:]
        k = kh * kw
        offset = offset.reshape(n, og, kh, kw, 2, oh, ow)
        dev = x.device
        base_h = (torch.arange(kh, device=dev) * self.dilations[0]).reshape(kh, 1, 1, 1) + \
            (torch.arange(oh, device=dev) * self.strides[0] - self.pads[0]).reshape(1, 1, oh, 1)
        base_w = (torch.arange(kw, device=dev) * self.dilations[1]).reshape(1, kw, 1, 1) + \
            (torch.arange(ow, device=dev) * self.strides[1] - self.pads[1]).reshape(1, 1, 1, ow)
        ph = (base_h.to(x.dtype) + offset[:, :, :, :, 0]).reshape(n, og, k * oh * ow)
        pw = (base_w.to(x.dtype) + offset[:, :, :, :, 1]).reshape(n, og, k * oh * ow)
        h0, w0 = torch.floor(ph), torch.floor(pw)
        fh, fw = ph - h0, pw - w0
        h0, w0 = h0.to(torch.int64), w0.to(torch.int64)
        image = x.reshape(n, og, c // og, h * w)
        sampled = x.new_zeros(n, og, c // og, k * oh * ow)
        for dh, dw, weight_hw in ((0, 0, (1 - fh) * (1 - fw)), (0, 1, (1 - fh) * fw), (1, 0, fh * (1 - fw)), (1, 1, fh * fw)):
            hh, ww = h0 + dh, w0 + dw
            inside = (hh >= 0) & (hh < h) & (ww >= 0) & (ww < w)
            flat = torch.where(inside, hh * w + ww, 0)
            values = image.gather(3, flat[:, :, None, :].expand(n, og, c // og, flat.shape[-1]))
            sampled = sampled + values * (weight_hw * inside.to(x.dtype))[:, :, None, :]
        sampled = sampled.reshape(n, og, c // og, k, oh * ow)
        if mask is not None:
            sampled = sampled * mask.reshape(n, og, 1, k, oh * ow)
        columns = sampled.reshape(n, g, cpg * k, oh * ow)
        out = torch.einsum("gok,ngkl->ngol", weight.reshape(g, oc // g, cpg * k), columns).reshape(n, oc, oh, ow)
        if bias is not None:
            out = out + bias.reshape(1, oc, 1, 1)
        return out


@register("DeformConv", since(1))
def convert_deform_conv(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """DeformConv (opsets 19, 22) on 2-D images: strides, pads, dilations, group, offset_group,
    optional bias and mask. Other ranks are refused."""
    get = node.attributes.get
    kernel_shape = get("kernel_shape")
    rank = len(kernel_shape) if isinstance(kernel_shape, list) else len(get("strides") or get("dilations") or [0, 0])
    if rank != 2:
        raise NotImplementedError(f"DeformConv with {rank} spatial axes is not supported (2-D only)")
    # only the begin pads matter: the output size is fixed by the offset's shape
    module = DeformConv2d(get("strides") or [1, 1], get("pads") or [0, 0, 0, 0], get("dilations") or [1, 1], int(get("group", 1)),
                          int(get("offset_group", 1)))
    return optional_result(module, node, 5)


# --------------------------------------------------------------------------------------------------
# Col2Im (opset 18)


class Col2Im(torch.nn.Module):
    """ONNX Col2Im (N-D ``fold``): input (N, C * prod(block), L) summed into an image
    (N, C, *image_shape) with index_add, so overlapping blocks add up and gradients are exact."""

    def __init__(self, strides: list[int] | None, pads: list[int] | None, dilations: list[int] | None) -> None:
        super().__init__()
        self.strides, self.pads, self.dilations = strides, pads, dilations

    def forward(self, x: torch.Tensor, image_shape: torch.Tensor, block_shape: torch.Tensor) -> torch.Tensor:
        image, block = int_list(image_shape), int_list(block_shape)
        rank = len(image)
        strides = self.strides or [1] * rank
        dilations = self.dilations or [1] * rank
        pads = self.pads or [0] * (2 * rank)
        padded = [image[d] + pads[d] + pads[d + rank] for d in range(rank)]
        blocks = [(padded[d] - dilations[d] * (block[d] - 1) - 1) // strides[d] + 1 for d in range(rank)]
        n, ck, length = x.shape
        k = math.prod(block)
        if ck % k or length != math.prod(blocks):
            raise ValueError(f"Col2Im input of shape {tuple(x.shape)} does not fit image {image} with blocks {block}")
        # flat index in the padded image of every (kernel offset, block position) pair
        index = torch.zeros([1] * (2 * rank), dtype=torch.int64, device=x.device)
        for d in range(rank):
            kernel = torch.arange(block[d], device=x.device) * dilations[d]
            start = torch.arange(blocks[d], device=x.device) * strides[d]
            coord = kernel.reshape([-1 if i == d else 1 for i in range(rank)] + [1] * rank) + \
                start.reshape([1] * rank + [-1 if i == d else 1 for i in range(rank)])
            index = index * padded[d] + coord
        out = x.new_zeros(n, ck // k, math.prod(padded))
        out = out.index_add(2, index.reshape(-1), x.reshape(n, ck // k, k * length))
        out = out.reshape(n, ck // k, *padded)
        for d in range(rank):
            out = out.narrow(2 + d, pads[d], image[d])
        return out


@register("Col2Im", since(1))
def convert_col2im(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Col2Im (opset 18): any number of spatial axes, strides, pads, dilations."""
    get = node.attributes.get
    return result(Col2Im(get("strides"), get("pads"), get("dilations")), node)
