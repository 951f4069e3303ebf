"""Walks over ONNX graphs that see into subgraphs (If branches, Loop and Scan bodies, ...).

A node with a subgraph reads more than its ``input`` list: the body may name any tensor of the
enclosing scopes (ONNX implicit inputs). Every pass, analysis and converter that asks "which nodes
are there" or "what does this node read" uses these functions, so none of them misses a read made
from inside a body.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx

__all__ = ["subgraphs", "walk_nodes", "walk_node", "outer_scope_names", "node_inputs", "node_reads"]


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs held in ``node``'s attributes (GRAPH and GRAPHS), in attribute order."""
    graphs: list[onnx.GraphProto] = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            graphs.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            graphs.extend(attr.graphs)
    return graphs


def walk_node(node: onnx.NodeProto) -> Iterator[onnx.NodeProto]:
    """``node``, then every node of its subgraphs, nested ones included (depth first)."""
    yield node
    for sub in subgraphs(node):
        yield from walk_nodes(sub)


def walk_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of its subgraphs, each node before the nodes of its bodies."""
    for node in graph.node:
        yield from walk_node(node)


def outer_scope_names(graph: onnx.GraphProto) -> list[str]:
    """Names ``graph`` reads (nested subgraphs included) without defining them, in first-use order:
    the tensors of enclosing scopes a body refers to, including outputs that name one directly."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    names: list[str] = []
    seen: set[str] = set()

    def use(name: str) -> None:
        if name and name not in defined and name not in seen:
            seen.add(name)
            names.append(name)

    for node in graph.node:
        for name in node.input:
            use(name)
        for sub in subgraphs(node):
            for name in outer_scope_names(sub):
                use(name)
        defined.update(o for o in node.output if o)
    for value in graph.output:
        use(value.name)
    return names


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """The tensors ``node`` reads from its own scope: its non-empty inputs, then (sorted, per
    subgraph) the outer-scope names its subgraphs refer to."""
    names = [i for i in node.input if i]
    for sub in subgraphs(node):
        names += sorted(outer_scope_names(sub))
    return names


def node_reads(node: onnx.NodeProto) -> set[str]:
    """Every name ``node`` or any node of its subgraphs lists as an input (a superset of what it
    reads from its scope; enough to tell whether a value is read at all)."""
    return {i for n in walk_node(node) for i in n.input}
