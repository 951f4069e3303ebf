"""Gradient and Input×Gradient: one forward and one backward per chunk of the batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from onnxxai.analyzers.batching import run_samples
from onnxxai.analyzers.core import Analyzer
from onnxxai.analyzers.function import ModelFunction, select
from onnxxai.analyzers.stops import find_gradient_stop
from onnxxai.analyzers.target import GRADIENT_OPTIONS, GradientOptions, Target, split_options
from onnxxai.errors import AnalyzerError
from onnxxai.explanation import Explanation
from onnxxai.model import Model
from onnxxai.selectors import OutputSelector

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["GradientAnalyzer", "Gradient", "InputTimesGradient"]


class GradientAnalyzer(Analyzer):
    """Base of analyzers computed from the gradient of the selected output w.r.t. the input.

    Subclasses define :meth:`combine` (what to make of input and gradient). ``batch_size`` bounds
    the rows per forward/backward (None: the whole batch at once). ``precision`` is "float32"
    (default; no TF32 either), "tf32" or "bf16" (autocast); ``compile=True`` runs the graph through
    ``torch.compile``; ``check_precision=True`` also runs float32 and reports the attribution's
    relative L2 error and cosine similarity in ``extras["precision_error"]``. ``attribute_at``
    names an ONNX tensor to attribute at instead of the input (integer inputs default to the
    first float tensor computed from them; see :class:`ModelFunction`). ``target=Target(...)``
    gives ``input_name``, ``output_name``, ``fixed_inputs`` and ``attribute_at`` as one value.
    """

    gradient_based = True

    def __init__(self, model: Model, *, target: Target | None = None, **options: Unpack[GradientOptions]) -> None:
        target, self.execution = split_options(type(self).__name__, target, options, GRADIENT_OPTIONS)
        self.function = ModelFunction(model, target, self.execution)

    def combine(self, rows: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The attribution of each row from the row and its gradient."""
        raise NotImplementedError

    def attribute_rows(
        self, rows: torch.Tensor, sample_index: torch.Tensor, target: torch.Tensor | OutputSelector
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One forward and one backward over ``rows``; returns (attribution, output, target index).

        ``target`` is either the flat output index of each row or a row-wise selector.
        """
        with torch.enable_grad():
            rows = rows.detach().requires_grad_(True)
            out = self.function(rows, sample_index)
            index = target if isinstance(target, torch.Tensor) else target(out.detach())
            if not out.requires_grad:
                stop = find_gradient_stop(self.function, rows.detach(), index if isinstance(index, torch.Tensor)
                                          else torch.as_tensor(index), list(range(rows.shape[0])), sample_index)
                where = f"; it stops at node {stop.node!r} ({stop.module}): {stop.reason}" if stop else ""
                raise AnalyzerError(
                    f"output {self.function.output_name!r} does not depend differentiably on input "
                    f"{self.function.input_name!r} (no gradient path: integer casts, argmax, ...){where}"
                )
            (grad,) = torch.autograd.grad(select(out, index).sum(), rows)
        return self.combine(rows.detach(), grad.to(rows.dtype)), out.detach(), index

    def explain(self, input: torch.Tensor, selector: OutputSelector) -> Explanation:
        val, out, idx = run_samples(self.attribute_rows, input, selector, self.execution.batch_size, self.function.output)
        return Explanation(
            val, input, out, idx, self.name, self.heatmap,
            {"input_name": self.function.input_name, "output_name": self.function.output_name},
        )


class Gradient(GradientAnalyzer):
    """Sensitivity: the gradient of the selected output with respect to the input."""

    heatmap = "sensitivity"

    def combine(self, rows: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad


class InputTimesGradient(GradientAnalyzer):
    """Attribution: the input times the gradient of the selected output, element-wise."""

    heatmap = "attribution"

    def combine(self, rows: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return rows * grad
