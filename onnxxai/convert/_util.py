"""Helpers shared by onnxxai's converter families."""

from __future__ import annotations

import weakref
from collections import defaultdict

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult


_CONSUMERS: weakref.WeakKeyDictionary[OnnxGraph, dict[str, list[tuple[OnnxNode, int]]]] = weakref.WeakKeyDictionary()


def consumers(graph: OnnxGraph, name: str) -> list[tuple[OnnxNode, int]]:
    """(node, input index) of every node of ``graph`` that reads ``name``, in node order. The index
    is built once per graph (onnx2torch keeps none), so converters asking per tensor stay linear."""
    table = _CONSUMERS.get(graph)
    if table is None:
        table = defaultdict(list)
        for node in graph.nodes.values():
            for i, value in enumerate(node.input_values):
                table[value].append((node, i))
        _CONSUMERS[graph] = table
    return table.get(name, [])


def constant_input(node: OnnxNode, graph: OnnxGraph, index: int) -> torch.Tensor | None:
    """The value of the node's ``index``-th input if it is an initializer, else None (absent or dynamic)."""
    if index >= len(node.input_values) or not node.input_values[index]:
        return None
    name = node.input_values[index]
    if name in graph.initializers:
        return graph.initializers[name].to_torch()
    return None


def elem_type(graph: OnnxGraph, name: str) -> int | None:
    """The ONNX element type of value ``name`` if the graph (after shape inference) knows it."""
    info = graph.value_info.get(name)
    if info is not None and info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
        return int(info.type.tensor_type.elem_type)
    if name in graph.initializers:
        return int(graph.initializers[name].proto.data_type)
    return None


def result(module: torch.nn.Module, node: OnnxNode, n_inputs: int | None = None) -> OperationConverterResult:
    """A converter result that feeds the module the node's first ``n_inputs`` inputs (all by default)."""
    inputs = node.input_values if n_inputs is None else node.input_values[:n_inputs]
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=inputs, outputs=node.output_values))


class OptionalInputs(torch.nn.Module):
    """Calls ``module`` with None in place of the optional inputs the node leaves empty."""

    def __init__(self, module: torch.nn.Module, present: list[bool]) -> None:
        super().__init__()
        self.module, self.present = module, present

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        given = iter(args)
        return self.module(*[next(given) if p else None for p in self.present])


def optional_result(module: torch.nn.Module, node: OnnxNode, n_inputs: int) -> OperationConverterResult:
    """A converter result feeding ``module`` the node's inputs, None for the optional ones left empty."""
    names = list(node.input_values) + [""] * (n_inputs - len(node.input_values))
    return OperationConverterResult(torch_module=OptionalInputs(module, [bool(name) for name in names]),
                                    onnx_mapping=OnnxMapping(inputs=tuple(n for n in names if n), outputs=node.output_values))


def int_list(t: torch.Tensor | None) -> list[int]:
    """A run-time shape-like tensor (sizes, image shape, ...) as a list of ints; [] for None."""
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def torch_pads(onnx_pads: list[int]) -> list[int]:
    """ONNX pads ``[b1, b2, ..., e1, e2, ...]`` as F.pad's ``[b_last, e_last, ..., b1, e1]``."""
    rank = len(onnx_pads) // 2
    out: list[int] = []
    for d in reversed(range(rank)):
        out += [int(onnx_pads[d]), int(onnx_pads[d + rank])]
    return out
