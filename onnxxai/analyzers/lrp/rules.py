"""LRP rules: how relevance flows backward through one node.

A rule only describes the modified backward pass of one node; the machinery that applies it
(:mod:`onnxxai.analyzers.lrp.apply`) runs it inside a custom autograd function, so one modified
forward/backward over the whole graph computes the relevance of the input.

Most rules are a :class:`BasicRule` (the formulation of Zennit's ``BasicHook``): a few *terms*, each
a copy of the node's computation on modified inputs and modified parameters; the upper relevance
is divided by (functions of) the terms' outputs, sent back through each term by its gradient, and
the terms' input-times-gradient products are combined. The rules below reproduce Zennit's rules of
the same name, so results agree with Zennit wherever both can run.

Parameters are named ``weight`` and ``bias``: the parameters of the module (Conv, Gemm as
``nn.Linear``) or its constant inputs (the ``B``/``C`` of a Gemm, a MatMul's constant operand, an
Add's constant operand).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

__all__ = [
    "Rule", "BasicRule", "Term", "Pass", "Zero", "Epsilon", "Gamma", "WSquare", "Flat", "AlphaBeta",
    "ZPlus", "ZBox", "stabilize",
]

Tensor = torch.Tensor
ParamModifier = Callable[[Tensor, str], Tensor]


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """``z + ε·sign(z)`` with sign(0) = +1: a denominator safe to divide by (Zennit's convention)."""
    return z + ((z == 0).to(z) + z.sign()) * epsilon


class Term(NamedTuple):
    """One copy of the node's computation: ``input`` modifies each activation input, ``param``
    each parameter (``(tensor, name) -> tensor``). None leaves it unchanged."""

    input: Callable[[Tensor], Tensor] | None = None
    param: ParamModifier | None = None

    @property
    def is_identity(self) -> bool:
        return self.input is None and self.param is None


class Rule:
    """Base of all rules. ``repr`` names the rule and its parameters (shown in reports)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k != "terms")
        return f"{type(self).__name__}({args})"


class Pass(Rule):
    """Relevance passes unchanged: for element-wise ops (Relu and other activations, an unfolded
    BatchNormalization, Mul/Div by a constant) the backward is the identity; for ops that only move
    or select values (Reshape, Flatten, Concat, Transpose, Slice, Pad, MaxPool's winner-takes-all)
    the op's own gradient moves the relevance, so Pass leaves them as they are."""


class BasicRule(Rule):
    """A rule made of :class:`Term` copies of the node (see the module docstring).

    Subclasses set ``terms`` and define :meth:`gradients` (upper relevance -> the gradient sent back
    through each term) and :meth:`reduce` (each term's input and gradient -> input relevance).
    """

    terms: tuple[Term, ...] = (Term(),)

    def gradients(self, relevance: Tensor, outputs: Sequence[Tensor], output: Tensor) -> list[Tensor]:
        """What to send back through each term; ``output`` is the node's unmodified output."""
        raise NotImplementedError

    def reduce(self, inputs: Sequence[Tensor], gradients: Sequence[Tensor]) -> Tensor:
        """The relevance of one activation input from each term's input and gradient."""
        return sum(x * g for x, g in zip(inputs, gradients))


def _zeroing(modifier: ParamModifier, zero_params: Sequence[str] | None) -> ParamModifier:
    zero = set(zero_params or ())
    if not zero:
        return modifier
    return lambda p, name: torch.zeros_like(p) if name in zero else modifier(p, name)


def _with_bias_zeroed(zero_params: Sequence[str] | None) -> list[str]:
    return sorted(set(zero_params or ()) | {"bias"})


def _pos(x: Tensor) -> Tensor:
    return x.clamp(min=0)


def _neg(x: Tensor) -> Tensor:
    return x.clamp(max=0)


def _unchanged(p: Tensor, name: str) -> Tensor:
    return p


def _signed_terms(favour: ParamModifier, disfavour: ParamModifier, zero_params: Sequence[str] | None) -> tuple[Term, ...]:
    """The four terms of the rules that treat positive and negative contributions apart (γ, αβ):
    positive inputs with ``favour``ed and negative inputs with ``disfavour``ed parameters (the
    positive contributions), then the reverse (the negative ones); the bias only in the terms of
    positive inputs."""
    nobias = _with_bias_zeroed(zero_params)
    return (
        Term(_pos, _zeroing(favour, zero_params)),
        Term(_neg, _zeroing(disfavour, nobias)),
        Term(_pos, _zeroing(disfavour, zero_params)),
        Term(_neg, _zeroing(favour, nobias)),
    )


class Epsilon(BasicRule):
    """LRP-ε: ``R_i = x_i · Σ_j w_ji R_j / (z_j + ε·sign(z_j))``. Small ε is the proportional rule
    used for Add/Sum and average pooling; larger ε absorbs weak, contradictory relevance."""

    def __init__(self, epsilon: float = 1e-6, zero_params: Sequence[str] | None = None) -> None:
        self.epsilon = float(epsilon)
        self.zero_params = list(zero_params) if zero_params else None
        self.terms = (Term(None, _zeroing(_unchanged, zero_params) if zero_params else None),)

    def gradients(self, relevance, outputs, output):
        return [relevance / stabilize(outputs[0], self.epsilon)]


class Zero(BasicRule):
    """LRP-0: ``R_i = x_i · Σ_j w_ji R_j / z_j`` (zero where ``z_j = 0``). On a ReLU network with
    LRP-0 everywhere the result equals input × gradient."""

    terms = (Term(),)

    def gradients(self, relevance, outputs, output):
        z = outputs[0]
        nonzero = z != 0
        return [torch.where(nonzero, relevance / torch.where(nonzero, z, torch.ones_like(z)), torch.zeros_like(z))]


class Gamma(BasicRule):
    """LRP-γ (generalised to negative inputs as in Zennit): positive contributions are favoured by
    adding γ times the positive weights; positive and negative outputs are handled separately."""

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6, zero_params: Sequence[str] | None = None) -> None:
        self.gamma = float(gamma)
        self.stabilizer = float(stabilizer)
        self.zero_params = list(zero_params) if zero_params else None
        g = self.gamma

        def up(p, name):
            return p + g * p.clamp(min=0)

        def down(p, name):
            return p + g * p.clamp(max=0)

        self.terms = _signed_terms(up, down, zero_params)

    def gradients(self, relevance, outputs, output):
        positive = (output > 0).to(relevance) * relevance / stabilize(outputs[0] + outputs[1], self.stabilizer)
        negative = (output < 0).to(relevance) * relevance / stabilize(outputs[2] + outputs[3], self.stabilizer)
        return [positive, positive, negative, negative]


class AlphaBeta(BasicRule):
    """LRP-αβ: positive contributions weighted by α, negative ones by β (α − β = 1)."""

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6, zero_params: Sequence[str] | None = None) -> None:
        if alpha < 0 or beta < 0 or abs(alpha - beta - 1.0) > 1e-12:
            raise ValueError(f"AlphaBeta needs alpha, beta >= 0 and alpha - beta = 1, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta = float(alpha), float(beta)
        self.stabilizer = float(stabilizer)
        self.zero_params = list(zero_params) if zero_params else None

        def wpos(p, name):
            return p.clamp(min=0)

        def wneg(p, name):
            return p.clamp(max=0)

        self.terms = _signed_terms(wpos, wneg, zero_params)

    def gradients(self, relevance, outputs, output):
        positive = relevance / stabilize(outputs[0] + outputs[1], self.stabilizer)
        negative = relevance / stabilize(outputs[2] + outputs[3], self.stabilizer)
        return [positive, positive, negative, negative]

    def reduce(self, inputs, gradients):
        return (self.alpha * (inputs[0] * gradients[0] + inputs[1] * gradients[1])
                - self.beta * (inputs[2] * gradients[2] + inputs[3] * gradients[3]))


class ZPlus(BasicRule):
    """LRP-z⁺: only positive contributions (αβ with α=1, β=0; negative inputs meet negative weights)."""

    def __init__(self, stabilizer: float = 1e-6, zero_params: Sequence[str] | None = None) -> None:
        self.stabilizer = float(stabilizer)
        self.zero_params = list(zero_params) if zero_params else None
        self.terms = (
            Term(_pos, _zeroing(lambda p, name: p.clamp(min=0), zero_params)),
            Term(_neg, _zeroing(lambda p, name: p.clamp(max=0), _with_bias_zeroed(zero_params))),
        )

    def gradients(self, relevance, outputs, output):
        g = relevance / stabilize(outputs[0] + outputs[1], self.stabilizer)
        return [g, g]


class ZBox(BasicRule):
    """LRP-z^B for inputs bounded by ``low`` and ``high`` (scalars or arrays broadcastable to the
    node's input, e.g. shape (1, 3, 1, 1) per channel). Meant for the first layer on pixels."""

    def __init__(self, low, high, stabilizer: float = 1e-6, zero_params: Sequence[str] | None = None) -> None:
        self.low = torch.as_tensor(low)
        self.high = torch.as_tensor(high)
        self.stabilizer = float(stabilizer)
        self.zero_params = list(zero_params) if zero_params else None
        low_t, high_t = self.low, self.high
        self.terms = (
            Term(None, _zeroing(_unchanged, zero_params) if zero_params else None),
            Term(lambda x: torch.broadcast_to(low_t.to(x), x.shape), _zeroing(lambda p, n: p.clamp(min=0), zero_params)),
            Term(lambda x: torch.broadcast_to(high_t.to(x), x.shape), _zeroing(lambda p, n: p.clamp(max=0), zero_params)),
        )

    def __repr__(self) -> str:
        show = lambda t: t.item() if t.numel() == 1 else f"tensor{tuple(t.shape)}"  # noqa: E731
        return f"ZBox(low={show(self.low)}, high={show(self.high)}, stabilizer={self.stabilizer})"

    def gradients(self, relevance, outputs, output):
        g = relevance / stabilize(outputs[0] - outputs[1] - outputs[2], self.stabilizer)
        return [g, g, g]

    def reduce(self, inputs, gradients):
        return inputs[0] * gradients[0] - inputs[1] * gradients[1] - inputs[2] * gradients[2]


class WSquare(BasicRule):
    """LRP-w²: relevance spread by squared weights, independent of the input (first layers on
    unbounded inputs)."""

    def __init__(self, stabilizer: float = 1e-6, zero_params: Sequence[str] | None = None) -> None:
        self.stabilizer = float(stabilizer)
        self.zero_params = list(zero_params) if zero_params else None
        self.terms = (Term(torch.ones_like, _zeroing(lambda p, name: p * p, zero_params)),)

    def gradients(self, relevance, outputs, output):
        return [relevance / stabilize(outputs[0], self.stabilizer)]

    def reduce(self, inputs, gradients):
        return gradients[0]


class Flat(BasicRule):
    """LRP-flat: relevance spread uniformly over each output's receptive field (w² with all weights 1)."""

    def __init__(self, stabilizer: float = 1e-6, zero_params: Sequence[str] | None = None) -> None:
        self.stabilizer = float(stabilizer)
        self.zero_params = list(zero_params) if zero_params else None
        self.terms = (Term(torch.ones_like, _zeroing(lambda p, name: torch.ones_like(p), _with_bias_zeroed(zero_params))),)

    def gradients(self, relevance, outputs, output):
        return [relevance / stabilize(outputs[0], self.stabilizer)]

    def reduce(self, inputs, gradients):
        return gradients[0]
