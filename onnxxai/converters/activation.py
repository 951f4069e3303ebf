"""Activations onnx2torch lacks or limits: Gelu-20, Dropout before opset 10, Clip with run-time bounds."""

from __future__ import annotations

import torch
from onnx2torch.node_converters.registry import add_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

from onnxxai.converters._util import extend_converter, result


def convert_gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Gelu with ``approximate`` = "none" (erf) or "tanh"."""
    approximate = node.attributes.get("approximate", "none")
    if isinstance(approximate, bytes):
        approximate = approximate.decode()
    if approximate not in ("none", "tanh"):
        raise NotImplementedError(f"Gelu approximate={approximate!r} is not supported")
    return result(torch.nn.GELU(approximate=approximate), node)


add_converter(operation_type="Gelu", version=20)(convert_gelu)


class DropoutInference(torch.nn.Module):
    """Dropout at inference: the identity (with a placeholder for an unused mask output)."""

    def __init__(self, with_mask: bool = False) -> None:
        super().__init__()
        self.with_mask = with_mask

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, None]:
        return (x, None) if self.with_mask else x


def convert_dropout_7(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Dropout-1/6/7 (no training_mode input): identity at inference; the mask output is refused."""
    if len(node.output_values) > 1 and node.output_values[1] and _is_consumed(node.output_values[1], graph):
        raise NotImplementedError("Dropout's mask output is used by the graph; only the data output is supported")
    return OperationConverterResult(
        torch_module=DropoutInference(with_mask=len(node.output_values) > 1),
        onnx_mapping=OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values),
    )


def _is_consumed(value: str, graph: OnnxGraph) -> bool:
    return value in graph.output_values or any(value in n.input_values for n in graph.nodes.values())


for _v in (1, 6, 7):
    add_converter(operation_type="Dropout", version=_v)(convert_dropout_7)


class ClipDynamic(torch.nn.Module):
    """Clip with min and/or max computed by the graph at run time."""

    def forward(self, x: torch.Tensor, low: torch.Tensor | None = None, high: torch.Tensor | None = None) -> torch.Tensor:
        return torch.clamp(x, low, high)


def convert_clip(node: OnnxNode, graph: OnnxGraph, fallback) -> OperationConverterResult:
    """Clip-11/12/13: onnx2torch's module for constant bounds, ours when a bound is a graph value."""
    bounds = [name for name in node.input_values[1:3] if name]
    if all(name in graph.initializers or _is_constant_node(name, graph) for name in bounds):
        return fallback(node, graph)
    return result(ClipDynamic(), node)


def _is_constant_node(name: str, graph: OnnxGraph) -> bool:
    try:
        producer, _ = graph.value_as_node_output(name)
    except KeyError:
        return False
    return producer.operation_type == "Constant"


for _v in (11, 12, 13):
    extend_converter("Clip", _v, convert_clip)


class Selu(torch.nn.Module):
    """SELU with the node's own alpha and gamma (torch's nn.SELU fixes both)."""

    def __init__(self, alpha: float, gamma: float) -> None:
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * torch.where(x > 0, x, self.alpha * (torch.exp(x) - 1))


def convert_selu(node: OnnxNode, graph: OnnxGraph, fallback) -> OperationConverterResult:  # noqa: ARG001
    """Selu with any alpha/gamma (defaults 1.67326..., 1.0507...)."""
    return result(Selu(float(node.attributes.get("alpha", 1.67326319217681884765625)),
                       float(node.attributes.get("gamma", 1.05070102214813232421875))), node)


extend_converter("Selu", 6, convert_selu)
