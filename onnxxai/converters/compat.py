"""Newer versions whose added attributes only matter in cases we refuse explicitly.

Each converter here checks that the new attributes keep their old meaning for this node and then
delegates to onnx2torch's converter of the older version; otherwise it names what is unsupported.
"""

from __future__ import annotations

from onnx2torch.node_converters.registry import add_converter, get_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult


def convert_cast_19(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Cast-19+: ``saturate`` only affects float8 targets and ``round_mode`` only float4/8, which
    onnx2torch's Cast-13 refuses anyway; otherwise identical."""
    return get_converter(operation_type="Cast", version=13)(node, graph)


for _v in (19, 21, 23, 24, 25):
    add_converter(operation_type="Cast", version=_v)(convert_cast_19)
