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


def convert_resize_18(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Resize-18/19: same as Resize-13 unless antialiasing, ``axes``, an aspect-ratio policy or the
    ``half_pixel_symmetric`` coordinate mode are asked for."""
    attrs = node.attributes
    unsupported = []
    if int(attrs.get("antialias", 0)):
        unsupported.append("antialias=1")
    if attrs.get("axes") is not None:
        unsupported.append(f"axes={list(attrs['axes'])}")
    policy = attrs.get("keep_aspect_ratio_policy", "stretch")
    if policy not in ("stretch", b"stretch"):
        unsupported.append(f"keep_aspect_ratio_policy={policy!r}")
    if attrs.get("coordinate_transformation_mode") in ("half_pixel_symmetric", b"half_pixel_symmetric"):
        unsupported.append("coordinate_transformation_mode='half_pixel_symmetric'")
    if unsupported:
        raise NotImplementedError(f"Resize with {', '.join(unsupported)} is not supported")
    return get_converter(operation_type="Resize", version=13)(node, graph)


for _v in (19, 21, 23, 24, 25):
    add_converter(operation_type="Cast", version=_v)(convert_cast_19)
for _v in (18, 19):
    add_converter(operation_type="Resize", version=_v)(convert_resize_18)
