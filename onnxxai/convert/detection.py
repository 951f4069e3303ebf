"""Detection ops: RoiAlign (both modes) and NonMaxSuppression with flipped box corners.

onnx2torch maps RoiAlign onto torchvision's ``roi_align``, which only averages; onnxruntime's
"max" mode takes, per sampling point, the largest of the four bilinear-weighted corner values, so
it needs its own gather. onnx2torch's NonMaxSuppression hands ``[y1, x1, y2, x2]`` corners straight
to torchvision, which assumes ``y1 <= y2`` and ``x1 <= x2``; ONNX allows either diagonal.
"""

from __future__ import annotations

import math

import torch
from onnx2torch.node_converters.nms import OnnxNonMaxSuppression
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import result
from onnxxai.convert.registry import register, since

__all__ = ["RoiAlign", "NonMaxSuppressionAnyCorners"]


class RoiAlign(torch.nn.Module):
    """ONNX RoiAlign (``avg`` or ``max``) as onnxruntime computes it, differentiable in ``X``.

    Each output bin samples a ``grid_h x grid_w`` grid of points (``sampling_ratio`` or
    ``ceil(roi_size / output_size)`` per ROI); ``avg`` averages their bilinear interpolations,
    ``max`` takes the maximum over points of the largest weighted corner value. ROIs with smaller
    grids than the largest one are masked, so all ROIs are computed at once.
    """

    def __init__(self, mode: str, output_height: int, output_width: int, sampling_ratio: int,
                 spatial_scale: float, half_pixel: bool) -> None:
        super().__init__()
        self.mode, self.output_height, self.output_width = mode, output_height, output_width
        self.sampling_ratio, self.spatial_scale, self.half_pixel = sampling_ratio, spatial_scale, half_pixel

    def _axis(self, start: torch.Tensor, size: torch.Tensor, pooled: int, extent: int):
        """Sampling positions along one axis: low/high indices, low/high weights and a validity mask,
        each of shape [R, pooled, G]."""
        bin_size = size / pooled
        if self.sampling_ratio > 0:
            grid = torch.full_like(size, float(self.sampling_ratio))
        else:
            grid = torch.ceil(size / pooled)
        g_max = max(int(grid.max().item()) if grid.numel() else 0, 1)
        ph = torch.arange(pooled, dtype=size.dtype, device=size.device).view(1, -1, 1)
        it = torch.arange(g_max, dtype=size.dtype, device=size.device).view(1, 1, -1)
        start, bin_size, grid_ = start.view(-1, 1, 1), bin_size.view(-1, 1, 1), grid.view(-1, 1, 1)
        pos = start + ph * bin_size + (it + 0.5) * bin_size / grid_.clamp(min=1)
        in_grid = (it < grid_).expand(pos.shape)
        inside = (pos >= -1.0) & (pos <= extent)
        pos = pos.clamp(min=0)
        low = pos.floor().long()
        at_edge = low >= extent - 1
        low = torch.where(at_edge, torch.full_like(low, extent - 1), low)
        high = torch.where(at_edge, low, low + 1)
        pos = torch.where(at_edge, low.to(pos.dtype), pos)
        frac = pos - low.to(pos.dtype)
        w_low = torch.where(inside, 1.0 - frac, torch.zeros_like(frac))
        w_high = torch.where(inside, frac, torch.zeros_like(frac))
        return low, high, w_low, w_high, in_grid, grid

    def forward(self, x: torch.Tensor, rois: torch.Tensor, batch_indices: torch.Tensor) -> torch.Tensor:
        n_rois = rois.shape[0]
        _, channels, height, width = x.shape
        offset = 0.5 if self.half_pixel else 0.0
        coords = rois.to(x.dtype) * self.spatial_scale - offset
        x0, y0, x1, y1 = coords.unbind(1)
        roi_w, roi_h = x1 - x0, y1 - y0
        if not self.half_pixel:
            roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
        ph, pw = self.output_height, self.output_width
        yl, yh, wyl, wyh, my, gy = self._axis(y0, roi_h, ph, height)
        xl, xh, wxl, wxh, mx, gx = self._axis(x0, roi_w, pw, width)
        # Broadcast to [R, ph, Gy, pw, Gx].
        def yv(t): return t[:, :, :, None, None]
        def xv(t): return t[:, None, None, :, :]
        feats = x[batch_indices.long()].reshape(n_rois, channels, height * width)

        def corner(ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
            index = (yv(ys) * width + xv(xs))  # [R, ph, Gy, pw, Gx]
            shape = index.shape
            flat = index.reshape(n_rois, 1, -1).expand(n_rois, channels, index[0].numel())
            return feats.gather(2, flat).reshape(n_rois, channels, *shape[1:])

        terms = [
            (yv(wyl) * xv(wxl)).unsqueeze(1) * corner(yl, xl),
            (yv(wyl) * xv(wxh)).unsqueeze(1) * corner(yl, xh),
            (yv(wyh) * xv(wxl)).unsqueeze(1) * corner(yh, xl),
            (yv(wyh) * xv(wxh)).unsqueeze(1) * corner(yh, xh),
        ]
        valid = (yv(my) & xv(mx)).unsqueeze(1)  # [R, 1, ph, Gy, pw, Gx]
        if self.mode == "avg":
            total = torch.where(valid, terms[0] + terms[1] + terms[2] + terms[3], torch.zeros_like(terms[0]))
            count = (gy * gx).clamp(min=1).view(-1, 1, 1, 1).to(x.dtype)
            return total.sum(dim=(3, 5)) / count
        best = torch.stack(terms).amax(dim=0)
        best = torch.where(valid, best, torch.full_like(best, -math.inf)).amax(dim=(3, 5))
        # A bin with no sampling point (empty grid) is 0, as in onnxruntime.
        return torch.where(torch.isinf(best) & (best < 0), torch.zeros_like(best), best)


def _roi_align(node: OnnxNode, default_ctm: str) -> OperationConverterResult:
    attrs = node.attributes
    ctm = attrs.get("coordinate_transformation_mode", default_ctm)
    if isinstance(ctm, bytes):
        ctm = ctm.decode()
    mode = attrs.get("mode", "avg")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode not in ("avg", "max"):
        raise NotImplementedError(f"RoiAlign with mode={mode} is not supported")
    if ctm not in ("half_pixel", "output_half_pixel"):
        raise NotImplementedError(f"RoiAlign with coordinate_transformation_mode={ctm} is not supported")
    module = RoiAlign(mode, int(attrs.get("output_height", 1)), int(attrs.get("output_width", 1)),
                      int(attrs.get("sampling_ratio", 0)), float(attrs.get("spatial_scale", 1.0)),
                      ctm == "half_pixel")
    return result(module, node)


@register("RoiAlign", (10,), replaces=True)
def convert_roi_align_v10(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """RoiAlign-10 in both modes (no coordinate_transformation_mode: output_half_pixel)."""
    return _roi_align(node, "output_half_pixel")


@register("RoiAlign", since(16), replaces=True)
def convert_roi_align(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """RoiAlign-16/22 in both modes and both coordinate_transformation_modes (default half_pixel)."""
    return _roi_align(node, "half_pixel")


class NonMaxSuppressionAnyCorners(OnnxNonMaxSuppression):
    """ONNX NonMaxSuppression with ``center_point_box=0`` whose boxes may give either diagonal pair
    of corners: the corners are sorted to ``[y_min, x_min, y_max, x_max]`` before onnx2torch's NMS.

    The optional inputs are named parameters: onnx2torch passes the inputs after an omitted one
    (e.g. ``score_threshold`` after an empty ``iou_threshold``) by keyword, and a ``*rest``
    signature would drop them."""

    def forward(self, boxes: torch.Tensor, scores: torch.Tensor, max_output_boxes_per_class: torch.Tensor | None = None,
                iou_threshold: torch.Tensor | None = None, score_threshold: torch.Tensor | None = None) -> torch.Tensor:
        y1, x1, y2, x2 = boxes.unbind(-1)
        boxes = torch.stack([torch.minimum(y1, y2), torch.minimum(x1, x2),
                             torch.maximum(y1, y2), torch.maximum(x1, x2)], dim=-1)
        return super().forward(boxes, scores, max_output_boxes_per_class, iou_threshold, score_threshold)


@register("NonMaxSuppression", (10, 11), extends=True)
def convert_non_max_suppression(node: OnnxNode, graph: OnnxGraph, fallback) -> OperationConverterResult:
    """NonMaxSuppression-10/11: ours for corner boxes (center_point_box=0), onnx2torch's otherwise."""
    if int(node.attributes.get("center_point_box", 0)) != 0:
        return fallback(node, graph)
    return result(NonMaxSuppressionAnyCorners(center_point_box=0), node)
