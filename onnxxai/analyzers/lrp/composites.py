"""Composites: which rule each node of a graph gets.

A composite maps **ONNX op types** (``"Conv"``, ``"Gemm"``, ``"Add"``, ``"Relu"``, ...) and, taking
precedence, **node names** to rules, plus a separate map for the *first layer*: the nodes of those
op types that no other node of those op types precedes on the way from the input (the first
convolution of a CNN). Keying by op type rather than torch class is what lets one composite cover
every exporter: onnx2torch turns Add into a generic binary-math module and Gemm into ``nn.Linear``.

The presets have the meaning of Zennit's and RelevancePropagation.jl's composites of the same name:
Conv/ConvTranspose are the convolutional layers, Gemm/MatMul the dense ones, and every preset
starts from :func:`base_rules` (Pass through activations and shape ops, winner-takes-all max
pooling, proportional Add/Sum/average pooling).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from onnxxai.analyzers.lrp.nodes import GraphNode
from onnxxai.analyzers.lrp.ops import (
    ACTIVATIONS, CONV_OPS, DENSE_OPS, LINEAR_OPS, MOVE_OPS, PROPORTIONAL_OPS, QUANTIZATION_OPS, SCALING_OPS,
)
from onnxxai.analyzers.lrp.rules import AlphaBeta, Epsilon, Flat, Gamma, Pass, Rule, ZBox, ZPlus

__all__ = [
    "Composite", "base_rules", "EpsilonPlus", "EpsilonPlusFlat", "EpsilonAlpha2Beta1",
    "EpsilonAlpha2Beta1Flat", "EpsilonGammaBox",
]


def base_rules(stabilizer: float = 1e-6) -> dict[str, Rule]:
    """Rules every preset shares (Zennit's ``layer_map_base``): Pass for activations, shape ops,
    max pooling (winner takes all), an unfolded BatchNormalization, Mul/Div by a constant and
    QuantizeLinear/DequantizeLinear (relevance is conserved across a requantization);
    proportional (Epsilon with ``stabilizer``) for Add/Sub/Sum, average pooling, means and resizing."""
    rules: dict[str, Rule] = {op: Pass() for op in ACTIVATIONS + MOVE_OPS + SCALING_OPS + QUANTIZATION_OPS}
    rules.update({op: Epsilon(stabilizer) for op in PROPORTIONAL_OPS})
    return rules


class Composite:
    """Rules by op type (``rules``), for the first layer (``first_layer``, by op type) and by node
    (``nodes``, ONNX node name or module name; these win). An op type missing from every map has
    no rule: the model check reports it. A quantized op takes the rule of its own op type if given,
    else that of the float op it stands for (QLinearConv: Conv's, QGemm: Gemm's; ``GraphNode.role``).

    ``Composite({**base_rules(), "Conv": Gamma(0.5), "Gemm": Epsilon(0.1)}, first_layer={"Conv": Flat()})``
    """

    def __init__(
        self,
        rules: Mapping[str, Rule],
        first_layer: Mapping[str, Rule] | None = None,
        nodes: Mapping[str, Rule] | None = None,
    ) -> None:
        self.rules = dict(rules)
        self.first_layer = dict(first_layer or {})
        self.nodes = dict(nodes or {})
        for where, mapping in (("rules", self.rules), ("first_layer", self.first_layer), ("nodes", self.nodes)):
            for key, rule in mapping.items():
                if not isinstance(rule, Rule):
                    raise TypeError(f"{type(self).__name__}: {where}[{key!r}] is {rule!r}, not an LRP rule")

    def __repr__(self) -> str:
        first = ", ".join(f"{k}: {v!r}" for k, v in self.first_layer.items())
        linear = ", ".join(f"{k}: {self.rules[k]!r}" for k in LINEAR_OPS if k in self.rules)
        return f"{type(self).__name__}({linear}; first layer {{{first}}}; {len(self.nodes)} node rule(s))"

    def first_layer_nodes(self, nodes: Iterable[GraphNode]) -> set[str]:
        """Modules of the first-layer op types not preceded by another node of those op types."""
        ops = set(self.first_layer)
        behind: dict[str, bool] = {"": False}
        firsts: set[str] = set()
        for node in nodes:
            after = any(behind.get(p, False) for p in node.parents)
            mine = node.op_type in ops or node.role in ops
            if mine and not after:
                firsts.add(node.module)
            behind[node.module] = after or mine
        return firsts

    def assign(self, nodes: Iterable[GraphNode]) -> dict[str, Rule | None]:
        """Module name -> rule (None where no map covers the node)."""
        nodes = list(nodes)
        firsts = self.first_layer_nodes(nodes)
        out: dict[str, Rule | None] = {}
        for node in nodes:
            rule = self.nodes.get(node.name) or self.nodes.get(node.module)
            if rule is None and node.module in firsts:
                rule = self.first_layer.get(node.op_type) or self.first_layer.get(node.role)
            if rule is None:  # a quantized op (QLinearConv) takes its own rule, else its float op's (Conv)
                rule = self.rules.get(node.op_type) or self.rules.get(node.role)
            out[node.module] = rule
        return out


def _preset(conv: Rule, dense: Rule, stabilizer: float, rules: Mapping[str, Rule] | None) -> dict[str, Rule]:
    out = base_rules(stabilizer)
    out.update({op: conv for op in CONV_OPS})
    out.update({op: dense for op in DENSE_OPS})
    out.update(rules or {})
    return out


class EpsilonPlus(Composite):
    """z⁺ for convolutions, ε for dense layers."""

    def __init__(self, epsilon: float = 1e-6, stabilizer: float = 1e-6, *, rules: Mapping[str, Rule] | None = None,
                 first_layer: Mapping[str, Rule] | None = None, nodes: Mapping[str, Rule] | None = None) -> None:
        super().__init__(_preset(ZPlus(stabilizer), Epsilon(epsilon), stabilizer, rules), first_layer, nodes)


class EpsilonAlpha2Beta1(Composite):
    """α2β1 for convolutions, ε for dense layers."""

    def __init__(self, epsilon: float = 1e-6, stabilizer: float = 1e-6, *, rules: Mapping[str, Rule] | None = None,
                 first_layer: Mapping[str, Rule] | None = None, nodes: Mapping[str, Rule] | None = None) -> None:
        super().__init__(_preset(AlphaBeta(2.0, 1.0, stabilizer), Epsilon(epsilon), stabilizer, rules), first_layer, nodes)


class EpsilonPlusFlat(Composite):
    """Flat for the first linear layer (convolution or dense), z⁺ for other convolutions, ε for dense layers."""

    def __init__(self, epsilon: float = 1e-6, stabilizer: float = 1e-6, *, rules: Mapping[str, Rule] | None = None,
                 first_layer: Mapping[str, Rule] | None = None, nodes: Mapping[str, Rule] | None = None) -> None:
        first = {op: Flat(stabilizer) for op in LINEAR_OPS}
        first.update(first_layer or {})
        super().__init__(_preset(ZPlus(stabilizer), Epsilon(epsilon), stabilizer, rules), first, nodes)


class EpsilonAlpha2Beta1Flat(Composite):
    """Flat for the first linear layer, α2β1 for other convolutions, ε for dense layers."""

    def __init__(self, epsilon: float = 1e-6, stabilizer: float = 1e-6, *, rules: Mapping[str, Rule] | None = None,
                 first_layer: Mapping[str, Rule] | None = None, nodes: Mapping[str, Rule] | None = None) -> None:
        first = {op: Flat(stabilizer) for op in LINEAR_OPS}
        first.update(first_layer or {})
        super().__init__(_preset(AlphaBeta(2.0, 1.0, stabilizer), Epsilon(epsilon), stabilizer, rules), first, nodes)


class EpsilonGammaBox(Composite):
    """z^B with bounds ``low``/``high`` for the first convolution, γ for other convolutions, ε for
    dense layers. ``low``/``high``: scalars or arrays broadcastable to that convolution's input."""

    def __init__(self, low, high, epsilon: float = 1e-6, gamma: float = 0.25, stabilizer: float = 1e-6, *,
                 rules: Mapping[str, Rule] | None = None, first_layer: Mapping[str, Rule] | None = None,
                 nodes: Mapping[str, Rule] | None = None) -> None:
        first = {op: ZBox(low, high, stabilizer) for op in CONV_OPS}
        first.update(first_layer or {})
        super().__init__(_preset(Gamma(gamma, stabilizer), Epsilon(epsilon), stabilizer, rules), first, nodes)
