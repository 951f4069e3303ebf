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


#: ops whose output depends on their input's shape only, not its values (position ids made from the
#: sequence length of the token ids do not carry the ids' values)
_SHAPE_ONLY = {"Shape", "Size"}


#: ops that move a quantized tensor's values without changing them (a quantized lookup's output may
#: pass through them before it is dequantized)
_MOVES = {"Transpose", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Slice", "Gather", "Split", "Expand"}
#: quantized ops -> {data input index: (scale index, zero-point index)}
_QPARAMS = {"DequantizeLinear": {0: (1, 2)}, "QLinearMatMul": {0: (1, 2), 3: (4, 5)}, "QLinearConv": {0: (1, 2)},
            "QGemm": {0: (1, 2)}, "QLinearAdd": {0: (1, 2), 3: (4, 5)}, "QLinearMul": {0: (1, 2), 3: (4, 5)},
            "QLinearSigmoid": {0: (1, 2)}, "QLinearLeakyRelu": {0: (1, 2)}, "QLinearSoftmax": {0: (1, 2)},
            "QLinearGlobalAveragePool": {0: (1, 2)}, "QLinearAveragePool": {0: (1, 2)},
            "MatMulInteger": {0: (-1, 2)}, "ConvInteger": {0: (-1, 2)}}  # -1: no scale (applied after)


def quantized_lookup(model: Model, tensor: str) -> tuple[float, int, int, int] | None:
    """``(scale, zero_point, qmin, qmax)`` when ``tensor`` is a lookup in a quantized (int8/uint8)
    table -- ``Gather(table, ids)`` of an integer initializer -- whose values the graph reads through
    DequantizeLinear or quantized ops with one scale and zero point; else None."""
    import numpy as np
    from onnx import numpy_helper

    from onnxxai.convert.qlinear import INT_RANGES

    graph = model.onnx_model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = next((n for n in graph.node if tensor in n.output), None)
    if producer is None or producer.op_type != "Gather" or producer.input[0] not in inits \
            or inits[producer.input[0]].data_type not in INT_RANGES:
        return None
    scales: set[float] = set()
    zps: set[int] = set()
    moved, readers = {tensor}, 0
    for node in graph.node:  # topological order: a moved copy is produced before it is read
        for index, name in enumerate(node.input):
            if name not in moved:
                continue
            if node.op_type in _MOVES and index == 0:
                moved.update(o for o in node.output if o)
            elif node.op_type in _QPARAMS and index in _QPARAMS[node.op_type]:
                i_scale, i_zp = _QPARAMS[node.op_type][index]
                names = [node.input[i] if 0 <= i < len(node.input) else "" for i in (i_scale, i_zp)]
                if (i_scale >= 0 and names[0] not in inits) or (names[1] and names[1] not in inits):
                    return None
                zp = numpy_helper.to_array(inits[names[1]]) if names[1] else np.zeros(1)
                scale = numpy_helper.to_array(inits[names[0]]) if i_scale >= 0 else None
                if zp.size != 1 or (scale is not None and scale.size != 1):
                    return None
                zps.add(int(zp.reshape(())))
                if scale is not None:
                    scales.add(float(np.asarray(scale, np.float32).reshape(())))
                readers += 1
            elif node.op_type not in ("Shape", "Size"):
                return None  # read as something else than a quantized value
    if len(scales) != 1 or len(zps) != 1 or not readers:
        return None
    qmin, qmax = INT_RANGES[inits[producer.input[0]].data_type]
    return scales.pop(), zps.pop(), qmin, qmax


def _through_lookups(model: Model, input_name: str, found: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``found`` with the float tensors computed from a quantized lookup of the input (an int8
    embedding table: its output is dequantized, or read by quantized ops, in several places) replaced
    by that lookup, where attributions of the token ids belong."""
    graph = model.onnx_model.graph
    lookups = [n.output[0] for n in graph.node if n.op_type == "Gather" and len(n.input) > 1 and n.input[1] == input_name
               and quantized_lookup(model, n.output[0]) is not None]
    if not lookups:
        return found
    below: dict[str, str] = {name: name for name in lookups}  # integer tensor -> the lookup it comes from
    for node in graph.node:
        origin = {below[i] for i in node.input if i in below}
        if len(origin) == 1 and node.output and node.output[0] not in below:
            for out in node.output:
                if out:
                    below[out] = next(iter(origin))
    result: list[tuple[str, str]] = []
    for name, op in found:
        entry = (below[name], "Gather") if name in below else (name, op)
        if entry not in result:
            result.append(entry)
    return result


def float_frontier(model: Model, input_name: str) -> list[tuple[str, str]]:
    """The float tensors computed directly from the values of input ``input_name`` through
    integer-only values: ``(tensor name, producing op type)`` in graph order. What is computed from
    its shape alone (``Shape``, ``Size``) does not count."""
    graph = model.onnx_model.graph
    types = _elem_types(graph)
    integer = {input_name}
    found: list[tuple[str, str]] = []
    for node in graph.node:  # nodes are topologically sorted
        if node.op_type in _SHAPE_ONLY or not any(i in integer for i in node.input):
            continue
        for out in node.output:
            if not out:
                continue
            if types.get(out) in FLOAT_TYPES:
                found.append((out, node.op_type))
            else:
                integer.add(out)
    return _through_lookups(model, input_name, found)


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
    # several lookups (RoBERTa's position ids and token types are computed from the ids' values): the one
    # indexed by the ids themselves is their embedding
    direct = _direct_lookups(model, input_name, set(gathers))
    if len(direct) == 1:
        return direct[0]
    raise AnalyzerError(
        f"{model.source}: input {input_name!r} is integer and several float tensors are computed from it "
        f"({', '.join(f'{n} ({op})' for n, op in frontier)}); choose one with attribute_at=..."
    )


#: ops that pass an integer tensor's values on unchanged (their first input)
_VALUE_PRESERVING = {"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten"}


def _direct_lookups(model: Model, input_name: str, lookups: set[str]) -> list[str]:
    """Those of the ``lookups`` (Gather outputs) whose indices are input ``input_name`` itself, possibly
    cast or reshaped, in graph order."""
    same = {input_name}
    found = []
    for node in model.onnx_model.graph.node:
        if node.op_type in _VALUE_PRESERVING and node.input and node.input[0] in same:
            same.update(node.output)
        elif node.op_type == "Gather" and len(node.input) > 1 and node.input[1] in same and node.output[0] in lookups:
            found.append(node.output[0])
    return found


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
        quantized = quantized_lookup(model, tensor)
        if quantized is not None:  # an int8 lookup: attributed at its dequantized values, fed back quantized
            from onnxxai.convert.qlinear import DequantizedTap, RequantizedTap

            self.embed = DequantizedTap(self.embed, *quantized[:2])
            self.substitute = RequantizedTap(self.substitute, *quantized)
