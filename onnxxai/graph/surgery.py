"""fx surgery on a converted graph: find the module that computes an ONNX tensor, capture the
tensor as an extra output (an autograd leaf), extract it alone, or substitute it by a new input.

onnx2torch makes one submodule per ONNX node, named after the node, and a graph output of a
multi-output node is read through ``operator.getitem(module_output, index)``. Every function here
works on a deep copy of the fx graph and returns a new GraphModule sharing the original's
submodules (so its parameters): the user's model is never modified.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass

import onnx
import torch
from onnx2torch.onnx_graph import OnnxGraph

__all__ = [
    "TensorSource", "module_nodes", "tensor_source", "find_module", "autograd_leaf", "capture", "extract",
    "substitute",
]


@dataclass(frozen=True)
class TensorSource:
    """Where a converted graph computes an ONNX tensor: the submodule named after its producing
    node (``module``), which output of that node it is (``index``) and how many outputs the node has."""

    tensor: str
    module: str
    node: onnx.NodeProto
    index: int
    outputs: int

    @property
    def many(self) -> bool:
        """Whether the module returns a tuple (the tensor is read through ``getitem``)."""
        return self.outputs > 1


def module_nodes(onnx_model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Submodule name -> ONNX node, named exactly as onnx2torch names them."""
    return {name: node.proto for name, node in OnnxGraph(onnx_model.graph).nodes.items()}


def tensor_source(onnx_model: onnx.ModelProto, tensor: str) -> TensorSource | None:
    """The module computing ONNX tensor ``tensor`` in the conversion of ``onnx_model``; None when no
    node produces it (a graph input or an initializer)."""
    for name, node in OnnxGraph(onnx_model.graph).nodes.items():
        outputs = list(node.output_values)
        if tensor in outputs:
            return TensorSource(tensor, name, node.proto, outputs.index(tensor), len(outputs))
    return None


def find_module(graph: torch.fx.Graph, module: str) -> torch.fx.Node | None:
    """The ``call_module`` node of submodule ``module`` in ``graph`` (None when there is none)."""
    return next((n for n in graph.nodes if n.op == "call_module" and n.target == module), None)


def autograd_leaf(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a fresh autograd leaf: gradients are read here and go no further upstream. An
    integer tensor (torch gives it no gradient) is returned detached, not requiring grad: the
    caller sees ``requires_grad`` False and says why."""
    x = x.detach()
    return x.requires_grad_(True) if x.is_floating_point() or x.is_complex() else x


def _output_node(graph: torch.fx.Graph) -> torch.fx.Node:
    return next(n for n in graph.nodes if n.op == "output")


def _module(root: torch.fx.GraphModule, graph: torch.fx.Graph, class_name: str) -> torch.fx.GraphModule:
    built = torch.fx.GraphModule(root, graph, class_name=class_name)
    built.train(root.training)
    return built


def capture(root: torch.fx.GraphModule, source: TensorSource, class_name: str = "CapturedGraphModule",
            ) -> torch.fx.GraphModule | None:
    """A new GraphModule returning ``root``'s outputs plus the tensor of ``source`` (last), made an
    :func:`autograd_leaf` that every consumer reads; None when the module is not in the fx graph."""
    graph = copy.deepcopy(root.graph)
    fx_node = find_module(graph, source.module)
    output = _output_node(graph)
    if fx_node is None:
        return None
    index = source.index
    with graph.inserting_after(fx_node):
        value = graph.call_function(operator.getitem, (fx_node, index)) if source.many else fx_node
    with graph.inserting_after(value):
        leaf = graph.call_function(autograd_leaf, (value,))
    if source.many:  # every consumer reads the tensor through its own getitem(fx_node, index)
        for user in list(fx_node.users):
            if user is not value and user.target is operator.getitem and user.args[1] == index:
                user.replace_all_uses_with(leaf)
                graph.erase_node(user)
    else:
        fx_node.replace_all_uses_with(leaf, delete_user_cb=lambda user: user is not leaf)
    results = output.args[0]
    results = list(results) if isinstance(results, (tuple, list)) else [results]
    output.args = (tuple(results + [leaf]),)
    graph.lint()
    return _module(root, graph, class_name)


def _finish(root: torch.fx.GraphModule, graph: torch.fx.Graph, class_name: str) -> torch.fx.GraphModule:
    built = torch.fx.GraphModule(root, graph, class_name=class_name)
    built.graph.eliminate_dead_code()
    built.graph.lint()
    built.recompile()
    built.train(root.training)
    return built


def extract(root: torch.fx.GraphModule, source: TensorSource, class_name: str = "ExtractGraphModule",
            ) -> torch.fx.GraphModule | None:
    """A new GraphModule taking ``root``'s inputs and returning only the tensor of ``source`` (what
    does not lead to it is dropped); None when the module is not in the fx graph."""
    graph = copy.deepcopy(root.graph)
    producer = find_module(graph, source.module)
    if producer is None:
        return None
    output = _output_node(graph)
    with graph.inserting_before(output):
        value = graph.call_function(operator.getitem, (producer, source.index)) if source.many else producer
    output.args = (value,)
    return _finish(root, graph, class_name)


def substitute(root: torch.fx.GraphModule, source: TensorSource, class_name: str = "SubstituteGraphModule",
               placeholder: str = "onnxxai_tap") -> torch.fx.GraphModule | None:
    """A new GraphModule taking ``root``'s inputs plus one more (last): a value read in place of the
    tensor of ``source`` by every consumer; None when the module is not in the fx graph."""
    graph = copy.deepcopy(root.graph)
    producer = find_module(graph, source.module)
    if producer is None:
        return None
    if source.many:
        reads = [u for u in producer.users if u.target is operator.getitem and u.args[1] == source.index]
    else:
        reads = [producer]
    last_placeholder = [n for n in graph.nodes if n.op == "placeholder"][-1]
    with graph.inserting_after(last_placeholder):
        value = graph.placeholder(placeholder)
    for read in reads:
        read.replace_all_uses_with(value)
    return _finish(root, graph, class_name)
