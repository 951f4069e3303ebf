"""onnxruntime's fused layers as LRP sees them: the float layer, then its fused activation.

An onnxruntime-optimized file (``SessionOptions.optimized_model_filepath``) holds the model's layers
fused with the activation after them: at the EXTENDED level a com.microsoft FusedConv is
``activation(conv(X, W) + B)`` and a FusedGemm ``activation(alpha A'B' + beta C)``; at the ALL level a
com.microsoft.nchwc Conv is the same on NCHWc-blocked tensors (:mod:`onnxxai.convert.contrib_fused`).
The float file has a Conv (Gemm) node and then a Relu node, and LRP gives the Conv its rule and lets
relevance pass the Relu unchanged. A fused node does exactly that: its rule's terms are copies of the
linear part only (the rule's modified weight and bias, no activation), the rule's denominator is the
pre-activation ``z``, and the relevance arriving at the fused output is the relevance of ``z`` (the
activation passes it). The forward value is the node's own output, ``activation(z)``.

Only activations the float path lets relevance pass are accepted (:func:`fused_activation_problem`):
none, Relu, LeakyRelu, and Clip with minimum 0 (ReLU6). A FusedConv whose residual input (Z, or the
nchwc Conv's Sum) carries relevance is refused: the float file splits relevance at that Add by the
Add's rule before the Conv's rule sees it, which one fused rule cannot reproduce.

NCHWc (com.microsoft.nchwc Conv): the rule runs on the blocked tensors themselves. Blocking is a
permutation plus zero channels (padding to the block size) with zero weights and bias, and the rules'
input modifiers used on hidden layers (identity, positive / negative part) act element-wise, so the
relevance of each real value is the float file's, moved to where the blocked tensor keeps it, and the
padding channels get none. Rules that replace the input by constants (Flat, WSquare, ZBox) would spread
relevance onto padding channels, so they are refused on a blocked input (a first Conv on images reads
the plain NCHW input and takes them).
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
import torch

from onnxxai.analyzers.lrp.nodes import GraphNode
from onnxxai.analyzers.lrp.ops import FUSED_ROLES
from onnxxai.analyzers.lrp.quantized import unwrap
from onnxxai.analyzers.lrp.rules import BasicRule, Flat, ParamModifier, WSquare, ZBox
from onnxxai.convert.contrib_fused import MS_DOMAIN, NCHWC_DOMAIN, block, unblock
from onnxxai.errors import AnalyzerError

__all__ = ["FusedCall", "is_fused", "fused_activation", "fused_activation_problem", "fused_residual_problem"]

Tensor = torch.Tensor

#: rules whose terms replace the activation input by constants (not element-wise on a blocked tensor)
_INPUT_REPLACING = (Flat, WSquare, ZBox)


def is_fused(node: GraphNode) -> bool:
    """Whether ``node`` is a fused layer (FusedConv, FusedGemm, com.microsoft.nchwc Conv)."""
    return (node.domain, node.op_type) in FUSED_ROLES


def _attribute(node: onnx.NodeProto, name: str):
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return None


def fused_activation(node: GraphNode) -> tuple[str, list[float]]:
    """The fused activation's name ('' for none) and parameters, as the node's attributes give them."""
    name = _attribute(node.proto, "activation") or ""
    if node.op_type == "FusedGemm":
        params = [float(v) for k in ("activation_alpha", "activation_beta", "activation_gamma")
                  if (v := _attribute(node.proto, k)) is not None]
    else:
        params = [float(v) for v in (_attribute(node.proto, "activation_params") or [])]
    return name, params


def fused_activation_problem(node: GraphNode) -> str | None:
    """Why LRP cannot pass relevance through the node's fused activation (None: it can, as the float
    path passes it through a Relu, LeakyRelu or Clip with minimum 0)."""
    name, params = fused_activation(node)
    if name in ("", "Relu", "LeakyRelu"):
        return None
    if name == "Clip" and params and params[0] == 0.0:
        return None
    return (f"fused activation {name}: non-ReLU-like activation; LRP rules assume ReLU-like activations "
            "(explain the float32 file, which has the same refusal at its own activation node)")


def fused_residual_problem(node: GraphNode, carrying: set[str]) -> str | None:
    """Why LRP refuses a fused layer whose residual input (FusedConv's Z, the nchwc Conv's Sum: input 3) is one
    of the tensors that carry relevance (``carrying``); None when it has none or it is a constant. The
    activation count cannot tell: the residual is often the Conv's own input tensor."""
    proto = node.proto
    if len(proto.input) < 4 or proto.input[3] not in carrying:
        return None
    return ("a fused residual input (FusedConv's Z / nchwc Conv's Sum) carries relevance: the float file splits it at "
            "the Add by the Add's rule before the Conv's rule, which one fused rule cannot do; explain the float32 file")


