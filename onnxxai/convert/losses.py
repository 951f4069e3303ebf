"""Loss ops (NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss).

Written out with gather / where rather than ``F.nll_loss`` so that ONNX's rules hold exactly:
targets equal to ``ignore_index`` (which may be negative or beyond the class count) contribute
nothing and drop out of the ``mean`` denominator, which is the sum of the selected class weights.
Both are differentiable in the scores.
"""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import result
from onnxxai.convert.registry import register, since

_REDUCTIONS = ("none", "sum", "mean")


def nll_loss(log_prob: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, reduction: str,
             ignore_index: int | None) -> torch.Tensor:
    """ONNX NegativeLogLikelihoodLoss of ``log_prob`` (N, C, d1, ...) against ``target`` (N, d1, ...)."""
    target = target.to(torch.int64)
    keep = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    safe = torch.where(keep, target, torch.zeros_like(target))
    picked = -torch.gather(log_prob, 1, safe.unsqueeze(1)).squeeze(1)
    w = torch.ones_like(picked) if weight is None else weight.to(log_prob.dtype)[safe]
    w = torch.where(keep, w, torch.zeros_like(w))
    loss = picked * w
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / w.sum()


def _attributes(node: OnnxNode, op: str) -> tuple[str, int | None]:
    reduction = node.attributes.get("reduction", "mean")
    reduction = reduction.decode() if isinstance(reduction, bytes) else str(reduction)
    if reduction not in _REDUCTIONS:
        raise NotImplementedError(f"{op} with reduction={reduction!r} is not supported")
    ignore = node.attributes.get("ignore_index")
    return reduction, None if ignore is None else int(ignore)


class NegativeLogLikelihoodLoss(torch.nn.Module):
    """ONNX NegativeLogLikelihoodLoss: minus the (class-weighted) input at each target class,
    reduced by ``none`` / ``sum`` / ``mean`` (weighted mean), skipping ``ignore_index`` targets."""

    def __init__(self, reduction: str, ignore_index: int | None) -> None:
        super().__init__()
        self.reduction, self.ignore_index = reduction, ignore_index

    def forward(self, x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        return nll_loss(x, target, weight, self.reduction, self.ignore_index)


class SoftmaxCrossEntropyLoss(torch.nn.Module):
    """ONNX SoftmaxCrossEntropyLoss: log-softmax over the class axis (1) followed by
    :func:`nll_loss`; optionally also returns the log-probabilities (second output)."""

    def __init__(self, reduction: str, ignore_index: int | None, with_log_prob: bool) -> None:
        super().__init__()
        self.reduction, self.ignore_index, self.with_log_prob = reduction, ignore_index, with_log_prob

    def forward(self, scores: torch.Tensor, labels: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        log_prob = torch.log_softmax(scores, dim=1)
        loss = nll_loss(log_prob, labels, weights, self.reduction, self.ignore_index)
        return (loss, log_prob) if self.with_log_prob else loss


@register("NegativeLogLikelihoodLoss", since(1))
def convert_nll_loss(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """NegativeLogLikelihoodLoss-12/13/22."""
    return result(NegativeLogLikelihoodLoss(*_attributes(node, "NegativeLogLikelihoodLoss")), node)


@register("SoftmaxCrossEntropyLoss", since(1))
def convert_softmax_cross_entropy(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """SoftmaxCrossEntropyLoss-12/13, with the optional log_prob output."""
    with_log_prob = len(node.output_values) > 1 and bool(node.output_values[1])
    return result(SoftmaxCrossEntropyLoss(*_attributes(node, "SoftmaxCrossEntropyLoss"), with_log_prob), node)
