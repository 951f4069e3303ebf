"""onnxxai: verified explanations for ONNX models from any training framework."""

from onnxxai.errors import (
    AnalyzerError,
    ConversionError,
    ExternalDataError,
    InputError,
    ModelFileError,
    OnnxxaiError,
    ParityError,
    UnsupportedOpError,
)
from onnxxai.model import Model, TensorSpec, load
from onnxxai.parity import ParityReport
from onnxxai.explanation import Explanation
from onnxxai.selectors import IndexSelector, MaxActivation, OutputSelector, PerSampleSelector
from onnxxai.analyzers import (
    LRP,
    Analyzer,
    Composite,
    EpsilonAlpha2Beta1,
    EpsilonAlpha2Beta1Flat,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    GradCAM,
    Gradient,
    InputTimesGradient,
    IntegratedGradients,
    InterpolationAugmentation,
    LRPModelError,
    NoiseAugmentation,
    Normal,
    SmoothGrad,
    Uniform,
    analyze,
    lrp,
)
from onnxxai.graph import BoundaryError, split
from onnxxai.heatmap import heatmap, save_png

__version__ = "0.1.0"
