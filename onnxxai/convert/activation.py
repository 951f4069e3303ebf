"""Activations onnx2torch lacks or limits: Gelu-20, Dropout at inference (any opset, with seeds and
mask outputs), Clip with run-time or absent bounds."""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

from onnxxai.convert._util import constant_input, consumers, result
from onnxxai.convert.registry import register


@register("Gelu", (20,))
def convert_gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Gelu with ``approximate`` = "none" (erf) or "tanh"."""
    approximate = node.attributes.get("approximate", "none")
    if isinstance(approximate, bytes):
        approximate = approximate.decode()
    if approximate not in ("none", "tanh"):
        raise NotImplementedError(f"Gelu approximate={approximate!r} is not supported")
    return result(torch.nn.GELU(approximate=approximate), node)


class DropoutInference(torch.nn.Module):
    """Dropout at inference: the identity, whatever the ratio or seed, plus the all-true mask when the
    node has a mask output. A run-time ``training_mode`` of true with a non-zero ratio would need a
    random mask, which cannot be reproduced: it raises instead of silently returning the identity."""

    def __init__(self, with_mask: bool = False) -> None:
        super().__init__()
        self.with_mask = with_mask

    def forward(self, x: torch.Tensor, ratio: torch.Tensor | None = None,
                training_mode: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if training_mode is not None and bool(training_mode) and (ratio is None or float(ratio) != 0.0):
            raise NotImplementedError("Dropout with training_mode=True and ratio > 0 (a random mask) is not supported")
        return (x, torch.ones_like(x, dtype=torch.bool)) if self.with_mask else x


@register("Dropout", (1, 6, 7))
def convert_dropout_7(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Dropout-1/6/7 (no training_mode input): identity at inference; the mask output is refused."""
    if len(node.output_values) > 1 and node.output_values[1] and _is_consumed(node.output_values[1], graph):
        raise NotImplementedError("Dropout's mask output is used by the graph; only the data output is supported")
    return OperationConverterResult(
        torch_module=DropoutInference(with_mask=len(node.output_values) > 1),
        onnx_mapping=OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values),
    )


@register("Dropout", (10, 12, 13, 22), replaces=True)
def convert_dropout(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Dropout-10/12/13/22 at inference (the seed attribute is irrelevant there); mask output all true.

    A constant training_mode of true with a ratio that is not a constant 0 is refused."""
    training = constant_input(node, graph, 2)
    if training is not None and bool(training):
        ratio = constant_input(node, graph, 1) if len(node.input_values) > 1 and node.input_values[1] else torch.tensor(0.5)
        if ratio is None or float(ratio) != 0.0:
            raise NotImplementedError("Dropout with training_mode=1 (a random mask) is not supported")
    with_mask = len(node.output_values) > 1
    return result(DropoutInference(with_mask=with_mask), node)


def _is_consumed(value: str, graph: OnnxGraph) -> bool:
    return value in graph.output_values or bool(consumers(graph, value))


class ClipDynamic(torch.nn.Module):
    """Clip with min and/or max computed by the graph at run time, or absent (the identity)."""

    def forward(self, x: torch.Tensor, low: torch.Tensor | None = None, high: torch.Tensor | None = None) -> torch.Tensor:
        if low is None and high is None:
            return x
        return torch.clamp(x, low, high)


@register("Clip", (11, 12, 13), extends=True)
def convert_clip(node: OnnxNode, graph: OnnxGraph, fallback) -> OperationConverterResult:
    """Clip-11/12/13: onnx2torch's module for constant bounds, ours when a bound is a graph value or
    is skipped with an empty name (onnx2torch looks up the empty name and refuses)."""
    bounds = node.input_values[1:3]
    if all(name and (name in graph.initializers or _is_constant_node(name, graph)) for name in bounds):
        return fallback(node, graph)
    return result(ClipDynamic(), node)


def _is_constant_node(name: str, graph: OnnxGraph) -> bool:
    try:
        producer, _ = graph.value_as_node_output(name)
    except KeyError:
        return False
    return producer.operation_type == "Constant"


class Selu(torch.nn.Module):
    """SELU with the node's own alpha and gamma (torch's nn.SELU fixes both)."""

    def __init__(self, alpha: float, gamma: float) -> None:
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * torch.where(x > 0, x, self.alpha * (torch.exp(x) - 1))


@register("Selu", (6,), replaces=True)
def convert_selu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Selu with any alpha/gamma (defaults 1.67326..., 1.0507...)."""
    return result(Selu(float(node.attributes.get("alpha", 1.67326319217681884765625)),
                       float(node.attributes.get("gamma", 1.05070102214813232421875))), node)
