"""The LRP analyzer: model check, canonized copy of the graph, one modified forward/backward per chunk."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING

import onnx
import torch

from onnxxai.analyzers.batching import run_samples
from onnxxai.analyzers.core import Analyzer
from onnxxai.analyzers.function import ModelFunction, select
from onnxxai.analyzers.lrp.apply import rules_applied
from onnxxai.analyzers.lrp.canonize import canonize as canonize_graph
from onnxxai.analyzers.lrp.composites import Composite, EpsilonPlusFlat
from onnxxai.analyzers.lrp.fused import fused_activation_problem, fused_residual_problem, is_fused
from onnxxai.analyzers.lrp.nodes import GraphNode, relevance_path
from onnxxai.analyzers.lrp.ops import DYNAMIC_QUANTIZED, NON_RELU_ACTIVATIONS, PRODUCTS, QUANTIZATION_OPS, QUANTIZED_ROLES
from onnxxai.analyzers.lrp.quantized import unwrap
from onnxxai.analyzers.lrp.rules import Rule
from onnxxai.analyzers.target import TARGET_OPTIONS, Target, TargetOptions, split_options
from onnxxai.errors import AnalyzerError
from onnxxai.explanation import Explanation
from onnxxai.convert.pipeline import convert
from onnxxai.model import Model
from onnxxai.proto.specs import probe_feeds
from onnxxai.selectors import OutputSelector

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["LRP", "LRPModelError", "NodeProblem"]

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


def _integer_output(module: torch.fx.GraphModule | None, node: GraphNode) -> bool:
    """Whether a quantized node's module returns its exact integer dtype (no gradient, so no relevance)."""
    if module is None or (node.op_type not in QUANTIZED_ROLES and node.op_type not in QUANTIZATION_OPS):
        return False
    inner, _, _ = unwrap(getattr(module, node.module, None), ())
    fake, target = getattr(inner, "fake", True), getattr(inner, "target", onnx.TensorProto.FLOAT)
    return not fake and target != onnx.TensorProto.FLOAT


def check_nodes(nodes: list[GraphNode], rules: Mapping[str, Rule | None], onnx_model: onnx.ModelProto,
                module: torch.fx.GraphModule | None = None) -> list[NodeProblem]:
    """Nodes on the relevance path that have no rule, are non-ReLU-like activations, multiply two
    activations, or (in quantized files) are integer ops of dynamic quantization or return integer
    tensors relevance cannot flow through. A quantized op is checked as the float op it stands for, a fused
    layer (FusedConv, FusedGemm, com.microsoft.nchwc Conv) as that layer and its fused activation."""
    problems = []
    constants = {t.name for t in onnx_model.graph.initializer}
    carrying = {i.name for i in onnx_model.graph.input if i.name not in constants}
    carrying.update(o for node in nodes for o in node.proto.output if o)
    for node in nodes:
        op = node.role
        if is_fused(node) and (why := fused_activation_problem(node) or fused_residual_problem(node, carrying)):
            problems.append(NodeProblem(node, why))
        elif node.op_type in DYNAMIC_QUANTIZED:
            problems.append(NodeProblem(node, "dynamic quantization (the activation's scale is computed from the activation "
                                              "at run time): no fixed dequantized layer to apply an LRP rule to; explain "
                                              "the float32 file or a static (QDQ / QOperator) int8 file"))
        elif op in NON_RELU_ACTIVATIONS and not (op == "Clip" and _clip_min(node, onnx_model) == 0.0):
            problems.append(NodeProblem(node, "non-ReLU-like activation; LRP rules assume ReLU-like activations"))
        elif op in PRODUCTS and node.activations > 1:
            problems.append(NodeProblem(node, "multiplies two activations; no LRP rule conserves relevance through it"))
        elif rules.get(node.module) is None:
            problems.append(NodeProblem(node, "no rule for this op type in the composite"))
        elif _integer_output(module, node):
            problems.append(NodeProblem(node, "returns an exact integer tensor (it leaves the graph or reaches an op "
                                              "that reads integers), which carries no relevance"))
    return problems


