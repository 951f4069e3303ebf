"""The LRP analyzer: model check, canonized copy of the graph, one modified forward/backward per chunk."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import torch

from onnxxai.analyzers.base import Analyzer, ModelFunction, chunks, row_targets, select
from onnxxai.analyzers.lrp.apply import rules_applied
from onnxxai.analyzers.lrp.canonize import canonize as canonize_graph
from onnxxai.analyzers.lrp.composites import Composite, EpsilonPlusFlat
from onnxxai.analyzers.lrp.nodes import GraphNode, relevance_path
from onnxxai.analyzers.lrp.rules import Rule
from onnxxai.errors import AnalyzerError
from onnxxai.explanation import Explanation
from onnxxai.model import DEFAULT_BATCH, DEFAULT_DIM, Model, convert
from onnxxai.selectors import OutputSelector

__all__ = ["LRP", "LRPModelError", "NodeProblem", "RELU_LIKE", "NON_RELU_ACTIVATIONS"]

#: activations LRP's rules are derived for (piecewise linear through the origin)
RELU_LIKE = frozenset({"Relu", "LeakyRelu", "PRelu"})
#: activations the model check reports (Clip counts as ReLU-like only with min 0, i.e. ReLU6)
NON_RELU_ACTIVATIONS = frozenset({
    "Sigmoid", "HardSigmoid", "Tanh", "Softplus", "Softsign", "Elu", "Selu", "Celu", "Gelu", "Mish",
    "HardSwish", "Erf", "ThresholdedRelu", "Softmax", "LogSoftmax", "Hardmax", "Exp", "Log", "Sqrt",
    "Abs", "Reciprocal", "Pow", "Sin", "Cos", "Clip",
})
_PRODUCTS = frozenset({"Mul", "Div", "MatMul", "Gemm", "Conv", "ConvTranspose", "Pow", "Einsum"})
_CANONIZE_RTOL = 1e-4


class LRPModelError(AnalyzerError):
    """The model has nodes LRP has no sound rule for; ``problems`` lists them."""

    def __init__(self, source: str, problems: list["NodeProblem"]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"{source}: LRP cannot explain this graph as it is; {len(problems)} node(s) need attention:\n{lines}\n"
            "Give these op types or node names a rule (e.g. EpsilonPlusFlat(rules={'Softplus': Pass()}) or "
            "Composite(..., nodes={'<node name>': Epsilon()})), explain the logits before a final Softmax, "
            "or pass skip_checks=True to run anyway (nodes without a rule then pass the plain gradient)."
        )


class NodeProblem:
    """One node the model check reports: its ONNX name, op type and why."""

    def __init__(self, node: GraphNode, reason: str) -> None:
        self.name, self.op_type, self.reason = node.name, node.op_type, reason

    def __repr__(self) -> str:
        return f"NodeProblem({self.name!r}, {self.op_type!r}, {self.reason!r})"

    def __str__(self) -> str:
        return f"{self.name!r} ({self.op_type}): {self.reason}"


def _clip_min(node: GraphNode, onnx_model: onnx.ModelProto) -> float | None:
    for a in node.proto.attribute:
        if a.name == "min":
            return float(a.f)
    if len(node.proto.input) > 1 and node.proto.input[1]:
        for t in onnx_model.graph.initializer:
            if t.name == node.proto.input[1]:
                return float(onnx.numpy_helper.to_array(t).reshape(-1)[0])
        return None
    return float("-inf")


def check_nodes(nodes: list[GraphNode], rules: Mapping[str, Rule | None], onnx_model: onnx.ModelProto) -> list[NodeProblem]:
    """Nodes on the relevance path that have no rule, are non-ReLU-like activations, or multiply
    two activations."""
    problems = []
    for node in nodes:
        if node.op_type in NON_RELU_ACTIVATIONS and not (node.op_type == "Clip" and _clip_min(node, onnx_model) == 0.0):
            problems.append(NodeProblem(node, "non-ReLU-like activation; LRP rules assume ReLU-like activations"))
        elif node.op_type in _PRODUCTS and node.activations > 1:
            problems.append(NodeProblem(node, "multiplies two activations; no LRP rule conserves relevance through it"))
        elif rules.get(node.module) is None:
            problems.append(NodeProblem(node, "no rule for this op type in the composite"))
    return problems


class LRP(Analyzer):
    """Layer-wise Relevance Propagation with the rules of ``composite`` (default :class:`EpsilonPlusFlat`).

    Before use the graph is checked (nodes without a rule, non-ReLU-like activations, products of
    activations refuse with :class:`LRPModelError` unless ``skip_checks=True``) and canonized on a
    copy (BatchNormalization folded into the preceding Conv/Gemm; the copy is converted separately
    and checked against the model's own outputs). The explained output's score is the starting
    relevance, so with conserving rules ``val`` sums to it (``extras["relevance_sum"]``,
    ``extras["score"]``). One modified forward and backward per chunk of ``batch_size`` rows.
    """

    heatmap = "attribution"

    def __init__(
        self,
        model: Model,
        composite: Composite | None = None,
        skip_checks: bool = False,
        *,
        canonize: bool = True,
        input_name: str | None = None,
        output_name: str | None = None,
        fixed_inputs: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.function = ModelFunction(model, input_name, output_name, fixed_inputs, integer_inputs=False)
        composite = EpsilonPlusFlat() if composite is None else composite
        if not isinstance(composite, Composite):
            raise AnalyzerError(f"composite must be an onnxxai LRP Composite (e.g. EpsilonPlusFlat()), got {type(composite).__name__}")
        if batch_size is not None and int(batch_size) < 1:
            raise AnalyzerError(f"batch_size must be a positive integer, got {batch_size}")
        self.composite = composite
        self.batch_size = batch_size
        self.graph, self.module, self.canonization = _canonized(model, canonize)
        input_index = [s.name for s in model.inputs].index(self.function.input_name)
        self.nodes = relevance_path(self.module, self.graph, input_index, self.function.output_index)
        assigned = composite.assign(self.nodes)
        self.problems = check_nodes(self.nodes, assigned, self.graph)
        if self.problems and not skip_checks:
            raise LRPModelError(model.source, self.problems)
        #: ONNX node name -> rule applied (None: plain gradient)
        self.rules = {node.name: assigned[node.module] for node in self.nodes}
        self._assignments = {node.module: (assigned[node.module], node) for node in self.nodes if assigned[node.module] is not None}

    def explain(self, input: torch.Tensor, selector: OutputSelector) -> Explanation:
        model = self.function.model
        pieces = list(chunks(input.shape[0], self.batch_size))
        targets = row_targets(selector, pieces, lambda: self.function.output(input))
        vals, outs, idxs = [], [], []
        with rules_applied(self.module, self._assignments) as ruled:
            function = copy.copy(self.function)
            function.model = Model(ruled, self.graph, model.inputs, model.outputs, model.parity, model.passes, model.source, model.device)
            for start, stop in pieces:
                sample_index = torch.arange(start, stop, device=input.device)
                target = targets if not isinstance(targets, torch.Tensor) else targets[start:stop]
                with torch.enable_grad():
                    rows = input[start:stop].detach().requires_grad_(True)
                    out = function(rows, sample_index)
                    index = target if isinstance(target, torch.Tensor) else target(out.detach())
                    score = select(out, index)
                    (relevance,) = torch.autograd.grad(score, rows, grad_outputs=score.detach())
                vals.append(relevance.detach())
                outs.append(out.detach())
                idxs.append(index)
        val, output, index = torch.cat(vals), torch.cat(outs), torch.cat(idxs)
        return Explanation(
            val, input, output, index, self.name, self.heatmap,
            {
                "input_name": self.function.input_name,
                "output_name": self.function.output_name,
                "composite": repr(self.composite),
                "rules": {name: (repr(rule) if rule is not None else "gradient") for name, rule in self.rules.items()},
                "canonization": list(self.canonization),
                "score": select(output, index),
                "relevance_sum": val.reshape(val.shape[0], -1).sum(1),
            },
        )


def _canonized(model: Model, enabled: bool) -> tuple[onnx.ModelProto, torch.fx.GraphModule, list[str]]:
    """The graph LRP runs on: the model's own when canonization changes nothing, else a converted,
    verified copy (the user's Model is left as it is)."""
    if not enabled:
        return model.onnx_model, model.torch_module, []
    proto = onnx.ModelProto()
    proto.CopyFrom(model.onnx_model)
    changes = canonize_graph(proto)
    if not changes:
        return model.onnx_model, model.torch_module, []
    graph, _, module = convert(proto, model.source)
    module = module.to(model.device)
    feeds = _probe(model)
    with torch.no_grad():
        args = [feeds[s.name] for s in model.inputs]
        want = model.torch_module(*args)
        got = module(*args)
    want = list(want) if isinstance(want, (tuple, list)) else [want]
    got = list(got) if isinstance(got, (tuple, list)) else [got]
    for spec, w, g in zip(model.outputs, want, got):
        if not w.is_floating_point():
            continue
        err = float((w - g).abs().max() / w.abs().max().clamp(min=1e-12))
        if err > _CANONIZE_RTOL:
            raise AnalyzerError(
                f"{model.source}: the canonized graph ({'; '.join(changes)}) changes output {spec.name!r} "
                f"by {err:.1e} (relative), more than {_CANONIZE_RTOL}; pass canonize=False to run LRP without it"
            )
    return graph, module, changes


def _probe(model: Model) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    shapes = dict(getattr(model.parity, "probe_shapes", None) or {})
    feeds = {}
    for spec in model.inputs:
        shape = shapes.get(spec.name) or tuple(
            d if isinstance(d, int) and d > 0 else (DEFAULT_BATCH if axis == 0 else DEFAULT_DIM)
            for axis, d in enumerate(spec.shape)
        )
        if spec.dtype.kind == "f":
            value = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype.kind in "iu":
            value = rng.integers(0, 10, size=shape).astype(spec.dtype)
        else:
            value = rng.random(shape) < 0.5
        feeds[spec.name] = torch.from_numpy(value).to(model.device)
    return feeds
