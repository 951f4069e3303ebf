"""One small hierarchy of errors users can catch.

Every error raised on purpose by onnxxai derives from :class:`OnnxxaiError`; the subclasses name
what went wrong (the file, the node, the op, the input) so that a message alone tells the user
what to do next.
"""

from __future__ import annotations

from typing import Protocol


class _Report(Protocol):
    """What an error needs of a report (:class:`onnxxai.parity.ParityReport` is one): a one-line summary
    and the first diverging node ("" when not known)."""

    diverging: str

    def summary(self) -> str: ...

__all__ = [
    "OnnxxaiError",
    "ModelFileError",
    "ExternalDataError",
    "UnsupportedOpError",
    "ConversionError",
    "NormalizationError",
    "ParityError",
    "InputError",
    "AnalyzerError",
    "NotDifferentiableError",
    "BoundaryError",
    "ResourceLimitError",
    "TimeLimitError",
    "MemoryLimitError",
]


class OnnxxaiError(Exception):
    """Base class of every error onnxxai raises on purpose."""


class ModelFileError(OnnxxaiError):
    """The model file cannot be read or is not a valid ONNX model (truncated, corrupt, fails the checker)."""


class ExternalDataError(OnnxxaiError):
    """External tensor data is missing, or its location escapes the model's own folder."""


class UnsupportedOpError(OnnxxaiError):
    """A node's operator has no converter (names the op, domain, opset and node)."""

    def __init__(self, op_type: str, domain: str, opset: int, node_name: str, detail: str = "") -> None:
        self.op_type, self.domain, self.opset, self.node_name = op_type, domain, opset, node_name
        where = f"{domain or 'ai.onnx'}::{op_type} (opset {opset}) at node {node_name!r}"
        msg = f"unsupported operator {where}"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)


class ConversionError(OnnxxaiError):
    """The graph could not be turned into a torch graph for a reason other than a missing converter."""


class NormalizationError(ConversionError):
    """A normalization pass failed part way, so the graph it edited cannot be trusted (names the pass)."""

    def __init__(self, message: str, pass_name: str = "") -> None:
        self.pass_name = pass_name
        super().__init__(message)


class ParityError(OnnxxaiError):
    """The converted torch graph does not compute what onnxruntime computes on the original file."""

    def __init__(self, report: _Report, label: str = "") -> None:
        self.report = report  #: the failing :class:`onnxxai.parity.ParityReport`
        node = report.diverging  # the first diverging node, first: a cut message still names it
        super().__init__(
            f"{label + ': ' if label else ''}{node + ': ' if node else ''}converted graph disagrees with onnxruntime: "
            f"{report.summary()}. "
            "Explanations of this graph would not explain the original model; "
            "pass strict=False to load it anyway (every explanation then carries this report)."
        )


class InputError(OnnxxaiError):
    """An input does not fit the model (wrong name, shape, dtype, or contains NaN/Inf)."""


class AnalyzerError(OnnxxaiError):
    """An analyzer was given arguments it cannot work with (bad output selection, baseline shape, ...)."""


class NotDifferentiableError(AnalyzerError):
    """The explained output depends on the input through a piecewise-constant node (a tree ensemble,
    a threshold, a one-hot code): its gradient is zero almost everywhere, so gradient methods cannot
    explain it; names the node and the black-box methods that can."""


class BoundaryError(OnnxxaiError):
    """A boundary is not a cut of the graph, or no tensor fits as a GradCAM boundary."""


class ResourceLimitError(OnnxxaiError):
    """A file or input asks for more time or memory than the budget allows (see :mod:`onnxxai.proto.limits`)."""


class TimeLimitError(ResourceLimitError):
    """A stage that runs the model (parity probe, gradient check, boundary probe, analysis) ran past its
    time budget; names the file, the stage and the node running when it was stopped (when known)."""

    def __init__(self, label: str, stage: str, seconds: float, node: str = "") -> None:
        self.label, self.stage, self.seconds, self.node = label, stage, seconds, node
        where = f" (stopped at {node})" if node else ""
        super().__init__(
            f"{label}: {stage} ran past its time budget of {seconds:g} s{where}; "
            "a loop that never ends? pass a larger timeout (load(timeout=...), --timeout) if the file is known to be slow"
        )


class MemoryLimitError(ResourceLimitError):
    """A tensor the file declares, or one a node would allocate, is larger than the memory budget; names
    the file, the node (or tensor) and the size."""

    def __init__(self, label: str, what: str, nbytes: int, budget: int, node: str = "") -> None:
        self.label, self.what, self.nbytes, self.budget, self.node = label, what, nbytes, budget, node
        super().__init__(
            f"{label}: {what} would need {_size(nbytes)}, more than the memory budget of {_size(budget)}; "
            "refused before allocating it (pass a larger memory_limit / --memory-limit if the file is meant to be this big)"
        )


def _size(nbytes: int) -> str:
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024 or unit == "EiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{nbytes} B"  # pragma: no cover
