"""Ops of the ai.onnx.ml domain that classifier exports (skl2onnx) put beside the network."""

from __future__ import annotations

import torch
from onnx2torch.node_converters.registry import add_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.converters._util import result

#: onnx2torch names each module "<domain>/<node>", and torch refuses dots in module names, so the
#: normalization pass ``alias_dotted_domains`` renames ai.onnx.ml to this before conversion.
ML_DOMAIN = "ai_onnx_ml"


class ArrayFeatureExtractor(torch.nn.Module):
    """``x[..., indices]``: entries of the last axis (skl2onnx maps argmax to class labels with it).
    A 1-D ``x`` gives shape (1, k), as onnxruntime does."""

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        out = x.index_select(-1, indices.reshape(-1).long())
        return out.reshape(1, -1) if x.dim() == 1 else out


def convert_array_feature_extractor(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """ArrayFeatureExtractor (ai.onnx.ml, opset 1)."""
    return result(ArrayFeatureExtractor(), node)


class Binarizer(torch.nn.Module):
    """1 where ``x > threshold``, else 0, in x's dtype (a step function: its gradient is zero)."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.threshold).to(x.dtype)


def convert_binarizer(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Binarizer (ai.onnx.ml, opset 1; threshold default 0)."""
    return result(Binarizer(float(node.attributes.get("threshold", 0.0))), node)


add_converter(operation_type="ArrayFeatureExtractor", version=1, domain=ML_DOMAIN)(convert_array_feature_extractor)
add_converter(operation_type="Binarizer", version=1, domain=ML_DOMAIN)(convert_binarizer)
