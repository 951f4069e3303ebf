"""The torch-free front: :func:`analyze` runs black-box analyzers on onnxruntime alone and gradient
analyzers on the torch graph; :func:`load_any` gives the converted Model when the file converts and
its :class:`~onnxxai.runtime.RuntimeModel` (with the reason kept) when it does not. This module imports
no torch; the torch paths are imported only when used."""

from __future__ import annotations

from typing import Any

from onnxxai.blackbox.base import BlackBoxAnalyzer, analyze_blackbox
from onnxxai.errors import AnalyzerError, ConversionError, ParityError, UnsupportedOpError
from onnxxai.explanation import Explanation
from onnxxai.runtime import load_runtime

__all__ = ["analyze", "load_any"]


def analyze(input: Any, analyzer: Any, output_selection: Any = None) -> Explanation:
    """Explain ``input`` with ``analyzer`` for ``output_selection`` (None: each sample's largest
    output; an int: that output for every sample; a sequence: one per sample; or a selector).
    numpy in gives numpy out; torch in gives torch out on the input's device."""
    if isinstance(analyzer, BlackBoxAnalyzer):
        return analyze_blackbox(input, analyzer, output_selection)
    try:
        from onnxxai.analyzers.core import analyze as analyze_gradient
    except ImportError as exc:
        raise AnalyzerError(
            f"{type(analyzer).__name__} needs torch ({exc}); without it use a black-box method "
            "(onnxxai.Occlusion, FeatureAblation, RISE, KernelSHAP, LIME, TreeSHAP) on onnxxai.load_runtime(path)"
        ) from exc
    return analyze_gradient(input, analyzer, output_selection)


def load_any(source: Any, **load_options: Any) -> Any:
    """:func:`onnxxai.load` when the file converts to torch and passes its parity check, else
    :func:`onnxxai.load_runtime` of the original file with ``conversion_error`` saying why not (an
    op without converter, a failed conversion, a parity failure, torch not installed). Gradient
    methods refuse the runtime-only model naming the black-box methods, which explain it."""
    try:
        from onnxxai.model import load
    except ImportError as exc:
        return load_runtime(source, conversion_error=f"torch is not available ({exc})")
    try:
        return load(source, **load_options)
    except (UnsupportedOpError, ConversionError, ParityError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
    return load_runtime(source, conversion_error=reason)
