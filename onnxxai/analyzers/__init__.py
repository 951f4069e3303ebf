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
from onnxxai.analyzers.gradcam import GradCAM
from onnxxai.analyzers.gradient import Gradient, GradientAnalyzer, InputTimesGradient
from onnxxai.analyzers import lrp
from onnxxai.analyzers.lrp import (
    LRP,
    Composite,
    EpsilonAlpha2Beta1,
    EpsilonAlpha2Beta1Flat,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    LRPModelError,
)

__all__ = [
    "Analyzer",
    "ModelFunction",
    "analyze",
    "GradCAM",
    "Gradient",
    "GradientAnalyzer",
    "InputTimesGradient",
    "NoiseAugmentation",
    "InterpolationAugmentation",
    "SmoothGrad",
    "IntegratedGradients",
    "Normal",
    "Uniform",
    "lrp",
    "LRP",
    "LRPModelError",
    "Composite",
    "EpsilonPlus",
    "EpsilonPlusFlat",
    "EpsilonAlpha2Beta1",
    "EpsilonAlpha2Beta1Flat",
    "EpsilonGammaBox",
]
