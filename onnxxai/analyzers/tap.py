"""Attribution at an intermediate float tensor: integer inputs (token ids, bytes) and layer attribution.

Gradients do not reach an integer input. Its attribution is taken at the first float tensor the
graph computes from it (for token ids, the embedding lookup ``Gather(table, ids)``), as Captum's
LayerIntegratedGradients does on an embedding layer: the analyzers see that tensor as their input
rows, and the model function runs the graph with the tensor replaced by the rows. The ids still
reach every other consumer (attention masks, position ids) unchanged.

Two new GraphModules over copies of the converted graph do the work; the user's Model is never
modified: ``embed`` computes the tensor, ``substitute`` takes it as an extra last argument.
"""

from __future__ import annotations

import onnx

from onnxxai.errors import AnalyzerError
from onnxxai.graph.surgery import extract, substitute, tensor_source
from onnxxai.model import Model
from onnxxai.proto.dtypes import FLOAT_TYPES

__all__ = ["Tap", "float_frontier"]


def _elem_types(graph: onnx.GraphProto) -> dict[str, int]:
    types = {t.name: t.data_type for t in graph.initializer}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    return types


def float_frontier(model: Model, input_name: str) -> list[tuple[str, str]]:
    """The float tensors computed directly from input ``input_name`` through integer-only values:
    ``(tensor name, producing op type)`` in graph order."""
    graph = model.onnx_model.graph
    types = _elem_types(graph)
    integer = {input_name}
    found: list[tuple[str, str]] = []
    for node in graph.node:  # nodes are topologically sorted
        if not any(i in integer for i in node.input):
            continue
        for out in node.output:
            if not out:
                continue
            if types.get(out) in FLOAT_TYPES:
                found.append((out, node.op_type))
            else:
                integer.add(out)
    return found


def choose_tensor(model: Model, input_name: str, tensor: str | None) -> str:
    """``tensor`` if given (checked), else the single float tensor computed from the integer input,
    preferring an embedding lookup (Gather) when there are several."""
    frontier = float_frontier(model, input_name)
    names = [name for name, _ in frontier]
    if tensor is not None:
        produced = {o for n in model.onnx_model.graph.node for o in n.output}
        if tensor not in produced:
            raise AnalyzerError(f"{model.source}: attribute_at={tensor!r} is not a tensor computed by the graph")
        return tensor
    if not frontier:
        raise AnalyzerError(
            f"{model.source}: no float tensor is computed from integer input {input_name!r}, so nothing "
            "differentiable depends on it"
        )
    # embedding lookups: Gather, or the embedded sum onnxruntime's EmbedLayerNormalization fuses (its first output)
    fused = {n.output[0] for n in model.onnx_model.graph.node if n.op_type == "EmbedLayerNormalization"}
    gathers = [name for name, op in frontier if op == "Gather" or name in fused]
    if len(frontier) == 1 or len(gathers) == 1:
        return gathers[0] if gathers else names[0]
    raise AnalyzerError(
        f"{model.source}: input {input_name!r} is integer and several float tensors are computed from it "
        f"({', '.join(f'{n} ({op})' for n, op in frontier)}); choose one with attribute_at=..."
    )


class Tap:
    """The graph around ONNX tensor ``tensor``: ``embed(*inputs)`` computes it and
    ``substitute(*inputs, value)`` runs the graph with ``value`` in its place."""

    def __init__(self, model: Model, tensor: str) -> None:
        self.tensor = tensor
        source = tensor_source(model.onnx_model, tensor)
        if source is None:
            raise AnalyzerError(f"{model.source}: tensor {tensor!r} has no producing node in the converted graph")
        self.embed = extract(model.torch_module, source, class_name="TapGraphModule")
        self.substitute = substitute(model.torch_module, source, class_name="TapGraphModule")
        if self.embed is None or self.substitute is None:
            raise AnalyzerError(f"{model.source}: tensor {tensor!r} is not computed by a module of the converted graph")
