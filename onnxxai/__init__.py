"""onnxxai: verified explanations for ONNX models from any training framework.

Public names are imported on first use (PEP 562), so ``import onnxxai`` stays light and the
onnxruntime-only parts (:func:`load_runtime`, black-box analyzers, metrics) work without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from onnxxai.errors import (
    AnalyzerError,
    MemoryLimitError,
    ResourceLimitError,
    TimeLimitError,
    ConversionError,
    ExternalDataError,
    InputError,
    ModelFileError,
    NormalizationError,
    NotDifferentiableError,
    OnnxxaiError,
    ParityError,
    UnsupportedOpError,
)
from onnxxai.explanation import Explanation
# eager, not lazy: the submodule onnxxai.heatmap shares the function's name, and importing the module
# anywhere would otherwise leave the module, not the function, as onnxxai.heatmap
from onnxxai.heatmap import heatmap, save_png
from onnxxai.selectors import IndexSelector, MaxActivation, OutputSelector, PerSampleSelector

__version__ = "0.1.0"

#: Public name -> the module that defines it (imported when the name is first used).
_LAZY: dict[str, str] = {
    **dict.fromkeys(["Model", "TensorSpec", "load"], "onnxxai.model"),
    "ParityReport": "onnxxai.parity",
    **dict.fromkeys(["RuntimeModel", "load_runtime"], "onnxxai.runtime"),
    **dict.fromkeys(["BoundaryError", "split"], "onnxxai.graph"),
    **dict.fromkeys(["explain_dataset", "read_results"], "onnxxai.dataset"),
    **dict.fromkeys(["run_audit", "write_report", "AuditSettings"], "onnxxai.audit"),
    **dict.fromkeys([
        "Analyzer", "Target", "Execution", "ModelFunction",
        "Gradient", "GradientAnalyzer", "InputTimesGradient",
        "NoiseAugmentation", "InterpolationAugmentation", "SmoothGrad", "IntegratedGradients", "Normal", "Uniform",
        "GradCAM", "lrp", "LRP", "LRPModelError", "Composite",
        "EpsilonPlus", "EpsilonPlusFlat", "EpsilonAlpha2Beta1", "EpsilonAlpha2Beta1Flat", "EpsilonGammaBox",
    ], "onnxxai.analyzers"),
    **dict.fromkeys(["analyze", "load_any"], "onnxxai.dispatch"),
    **dict.fromkeys([
        "BlackBoxAnalyzer", "Occlusion", "FeatureAblation", "RISE", "KernelSHAP", "LIME", "TreeSHAP",
        "grid_mask", "slic_mask", "column_mask",
    ], "onnxxai.blackbox"),
}

__all__ = [
    "AnalyzerError", "ConversionError", "ExternalDataError", "InputError", "ModelFileError", "NormalizationError",
    "NotDifferentiableError", "OnnxxaiError", "ParityError", "UnsupportedOpError", "Explanation",
    "ResourceLimitError", "TimeLimitError", "MemoryLimitError",
    "IndexSelector", "MaxActivation", "OutputSelector", "PerSampleSelector", *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxxai' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
