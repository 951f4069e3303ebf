"""Window functions, STFT and image-layout ops: BlackmanWindow / HammingWindow / HannWindow, STFT,
AffineGrid, CenterCropPad, Col2Im, ReverseSequence, MaxUnpool and DeformConv.

Shape-like inputs (sizes, image shapes, frame lengths) are read at run time, so the modules work
whether they come from initializers or from graph inputs. Everything differentiable is built from
differentiable torch ops (DFT as a matmul, scatter-add, bilinear gathers) so gradients are exact.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

from onnxxai.convert._util import register_all_versions, result
from onnxxai.convert.bitwise import ONNX_TO_TORCH


def _ints(t: torch.Tensor | None) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


# --------------------------------------------------------------------------------------------------
# Window functions (opset 17)

#: cosine-sum coefficients a_k of w[n] = sum_k (-1)^k a_k cos(2 pi k n / N)
_WINDOWS = {"HannWindow": (0.5, 0.5), "HammingWindow": (25.0 / 46.0, 21.0 / 46.0), "BlackmanWindow": (0.42, 0.5, 0.08)}


class CosineWindow(torch.nn.Module):
    """Hann, Hamming or Blackman window of ``size`` points (periodic: denominator N, else N - 1),
    computed in float64 and cast to ``output_datatype``."""

    def __init__(self, coefficients: tuple[float, ...], periodic: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.coefficients, self.periodic, self.dtype = coefficients, periodic, dtype

    def forward(self, size: torch.Tensor) -> torch.Tensor:
        n = int(size.reshape(-1)[0])
        denominator = n if self.periodic else n - 1
        phase = torch.arange(n, dtype=torch.float64, device=size.device) * (2 * math.pi / denominator)
        window = torch.zeros_like(phase)
        for k, a in enumerate(self.coefficients):
            window = window + (-1) ** k * a * torch.cos(k * phase)
        return window.to(self.dtype)


def convert_window(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """BlackmanWindow / HammingWindow / HannWindow (opset 17): periodic, output_datatype."""
    to = int(node.attributes.get("output_datatype", 1))
    if to not in ONNX_TO_TORCH:
        raise NotImplementedError(f"{node.operation_type} with output_datatype={to} is not supported")
    periodic = bool(int(node.attributes.get("periodic", 1)))
    return result(CosineWindow(_WINDOWS[node.operation_type], periodic, ONNX_TO_TORCH[to]), node)


# --------------------------------------------------------------------------------------------------
# STFT (opset 17)


class STFT(torch.nn.Module):
    """Short-time Fourier transform of ``signal`` (batch, length, 1 real | 2 complex) into
    (batch, frames, bins, 2): frames of ``frame_length`` every ``frame_step`` samples, times the
    window, then a DFT written as a real matmul (differentiable in signal and window)."""

    def __init__(self, onesided: bool) -> None:
        super().__init__()
        self.onesided = onesided

    def forward(self, signal: torch.Tensor, frame_step: torch.Tensor, window: torch.Tensor | None = None,
                frame_length: torch.Tensor | None = None) -> torch.Tensor:
        step = int(frame_step.reshape(-1)[0])
        if frame_length is not None:
            length = int(frame_length.reshape(-1)[0])
        elif window is not None:
            length = window.shape[0]
        else:
            length = signal.shape[1]
        if signal.shape[-1] not in (1, 2):
            raise ValueError(f"STFT signal's last axis must be 1 (real) or 2 (complex), got shape {tuple(signal.shape)}")
        frames = signal.unfold(1, length, step)  # (batch, frames, 1|2, length)
        if window is not None:
            frames = frames * window.to(signal.dtype)
        bins = length // 2 + 1 if self.onesided else length
        k = torch.arange(bins, dtype=torch.float64, device=signal.device)[:, None]
        n = torch.arange(length, dtype=torch.float64, device=signal.device)[None, :]
        angle = 2 * math.pi * ((k * n) % length) / length
        cos, sin = torch.cos(angle).to(signal.dtype), torch.sin(angle).to(signal.dtype)
        re_in = frames[:, :, 0]
        real = re_in @ cos.T
        imag = -(re_in @ sin.T)
        if signal.shape[-1] == 2:
            im_in = frames[:, :, 1]
            real = real + im_in @ sin.T
            imag = imag + im_in @ cos.T
        return torch.stack([real, imag], dim=-1)


def convert_stft(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """STFT (opset 17): onesided, optional window and frame_length."""
    return _optional_result(STFT(bool(int(node.attributes.get("onesided", 1)))), node, 4)


class _OptionalInputs(torch.nn.Module):
    """Calls ``module`` with None in place of the optional inputs the node leaves empty."""

    def __init__(self, module: torch.nn.Module, present: list[bool]) -> None:
        super().__init__()
        self.module, self.present = module, present

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        given = iter(args)
        return self.module(*[next(given) if p else None for p in self.present])


def _optional_result(module: torch.nn.Module, node: OnnxNode, n_inputs: int) -> OperationConverterResult:
    """A converter result feeding ``module`` the node's inputs, None for the optional ones left empty."""
    names = list(node.input_values) + [""] * (n_inputs - len(node.input_values))
    return OperationConverterResult(torch_module=_OptionalInputs(module, [bool(name) for name in names]),
                                    onnx_mapping=OnnxMapping(inputs=tuple(n for n in names if n), outputs=node.output_values))


