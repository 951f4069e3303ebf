"""Applying rules to a converted graph for the length of a ``with`` block.

:func:`rules_applied` builds a *new* GraphModule over a copy of the graph whose rule-carrying
nodes call a :class:`RuleModule` wrapper around the original submodule. The user's GraphModule, its
submodules and its parameters are shared, read-only, and never modified: no hooks are registered,
no attribute is swapped, so there is nothing to undo even when an error interrupts the block.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch.func import functional_call

from onnxxai.analyzers.lrp.nodes import GraphNode
from onnxxai.analyzers.lrp.fused import FusedCall, is_fused
from onnxxai.analyzers.lrp.ops import BIAS_OPS, ELEMENTWISE, PARAM_NAMES, QUANTIZED_ROLES
from onnxxai.analyzers.lrp.quantized import DequantizedCall, ViewGradient
from onnxxai.analyzers.lrp.rules import BasicRule, Pass, ParamModifier, Rule
from onnxxai.errors import AnalyzerError

__all__ = ["rules_applied", "RuleModule"]

_VIEW_GRADIENT = ViewGradient()


class _Call:
    """The node's computation with its activation inputs replaced and its parameters modified."""

    def __init__(self, module: torch.nn.Module, node: GraphNode, args: tuple, kwargs: dict, activations: Sequence[int]) -> None:
        self.module, self.node, self.args, self.kwargs = module, node, args, kwargs
        self.activations = list(activations)
        self.params = dict(module.named_parameters(recurse=False))
        names = PARAM_NAMES.get(node.op_type, {})
        default = "bias" if node.op_type in BIAS_OPS else "weight"
        self.constants = {
            i: names.get(i, default) for i, a in enumerate(args)
            if i not in self.activations and isinstance(a, torch.Tensor) and a.is_floating_point()
        }

    def view_inputs(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The activation inputs as the rule sees them (a float node: as they are)."""
        return list(inputs)

    def exact(self, inputs: Sequence[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """The node's output (a float node: the unmodified term's output ``z`` itself)."""
        return z

    def __call__(self, inputs: Sequence[torch.Tensor], modify: ParamModifier | None = None) -> torch.Tensor:
        args = list(self.args)
        for i, x in zip(self.activations, inputs):
            args[i] = x
        if modify is None:
            return self.module(*args, **self.kwargs)
        for i, name in self.constants.items():
            args[i] = modify(args[i], name)
        if not self.params:
            return self.module(*args, **self.kwargs)
        params = {name: modify(p, name) for name, p in self.params.items()}
        return functional_call(self.module, params, tuple(args), self.kwargs)


class _RuleFunction(torch.autograd.Function):
    """Forward: the node's own output. Backward: the rule's relevance of each activation input."""

    @staticmethod
    def forward(ctx, rule: BasicRule, call: _Call, *inputs: torch.Tensor) -> torch.Tensor:
        ctx.rule, ctx.call, ctx.cache = rule, call, None
        views = call.view_inputs(inputs)  # a quantized node's dequantized inputs, else the inputs
        if any(t.is_identity for t in rule.terms):
            # the unmodified term's graph is built now and reused in backward (saves one forward)
            with torch.enable_grad():
                xs = [x.detach().requires_grad_() for x in views]
                out = call(xs)
            ctx.cache = (xs, out)
            z = out.detach()
        else:
            z = call(views)
        ctx.save_for_backward(*views, z)
        return call.exact(inputs, z)

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        *inputs, output = ctx.saved_tensors  # output: the unmodified term's (a quantized node's float pre-activation)
        rule: BasicRule = ctx.rule
        term_inputs, outputs = [], []
        with torch.enable_grad():
            for term in rule.terms:
                if term.is_identity and ctx.cache is not None:
                    xs, out = ctx.cache
                else:
                    xs = [(term.input(x) if term.input else x).detach().requires_grad_() for x in inputs]
                    out = ctx.call(xs, term.param)
                term_inputs.append(xs)
                outputs.append(out)
            grads_out = rule.gradients(relevance, outputs, output)
            flat = [x for xs in term_inputs for x in xs]
            grads = torch.autograd.grad(outputs, flat, grads_out, allow_unused=True)
        ctx.cache = None
        n = len(inputs)
        result = []
        for i, x in enumerate(inputs):
            ins = [term_inputs[t][i] for t in range(len(rule.terms))]
            gs = [g if g is not None else torch.zeros_like(ins[t]) for t, g in enumerate(grads[i::n])]
            result.append(rule.reduce([a.detach() for a in ins], gs))
        return (None, None, *result)


class _PassFunction(torch.autograd.Function):
    """Identity backward for an element-wise node: relevance passes unchanged."""

    @staticmethod
    def forward(ctx, module: torch.nn.Module, args: tuple, index: int, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        call_args = list(args)
        call_args[index] = x
        return module(*call_args)

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        if relevance.shape != ctx.shape:
            relevance = relevance.sum_to_size(ctx.shape)
        return None, None, None, relevance


class RuleModule(torch.nn.Module):
    """Runs the wrapped node unchanged forward and with ``rule`` backward (only while gradients
    are recorded and some input carries relevance)."""

    def __init__(self, module: torch.nn.Module, rule: Rule, node: GraphNode) -> None:
        super().__init__()
        self.module = module
        self.rule = rule
        self.node = node

    def forward(self, *args, **kwargs):
        active = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
        if not active or not torch.is_grad_enabled():
            return self.module(*args, **kwargs)
        quantized = self.node.op_type in QUANTIZED_ROLES
        fused = is_fused(self.node)
        rule = self.rule
        if isinstance(rule, Pass):
            if self.node.role in ELEMENTWISE and len(active) == 1 and not kwargs:
                i = active[0]
                return _PassFunction.apply(self.module, args, i, args[i])
            if not quantized and not fused:
                return self.module(*args, **kwargs)
            # a quantized op moving values, or a fused layer (its linear part's gradient; the activation passes)
            rule = _VIEW_GRADIENT
        if fused:
            call = FusedCall(self.module, self.node, args, kwargs, active, rule)
        else:
            call = (DequantizedCall if quantized else _Call)(self.module, self.node, args, kwargs, active)
        return _RuleFunction.apply(rule, call, *(args[i] for i in active))

    def extra_repr(self) -> str:
        return f"node={self.node}, rule={self.rule!r}"


def _check_rule(rule: Rule, node: GraphNode) -> None:
    if not isinstance(rule, (Pass, BasicRule)):
        raise AnalyzerError(
            f"rule {rule!r} for node {node} is not an LRP rule: subclass "
            "onnxxai.analyzers.lrp.rules.BasicRule (or use Pass)"
        )


@contextmanager
def rules_applied(module: torch.fx.GraphModule, assignments: Mapping[str, tuple[Rule, GraphNode]]) -> Iterator[torch.fx.GraphModule]:
    """A GraphModule computing what ``module`` computes, whose backward follows the rules of
    ``assignments`` (submodule name -> (rule, node)); valid inside the ``with`` block only."""
    root = torch.nn.Module()
    for name, child in module.named_children():
        entry = assignments.get(name)
        if entry is not None:
            rule, node = entry
            _check_rule(rule, node)
            if not isinstance(rule, Pass) or node.role in ELEMENTWISE or node.op_type in QUANTIZED_ROLES or is_fused(node):
                child = RuleModule(child, rule, node)
        root.add_module(name, child)
    ruled = torch.fx.GraphModule(root, copy.deepcopy(module.graph), class_name="LRPGraphModule")
    ruled.train(module.training)
    try:
        yield ruled
    finally:
        del ruled, root
