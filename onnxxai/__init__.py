"""onnxxai: verified explanations for ONNX models from any training framework."""

from onnxxai.errors import (
    AnalyzerError,
    ConversionError,
    ExternalDataError,
    InputError,
    ModelFileError,
    NormalizationError,
    OnnxxaiError,
    ParityError,
    UnsupportedOpError,
)
from onnxxai.model import Model, TensorSpec, load
from onnxxai.parity import ParityReport
from onnxxai.explanation import Explanation
from onnxxai.selectors import IndexSelector, MaxActivation, OutputSelector, PerSampleSelector
from onnxxai.analyzers import *  # noqa: F403 - the analyzers' public names, listed once in onnxxai.analyzers.__all__
from onnxxai.graph import BoundaryError, split
from onnxxai.heatmap import heatmap, save_png

__version__ = "0.1.0"
