"""Normalizations onnx2torch lacks (Lp, mean-variance, RMS, group), LayerNormalization with its
optional Mean / InvStdDev outputs and BatchNormalization of any rank (unknown rank included) at
inference and in training mode."""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import result
from onnxxai.convert.registry import register, since


class LpNormalization(torch.nn.Module):
    """x / ||x||_p along ``axis`` (p = 1 or 2); a zero norm gives 0, not NaN, as in ONNX."""

    def __init__(self, axis: int, p: int) -> None:
        super().__init__()
        self.axis, self.p = axis, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, ord=self.p, dim=self.axis, keepdim=True)
        # where the norm is 0 the slice is all zeros, so dividing by 1 gives the 0 ONNX asks for
        return x / torch.where(norm == 0, torch.ones_like(norm), norm)


class BatchNormInference(torch.nn.Module):
    """BatchNormalization at inference, ``(x - mean) / sqrt(var + eps) * scale + bias`` per channel
    (axis 1), for an input of any rank >= 2 read at run time: onnx2torch picks BatchNorm1d/2d/3d
    from the rank shape inference gives, and fails where it cannot tell (PaddlePaddle's exports
    declare no intermediate shapes) or the rank is above 5."""

    def __init__(self, epsilon: float) -> None:
        super().__init__()
        self.epsilon = epsilon

    def forward(self, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                var: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"BatchNormalization needs an input of rank >= 2 (N, C, ...), got shape {tuple(x.shape)}")
        return torch.nn.functional.batch_norm(x, mean, var, scale, bias, False, 0.0, self.epsilon)


class BatchNormTraining(torch.nn.Module):
    """BatchNormalization-14/15 with training_mode=1: Y normalized with the batch's own mean and
    (population) variance over every axis but 1, and the updated running statistics
    ``input_mean * momentum + batch_mean * (1 - momentum)`` (same for the variance) when the node
    has those outputs."""

    def __init__(self, epsilon: float, momentum: float, n_outputs: int) -> None:
        super().__init__()
        self.epsilon, self.momentum, self.n_outputs = epsilon, momentum, n_outputs

    def forward(self, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                var: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        batch_mean = x.mean(dim=dims)
        batch_var = ((x - batch_mean.reshape(shape)) ** 2).mean(dim=dims)
        y = (x - batch_mean.reshape(shape)) * torch.rsqrt(batch_var.reshape(shape) + self.epsilon) * scale.reshape(shape) + bias.reshape(shape)
        if self.n_outputs == 1:
            return y
        running_mean = mean * self.momentum + batch_mean * (1 - self.momentum)
        running_var = var * self.momentum + batch_var * (1 - self.momentum)
        return (y, running_mean, running_var)[: self.n_outputs]


class MeanVarianceNormalization(torch.nn.Module):
    """(x - mean) / sqrt(var) over ``axes`` (population variance, no epsilon, as in ONNX)."""

    def __init__(self, axes: list[int]) -> None:
        super().__init__()
        self.axes = axes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=self.axes, keepdim=True)
        centred = x - mean
        return centred / torch.sqrt((centred * centred).mean(dim=self.axes, keepdim=True))


class RMSNormalization(torch.nn.Module):
    """x / sqrt(mean(x², axes from ``axis`` on) + eps) * scale, computed in float32 or the stash type."""

    def __init__(self, axis: int, epsilon: float, stash_float32: bool) -> None:
        super().__init__()
        self.axis, self.epsilon, self.stash_float32 = axis, epsilon, stash_float32

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        dims = list(range(self.axis % x.dim(), x.dim()))
        work = x.float() if self.stash_float32 and x.dtype in (torch.float16, torch.bfloat16) else x
        y = work * torch.rsqrt((work * work).mean(dim=dims, keepdim=True) + self.epsilon)
        return y.to(x.dtype) * scale


