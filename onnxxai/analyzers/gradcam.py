"""GradCAM on an ONNX graph, at a boundary found by data-flow analysis (:mod:`onnxxai.graph`).

The map of each sample is ``ReLU(Σ_c w_c · A_c)`` where ``A`` is the boundary activation and
``w_c`` the spatial mean of the gradient of the selected output with respect to ``A_c``; it is
upsampled bilinearly (``align_corners=False``, as Captum's ``LayerAttribution.interpolate``) to the
input's spatial size. Token boundaries ``(N, T, C)`` are mapped to the image grid with
:func:`onnxxai.graph.token_grid`: the leading non-patch tokens (class, distillation) are dropped and
the ``h·w`` patch tokens reshaped row-major to ``(N, C, h, w)``.

Quantized boundaries (the integer activations of int8 files, :mod:`onnxxai.graph.quantized`) are read
as the deployed model reads them: ``A = scale · (q - zero_point)``, with the straight-through
gradient of the converted integer ops taken with respect to ``A`` (``∂y/∂q / scale``).

One forward and one backward per chunk: a new GraphModule over a copy of the converted graph
returns the boundary activation next to the outputs, as a fresh autograd leaf (nothing upstream of
the boundary records gradients). The user's Model is never modified. When the boundary's producer
cannot be found in the converted graph, the two split graphs are converted and run instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from onnxxai.analyzers.batching import run_samples
from onnxxai.analyzers.core import Analyzer
from onnxxai.analyzers.function import ModelFunction, select
from onnxxai.analyzers.target import TARGET_OPTIONS, Target, TargetOptions, split_options
from onnxxai.convert.contrib_fused import blocked_tensors, nchwc_block_size, unblock
from onnxxai.errors import AnalyzerError, BoundaryError, InputError
from onnxxai.explanation import Explanation
from onnxxai.graph import DataFlow, default_cut, token_grid
from onnxxai.graph.quantized import Quantization
from onnxxai.graph.surgery import autograd_leaf, capture, tensor_source
from onnxxai.model import Model
from onnxxai.proto.layout import image_layout
from onnxxai.selectors import OutputSelector

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["GradCAM", "capture_module"]


def capture_module(model: Model, boundary: str) -> torch.fx.GraphModule | None:
    """A new GraphModule computing ``model.torch_module``'s outputs plus the activation of ONNX
    tensor ``boundary`` (last), made an autograd leaf; None when its producer is not an fx node."""
    source = tensor_source(model.onnx_model, boundary)
    if source is None:
        return None
    return capture(model.torch_module, source, class_name="GradCAMGraphModule")


class _SplitRunner:
    """Fallback: the features and head graphs converted separately (two forwards per chunk)."""

    def __init__(self, model: Model, boundary: str, input_name: str, output_name: str, quantized: bool) -> None:
        from onnxxai.graph import split
        from onnxxai.convert.pipeline import convert

        features, head, _ = split(model, boundary, input_name=input_name, output_name=output_name, verify=True)
        self.feature_inputs = [i.name for i in features.graph.input]
        self.feature_outputs = [o.name for o in features.graph.output]
        self.head_inputs = [i.name for i in head.graph.input]
        self.head_outputs = [o.name for o in head.graph.output]
        self.features = convert(features, f"{model.source} (features)")[2].to(model.device)
        self.head = convert(head, f"{model.source} (head)")[2].to(model.device)
        self.boundary, self.quantized = boundary, quantized

    def __call__(self, feeds: Mapping[str, torch.Tensor], output_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            outs = self.features(*[feeds[n] for n in self.feature_inputs])
        outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
        values = {**feeds, **dict(zip(self.feature_outputs, outs))}
        act = values[self.boundary]
        if self.quantized and not act.is_floating_point():  # the integers, in a float container (as converted)
            act = act.to(torch.float32)
        values[self.boundary] = act = autograd_leaf(act)
        result = self.head(*[values[n] for n in self.head_inputs])
        result = list(result) if isinstance(result, (tuple, list)) else [result]
        return result[self.head_outputs.index(output_name)], act


class GradCAM(Analyzer):
    """GradCAM at ``boundary``: an ONNX tensor (or single-output node) that every path from the input
    to the output passes through. None picks :func:`onnxxai.graph.default_boundary` (ResNet's
    ``layer4`` output, a ViT's last-but-one encoder block output); a tensor that is not a cut raises
    :class:`onnxxai.graph.BoundaryError` naming the paths that bypass it.

    ``val`` has one channel, the input's spatial size and layout (``(B, 1, H, W)`` for NCHW input);
    ``extras["cam"]`` holds the low-resolution maps ``(B, h, w)``, ``extras["boundary"]`` the tensor.
    Token boundaries ``(N, T, C)`` drop their leading class/distillation tokens and put the patch
    tokens row-major on the grid (:func:`onnxxai.graph.token_grid`). ``batch_size`` bounds the rows
    per forward/backward (None: the whole batch at once). ``one_pass=False`` runs the converted
    features and head graphs of :func:`onnxxai.graph.split` instead of the whole graph.
    ``input_name``, ``output_name`` and ``fixed_inputs`` (or ``target=Target(...)``) pick the input
    and output as for the gradient analyzers.

    On int8 files a boundary may be a quantized activation (a QLinearConv's uint8 output, a MaxPool
    of one): GradCAM uses its dequantized value ``scale · (q - zero_point)`` and the straight-through
    gradient with respect to that value (``extras["quantization"]`` says how it was read).
    """

    heatmap = "cam"

    def __init__(
        self,
        model: Model,
        boundary: str | None = None,
        *,
        one_pass: bool = True,
        target: Target | None = None,
        **options: Unpack[TargetOptions],
    ) -> None:
        target, self.execution = split_options("GradCAM", target, options, TARGET_OPTIONS)
        self.function = ModelFunction(model, target, integer_inputs=False)
        self.model = model
        flow = DataFlow(model.onnx_model, self.function.input_name, self.function.output_name, model.source)
        if boundary is None:
            probe = {n: v.cpu().numpy() for n, v in self.function.fixed.items()} or None
            self.boundary = default_cut(flow, probe)
        else:
            self.boundary = flow.resolve(boundary)
        self.quantization = _quantization(flow, self.boundary)
        #: onnxruntime's NCHWc block size when the boundary is a blocked tensor of an ORT_ENABLE_ALL file (its
        #: (N, C, H, W) numbers are in [N][C/B][H][W][B] order: read as they are, channels and positions mix)
        self.block = nchwc_block_size() if self.boundary in blocked_tensors(model.onnx_model) else None
        self._capture = capture_module(model, self.boundary) if one_pass else None
        self._split = None if self._capture is not None else _SplitRunner(
            model, self.boundary, self.function.input_name, self.function.output_name, self.quantization is not None)

    def __repr__(self) -> str:
        return f"GradCAM(boundary={self.boundary!r})"

    # -- running --------------------------------------------------------------------------------
    def _forward(self, rows: torch.Tensor, sample_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The explained output and the boundary activation (an autograd leaf) of ``rows``."""
        feeds = self.function.feeds(self.function.input_name, rows, sample_index)
        if self._split is not None:
            return self._split(feeds, self.function.output_name)
        outs = self._capture(*[feeds[s.name] for s in self.model.inputs])
        return outs[self.function.output_index], outs[-1]

    def _leaf_check(self, act: torch.Tensor) -> None:
        """AnalyzerError unless the captured boundary records gradients (a float tensor or container)."""
        if not act.requires_grad:
            raise AnalyzerError(
                f"{self.model.source}: boundary {self.boundary!r} is kept as {act.dtype} in the converted graph (a "
                "quantized tensor that leaves the graph or reaches an op that reads it as integers), so it carries "
                "no gradient; pick the float or quantized tensor next to it (`onnxxai layers MODEL` lists the cuts)")

    def explain_rows(
        self, rows: torch.Tensor, sample_index: torch.Tensor, target: torch.Tensor | OutputSelector
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One forward and one backward over ``rows``: (upsampled map, low-res map, output, index)."""
        with torch.enable_grad():
            out, act = self._forward(rows, sample_index)
            self._leaf_check(act)
            index = target if isinstance(target, torch.Tensor) else target(out.detach())
            if not out.requires_grad:
                raise AnalyzerError(f"output {self.function.output_name!r} does not depend differentiably on the "
                                    f"boundary {self.boundary!r}")
            (grad,) = torch.autograd.grad(select(out, index).sum(), act)
        act = act.detach()
        if self.block is not None:  # a permutation of the elements: the gradient moves with them
            act, grad = unblock(act, self.block), unblock(grad, self.block)
        if self.quantization is not None:
            act, grad = _dequantize(act, grad, self.quantization)
        cam = self._cam(act, grad, rows.shape)
        return self._upsample(cam, rows.shape), cam, out.detach(), index

    def _cam(self, act: torch.Tensor, grad: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
        if act.dim() == 3:  # tokens (N, T, C) -> (N, C, h, w)
            height, width = _image_hw(input_shape, self.function.input_name)
            grid = token_grid(act.shape[1], height, width)
            if grid is None:
                raise AnalyzerError(
                    f"boundary {self.boundary!r} has {act.shape[1]} tokens, which do not map onto the "
                    f"{height}×{width} input as p×p patches after at most a few class tokens; pick a spatial boundary"
                )
            prefix, h, w = grid
            act, grad = (t[:, prefix:].reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2) for t in (act, grad))
        elif act.dim() != 4:
            raise AnalyzerError(f"boundary {self.boundary!r} has shape {tuple(act.shape)}; GradCAM needs a feature map "
                                "(N, C, H, W) or a token sequence (N, T, C)")
        weights = grad.mean(dim=(2, 3), keepdim=True)
        return torch.relu((weights * act).sum(dim=1))

    def _upsample(self, cam: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
        height, width = _image_hw(input_shape, self.function.input_name)
        up = F.interpolate(cam[:, None], size=(height, width), mode="bilinear", align_corners=False)
        return up if _channels_first(input_shape) else up.permute(0, 2, 3, 1)

    def explain(self, input: torch.Tensor, selector: OutputSelector) -> Explanation:
        _image_hw(input.shape, self.function.input_name)
        val, cam, out, idx = run_samples(self.explain_rows, input, selector, self.execution.batch_size, self.function.output)
        return Explanation(
            val, input, out, idx, self.name, self.heatmap,
            {"boundary": self.boundary, "cam": cam, "input_name": self.function.input_name,
             "output_name": self.function.output_name, "one_pass": self._split is None,
             "quantization": None if self.quantization is None else str(self.quantization)},
        )


def _quantization(flow: DataFlow, boundary: str) -> Quantization | None:
    """How the boundary's integers read as float (None for a float boundary); BoundaryError for
    integer data with no constant reading."""
    if boundary not in flow.quantized:
        return None
    found = flow.quantized[boundary]
    if found is None:
        _, node = flow.producer[boundary]
        raise BoundaryError(
            f"{flow.label}: boundary {boundary!r} ({node.op_type} {node.name!r}) is integer data with no constant "
            "per-tensor or per-axis scale and zero point (an integer accumulator, a run-time or blocked quantization): GradCAM cannot read it as an activation; "
            "pick the float tensor computed from it or a quantized activation (`onnxxai layers MODEL` lists the cuts)")
    return found


def _dequantize(q: torch.Tensor, grad_q: torch.Tensor, quant: Quantization) -> tuple[torch.Tensor, torch.Tensor]:
    """The dequantized activation ``scale · (q - zero_point)`` (float32, as DequantizeLinear computes it)
    and the gradient with respect to it: the straight-through gradient is linear in ``q``, so
    ``∂y/∂A = ∂y/∂q / scale``."""
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    shape = [1] * q.dim()
    if quant.scale.size > 1:
        shape[quant.axis % q.dim()] = quant.scale.size
    scale = torch.as_tensor(quant.scale, device=q.device).to(dtype).reshape(shape if quant.scale.size > 1 else ())
    zp = torch.as_tensor(quant.zero_point.astype("float64"), device=q.device).to(dtype)
    zp = zp.reshape(shape if quant.zero_point.size > 1 else ())
    return (q.to(dtype) - zp) * scale, grad_q.to(dtype) / scale


def _channels_first(shape: torch.Size) -> bool:
    return image_layout(shape).channels_first


def _image_hw(shape: torch.Size, name: str) -> tuple[int, int]:
    """H, W of an image batch (:func:`onnxxai.proto.layout.image_layout`: NCHW when axis 1 has 1, 3
    or 4 entries, else NHWC)."""
    found = image_layout(shape)
    if found is None:
        raise InputError(f"GradCAM needs an image batch (rank 4, NCHW or NHWC) for input {name!r}, got shape "
                         f"{tuple(shape)}")
    return int(found.height), int(found.width)
