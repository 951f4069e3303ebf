"""ONNX graph analysis and fx surgery: data flow and dominators (:mod:`~onnxxai.graph.dataflow`),
GradCAM boundaries (:mod:`~onnxxai.graph.boundaries`), cutting a graph in two
(:mod:`~onnxxai.graph.split`), and finding, capturing or substituting the module of an ONNX tensor
in a converted graph (:mod:`~onnxxai.graph.surgery`)."""

from onnxxai.errors import BoundaryError
from onnxxai.graph.boundaries import (
    MAX_PREFIX_TOKENS,
    Boundary,
    boundaries,
    candidates,
    default_boundary,
    default_cut,
    format_boundaries,
    token_grid,
)
from onnxxai.graph.dataflow import DataFlow
from onnxxai.graph.split import split, verify_split

__all__ = [
    "BoundaryError",
    "Boundary",
    "DataFlow",
    "boundaries",
    "candidates",
    "default_boundary",
    "default_cut",
    "split",
    "verify_split",
    "token_grid",
    "format_boundaries",
    "MAX_PREFIX_TOKENS",
]
