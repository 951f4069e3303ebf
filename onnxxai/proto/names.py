"""Fresh names for values and nodes added to a graph.

Every rewrite that adds a tensor or a node (canonization, normalization passes, control-flow body
models) takes its name from :func:`fresh_name`, so a new name never collides with one in use.
"""

from __future__ import annotations

import onnx

from onnxxai.proto.walk import walk_nodes

__all__ = ["fresh_name", "names_in_use"]


def fresh_name(base: str, taken: set[str], sep: str = "_") -> str:
    """``base`` if unused, else ``base<sep>1``, ``base<sep>2``, ...; the name returned is added to
    ``taken``."""
    candidate, i = base, 0
    while candidate in taken:
        i += 1
        candidate = f"{base}{sep}{i}"
    taken.add(candidate)
    return candidate


def names_in_use(graph: onnx.GraphProto, *, nodes: bool = False) -> set[str]:
    """Every value name of ``graph`` (inputs, outputs, initializers, node inputs and outputs, those
    of subgraphs included); with ``nodes``, node names too."""
    used: set[str] = {v.name for v in graph.input} | {v.name for v in graph.output}
    used |= {t.name for t in graph.initializer}
    for node in walk_nodes(graph):
        used.update(node.input)
        used.update(node.output)
        if nodes and node.name:
            used.add(node.name)
    used.discard("")
    return used
