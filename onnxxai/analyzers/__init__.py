"""Analyzers: one file per family."""

from onnxxai.analyzers.augment import (
    IntegratedGradients,
    InterpolationAugmentation,
    NoiseAugmentation,
    Normal,
    SmoothGrad,
    Uniform,
)
from onnxxai.analyzers.base import Analyzer, ModelFunction, analyze
from onnxxai.analyzers.gradient import Gradient, GradientAnalyzer, InputTimesGradient

__all__ = [
    "Analyzer",
    "ModelFunction",
    "analyze",
    "Gradient",
    "GradientAnalyzer",
    "InputTimesGradient",
    "NoiseAugmentation",
    "InterpolationAugmentation",
    "SmoothGrad",
    "IntegratedGradients",
    "Normal",
    "Uniform",
]
