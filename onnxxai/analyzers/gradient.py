"""Gradient and Input×Gradient: one forward and one backward per chunk of the batch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from onnxxai.analyzers.base import Analyzer, ModelFunction, chunks, row_targets, select
from onnxxai.errors import AnalyzerError
from onnxxai.explanation import Explanation
from onnxxai.model import Model
from onnxxai.selectors import OutputSelector

__all__ = ["GradientAnalyzer", "Gradient", "InputTimesGradient"]


class GradientAnalyzer(Analyzer):
    """Base of analyzers computed from the gradient of the selected output w.r.t. the input.

    Subclasses define :meth:`combine` (what to make of input and gradient). ``batch_size`` bounds
    the rows per forward/backward (None: the whole batch at once). ``precision`` is "float32"
    (default; no TF32 either), "tf32" or "bf16" (autocast); ``compile=True`` runs the graph through
    ``torch.compile``; ``check_precision=True`` also runs float32 and reports the attribution's
    relative L2 error and cosine similarity in ``extras["precision_error"]``. ``attribute_at``
    names an ONNX tensor to attribute at instead of the input (integer inputs default to the
    first float tensor computed from them; see :class:`ModelFunction`).
    """

    def __init__(
        self,
        model: Model,
        *,
        input_name: str | None = None,
        output_name: str | None = None,
        fixed_inputs: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
        precision: str = "float32",
        compile: bool = False,
        check_precision: bool = False,
        attribute_at: str | None = None,
    ) -> None:
        self.function = ModelFunction(model, input_name, output_name, fixed_inputs, precision, compile, attribute_at)
        self.check_precision = bool(check_precision)
        if batch_size is not None and int(batch_size) < 1:
            raise AnalyzerError(f"batch_size must be a positive integer, got {batch_size}")
        self.batch_size = batch_size

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
                raise AnalyzerError(
                    f"output {self.function.output_name!r} does not depend differentiably on input "
                    f"{self.function.input_name!r} (no gradient path: integer casts, argmax, ...)"
                )
            (grad,) = torch.autograd.grad(select(out, index).sum(), rows)
        return self.combine(rows.detach(), grad.to(rows.dtype)), out.detach(), index

    def explain(self, input: torch.Tensor, selector: OutputSelector) -> Explanation:
        n = input.shape[0]
        pieces = list(chunks(n, self.batch_size))
        targets = row_targets(selector, pieces, lambda: self.function.output(input))
        vals, outs, idxs = [], [], []
        for start, stop in pieces:
            sample_index = torch.arange(start, stop, device=input.device)
            target = targets if not isinstance(targets, torch.Tensor) else targets[start:stop]
            val, out, idx = self.attribute_rows(input[start:stop], sample_index, target)
            vals.append(val)
            outs.append(out)
            idxs.append(idx)
        return Explanation(
            torch.cat(vals), input, torch.cat(outs), torch.cat(idxs), self.name, self.heatmap,
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