class FusedCall:
    """A fused node's call for a rule (the interface of :class:`onnxxai.analyzers.lrp.apply._Call`):
    calling it computes the linear part (modified parameters, no activation); ``exact`` applies the
    fused activation to the unmodified ``z`` (the node's own output)."""

    def __init__(self, module: torch.nn.Module, node: GraphNode, args: tuple, kwargs: dict, activations: Sequence[int],
                 rule: BasicRule | None = None) -> None:
        inner, full, where = unwrap(module, args)
        self.node, self.inner, self.full = node, inner, full
        self.positions = [where[i] for i in activations]
        self.nchwc = node.domain in (NCHWC_DOMAIN, "com.microsoft.nchwc")
        if self.positions != [0]:
            raise self.refuse("LRP needs the first input to be the only activation (the weight, bias and residual constant)")
        if self.nchwc and inner.blocked_input and isinstance(rule, _INPUT_REPLACING):
            raise self.refuse(f"rule {rule!r} replaces the input by constants, which on an NCHWc-blocked input would "
                              "spread relevance onto the padding channels; give this node an element-wise rule "
                              "(Epsilon, ZPlus, Gamma, AlphaBeta)")

    def refuse(self, why: str) -> AnalyzerError:
        return AnalyzerError(f"LRP: fused node {self.node}: {why}")

    def view_inputs(self, inputs: Sequence[Tensor]) -> list[Tensor]:
        """The activation inputs as the rule sees them (as they are)."""
        return list(inputs)

    def _param(self, t: Tensor | None, name: str, like: Tensor, modify: ParamModifier | None) -> Tensor | None:
        if t is None:
            return None
        t = t.detach().to(like.dtype)
        return modify(t, name) if modify is not None else t

    def __call__(self, inputs: Sequence[Tensor], modify: ParamModifier | None = None) -> Tensor:
        (x,) = inputs
        inner, full = self.inner, self.full
        if self.node.op_type == "FusedGemm":
            b = self._param(full[1], "weight", x, modify)
            c = self._param(full[2], "bias", x, modify)
            z = inner.alpha * ((x.t() if inner.trans_a else x) @ (b.t() if inner.trans_b else b))
            return z if c is None else z + inner.beta * c
        if self.nchwc:  # inputs: x, bias, sum; the filter is the module's buffer (OIHW)
            given = iter(full[1:])
            bias, total = (next(given) if p else None for p in inner.present)
            w = self._param(inner.weight, "weight", x, modify)
            b = self._param(bias, "bias", x, modify)
            y = inner.conv(unblock(x, inner.size) if inner.blocked_input else x, w, b)
            if total is not None:
                y = y + self._param(unblock(total, inner.size), "bias", x, modify)
            return block(y, inner.size)
        w = self._param(full[1], "weight", x, modify)
        b = self._param(full[2], "bias", x, modify)
        z = inner.conv(x, w, b)
        residual = full[3] if len(full) > 3 else None
        return z if residual is None else z + self._param(residual, "bias", x, modify)

    def exact(self, inputs: Sequence[Tensor], z: Tensor) -> Tensor:
        """The node's own output: its fused activation of ``z`` (element-wise, so blocked or not alike)."""
        return self.inner.act(z)

