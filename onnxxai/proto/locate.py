"""Which node an error is about: errors from the ONNX checker, ONNX shape inference and onnxruntime
are traced back to a node of the graph, so onnxxai's own error can name it first (its name, op type,
index), even when the tool's text names it only on a later line, or not at all.

Every function here reads the model and returns a description; none changes the graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import onnx

from onnxxai.proto.walk import subgraphs

__all__ = ["NodeAt", "node_label", "graph_nodes", "nodes_named_in", "checker_location", "one_line",
           "shape_inference_failure", "ShapeFailure"]


@dataclass(frozen=True)
class NodeAt:
    """A node and where it sits: its index in its graph, and the names of the nodes whose bodies hold it."""

    node: onnx.NodeProto
    index: int
    scope: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``Op node 'name'`` (:func:`node_label`), with the enclosing bodies when it sits in one."""
        text = node_label(self.node, self.index)
        if self.scope:
            text += " in the body of " + " in ".join(repr(s) for s in reversed(self.scope))
        return text


def node_label(node: onnx.NodeProto, index: int | None = None) -> str:
    """How errors name a node: ``Op node 'name'``; an unnamed node by its index, a node whose op
    type is empty by its name and index."""
    at = f" (#{index} of its graph)" if index is not None else ""
    if not node.op_type:
        return f"node {node.name!r}{at} with an empty op_type" if node.name else f"unnamed node{at} with an empty op_type"
    return f"{node.op_type} node {node.name!r}" if node.name else f"unnamed {node.op_type} node{at}"


def graph_nodes(graph: onnx.GraphProto, scope: tuple[str, ...] = ()) -> list[NodeAt]:
    """Every node of ``graph`` and of its bodies (each node before its bodies' nodes), with its place."""
    found: list[NodeAt] = []
    for index, node in enumerate(graph.node):
        found.append(NodeAt(node, index, scope))
        for body in subgraphs(node):
            found.extend(graph_nodes(body, scope + (node.name or node.op_type,)))
    return found


def one_line(text: str) -> str:
    """A tool's message on one line: its whitespace runs collapsed, the checker's context trail dropped."""
    return " ".join(text.split("==> Context:")[0].split()) or text.strip()


#: quoted names in a tool's text: 'name' or "name"
_QUOTED = re.compile(r"'([^'\n]+)'|\"([^\"\n]+)\"")


def nodes_named_in(model: onnx.ModelProto, text: str) -> list[NodeAt]:
    """Nodes of ``model`` (bodies included) that ``text`` names, in the order the text names them:
    a quoted node name, or a name after ``Name:``/``name:``/``node name:``/``Node (``; failing those,
    the producer of a quoted tensor name."""
    nodes = graph_nodes(model.graph)
    by_name: dict[str, NodeAt] = {}
    for at in nodes:
        if at.node.name:
            by_name.setdefault(at.node.name, at)
    spans: list[tuple[int, NodeAt]] = []
    for pattern in (_QUOTED, re.compile(r"(?:[Nn]ame:\s*|Node \()([^\s,')]+)")):
        for match in pattern.finditer(text):
            name = next(g for g in match.groups() if g is not None)
            if name in by_name:
                spans.append((match.start(), by_name[name]))
    if not spans:  # a tensor named instead: its producer
        producers = {out: at for at in nodes for out in at.node.output if out}
        for match in _QUOTED.finditer(text):
            name = next(g for g in match.groups() if g is not None)
            if name in producers:
                spans.append((match.start(), producers[name]))
    seen: set[int] = set()
    ordered = []
    for _, at in sorted(spans, key=lambda s: s[0]):
        if id(at.node) not in seen:
            seen.add(id(at.node))
            ordered.append(at)
    return ordered


# -- the ONNX checker ---------------------------------------------------------------------------------
#: the checker's node context ("Bad node spec for node. Name: n OpType: Relu") and its topological-order
#: message, which prints the node on following lines ("... input 'b' of node: \nname: n OpType: Relu\n ...")
_CHECKER_NODE = re.compile(r"[Nn]ame: (\S*) OpType: (\S*)")
_UNSORTED = re.compile(r"input '([^']*)' of node:")
_INIT_NOT_INPUT = re.compile(r"^(.+?) in initializer but not in graph input")
_SSA = re.compile(r"'([^']*)' has been used as output names multiple times")


