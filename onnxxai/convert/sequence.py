"""ONNX sequence ops: a sequence value in the converted torch graph is a Python list of tensors.

onnx2torch has no converter for any sequence op. TorchScript exports of loops that append to a
list (``SequenceEmpty`` before a ``Loop`` whose body calls ``SequenceInsert``, then
``ConcatFromSequence`` after it) and ``SplitToSequence`` / ``ConcatFromSequence`` pairs need them.
Every module returns a *new* list (never mutates its input), since the same list may be read
elsewhere in the graph or carried to the next loop iteration. Element tensors keep autograd, so
gradients flow through ``SequenceAt`` and ``ConcatFromSequence``.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
import torch
from onnx import helper
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

from onnx2torch.node_converters.identity import OnnxCopyIdentity

from onnxxai.convert._util import result
from onnxxai.convert.registry import register, since

__all__ = ["OnnxSequenceEmpty", "OnnxSequenceConstruct", "OnnxSequenceInsert", "OnnxSequenceErase", "OnnxSequenceAt",
           "OnnxSequenceLength", "OnnxConcatFromSequence", "OnnxSplitToSequence", "OnnxSequenceMap", "OnnxSequenceIdentity"]


def _position(position: torch.Tensor | None, length: int, default: int, upper: int, op: str) -> int:
    """An ONNX position (negative counts from the back) as an index in ``[0, upper]``."""
    pos = default if position is None else int(position.reshape(-1)[0])
    if pos < 0:
        pos += length
    if not 0 <= pos <= upper:
        raise IndexError(f"{op}: position {pos - length if pos < 0 else pos} is out of range for a sequence of length {length}")
    return pos


class OnnxSequenceEmpty(torch.nn.Module):
    """ONNX SequenceEmpty: an empty list (``dtype`` is the element type the graph declares)."""

    def __init__(self, dtype: int = onnx.TensorProto.FLOAT) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self) -> list[torch.Tensor]:
        return []


class OnnxSequenceConstruct(torch.nn.Module):
    """ONNX SequenceConstruct: the inputs as a list."""

    def forward(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        return list(tensors)


class OnnxSequenceInsert(torch.nn.Module):
    """ONNX SequenceInsert: a copy of the sequence with ``tensor`` inserted at ``position`` (default: the end)."""

    def forward(self, sequence: list[torch.Tensor], tensor: torch.Tensor, position: torch.Tensor | None = None) -> list[torch.Tensor]:
        out = list(sequence)
        out.insert(_position(position, len(out), len(out), len(out), "SequenceInsert"), tensor)
        return out


class OnnxSequenceErase(torch.nn.Module):
    """ONNX SequenceErase: a copy of the sequence without the element at ``position`` (default: the last)."""

    def forward(self, sequence: list[torch.Tensor], position: torch.Tensor | None = None) -> list[torch.Tensor]:
        out = list(sequence)
        del out[_position(position, len(out), len(out) - 1, len(out) - 1, "SequenceErase")]
        return out


class OnnxSequenceAt(torch.nn.Module):
    """ONNX SequenceAt: the element at ``position`` (negative counts from the back)."""

    def forward(self, sequence: list[torch.Tensor], position: torch.Tensor) -> torch.Tensor:
        return sequence[_position(position, len(sequence), 0, len(sequence) - 1, "SequenceAt")]


class OnnxSequenceLength(torch.nn.Module):
    """ONNX SequenceLength: the number of elements as an int64 scalar (on the elements' device)."""

    def forward(self, sequence: list[torch.Tensor]) -> torch.Tensor:
        device = sequence[0].device if sequence else None
        return torch.tensor(len(sequence), dtype=torch.int64, device=device)


class OnnxConcatFromSequence(torch.nn.Module):
    """ONNX ConcatFromSequence: ``torch.cat`` along ``axis``, or ``torch.stack`` with ``new_axis=1``."""

    def __init__(self, axis: int, new_axis: bool) -> None:
        super().__init__()
        self.axis, self.new_axis = axis, new_axis

    def extra_repr(self) -> str:
        return f"axis={self.axis}, new_axis={self.new_axis}"

    def forward(self, sequence: list[torch.Tensor]) -> torch.Tensor:
        if not sequence:
            raise RuntimeError("ConcatFromSequence of an empty sequence is undefined")
        return torch.stack(sequence, self.axis) if self.new_axis else torch.cat(sequence, self.axis)


class OnnxSplitToSequence(torch.nn.Module):
    """ONNX SplitToSequence: pieces along ``axis``.

    ``split`` a scalar: pieces of that size (the last may be shorter); a 1-D tensor: those sizes;
    absent: pieces of size 1, squeezed away when ``keepdims`` is 0.
    """

    def __init__(self, axis: int, keepdims: bool) -> None:
        super().__init__()
        self.axis, self.keepdims = axis, keepdims

    def extra_repr(self) -> str:
        return f"axis={self.axis}, keepdims={self.keepdims}"

    def forward(self, x: torch.Tensor, split: torch.Tensor | None = None) -> list[torch.Tensor]:
        if split is None:
            return list(torch.split(x, 1, self.axis)) if self.keepdims else list(torch.unbind(x, self.axis))
        if split.dim() == 0:
            return list(torch.split(x, int(split), self.axis))
        return list(torch.split(x, [int(s) for s in split.tolist()], self.axis))


class OnnxSequenceMap(torch.nn.Module):
    """ONNX SequenceMap: the converted ``body`` applied to each element; one output sequence per body output.

    Forward inputs: the input sequence, the additional inputs (sequences are read element by
    element, tensors are passed whole to every call), then the body's outer-scope tensors.
    """

    def __init__(self, body: torch.nn.Module, n_inputs: int, n_outputs: int) -> None:
        super().__init__()
        self.body, self.n_inputs, self.n_outputs = body, n_inputs, n_outputs

    def extra_repr(self) -> str:
        return f"inputs={self.n_inputs}, outputs={self.n_outputs}"

    def forward(self, *args: list[torch.Tensor] | torch.Tensor) -> list[torch.Tensor] | tuple[list[torch.Tensor], ...]:
        inputs, outer = args[:self.n_inputs], list(args[self.n_inputs:])
        length = len(inputs[0])
        for value in inputs[1:]:
            if isinstance(value, list) and len(value) != length:
                raise RuntimeError(f"SequenceMap: input sequences have lengths {length} and {len(value)}")
        outs: list[list[torch.Tensor]] = [[] for _ in range(self.n_outputs)]
        for i in range(length):
            got = self.body(*[v[i] if isinstance(v, list) else v for v in inputs], *outer)
            got = [got] if self.n_outputs == 1 else list(got)
            for k in range(self.n_outputs):
                outs[k].append(got[k])
        return outs[0] if self.n_outputs == 1 else tuple(outs)


class OnnxSequenceIdentity(OnnxCopyIdentity):
    """ONNX Identity on a sequence (or a value of unknown type): a new list of the same tensors
    (onnx2torch's copy-identity clones a tensor, which a list lacks)."""

    def forward(self, x: list[torch.Tensor] | torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        return list(x) if isinstance(x, (list, tuple)) else x.clone()


# -- converters -------------------------------------------------------------------------------------
@register("Identity", (1, 13, 14, 16), extends=True)
def convert_identity(node: OnnxNode, graph: OnnxGraph, fallback) -> OperationConverterResult:
    """Identity: sequence (or untyped) inputs get :class:`OnnxSequenceIdentity`; tensors keep onnx2torch's converter."""
    info = graph.value_info.get(node.input_values[0])
    kind = info.type.WhichOneof("value") if info is not None else None
    if kind == "tensor_type" or node.input_values[0] in graph.initializers:
        return fallback(node, graph)
    if kind not in (None, "sequence_type"):
        raise NotImplementedError(f"Identity with an input of type {kind} is not supported")
    return result(OnnxSequenceIdentity(), node)


@register("SequenceEmpty", since(1))
def convert_sequence_empty(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """SequenceEmpty (every version)."""
    return result(OnnxSequenceEmpty(int(node.attributes.get("dtype", onnx.TensorProto.FLOAT))), node)


@register("SequenceConstruct", since(1))
def convert_sequence_construct(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """SequenceConstruct (every version)."""
    return result(OnnxSequenceConstruct(), node)


@register("SequenceInsert", since(1))
def convert_sequence_insert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """SequenceInsert (every version): optional position."""
    return result(OnnxSequenceInsert(), node, 3 if len(node.input_values) > 2 and node.input_values[2] else 2)


@register("SequenceErase", since(1))
def convert_sequence_erase(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """SequenceErase (every version): optional position."""
    return result(OnnxSequenceErase(), node, 2 if len(node.input_values) > 1 and node.input_values[1] else 1)


@register("SequenceAt", since(1))
def convert_sequence_at(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """SequenceAt (every version)."""
    return result(OnnxSequenceAt(), node)


@register("SequenceLength", since(1))
def convert_sequence_length(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """SequenceLength (every version)."""
    return result(OnnxSequenceLength(), node)


@register("ConcatFromSequence", since(1))
def convert_concat_from_sequence(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """ConcatFromSequence (every version): ``axis``, ``new_axis``."""
    if "axis" not in node.attributes:
        raise NotImplementedError("ConcatFromSequence without axis is not supported (the attribute is required)")
    return result(OnnxConcatFromSequence(int(node.attributes["axis"]), bool(node.attributes.get("new_axis", 0))), node)


@register("SplitToSequence", since(1))
def convert_split_to_sequence(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """SplitToSequence (every version): ``split`` scalar, list or absent; ``axis``; ``keepdims``."""
    module = OnnxSplitToSequence(int(node.attributes.get("axis", 0)), bool(node.attributes.get("keepdims", 1)))
    return result(module, node, 2 if len(node.input_values) > 1 and node.input_values[1] else 1)


def _element_type(name: str, graph: OnnxGraph) -> onnx.TypeProto | None:
    """The tensor type a body input bound to ``name`` gets: a sequence's element type, or the tensor's own."""
    info = graph.value_info.get(name)
    if info is None or info.type.WhichOneof("value") is None:
        if name in graph.initializers:
            return helper.make_tensor_type_proto(graph.initializers[name].proto.data_type, None)
        return None
    found = info.type
    if found.HasField("sequence_type"):
        found = found.sequence_type.elem_type
    if found.HasField("tensor_type"):
        return helper.make_tensor_type_proto(found.tensor_type.elem_type, None)
    return None


@register("SequenceMap", since(1))
def convert_sequence_map(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """SequenceMap (every version): the body converted by onnxxai's pipeline, as for Loop and If."""
    from onnxxai.convert.control_flow import convert_body, outer_scope_names

    body = next(helper.get_attribute_value(a) for a in node.proto.attribute if a.name == "body")
    inputs: Sequence[str] = node.input_values
    if any(not name for name in inputs):
        raise NotImplementedError(f"SequenceMap node {node.name!r} with an empty input is not supported")
    if len(body.input) != len(inputs) or len(body.output) != len(node.output_values):
        raise NotImplementedError(f"SequenceMap node {node.name!r}: its body takes {len(body.input)} inputs and returns "
                                  f"{len(body.output)} outputs, expected {len(inputs)} and {len(node.output_values)}")
    names = outer_scope_names(body)
    hints = [_element_type(name, graph) for name in inputs]
    module = OnnxSequenceMap(convert_body(node, "body", body, names, graph, hints), len(inputs), len(node.output_values))
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=(*inputs, *names), outputs=node.output_values))