class GroupNormalization(torch.nn.Module):
    """GroupNormalization: per-group statistics; scale and bias per channel (opset 21) or per group (18)."""

    def __init__(self, groups: int, epsilon: float, per_group_affine: bool) -> None:
        super().__init__()
        self.groups, self.epsilon, self.per_group_affine = groups, epsilon, per_group_affine

    def forward(self, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if self.per_group_affine:
            repeat = x.shape[1] // self.groups
            scale, bias = scale.repeat_interleave(repeat), bias.repeat_interleave(repeat)
        return torch.nn.functional.group_norm(x, self.groups, scale, bias, self.epsilon)


class LayerNormalization(torch.nn.Module):
    """LayerNormalization over the axes from ``axis`` on, read off the input at run time; returns
    (Y, Mean, InvStdDev) when the graph uses the statistics outputs."""

    def __init__(self, axis: int, epsilon: float, with_stats: bool = False) -> None:
        super().__init__()
        self.axis, self.epsilon, self.with_stats = axis, epsilon, with_stats

    def forward(self, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
        axis = self.axis % x.dim()
        if not self.with_stats:
            return torch.nn.functional.layer_norm(x, x.shape[axis:], scale.expand(x.shape[axis:]),
                                                  None if bias is None else bias.expand(x.shape[axis:]), self.epsilon)
        dims = list(range(axis, x.dim()))
        mean = x.mean(dim=dims, keepdim=True)
        inv_std = torch.rsqrt(((x - mean) ** 2).mean(dim=dims, keepdim=True) + self.epsilon)
        y = (x - mean) * inv_std * scale
        if bias is not None:
            y = y + bias
        return y, mean, inv_std


@register("LpNormalization", since(1))
def convert_lp_normalization(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """LpNormalization(axis, p)."""
    p = int(node.attributes.get("p", 2))
    if p not in (1, 2):
        raise NotImplementedError(f"LpNormalization with p={p} (ONNX allows only 1 and 2)")
    return result(LpNormalization(int(node.attributes.get("axis", -1)), p), node)


@register("MeanVarianceNormalization", since(1))
def convert_mvn(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """MeanVarianceNormalization(axes=[0, 2, 3])."""
    return result(MeanVarianceNormalization([int(a) for a in node.attributes.get("axes", [0, 2, 3])]), node)


@register("RMSNormalization", since(1))
def convert_rms_normalization(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """RMSNormalization-23 (axis, epsilon, stash_type)."""
    return result(RMSNormalization(int(node.attributes.get("axis", -1)), float(node.attributes.get("epsilon", 1e-5)),
                                   int(node.attributes.get("stash_type", 1)) == 1), node)


def _group_normalization(per_group_affine: bool):
    def convert_group_normalization(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
        """GroupNormalization-18 (scale/bias per group) and -21 (per channel)."""
        groups, eps = int(node.attributes["num_groups"]), float(node.attributes.get("epsilon", 1e-5))
        return result(GroupNormalization(groups, eps, per_group_affine), node)

    return convert_group_normalization


@register("LayerNormalization", (17,), replaces=True)
def convert_layer_norm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """LayerNormalization: normalized shape taken from the input at run time (onnx2torch's module
    bakes it from shape inference, which is 0 for dynamic dimensions), statistics outputs when used."""
    with_stats = len(node.output_values) > 1 and any(node.output_values[1:])
    module = LayerNormalization(int(node.attributes.get("axis", -1)), float(node.attributes.get("epsilon", 1e-5)), with_stats)
    return result(module, node)


@register("BatchNormalization", (9, 14, 15), replaces=True)
def convert_batch_norm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """BatchNormalization-9/14/15 on an input of any rank, known or not (:class:`BatchNormInference`);
    training_mode=1 (single-op graphs such as ONNX's conformance cases ask for batch statistics)
    gets :class:`BatchNormTraining`."""
    epsilon = float(node.attributes.get("epsilon", 1e-5))
    if int(node.attributes.get("training_mode", 0)):
        return result(BatchNormTraining(epsilon, float(node.attributes.get("momentum", 0.9)), len(node.output_values)), node)
    if len([o for o in node.output_values if o]) > 1:
        raise NotImplementedError("BatchNormalization with running mean/var outputs outside training mode")
    return result(BatchNormInference(epsilon), node, 5)


@register("BatchNormalization", (7,))
def convert_batch_norm_7(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """BatchNormalization-7 at inference with per-channel statistics (spatial=1, the default)."""
    if not int(node.attributes.get("spatial", 1)):
        raise NotImplementedError("BatchNormalization-7 with spatial=0 (per-activation statistics)")
    if len([o for o in node.output_values if o]) > 1:
        raise NotImplementedError("BatchNormalization-7 with running mean/var outputs (training)")
    return result(BatchNormInference(float(node.attributes.get("epsilon", 1e-5))), node, 5)


register("GroupNormalization", (18,))(_group_normalization(per_group_affine=True))
register("GroupNormalization", (21,))(_group_normalization(per_group_affine=False))
