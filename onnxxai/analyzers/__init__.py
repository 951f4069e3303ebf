"""Analyzers: one file per family.

``core`` (Analyzer, analyze), ``target`` (Target, Execution: what to explain and how to run),
``function`` (ModelFunction), ``batching`` (chunked execution), then one module per method family.
``__all__`` is the public set; :mod:`onnxxai` re-exports it.
"""

from onnxxai.analyzers import lrp
from onnxxai.analyzers.augment import IntegratedGradients, InterpolationAugmentation, NoiseAugmentation, Normal, SmoothGrad, Uniform
from onnxxai.analyzers.core import Analyzer, analyze
from onnxxai.analyzers.function import ModelFunction
from onnxxai.analyzers.gradcam import GradCAM
from onnxxai.analyzers.gradient import Gradient, GradientAnalyzer, InputTimesGradient
from onnxxai.analyzers.lrp import (
    LRP, Composite, EpsilonAlpha2Beta1, EpsilonAlpha2Beta1Flat, EpsilonGammaBox, EpsilonPlus, EpsilonPlusFlat, LRPModelError,
)
from onnxxai.analyzers.target import Execution, Target

__all__ = [
    "Analyzer", "analyze", "Target", "Execution", "ModelFunction",
    "Gradient", "GradientAnalyzer", "InputTimesGradient",
    "NoiseAugmentation", "InterpolationAugmentation", "SmoothGrad", "IntegratedGradients", "Normal", "Uniform",
    "GradCAM", "lrp", "LRP", "LRPModelError", "Composite",
    "EpsilonPlus", "EpsilonPlusFlat", "EpsilonAlpha2Beta1", "EpsilonAlpha2Beta1Flat", "EpsilonGammaBox",
]
