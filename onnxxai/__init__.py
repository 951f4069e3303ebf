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

__version__ = "0.1.0"
from onnxxai.explanation import Explanation
from onnxxai.selectors import IndexSelector, MaxActivation, OutputSelector, PerSampleSelector
from onnxxai.heatmap import heatmap, save_png
from onnxxai.analyzers import (
    Analyzer,
    Gradient,
    InputTimesGradient,
    IntegratedGradients,
    InterpolationAugmentation,
    NoiseAugmentation,
    Normal,
    SmoothGrad,
    Uniform,
    analyze,
)
