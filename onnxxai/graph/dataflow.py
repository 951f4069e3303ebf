"""The data-flow graph of an ONNX model between one input and one output, its dominators, and
the subgraphs on either side of a cut.

A tensor is *on a path* when it depends on the analyzed input through float data: weights and
constants do not depend on the input, and shape computations (``Shape``/``Size``, integer and
boolean tensors) carry no gradient. The integer activations of int8 files are float data in
disguise (:mod:`onnxxai.graph.quantized`): the output of a QuantizeLinear or QLinear op reads as
``scale * (q - zero_point)`` and has a straight-through gradient, so it is on the path
(``DataFlow.quantized`` holds its reading). The *cuts* are the path tensors every path from the input to
the output passes through (the dominators of the output); :mod:`onnxxai.graph.boundaries` picks
GradCAM boundaries among them and :mod:`onnxxai.graph.split` cuts the graph at one.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import onnx
from onnx import helper

from onnxxai.errors import BoundaryError
from onnxxai.graph.quantized import Quantization, quantized_outputs
from onnxxai.proto.dtypes import FLOAT_TYPES
from onnxxai.proto.normalize import normalize
from onnxxai.proto.reading import read_model
from onnxxai.proto.walk import node_inputs

__all__ = ["DataFlow", "graph_of", "head_graph", "features_graph", "METADATA_OPS"]

#: ops that read only the shape of their input: no path runs through them
METADATA_OPS = {"Shape", "Size"}


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    g = model.graph
    infos = {v.name: v for v in g.value_info}
    infos.update({v.name: v for v in g.input})
    infos.update({v.name: v for v in g.output})
    return infos


class DataFlow:
    """The data-flow graph of one (normalized) ONNX model between one input and one output.

    ``preds`` maps each tensor that depends on the input through float data (quantized integer
    activations included) to its path predecessors; ``quantized`` maps each integer tensor among
    them to its float reading (:class:`~onnxxai.graph.quantized.Quantization`; None when it has no
    constant scale and zero point); ``cuts`` are the dominators of the output, input to output
    (the input and the output themselves excluded).
    """

    def __init__(self, model: onnx.ModelProto, input_name: str | None = None, output_name: str | None = None,
                 label: str = "<model>") -> None:
        self.model, self.label = model, label
        g = model.graph
        self.infos = _value_infos(model)
        self.types = {n: v.type.tensor_type.elem_type for n, v in self.infos.items() if v.type.HasField("tensor_type")}
        self.types.update({t.name: t.data_type for t in g.initializer})
        self.initializers = {t.name for t in g.initializer}
        self.graph_inputs = [i.name for i in g.input if i.name not in self.initializers]
        self.graph_outputs = [o.name for o in g.output]
        self.input_name = self._pick_input(input_name)
        self.output_name = self._pick_output(output_name)
        self.producer: dict[str, tuple[int, onnx.NodeProto]] = {}
        for i, node in enumerate(g.node):
            for o in node.output:
                if o:
                    self.producer[o] = (i, node)
        self.order: dict[str, int] = {self.input_name: 0}
        self.preds: dict[str, list[str]] = {self.input_name: []}
        self.depends: set[str] = {self.input_name}  # any dependency on the input, shape paths included
        self.quantized: dict[str, Quantization | None] = {}
        constants: dict = {}
        producers = {o: node for node in g.node for o in node.output if o}
        for node in g.node:
            ins = node_inputs(node)
            if any(i in self.depends for i in ins):
                self.depends.update(o for o in node.output if o)
            if node.op_type in METADATA_OPS and node.domain in ("", "ai.onnx"):
                continue
            path_ins = list(dict.fromkeys(i for i in ins if i in self.preds))
            if not path_ins:
                continue
            quantized = quantized_outputs(model, node, self.quantized, self.types, constants, producers)
            self.quantized.update(quantized)
            for o in node.output:
                if o and (self._is_float(o) or o in quantized):
                    self.order[o] = len(self.order)
                    self.preds[o] = path_ins
        if self.output_name not in self.preds:
            raise BoundaryError(
                f"{label}: output {self.output_name!r} does not depend on input {self.input_name!r} through float "
                "data or quantized activations (only through shapes, integer or boolean tensors): nothing to cut"
            )
        self.idom = self._dominators()
        chain, t = [], self.idom[self.output_name]
        while t != self.input_name:
            chain.append(t)
            t = self.idom[t]
        self.cuts: list[str] = chain[::-1]

    # -- selection ------------------------------------------------------------------------------
    def _is_float(self, name: str) -> bool:
        t = self.types.get(name, 0)
        return t == 0 or t in FLOAT_TYPES  # unknown type: count it as a path (conservative)

    def _named(self, name: str, names: list[str], kind: str) -> str:
        if name not in names:
            raise BoundaryError(f"{self.label}: no {kind} named {name!r}; {kind}s are {names}")
        return name

    def _floats(self, names: list[str]) -> list[str]:
        return [n for n in names if self.types.get(n, 0) in FLOAT_TYPES]

    def _pick_input(self, name: str | None) -> str:
        if name is not None:
            return self._named(name, self.graph_inputs, "input")
        floats = self._floats(self.graph_inputs)
        if len(floats) != 1:
            raise BoundaryError(
                f"{self.label}: {'no' if not floats else 'several'} float inputs ({', '.join(floats) or '-'}); "
                "name the analyzed input with input_name=..."
            )
        return floats[0]

    def _pick_output(self, name: str | None) -> str:
        if name is not None:
            return self._named(name, self.graph_outputs, "output")
        floats = self._floats(self.graph_outputs)
        if not floats:
            raise BoundaryError(f"{self.label}: no float output to explain; outputs are {self.graph_outputs}")
        return floats[0]

    # -- dominators -----------------------------------------------------------------------------
    def _dominators(self) -> dict[str, str]:
        """Immediate dominators on the DAG of path tensors (tensors come in topological order)."""
        idom = {self.input_name: self.input_name}
        pos = self.order

        def meet(a: str, b: str) -> str:
            while a != b:
                while pos[a] > pos[b]:
                    a = idom[a]
                while pos[b] > pos[a]:
                    b = idom[b]
            return a

        for t in sorted(self.order, key=pos.__getitem__)[1:]:
            ps = self.preds[t]
            d = ps[0]
            for p in ps[1:]:
                d = meet(d, p)
            idom[t] = d
        return idom

    def descendants(self, name: str, *, paths_only: bool = True) -> set[str]:
        """Tensors computed from ``name`` (along float paths, or along every edge)."""
        seen = {name}
        for node in self.model.graph.node:
            if paths_only and node.op_type in METADATA_OPS:
                continue
            if any(i in seen for i in node_inputs(node)):
                seen.update(o for o in node.output if o and (not paths_only or o in self.preds))
        return seen

    def ancestors(self, name: str) -> set[str]:
        """Path tensors the output ``name`` is computed from (along float paths)."""
        seen, stack = set(), [name]
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            stack.extend(self.preds.get(t, ()))
        return seen

    # -- checking a boundary ----------------------------------------------------------------------
    def resolve(self, boundary: str) -> str:
        """The tensor name of ``boundary`` (a tensor, or a node with one output); errors unless it is a cut."""
        name = boundary
        if name not in self.producer and name != self.input_name:
            nodes = [n for n in self.model.graph.node if n.name == boundary]
            if len(nodes) == 1 and len([o for o in nodes[0].output if o]) == 1:
                name = nodes[0].output[0]
        where = f"{self.label}: boundary {boundary!r}"
        if name in self.initializers:
            raise BoundaryError(f"{where} is a weight (initializer), not an activation; `onnxxai layers MODEL` lists the cuts")
        if name == self.input_name or name == self.output_name:
            raise BoundaryError(f"{where} is the analyzed {'input' if name == self.input_name else 'output'} itself; "
                                "pick a tensor in between (`onnxxai layers MODEL` lists them)")
        if name not in self.producer:
            raise BoundaryError(f"{where}: no tensor or single-output node of that name in the graph")
        if name not in self.preds:
            raise BoundaryError(f"{where} does not depend on input {self.input_name!r} through float data or "
                                "quantized activations (a constant, a shape or integer tensor)")
        if name not in self.ancestors(self.output_name):
            raise BoundaryError(f"{where}: output {self.output_name!r} is not computed from it")
        if name not in self.cuts:
            raise BoundaryError(self._bypass_message(name, where))
        return name

    def _bypass_message(self, name: str, where: str) -> str:
        chain = [self.input_name, *self.cuts, self.output_name]
        on_chain = set(chain)
        before = self.idom[name]
        while before not in on_chain:
            before = self.idom[before]
        after = chain[chain.index(before) + 1]
        paths = self.bypass_paths(name, before, after)
        shown = "; ".join(self._describe_path(p) for p in paths)
        return (
            f"{where} is not a cut between input {self.input_name!r} and output {self.output_name!r}: "
            f"{len(paths)}{'+' if len(paths) == 3 else ''} path(s) bypass it: {shown}. Nearest cuts: "
            f"{before!r} (before) and {after!r} (after); `onnxxai layers MODEL` lists every cut"
        )

    def bypass_paths(self, name: str, start: str, stop: str, limit: int = 3) -> list[list[str]]:
        """Up to ``limit`` tensor paths from cut ``start`` to cut ``stop`` that avoid ``name``
        (each later path avoids the inner tensors of the earlier ones)."""
        region = self.ancestors(stop)
        succ: dict[str, list[str]] = {}
        for t, ps in self.preds.items():
            if t in region:
                for p in ps:
                    succ.setdefault(p, []).append(t)
        banned = {name}
        paths: list[list[str]] = []
        while len(paths) < limit:
            parent: dict[str, str | None] = {start: None}
            queue = deque([start])
            while queue and stop not in parent:
                t = queue.popleft()
                for s in succ.get(t, ()):
                    if s not in parent and s not in banned:
                        parent[s] = t
                        queue.append(s)
            if stop not in parent:
                break
            path, t = [], stop
            while t is not None:
                path.append(t)
                t = parent[t]
            path.reverse()
            paths.append(path)
            inner = set(path[1:-1])
            if not inner:
                break
            banned |= inner
        return paths

    def _describe_path(self, path: list[str]) -> str:
        steps = [repr(path[0])]
        for t in path[1:]:
            _, node = self.producer[t]
            steps.append(f"{node.op_type} {node.name!r} -> {t!r}")
        if len(steps) > 7:
            steps = steps[:3] + [f"... ({len(steps) - 6} more)"] + steps[-3:]
        return " -> ".join(steps)


def graph_of(model_or_path: Any) -> tuple[onnx.ModelProto, str]:
    """The normalized ONNX graph and label of a loaded model (anything with ``onnx_model`` and
    ``source``, such as :class:`onnxxai.Model`), a ModelProto or a path (read and normalized here)."""
    proto = getattr(model_or_path, "onnx_model", None)
    if isinstance(proto, onnx.ModelProto):
        return proto, str(getattr(model_or_path, "source", "<model>"))
    if not isinstance(model_or_path, (onnx.ModelProto, str, os.PathLike)):
        raise BoundaryError(f"expected an onnxxai.Model, an onnx.ModelProto or a path, got {type(model_or_path).__name__}")
    proto, label = read_model(model_or_path)
    normalize(proto)
    return proto, label


# -- the two sides of a cut -------------------------------------------------------------------------
def _closure(flow: DataFlow, targets: Iterable[str], stop: set[str]) -> tuple[set[int], set[str], list[str]]:
    """Nodes computing ``targets`` back to the graph inputs, initializers and the ``stop`` tensors.

    Returns the node indices, the initializers used, and the graph inputs / stop tensors reached.
    """
    nodes: set[int] = set()
    inits: set[str] = set()
    reached: list[str] = []
    seen: set[str] = set()
    stack = list(targets)
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in stop or (t in flow.graph_inputs and t not in flow.producer):
            reached.append(t)
        elif t in flow.initializers:
            inits.add(t)
        elif t in flow.producer:
            i, node = flow.producer[t]
            if i not in nodes:
                nodes.add(i)
                stack.extend(node_inputs(node))
    return nodes, inits, reached


def _value_info(flow: DataFlow, name: str) -> onnx.ValueInfoProto:
    info = flow.infos.get(name)
    if info is not None and info.type.HasField("tensor_type"):
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(info)
        return copy
    return helper.make_tensor_value_info(name, flow.types.get(name) or onnx.TensorProto.FLOAT, None)


def _subgraph(flow: DataFlow, nodes: set[int], inits: set[str], inputs: Sequence[str], outputs: Sequence[str],
              suffix: str) -> onnx.ModelProto:
    g = flow.model.graph
    graph = helper.make_graph(
        [n for i, n in enumerate(g.node) if i in nodes], f"{g.name or 'graph'}_{suffix}",
        [_value_info(flow, n) for n in inputs], [_value_info(flow, n) for n in outputs],
        initializer=[t for t in g.initializer if t.name in inits],
    )
    used = {o for i in nodes for o in g.node[i].output} - set(outputs)
    graph.value_info.extend(v for v in g.value_info if v.name in used)
    model = helper.make_model(graph, opset_imports=list(flow.model.opset_import), ir_version=flow.model.ir_version)
    model.functions.extend(flow.model.functions)
    model.producer_name = "onnxxai.split"
    return model


def head_graph(flow: DataFlow, boundary: str) -> tuple[onnx.ModelProto, list[str]]:
    """The head graph (boundary, side inputs, other graph inputs -> outputs computed from the
    boundary) and its side tensors: what the head needs that depends on the input without passing
    the boundary (shape computations only, since the boundary is a cut)."""
    below = flow.descendants(boundary, paths_only=False)
    outputs = [o for o in flow.graph_outputs if o in below]
    upstream = flow.depends - below
    nodes, inits, reached = _closure(flow, outputs, {boundary} | upstream)
    sides = [t for t in reached if t != boundary and t in flow.depends]
    others = [t for t in flow.graph_inputs if t in reached and t not in flow.depends]
    return _subgraph(flow, nodes, inits, [boundary, *sides, *others], outputs, "head"), sides


def features_graph(flow: DataFlow, boundary: str, sides: Sequence[str]) -> onnx.ModelProto:
    targets = [boundary, *sides]
    nodes, inits, reached = _closure(flow, targets, set())
    inputs = [t for t in flow.graph_inputs if t in reached]
    return _subgraph(flow, nodes, inits, inputs, targets, "features")
