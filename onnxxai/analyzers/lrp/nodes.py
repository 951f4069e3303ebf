"""Which ONNX node each module of a converted graph came from, and which nodes carry relevance.

onnx2torch makes one submodule per ONNX node and names it after the node, so the op type of every
module is known from the ONNX graph rather than guessed from its torch class (an ``Add`` becomes a
generic binary-math module, a ``Gemm`` becomes ``nn.Linear``). Rules are chosen by that op type.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import torch

from onnxxai.analyzers.lrp.ops import FUSED_ROLES, NO_RELEVANCE, QUANTIZED_ROLES
from onnxxai.graph.surgery import module_nodes
from onnxxai.proto.dtypes import FLOAT_TYPES

__all__ = ["GraphNode", "relevance_path", "module_nodes"]


@dataclass(frozen=True)
class GraphNode:
    """One ONNX node on the path of relevance, as a module of the converted graph.

    ``module`` is the submodule name, ``name`` the ONNX node name, ``activations`` the number of
    its inputs that depend on the explained input, ``parents`` the modules producing them
    (``""`` for the graph input).
    """

    module: str
    name: str
    op_type: str
    domain: str
    proto: onnx.NodeProto
    activations: int
    parents: tuple[str, ...]

    @property
    def role(self) -> str:
        """The op type whose rules the node takes: its own, or for a quantized integer op the float op
        it computes on dequantized values (QLinearConv -> Conv, QGemm -> Gemm, ...), for a fused layer the float
        layer before its activation (FusedConv and com.microsoft.nchwc Conv -> Conv, FusedGemm -> Gemm)."""
        return FUSED_ROLES.get((self.domain, self.op_type)) or QUANTIZED_ROLES.get(self.op_type, self.op_type)

    def __str__(self) -> str:
        return f"{self.name!r} ({self.op_type})"


def _carries_relevance(node: onnx.NodeProto) -> bool:
    if node.op_type in NO_RELEVANCE:
        return False
    if node.op_type == "Cast":
        to = next((a.i for a in node.attribute if a.name == "to"), onnx.TensorProto.FLOAT)
        return to in FLOAT_TYPES
    return True


def relevance_path(
    module: torch.fx.GraphModule, onnx_model: onnx.ModelProto, input_index: int, output_index: int
) -> list[GraphNode]:
    """The nodes, in topological order, that lie between graph input ``input_index`` and graph
    output ``output_index`` along float data (shape computations are left out)."""
    protos = module_nodes(onnx_model)
    placeholders = [n for n in module.graph.nodes if n.op == "placeholder"]
    source = placeholders[input_index]
    origin: dict[torch.fx.Node, str] = {source: ""}  # fx node carrying relevance -> module producing it
    info: dict[str, tuple[int, tuple[str, ...]]] = {}
    order: list[str] = []
    for fx_node in module.graph.nodes:
        if fx_node.op not in ("call_module", "call_function"):
            continue
        parents = [origin[a] for a in fx_node.all_input_nodes if a in origin]
        if not parents:
            continue
        if fx_node.op == "call_function":  # getitem on a multi-output node
            origin[fx_node] = parents[0]
            continue
        proto = protos.get(fx_node.target)
        if proto is None or not _carries_relevance(proto):
            continue
        origin[fx_node] = fx_node.target
        info[fx_node.target] = (len(parents), tuple(dict.fromkeys(parents)))
        order.append(fx_node.target)

    # keep only ancestors of the explained output
    (output,) = [n for n in module.graph.nodes if n.op == "output"]
    outs = output.args[0]
    outs = list(outs) if isinstance(outs, (tuple, list)) else [outs]
    target = outs[output_index] if output_index < len(outs) else outs[0]
    needed: set[str] = set()
    stack = [origin[target]] if target in origin else []
    while stack:
        name = stack.pop()
        if not name or name in needed:
            continue
        needed.add(name)
        stack.extend(info[name][1])
    nodes = []
    for name in order:
        if name in needed:
            count, parents = info[name]
            proto = protos[name]
            nodes.append(GraphNode(name, proto.name, proto.op_type, proto.domain, proto, count, parents))
    return nodes
