"""Resampling: GridSample (opset 16/20/22; 4-D, and 5-D but not cubic) on torch's grid_sample,
AffineGrid (opset 20, the sampling grid of an affine map), and Resize (opsets 10-19) / Upsample (7, 9)
as a separable gather + weighted sum that follows the ONNX spec."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import int_list, result
from onnxxai.convert.registry import register, since

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


@register("GridSample", since(1))
def convert_grid_sample(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """GridSample: modes (bi)linear, nearest, (bi)cubic; padding zeros, border, reflection."""
    mode = _text(node.attributes.get("mode"), "bilinear")
    padding = _text(node.attributes.get("padding_mode"), "zeros")
    if mode not in _MODES or padding not in _PADDING:
        raise NotImplementedError(f"GridSample mode={mode!r} padding_mode={padding!r} is not supported")
    return result(GridSample(_MODES[mode], padding, bool(int(node.attributes.get("align_corners", 0)))), node)


# --------------------------------------------------------------------------------------------------
# Resize (opsets 10, 11, 13, 18, 19) and Upsample (opsets 7, 9)

_RESIZE_MODES = ("nearest", "linear", "cubic")
_COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                     "tf_half_pixel_for_nn", "tf_crop_and_resize")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")
_ASPECT_POLICIES = ("stretch", "not_larger", "not_smaller")


def _source_coordinates(mode: str, y: torch.Tensor, scale: float, length_in: int, length_out: int,
                        roi: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Coordinates in the input (float64) of output positions ``y`` along one axis, per ONNX's
    coordinate_transformation_mode, and for tf_crop_and_resize which of them lie outside the input.

    ``output_width = scale * length_in`` may be fractional when ``scales`` were given; like ONNX's
    reference implementation (which produced the conformance outputs) we use it where the spec
    writes ``length_resized``, except for pytorch_half_pixel's length-1 rule.
    """
    width = scale * length_in
    outside = None
    if mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        offset = length_in / 2 * (1 - length_out / width)
        x = offset + (y + 0.5) / scale - 0.5
    elif mode == "pytorch_half_pixel":
        x = (y + 0.5) / scale - 0.5 if length_out > 1 else torch.zeros_like(y)
    elif mode == "align_corners":
        x = torch.zeros_like(y) if width == 1 else y * (length_in - 1) / (width - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_half_pixel_for_nn":
        x = (y + 0.5) / scale
    else:  # tf_crop_and_resize
        start, end = roi
        if width == 1:
            x = torch.full_like(y, (end - start) * (length_in - 1) / 2)
        else:
            x = y * (end - start) * (length_in - 1) / (width - 1)
        x = x + start * (length_in - 1)
        outside = (x < 0) | (x > length_in - 1)
    return x, outside


def _nearest_index(x: torch.Tensor, nearest_mode: str, downsampling: bool) -> torch.Tensor:
    """The input index ONNX's nearest interpolation reads for source coordinate ``x`` (unclamped).

    "simple" is Resize-10's and Upsample's rule (as onnxruntime implements it): floor when
    upsampling, ceil when downsampling.
    """
    low = torch.floor(x)
    frac = x - low
    if nearest_mode == "simple":
        nearest_mode = "ceil" if downsampling else "floor"
    if nearest_mode == "round_prefer_floor":
        up = frac > 0.5
    elif nearest_mode == "round_prefer_ceil":
        up = frac >= 0.5
    elif nearest_mode == "floor":
        up = torch.zeros_like(frac, dtype=torch.bool)
    else:  # ceil
        up = frac > 0
    return (low + up.to(low.dtype)).long()


def _cubic_kernel(d: torch.Tensor, a: float) -> torch.Tensor:
    """Keys' cubic convolution kernel with coefficient ``a`` at distances ``d``."""
    d = d.abs()
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


class Resize(torch.nn.Module):
    """ONNX Resize (opsets 10-19) as a separable gather + weighted sum per resized axis.

    Every ONNX option is honoured exactly: all coordinate transformation modes (tf_crop_and_resize
    with ``roi`` and ``extrapolation_value``), the nearest rounding modes, linear and cubic
    (``cubic_coeff_a``, ``exclude_outside``) with optional antialiasing, ``axes`` and
    ``keep_aspect_ratio_policy``. ``scales``/``sizes`` may be constants or run-time tensors; the
    sampling positions and weights are recomputed from them on each call (float64, then cast).
    Differentiable w.r.t. ``x`` (nearest: gradients flow to the selected elements).
    """

    def __init__(self, mode: str = "nearest", coordinate_transformation_mode: str = "half_pixel",
                 nearest_mode: str = "round_prefer_floor", cubic_coeff_a: float = -0.75, exclude_outside: bool = False,
                 extrapolation_value: float = 0.0, antialias: bool = False, axes: list[int] | None = None,
                 keep_aspect_ratio_policy: str = "stretch") -> None:
        super().__init__()
        self.mode, self.coordinate_transformation_mode, self.nearest_mode = mode, coordinate_transformation_mode, nearest_mode
        self.cubic_coeff_a, self.exclude_outside = float(cubic_coeff_a), bool(exclude_outside)
        self.extrapolation_value, self.antialias = float(extrapolation_value), bool(antialias)
        self.axes = None if axes is None else [int(a) for a in axes]
        self.keep_aspect_ratio_policy = keep_aspect_ratio_policy

    def _axis_plans(self, shape: tuple[int, ...], roi: torch.Tensor | None, scales: torch.Tensor | None,
                    sizes: torch.Tensor | None) -> list[tuple[int, float, int, tuple[float, float]]]:
        """(axis, scale, output length, roi) for every axis that Resize changes."""
        rank = len(shape)
        axes = list(range(rank)) if self.axes is None else [a % rank for a in self.axes]
        lengths = [shape[a] for a in axes]
        if sizes is not None and sizes.numel():
            out = [int(s) for s in sizes.tolist()]
            if len(out) != len(axes):
                raise ValueError(f"Resize: sizes has {len(out)} values for {len(axes)} axes")
            factors = [o / n for o, n in zip(out, lengths)]
            if self.keep_aspect_ratio_policy != "stretch":
                common = min(factors) if self.keep_aspect_ratio_policy == "not_larger" else max(factors)
                factors = [common] * len(axes)
                out = [int(common * n + 0.5) for n in lengths]
        elif scales is not None and scales.numel():
            factors = [float(s) for s in scales.tolist()]
            if len(factors) != len(axes):
                raise ValueError(f"Resize: scales has {len(factors)} values for {len(axes)} axes")
            out = [int(f * n) for f, n in zip(factors, lengths)]
        else:
            raise ValueError("Resize needs one of 'scales' and 'sizes'")
        bounds = [(0.0, 1.0)] * len(axes)
        if self.coordinate_transformation_mode == "tf_crop_and_resize":
            if roi is None or roi.numel() != 2 * len(axes):
                raise ValueError(f"Resize with tf_crop_and_resize needs a roi of {2 * len(axes)} values")
            values = roi.tolist()
            bounds = list(zip(values[:len(axes)], values[len(axes):]))
        plans = []
        for axis, n, factor, length, bound in zip(axes, lengths, factors, out, bounds):
            identity = math.isclose(factor, 1.0) and length == n and math.isclose(bound[0], 0.0) and math.isclose(bound[1], 1.0)
            if not identity:
                plans.append((axis, factor, length, bound))
        return plans

    def _resize_axis(self, x: torch.Tensor, axis: int, scale: float, length: int, roi: tuple[float, float]) -> torch.Tensor:
        n = x.shape[axis]
        y = torch.arange(length, dtype=torch.float64)
        source, outside = _source_coordinates(self.coordinate_transformation_mode, y, scale, n, length, roi)
        view = [1] * x.dim()
        if self.mode == "nearest":
            index = _nearest_index(source, self.nearest_mode, scale < 1).clamp(0, n - 1)
            repeats = length // n if n else 0
            if repeats and length == n * repeats and torch.equal(index, torch.arange(length) // repeats):
                # each input element repeated ``repeats`` times: an expand, whose backward is a cheap sum
                wide = x.unsqueeze(axis + 1).expand(*x.shape[:axis + 1], repeats, *x.shape[axis + 1:])
                out = wide.reshape(*x.shape[:axis], length, *x.shape[axis + 1:])
            else:
                out = x.index_select(axis, index.to(x.device))
        else:
            radius = 1 if self.mode == "linear" else 2
            stretch = min(scale, 1.0) if self.antialias else 1.0
            start = math.floor(-radius / stretch) + 1
            taps = 2 - 2 * start
            # the ``taps`` input positions nearest to each source coordinate, ties to the lower ones
            neighbours = (torch.ceil(source) - taps // 2)[:, None] + torch.arange(taps, dtype=torch.float64)
            distance = (neighbours - source[:, None]) * stretch
            if self.mode == "linear":
                weights = (1 - distance.abs()).clamp(min=0)
            else:
                weights = _cubic_kernel(distance, self.cubic_coeff_a)
            if self.antialias:
                weights = weights / weights.sum(-1, keepdim=True)
            if self.exclude_outside:
                weights = torch.where((neighbours < 0) | (neighbours > n - 1), torch.zeros_like(weights), weights)
                total = weights.sum(-1, keepdim=True)
                weights = weights / torch.where(total == 0, torch.ones_like(total), total)
            index = neighbours.long().clamp(0, n - 1).reshape(-1)
            picked = x.index_select(axis, index.to(x.device))
            picked = picked.reshape(*x.shape[:axis], length, taps, *x.shape[axis + 1:])
            view[axis] = length
            tap_view = view[:axis + 1] + [taps] + view[axis + 1:]
            out = (picked * weights.to(device=x.device, dtype=x.dtype).reshape(tap_view)).sum(axis + 1)
        if outside is not None and bool(outside.any()):
            view[axis] = length
            mask = outside.to(x.device).reshape(view)
            out = torch.where(mask, torch.full_like(out, self.extrapolation_value), out)
        return out

    def _torch_upsample(self, x: torch.Tensor, plans: list[tuple[int, float, int, tuple[float, float]]]) -> torch.Tensor | None:
        """torch's fused (bi/tri)linear or bicubic kernel where its formula is ONNX's for these plans, else None.

        It is 3-5x faster forward + backward. It matches when only spatial axes are resized, without
        antialiasing when downsampling, with half_pixel (pytorch_half_pixel for lengths > 1) or
        align_corners on integer output widths, and for cubic with A = -0.75 on edge-clamped (not
        excluded) 2-D neighbourhoods. Its coordinates are computed in the input's precision.
        """
        rank = x.dim()
        if not plans or x.dtype not in (torch.float32, torch.float64) or self.mode == "nearest" or not 3 <= rank <= 5:
            return None
        if any(axis < 2 for axis, *_ in plans) or (self.antialias and any(scale < 1 for _, scale, *_ in plans)):
            return None
        mode = self.coordinate_transformation_mode
        if mode == "align_corners":
            if any(scale * x.shape[axis] != length for axis, scale, length, _ in plans):
                return None
        elif not (mode == "half_pixel" or (mode == "pytorch_half_pixel" and all(length > 1 for _, _, length, _ in plans))):
            return None
        if self.mode == "cubic" and (rank != 4 or self.exclude_outside or self.cubic_coeff_a != -0.75):
            return None
        size, factors = list(x.shape[2:]), [1.0] * (rank - 2)
        for axis, scale, length, _ in plans:
            size[axis - 2], factors[axis - 2] = length, scale
        align = mode == "align_corners"
        if self.mode == "cubic":
            return torch.ops.aten.upsample_bicubic2d(x, size, align, *factors)
        op = {3: torch.ops.aten.upsample_linear1d, 4: torch.ops.aten.upsample_bilinear2d, 5: torch.ops.aten.upsample_trilinear3d}[rank]
        return op(x, size, align, *factors)

    def forward(self, x: torch.Tensor, roi: torch.Tensor | None = None, scales: torch.Tensor | None = None,
                sizes: torch.Tensor | None = None) -> torch.Tensor:
        plans = self._axis_plans(tuple(x.shape), roi, scales, sizes)
        fused = self._torch_upsample(x, plans)
        if fused is not None:
            return fused
        exact = x.is_floating_point() or self.mode == "nearest"
        work = x if exact else x.to(torch.float64)
        if work.dtype in (torch.float16, torch.bfloat16) and self.mode != "nearest":
            work = work.float()
        for axis, scale, length, bound in plans:
            work = self._resize_axis(work, axis, scale, length, bound)
        if work.dtype == x.dtype:
            return work
        if not x.is_floating_point():
            info = torch.iinfo(x.dtype)
            work = work.round().clamp(info.min, info.max)
        return work.to(x.dtype)


class Upsample(Resize):
    """ONNX Upsample (opsets 7, 9; Resize-10's semantics): asymmetric coordinates, nearest or linear.

    ``scales`` comes from the attribute at opset 7 and from the second input at opset 9.
    """

    def __init__(self, mode: str, scales: list[float] | None = None) -> None:
        super().__init__(mode=mode, coordinate_transformation_mode="asymmetric", nearest_mode="simple")
        self.constant_scales = scales

    def forward(self, x: torch.Tensor, scales: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if scales is None:
            scales = torch.tensor(self.constant_scales, dtype=torch.float64)
        return super().forward(x, scales=scales)


class ResizeV10(Upsample):
    """ONNX Resize-10: inputs (X, scales), asymmetric coordinates, nearest or linear (same as Upsample-9)."""


@register("Resize", (11, 13, 18, 19), replaces=True)
def convert_resize(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Resize-11/13/18/19: every mode and attribute of the spec (see :class:`Resize`)."""
    attrs = node.attributes
    mode = _text(attrs.get("mode"), "nearest")
    coordinates = _text(attrs.get("coordinate_transformation_mode"), "half_pixel")
    nearest_mode = _text(attrs.get("nearest_mode"), "round_prefer_floor")
    policy = _text(attrs.get("keep_aspect_ratio_policy"), "stretch")
    for name, value, allowed in (("mode", mode, _RESIZE_MODES), ("coordinate_transformation_mode", coordinates, _COORDINATE_MODES),
                                 ("nearest_mode", nearest_mode, _NEAREST_MODES[:4]), ("keep_aspect_ratio_policy", policy, _ASPECT_POLICIES)):
        if value not in allowed:
            raise NotImplementedError(f"Resize with {name}={value!r} is not supported")
    axes = attrs.get("axes")
    module = Resize(mode, coordinates, nearest_mode, float(attrs.get("cubic_coeff_a", -0.75)), bool(int(attrs.get("exclude_outside", 0))),
                    float(attrs.get("extrapolation_value", 0.0)), bool(int(attrs.get("antialias", 0))),
                    None if axes is None else list(axes), policy)
    return result(module, node)


def _legacy_mode(op: str, node: OnnxNode) -> str:
    mode = _text(node.attributes.get("mode"), "nearest")
    mode = "linear" if mode == "bilinear" else mode
    if mode not in ("nearest", "linear"):
        raise NotImplementedError(f"{op} with mode={mode!r} is not supported")
    return mode


@register("Resize", (10,), replaces=True)
def convert_resize_10(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Resize-10: nearest (floor when upsampling, ceil when downsampling) or linear, asymmetric coordinates."""
    return result(ResizeV10(_legacy_mode("Resize", node)), node)


@register("Upsample", (7, 9))
def convert_upsample(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Upsample-7 (scales attribute) and -9 (scales input): nearest or linear, as Resize-10."""
    scales = node.attributes.get("scales")
    if scales is not None:
        return result(Upsample(_legacy_mode("Upsample", node), [float(s) for s in scales]), node, n_inputs=1)
    return result(Upsample(_legacy_mode("Upsample", node)), node)


# --------------------------------------------------------------------------------------------------
# AffineGrid (opset 20)


class AffineGrid(torch.nn.Module):
    """ONNX AffineGrid: ``torch.nn.functional.affine_grid(theta, size, align_corners)``, 2-D
    (theta (N, 2, 3), size N, C, H, W) and 3-D (theta (N, 3, 4), size N, C, D, H, W)."""

    def __init__(self, align_corners: bool) -> None:
        super().__init__()
        self.align_corners = align_corners

    def forward(self, theta: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        return F.affine_grid(theta, int_list(size), align_corners=self.align_corners)


@register("AffineGrid", since(1))
def convert_affine_grid(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """AffineGrid (opset 20): 2-D and 3-D, align_corners 0 or 1."""
    return result(AffineGrid(bool(int(node.attributes.get("align_corners", 0)))), node)
