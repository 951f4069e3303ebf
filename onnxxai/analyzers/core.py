"""The analyzer interface and analyze(): input checks, attribution at a tap tensor, array types."""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch

from onnxxai.analyzers.function import ModelFunction
from onnxxai.analyzers.stops import find_gradient_stop
from onnxxai.analyzers.target import Execution
from onnxxai.errors import AnalyzerError
from onnxxai.explanation import Explanation
from onnxxai.model import Model
from onnxxai.selectors import OutputSelector, as_selector

__all__ = ["Analyzer", "analyze", "GradientStopWarning"]


class GradientStopWarning(UserWarning):
    """A gradient attribution is identically zero although the selected output varies with the input."""


class Analyzer(ABC):
    """An explanation method. Subclasses implement :meth:`explain` on a torch batch.

    ``analyzer(input, output_selection)`` is the same as ``analyze(input, analyzer, output_selection)``.
    An analyzer that sets ``function`` (a :class:`ModelFunction`) or ``model`` (a :class:`Model`)
    gets its input validated against the model, as a tensor on the model's device, and the
    model's parity report in ``extras``; one whose ``execution`` asks for ``check_precision`` gets
    the error of its reduced precision against float32 in ``extras["precision_error"]``.
    """

    #: preset drawing style of this analyzer's explanations
    heatmap: str = "sensitivity"
    #: the explained model (a custom analyzer may set only this)
    model: Model | None = None
    #: the differentiable function gradient methods run; its model wins over ``model``
    function: ModelFunction | None = None
    #: batch size and numerics
    execution: Execution = Execution()
    #: attributions come from the gradient of ``function``: an all-zero one is checked (see :func:`analyze`)
    gradient_based: bool = False

    @property
    def name(self) -> str:
        return type(self).__name__

    @abstractmethod
    def explain(self, input: torch.Tensor, selector: OutputSelector) -> Explanation:
        """Explain a batch ``input`` (a tensor on the model's device) for the outputs ``selector`` picks."""

    def __call__(self, input: Any, output_selection: Any = None) -> Explanation:
        return analyze(input, self, output_selection)


def analyze(input: Any, analyzer: Analyzer, output_selection: Any = None) -> Explanation:
    """Explain ``input`` with ``analyzer`` for ``output_selection`` (None: each sample's max output).

    numpy in gives numpy out; torch in gives torch out on the input's device. A gradient method
    whose attribution of a sample is identically zero although the selected output varies with the
    input warns (:class:`GradientStopWarning`) naming the node where the gradient stops, and the
    explanation carries it in ``extras["gradient_stop"]`` and ``extras["warning"]``.
    """
    if not isinstance(analyzer, Analyzer):
        raise AnalyzerError(f"expected an onnxxai analyzer, got {type(analyzer).__name__}")
    function = analyzer.function
    model = function.model if function is not None else analyzer.model
    if isinstance(model, Model):
        x = model.as_tensor(function.input_name if function is not None else model.input_spec().name, input)
    else:
        x = input.detach() if isinstance(input, torch.Tensor) else torch.as_tensor(np.asarray(input))
    selector = as_selector(output_selection)
    if function is not None and function.tap is not None:
        with function.bound(x) as rows:
            expl = _explain(analyzer, function, rows, selector)
        _attribute_to_input(expl, function, x)
    else:
        expl = _explain(analyzer, function, x, selector)
        if analyzer.gradient_based and function is not None:
            _check_gradient_stop(expl, function, x)
    if isinstance(model, Model):
        report = model.parity
        expl.extras.setdefault("parity", report)
        if not report.ok:
            expl.extras["warning"] = "the converted graph failed its parity check: " + report.summary()
    return _follow_input_type(expl, input)


def _explain(analyzer: Analyzer, function: ModelFunction | None, x: torch.Tensor, selector: OutputSelector) -> Explanation:
    expl = analyzer.explain(x, selector)
    if function is not None and analyzer.execution.check_precision and function.precision != "float32":
        expl.extras["precision_error"] = _precision_error(analyzer, function, x, selector, expl)
    return expl


def _check_gradient_stop(expl: Explanation, function: ModelFunction, x: torch.Tensor) -> None:
    """Warn when some sample's attribution is all zeros and a node blocks the gradient (cheap when
    no attribution is all zeros: one reduction)."""
    val = expl.val
    if not isinstance(val, torch.Tensor) or val.dim() == 0 or val.shape[0] != x.shape[0]:
        return
    zero = (val.reshape(val.shape[0], -1) == 0).all(dim=1)
    if not bool(zero.any()):
        return
    stop = find_gradient_stop(function, x, torch.as_tensor(expl.output_selection).reshape(-1),
                              [int(i) for i in zero.nonzero().flatten()])
    if stop is None:
        return
    message = stop.message(function.output_name, function.input_name)
    expl.extras["gradient_stop"] = {"node": stop.node, "module": stop.module, "reason": stop.reason,
                                    "samples": list(stop.samples)}
    expl.extras["warning"] = message
    warnings.warn(message, GradientStopWarning, stacklevel=3)


def _attribute_to_input(expl: Explanation, function: ModelFunction, x: torch.Tensor) -> None:
    """After attributing at the tap tensor: keep its attribution in ``extras["tap_attribution"]``;
    for an integer input whose tap tensor has the input's shape plus feature axes (an embedding),
    ``val`` becomes the sum over those axes, one value per token (sums are preserved, so IG's
    completeness still holds for ``val``)."""
    tap_val = expl.val
    expl.extras["attributed_at"] = function.tap.tensor
    expl.extras["tap_attribution"] = tap_val
    integer = not x.is_floating_point()
    if integer and tap_val.dim() >= x.dim() and tuple(tap_val.shape[: x.dim()]) == tuple(x.shape):
        expl.val = tap_val.sum(dim=tuple(range(x.dim(), tap_val.dim()))) if tap_val.dim() > x.dim() else tap_val


def _precision_error(analyzer: Analyzer, function: ModelFunction, x: torch.Tensor, selector, expl: Explanation) -> dict:
    """Relative L2 distance and cosine similarity of the attribution to a float32 run (same selection)."""
    precision, compiled = function.precision, function.compile
    try:
        function.precision, function.compile = "float32", False
        reference = analyzer.explain(x, lambda _out: expl.output_selection).val
    finally:
        function.precision, function.compile = precision, compiled
    a, b = expl.val.double().flatten(), reference.double().flatten()
    return {
        "precision": precision,
        "relative_l2": float((a - b).norm() / b.norm().clamp_min(1e-30)),
        "cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=0)),
    }


def _follow_input_type(expl: Explanation, input: Any) -> Explanation:
    if isinstance(input, torch.Tensor):
        device = input.device
        expl.val = expl.val.detach().to(device)
        expl.output = expl.output.detach().to(device)
        expl.output_selection = expl.output_selection.to(device)
    else:
        expl.val = expl.val.detach().cpu().numpy()
        expl.output = expl.output.detach().cpu().numpy()
        expl.output_selection = expl.output_selection.detach().cpu().numpy()
        for key, value in list(expl.extras.items()):
            if isinstance(value, torch.Tensor):
                expl.extras[key] = value.detach().cpu().numpy()
    expl.input = input
    return expl