class LRP(Analyzer):
    """Layer-wise Relevance Propagation with the rules of ``composite`` (default :class:`EpsilonPlusFlat`).

    Before use the graph is checked (nodes without a rule, non-ReLU-like activations, products of
    activations refuse with :class:`LRPModelError` unless ``skip_checks=True``) and canonized on a
    copy (BatchNormalization folded into the preceding Conv/Gemm; the copy is converted separately
    and checked against the model's own outputs). The explained output's score is the starting
    relevance, so with conserving rules ``val`` sums to it (``extras["relevance_sum"]``,
    ``extras["score"]``). One modified forward and backward per chunk of ``batch_size`` rows.
    ``input_name``, ``output_name`` and ``fixed_inputs`` (or ``target=Target(...)``) pick the input
    and output as for the gradient analyzers.

    Quantized files (int8 QDQ, whose groups load as the integer ops onnxruntime runs, and QOperator
    files): a QLinearConv / QLinearMatMul / QGemm takes the rule of Conv / MatMul / Gemm and applies it
    to the float layer with the dequantized weights and bias on the dequantized input activation
    (:mod:`onnxxai.analyzers.lrp.quantized`); QuantizeLinear / DequantizeLinear pass relevance
    unchanged; QLinearAdd and the quantized poolings are proportional as their float ops. The forward
    stays the file's exact integer computation.

    onnxruntime-optimized files: a FusedConv / FusedGemm (EXTENDED level) or com.microsoft.nchwc Conv (ALL
    level) takes the rule of Conv / Gemm on its linear part, and its fused activation passes relevance as
    the float file's Relu node does (:mod:`onnxxai.analyzers.lrp.fused`); the NCHWc reorders and pools
    move relevance as their float counterparts on the blocked tensors.
    """

    heatmap = "attribution"

    def __init__(
        self,
        model: Model,
        composite: Composite | None = None,
        skip_checks: bool = False,
        *,
        canonize: bool = True,
        target: Target | None = None,
        **options: Unpack[TargetOptions],
    ) -> None:
        target, self.execution = split_options("LRP", target, options, TARGET_OPTIONS)
        self.function = ModelFunction(model, target, integer_inputs=False)
        composite = EpsilonPlusFlat() if composite is None else composite
        if not isinstance(composite, Composite):
            raise AnalyzerError(f"composite must be an onnxxai LRP Composite (e.g. EpsilonPlusFlat()), got {type(composite).__name__}")
        self.composite = composite
        self.graph, self.module, self.canonization = _canonized(model, canonize)
        input_index = [s.name for s in model.inputs].index(self.function.input_name)
        self.nodes = relevance_path(self.module, self.graph, input_index, self.function.output_index)
        assigned = composite.assign(self.nodes)
        self.problems = check_nodes(self.nodes, assigned, self.graph, self.module)
        if self.problems and not skip_checks:
            raise LRPModelError(model.source, self.problems)
        #: ONNX node name -> rule applied (None: plain gradient)
        self.rules = {node.name: assigned[node.module] for node in self.nodes}
        self._assignments = {node.module: (assigned[node.module], node) for node in self.nodes if assigned[node.module] is not None}

    def explain(self, input: torch.Tensor, selector: OutputSelector) -> Explanation:
        model = self.function.model
        with rules_applied(self.module, self._assignments) as ruled:
            function = copy.copy(self.function)
            function.model = Model(ruled, self.graph, model.inputs, model.outputs, model.parity, model.passes, model.source, model.device,
                                   model.artifact, model.widened)

            def relevance_rows(rows: torch.Tensor, sample_index: torch.Tensor, target) -> tuple[torch.Tensor, ...]:
                """One modified forward and backward: (relevance, output, index) of ``rows``."""
                with torch.enable_grad():
                    rows = rows.detach().requires_grad_(True)
                    out = function(rows, sample_index)
                    index = target if isinstance(target, torch.Tensor) else target(out.detach())
                    score = select(out, index)
                    (relevance,) = torch.autograd.grad(score, rows, grad_outputs=score.detach())
                return relevance.detach(), out.detach(), index

            val, output, index = run_samples(relevance_rows, input, selector, self.execution.batch_size, self.function.output)
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
    """The load-time probe again (seed 0, the parity check's shapes), on the model's device."""
    shapes = dict(getattr(model.parity, "probe_shapes", None) or {})
    feeds = probe_feeds(model.inputs, seed=0, shapes=shapes, label=model.source)
    return {name: torch.from_numpy(value).to(model.device) for name, value in feeds.items()}