def checker_location(model: onnx.ModelProto, text: str) -> str:
    """The node (or, for an initializer, the nodes reading it) an ONNX checker message is about, as
    ``Op node 'name'`` with what is known of the cause; "" when the message names none of them."""
    nodes = graph_nodes(model.graph)
    found = _CHECKER_NODE.search(text)
    if found:
        name, op = found.group(1), found.group(2)
        unsorted = _UNSORTED.search(text)
        matches = [at for at in nodes if at.node.name == name and at.node.op_type == op]
        if unsorted and len(matches) != 1:
            matches = [at for at in matches or nodes if at.node.op_type == op and unsorted.group(1) in at.node.input]
        if not matches:
            return f"{op or 'an op-less'} node {name!r}" if name else ""
        at = matches[0]
        if unsorted:
            return f"{at.label}, {_unsorted_cause(model, at, unsorted.group(1))}"
        return at.label
    found = _INIT_NOT_INPUT.search(text.strip())
    if found:
        return _read_by(nodes, found.group(1), f"initializer {found.group(1)!r}")
    found = _SSA.search(text)
    if found:
        makers = [at.label for at in nodes if found.group(1) in at.node.output]
        return f"tensor {found.group(1)!r}, made by " + ", ".join(makers) if makers else ""
    named = nodes_named_in(model, text)
    return named[0].label if named else ""


def _read_by(nodes: list[NodeAt], tensor: str, what: str) -> str:
    readers = [at.label for at in nodes if tensor in at.node.input]
    if not readers:
        return what
    more = f" and {len(readers) - 3} more" if len(readers) > 3 else ""
    return f"{what} read by " + ", ".join(readers[:3]) + more


def _unsorted_cause(model: onnx.ModelProto, at: NodeAt, tensor: str) -> str:
    """Why ``at`` reads ``tensor`` before it is made: a later node makes it (a cycle when that node
    depends on ``at``), or nothing in its graph does."""
    graph = _graph_holding(model.graph, at.node)
    if graph is None:
        return f"which reads {tensor!r} before it is made"
    producer = next((i for i, n in enumerate(graph.node) if tensor in n.output), None)
    if producer is None:
        return f"which reads {tensor!r}, made by no node, initializer or input of its graph"
    maker = node_label(graph.node[producer], producer)
    if _depends_on(graph, producer, at.index):
        return f"which reads {tensor!r} from {maker}, which itself depends on it: the graph has a cycle"
    return f"which reads {tensor!r} before {maker} makes it (nodes out of topological order)"


def _graph_holding(graph: onnx.GraphProto, node: onnx.NodeProto) -> onnx.GraphProto | None:
    for n in graph.node:
        if n is node:
            return graph
        for body in subgraphs(n):
            held = _graph_holding(body, node)
            if held is not None:
                return held
    return None


def _depends_on(graph: onnx.GraphProto, start: int, target: int) -> bool:
    """Whether node ``start`` of ``graph`` reads (transitively) an output of node ``target``."""
    makers: dict[str, int] = {}
    for i, n in enumerate(graph.node):
        for out in n.output:
            makers.setdefault(out, i)
    seen, stack = {start}, [start]
    while stack:
        i = stack.pop()
        for name in graph.node[i].input:
            j = makers.get(name)
            if j == target:
                return True
            if j is not None and j not in seen:
                seen.add(j)
                stack.append(j)
    return False


# -- ONNX shape inference -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ShapeFailure:
    """The first node ONNX shape inference refuses (strict mode) and what it says of it."""

    node: NodeAt
    message: str


_INFERENCE_NODE = re.compile(r"\(op_type:([^,]*), node name: ([^)]*)\): (.*)")


def shape_inference_failure(model: onnx.ModelProto) -> ShapeFailure | None:
    """The first node strict ONNX shape inference fails at (the cause: the nodes after it fail for
    want of their inputs' types), None when it passes or names no node of the graph."""
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError, ValueError) as exc:
        nodes = graph_nodes(model.graph)
        for found in _INFERENCE_NODE.finditer(str(exc)):
            op, name, message = found.group(1), found.group(2), found.group(3)
            for at in nodes:
                if at.node.op_type == op and at.node.name == name:
                    return ShapeFailure(at, message.strip())
    return None