# --------------------------------------------------------------------------------------------------
# AffineGrid (opset 20)


class AffineGrid(torch.nn.Module):
    """ONNX AffineGrid: ``torch.nn.functional.affine_grid(theta, size, align_corners)``, 2-D
    (theta (N, 2, 3), size N, C, H, W) and 3-D (theta (N, 3, 4), size N, C, D, H, W)."""

    def __init__(self, align_corners: bool) -> None:
        super().__init__()
        self.align_corners = align_corners

    def forward(self, theta: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        return F.affine_grid(theta, _ints(size), align_corners=self.align_corners)


def convert_affine_grid(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """AffineGrid (opset 20): 2-D and 3-D, align_corners 0 or 1."""
    return result(AffineGrid(bool(int(node.attributes.get("align_corners", 0)))), node)


# --------------------------------------------------------------------------------------------------
# CenterCropPad (opset 18)


class CenterCropPad(torch.nn.Module):
    """Center crop (start rounded down) or zero-pad (odd extra pixel on the right) each of ``axes``
    to the length in ``shape``; other axes are unchanged."""

    def __init__(self, axes: list[int] | None) -> None:
        super().__init__()
        self.axes = axes

    def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        target = _ints(shape)
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


def convert_center_crop_pad(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """CenterCropPad (opset 18): optional axes (negative allowed)."""
    axes = node.attributes.get("axes")
    return result(CenterCropPad(list(axes) if isinstance(axes, list) else None), node)


# --------------------------------------------------------------------------------------------------
# Col2Im (opset 18)


class Col2Im(torch.nn.Module):
    """ONNX Col2Im (N-D ``fold``): input (N, C * prod(block), L) summed into an image
    (N, C, *image_shape) with index_add, so overlapping blocks add up and gradients are exact."""

    def __init__(self, strides: list[int] | None, pads: list[int] | None, dilations: list[int] | None) -> None:
        super().__init__()
        self.strides, self.pads, self.dilations = strides, pads, dilations

    def forward(self, x: torch.Tensor, image_shape: torch.Tensor, block_shape: torch.Tensor) -> torch.Tensor:
        image, block = _ints(image_shape), _ints(block_shape)
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


def convert_col2im(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Col2Im (opset 18): any number of spatial axes, strides, pads, dilations."""
    get = node.attributes.get
    return result(Col2Im(get("strides"), get("pads"), get("dilations")), node)


# --------------------------------------------------------------------------------------------------
# ReverseSequence (opset 10, 28)


class ReverseSequence(torch.nn.Module):
    """Reverse the first ``sequence_lens[b]`` steps along the time axis of each batch entry ``b``,
    as one gather (the rest of each sequence is copied)."""

    def __init__(self, batch_axis: int, time_axis: int) -> None:
        super().__init__()
        self.batch_axis, self.time_axis = batch_axis, time_axis

    def forward(self, x: torch.Tensor, sequence_lens: torch.Tensor) -> torch.Tensor:
        moved = x.movedim((self.batch_axis, self.time_axis), (0, 1))
        steps = torch.arange(moved.shape[1], device=x.device)[None, :]
        lens = sequence_lens.to(torch.int64).reshape(-1, 1)
        source = torch.where(steps < lens, lens - 1 - steps, steps)  # (batch, time)
        source = source.reshape(*source.shape, *([1] * (moved.dim() - 2))).expand_as(moved)
        return moved.gather(1, source).movedim((0, 1), (self.batch_axis, self.time_axis))


def convert_reverse_sequence(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """ReverseSequence (opsets 10, 28): batch_axis / time_axis 0 or 1."""
    return result(ReverseSequence(int(node.attributes.get("batch_axis", 1)), int(node.attributes.get("time_axis", 0))), node)


# --------------------------------------------------------------------------------------------------
# MaxUnpool (opsets 9, 11, 22)


class MaxUnpool(torch.nn.Module):
    """ONNX MaxUnpool: scatter ``x`` into zeros at MaxPool's flat indices (which count over the
    whole (N, C, *spatial) tensor) of the inferred shape ``(in - 1) * stride + kernel - pads`` per
    spatial axis; an ``output_shape`` input zero-pads that at the end of each axis."""

    def __init__(self, kernel_shape: list[int], strides: list[int] | None, pads: list[int] | None) -> None:
        super().__init__()
        self.kernel_shape, self.strides, self.pads = kernel_shape, strides, pads

    def forward(self, x: torch.Tensor, indices: torch.Tensor, output_shape: torch.Tensor | None = None) -> torch.Tensor:
        rank = len(self.kernel_shape)
        strides = self.strides or [1] * rank
        pads = self.pads or [0] * (2 * rank)
        shape = list(x.shape[:2]) + [(x.shape[2 + d] - 1) * strides[d] + self.kernel_shape[d] - pads[d] - pads[d + rank]
                                     for d in range(rank)]
        out = x.new_zeros(math.prod(shape))
        out = out.scatter(0, indices.reshape(-1).to(torch.int64), x.reshape(-1)).reshape(shape)
        if output_shape is not None:
            # like ONNX's reference: indices address the inferred shape, which is then zero-padded
            # at the end of each axis to output_shape
            wanted = _ints(output_shape)
            if len(wanted) != len(shape) or any(w < s for w, s in zip(wanted, shape)):
                raise ValueError(f"MaxUnpool output_shape {wanted} is smaller than the inferred shape {shape}")
            out = F.pad(out, [p for w, s in zip(reversed(wanted), reversed(shape)) for p in (0, w - s)])
        return out


def convert_max_unpool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """MaxUnpool (opsets 9, 11, 22): kernel_shape, strides, pads, optional output_shape."""
    get = node.attributes.get
    return result(MaxUnpool(list(get("kernel_shape")), get("strides"), get("pads")), node)


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
    return _optional_result(module, node, 5)


for _op in _WINDOWS:
    register_all_versions(_op, convert_window)
register_all_versions("STFT", convert_stft)
register_all_versions("AffineGrid", convert_affine_grid)
register_all_versions("CenterCropPad", convert_center_crop_pad)
register_all_versions("Col2Im", convert_col2im)
register_all_versions("ReverseSequence", convert_reverse_sequence)
register_all_versions("MaxUnpool", convert_max_unpool)
register_all_versions("DeformConv", convert_deform_conv)
