"""Helpers shared by onnxxai's converters."""

from __future__ import annotations

from contextvars import ContextVar

import onnx
import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult


#: The ModelProto being converted (set by :func:`onnxxai.model.convert`): converters of nodes with
#: subgraph bodies read its opset imports, IR version and functions, which onnx2torch does not pass.
CONVERTING: ContextVar[onnx.ModelProto | None] = ContextVar("onnxxai_converting", default=None)


def enclosing_model(graph: OnnxGraph) -> onnx.ModelProto | None:  # noqa: ARG001 - kept for call sites' clarity
    """The model being converted (onnx2torch converts a shape-inferred copy of it: same opsets,
    same functions), or None outside :func:`onnxxai.model.convert`."""
    return CONVERTING.get()


def constant_input(node: OnnxNode, graph: OnnxGraph, index: int) -> torch.Tensor | None:
    """The value of the node's ``index``-th input if it is an initializer, else None (absent or dynamic)."""
    if index >= len(node.input_values) or not node.input_values[index]:
        return None
    name = node.input_values[index]
    if name in graph.initializers:
        return graph.initializers[name].to_torch()
    return None


def result(module: torch.nn.Module, node: OnnxNode, n_inputs: int | None = None) -> OperationConverterResult:
    """A converter result that feeds the module the node's first ``n_inputs`` inputs (all by default)."""
    inputs = node.input_values if n_inputs is None else node.input_values[:n_inputs]
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=inputs, outputs=node.output_values))


def extend_converter(op_type: str, version: int, converter, domain: str = "") -> None:
    """Put ``converter(node, graph, fallback)`` in front of onnx2torch's registered converter.

    Used where onnx2torch has a converter for a version but refuses some attribute combinations
    (e.g. asymmetric pads): ours handles those cases and calls ``fallback`` for everything else.
    """
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription

    key = OperationDescription(domain=domain, operation_type=op_type, version=version)
    fallback = _CONVERTER_REGISTRY[key]

    def extended(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        return converter(node, graph, fallback)

    extended.__name__ = extended.__qualname__ = f"{converter.__name__}_v{version}"
    extended.__doc__ = converter.__doc__
    _CONVERTER_REGISTRY[key] = extended


def schema_versions(op_type: str, domain: str = "", since: int = 1) -> list[int]:
    """Every opset version at which ``op_type``'s schema changed, from ``since`` on."""
    from onnx import defs

    return sorted({s.since_version for s in defs.get_all_schemas_with_history()
                   if s.name == op_type and s.domain == domain and s.since_version >= since})


def register_all_versions(op_type: str, converter, since: int = 1) -> None:
    """Register ``converter`` for every schema version of ``op_type`` not yet in onnx2torch's registry."""
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter

    for version in schema_versions(op_type, since=since):
        if OperationDescription(domain="", operation_type=op_type, version=version) not in _CONVERTER_REGISTRY:
            add_converter(operation_type=op_type, version=version)(converter)


def torch_pads(onnx_pads: list[int]) -> list[int]:
    """ONNX pads ``[b1, b2, ..., e1, e2, ...]`` as F.pad's ``[b_last, e_last, ..., b1, e1]``."""
    rank = len(onnx_pads) // 2
    out: list[int] = []
    for d in reversed(range(rank)):
        out += [int(onnx_pads[d]), int(onnx_pads[d + rank])]
    return out
