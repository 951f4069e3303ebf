"""Quantized integer ops as LRP sees them: the float op on dequantized values.

A QLinearConv (QLinearMatMul, com.microsoft QGemm, ...) computes, up to the rounding of its output,
the float Conv with the dequantized weight ``(w - w_zero_point) * w_scale`` and the dequantized bias
``bias * x_scale * w_scale`` on the dequantized input ``(x - x_zero_point) * x_scale``. For relevance
it *is* that layer: a rule's terms are copies of the float layer on the dequantized input with the
rule's modified dequantized parameters, and its denominator is the float pre-activation ``z`` (in the
units of the dequantized output, before requantization). The forward value stays the op's exact
integer result. Relevance is conserved across a (re)quantization: the relevance of a quantized tensor
is that of its dequantized values, so QuantizeLinear / DequantizeLinear pass it unchanged and the
relevance a rule computes at the dequantized input is the relevance of the quantized input.

:class:`DequantizedCall` is the quantized counterpart of :class:`onnxxai.analyzers.lrp.apply._Call`
(same interface), built from one view class per op type (:data:`VIEWS`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from onnxxai.analyzers.lrp.nodes import GraphNode
from onnxxai.analyzers.lrp.rules import BasicRule, ParamModifier
from onnxxai.convert._util import OptionalInputs
from onnxxai.errors import AnalyzerError

__all__ = ["DequantizedCall", "ViewGradient", "VIEWS", "unwrap"]

Tensor = torch.Tensor


def unwrap(module: torch.nn.Module, args: Sequence) -> tuple[torch.nn.Module, list, list[int]]:
    """The quantized module inside a converter's :class:`OptionalInputs`, its arguments at their ONNX
    input positions (None for omitted optional inputs), and the ONNX position of each given argument."""
    if isinstance(module, OptionalInputs):
        where = [i for i, present in enumerate(module.present) if present]
        full = [None] * len(module.present)
        for i, a in zip(where, args):
            full[i] = a
        return module.module, full, where[:len(args)]
    return module, list(args), list(range(len(args)))


def _float(like: Tensor) -> torch.dtype:
    return torch.float64 if like.dtype == torch.float64 else torch.float32


def _dequantize(x: Tensor, scale: Tensor, zero_point: Tensor | None, shape: Callable[[Tensor], Tensor] | None = None,
                dtype: torch.dtype | None = None) -> Tensor:
    """``(x - zero_point) * scale`` in ``dtype`` (x's float type by default); ``shape`` lays a per-axis
    scale / zero point out to broadcast."""
    dtype = dtype or _float(x)
    s = scale.detach().to(dtype)
    z = torch.zeros((), dtype=dtype) if zero_point is None else zero_point.detach().to(dtype)
    if shape is not None:
        s, z = shape(s), shape(z)
    return (x.to(dtype) - z) * s


def _scalar(t: Tensor) -> Tensor:
    return t.reshape(()) if t.numel() == 1 else t


class _View:
    """One quantized op's float meaning. ``data``: ONNX position of each quantized data input ->
    (scale position, zero point position); ``names``: parameter name of a data input that is a constant
    (``weight`` or ``bias``, as rules' parameter modifiers see it)."""

    data: dict[int, tuple[int, int]] = {}
    names: dict[int, str] = {}

    def __init__(self, node: GraphNode, inner: torch.nn.Module, full: list) -> None:
        self.node, self.inner, self.full = node, inner, full

    def layout(self, pos: int, t: Tensor, rank: int) -> Tensor:
        """A scale or zero point of data input ``pos`` shaped to broadcast against a rank-``rank`` tensor."""
        return _scalar(t)

    def dequantize(self, pos: int, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """The dequantized values of data input ``pos`` given as ``x``."""
        scale_pos, zp_pos = self.data[pos]
        return _dequantize(x, self.full[scale_pos], self.full[zp_pos], lambda t: self.layout(pos, t, x.dim()), dtype)

    def operands(self, values: dict[int, Tensor], modify: ParamModifier | None) -> dict[int, Tensor]:
        """Every data input dequantized: the activations as given, the constants (parameters) modified."""
        like = next(iter(values.values()))
        out = {}
        for pos in self.data:
            if pos in values:
                out[pos] = values[pos]
            elif self.full[pos] is not None:
                p = self.dequantize(pos, self.full[pos], _float(like))
                out[pos] = modify(p, self.names.get(pos, "weight")) if modify is not None else p
        return out

    def compute(self, values: dict[int, Tensor], modify: ParamModifier | None) -> Tensor:
        """The float op (before requantization) on dequantized ``values`` (position -> activation)."""
        raise NotImplementedError

    def refuse(self, why: str) -> AnalyzerError:
        return AnalyzerError(f"LRP: quantized node {self.node}: {why}")


class _ConvView(_View):
    """QLinearConv: x (0, 1, 2), w (3, 4, 5, per output channel), bias (8, int32 at x_scale * w_scale)."""

    data = {0: (1, 2), 3: (4, 5)}

    def layout(self, pos, t, rank):
        return _scalar(t) if pos == 0 or t.numel() == 1 else t.reshape(-1, *[1] * (rank - 1))

    def compute(self, values, modify):
        if 0 not in values:
            raise self.refuse("the weight is computed from the explained input; LRP needs a constant weight")
        x = values[0]
        w = self.dequantize(3, self.full[3], x.dtype)
        z = self.inner.conv(x, modify(w, "weight") if modify is not None else w)
        bias = self.full[8]
        if bias is not None:
            scale = self.full[1].detach().to(x.dtype).reshape(()) * self.full[4].detach().to(x.dtype).reshape(-1)
            b = bias.detach().to(x.dtype).reshape(-1) * scale
            b = modify(b, "bias") if modify is not None else b
            z = z + b.reshape(1, -1, *[1] * (z.dim() - 2))
        return z


class _MatMulView(_View):
    """QLinearMatMul: a (0, 1, 2; per row), b (3, 4, 5; per column); the constant operand is the weight."""

    data = {0: (1, 2), 3: (4, 5)}

    def layout(self, pos, t, rank):
        if t.numel() == 1:
            return t.reshape(())
        return t.reshape(-1, 1) if pos == 0 else t.reshape(-1)

    def compute(self, values, modify):
        ops = self.operands(values, modify)
        return torch.matmul(ops[0], ops[3])


class _GemmView(_View):
    """com.microsoft QGemm: ``alpha * A' @ B' + C`` with C (6) int32 at ``a_scale * b_scale`` (per column of B')."""

    data = {0: (1, 2), 3: (4, 5)}

    def layout(self, pos, t, rank):
        if pos == 0 or t.numel() == 1:
            return _scalar(t)
        return t.reshape(-1, 1) if self.inner.trans_b else t.reshape(1, -1)

    def compute(self, values, modify):
        if 0 not in values or 3 in values:
            raise self.refuse("LRP needs A to be the activation and B a constant weight")
        a = values[0]
        b = self.dequantize(3, self.full[3], a.dtype) * self.inner.alpha
        b = modify(b, "weight") if modify is not None else b
        z = torch.matmul(a.t() if self.inner.trans_a else a, b.t() if self.inner.trans_b else b)
        c = self.full[6]
        if c is not None:
            scale = self.inner.alpha * self.full[1].detach().to(a.dtype).reshape(()) * self.full[4].detach().to(a.dtype).reshape(-1)
            bias = c.detach().to(a.dtype) * (scale if scale.numel() == 1 else scale.reshape(-1))
            z = z + (modify(bias, "bias") if modify is not None else bias)
        return z


class _BinaryView(_View):
    """com.microsoft QLinearAdd / QLinearMul: a (0, 1, 2), b (3, 4, 5); a constant operand of Add is a bias."""

    data = {0: (1, 2), 3: (4, 5)}

    def __init__(self, node, inner, full):
        super().__init__(node, inner, full)
        self.add = node.op_type == "QLinearAdd"
        self.names = {0: "bias", 3: "bias"} if self.add else {0: "weight", 3: "weight"}

    def compute(self, values, modify):
        ops = self.operands(values, modify)
        return ops[0] + ops[3] if self.add else ops[0] * ops[3]


class _PoolView(_View):
    """com.microsoft QLinearAveragePool / QLinearGlobalAveragePool: the average of dequantized values."""

    data = {0: (1, 2)}

    def compute(self, values, modify):
        x = values[0]
        inner = self.inner
        if self.node.op_type == "QLinearGlobalAveragePool":
            return x.mean(inner.dims(x), keepdim=True)
        x = x.movedim(-1, 1) if inner.channels_last else x
        y = inner.pool(x)
        return y.movedim(1, -1) if inner.channels_last else y


class _ConcatView(_View):
    """com.microsoft QLinearConcat: (y_scale, y_zero_point, then x, x_scale, x_zero_point per input)."""

    def __init__(self, node, inner, full):
        super().__init__(node, inner, full)
        self.data = {p: (p + 1, p + 2) for p in range(2, len(full), 3)}
        self.names = {p: "bias" for p in self.data}

    def compute(self, values, modify):
        ops = self.operands(values, modify)
        return torch.cat([ops[p] for p in sorted(ops)], self.inner.axis)


class _UnaryView(_View):
    """com.microsoft QLinearLeakyRelu / QLinearSigmoid / QLinearSoftmax: the float function."""

    data = {0: (1, 2)}

    def compute(self, values, modify):
        x = values[0]
        if self.node.op_type == "QLinearSoftmax":
            rows, back = self.inner.rows(x)
            return back(torch.softmax(rows, dim=1))
        return self.inner.function(x, False)


#: quantized op type -> its view
VIEWS: dict[str, type[_View]] = {
    "QLinearConv": _ConvView, "QLinearMatMul": _MatMulView, "QGemm": _GemmView, "QLinearAdd": _BinaryView,
    "QLinearMul": _BinaryView, "QLinearAveragePool": _PoolView, "QLinearGlobalAveragePool": _PoolView,
    "QLinearConcat": _ConcatView, "QLinearLeakyRelu": _UnaryView, "QLinearSigmoid": _UnaryView, "QLinearSoftmax": _UnaryView,
}


class DequantizedCall:
    """A quantized node's call for a rule: ``view`` dequantizes its activation inputs, calling it computes
    the float op on (modified) dequantized inputs with (modified) dequantized parameters, ``exact`` is
    the node's own integer result (the forward value)."""

    def __init__(self, module: torch.nn.Module, node: GraphNode, args: tuple, kwargs: dict, activations: Sequence[int]) -> None:
        if node.op_type not in VIEWS:
            raise AnalyzerError(f"LRP: no dequantized view of the quantized op of node {node}")
        inner, full, where = unwrap(module, args)
        self.module, self.args, self.kwargs = module, args, kwargs
        self.activations = list(activations)
        self.view = VIEWS[node.op_type](node, inner, full)
        self.positions = [where[i] for i in self.activations]
        if any(p not in self.view.data for p in self.positions):
            raise self.view.refuse("a scale or zero point is computed from the explained input (dynamic quantization); "
                                   "LRP needs fixed quantization parameters")

    def view_inputs(self, inputs: Sequence[Tensor]) -> list[Tensor]:
        """The dequantized values of the activation inputs (what the rule's terms and products see)."""
        return [self.view.dequantize(p, x) for p, x in zip(self.positions, inputs)]

    def __call__(self, inputs: Sequence[Tensor], modify: ParamModifier | None = None) -> Tensor:
        return self.view.compute(dict(zip(self.positions, inputs)), modify)

    def exact(self, inputs: Sequence[Tensor], z: Tensor) -> Tensor:
        """The node's own output (integer values, in the float container the graph carries them in)."""
        args = list(self.args)
        for i, x in zip(self.activations, inputs):
            args[i] = x
        return self.module(*args, **self.kwargs)


class ViewGradient(BasicRule):
    """Pass for a quantized op that moves values (QLinearConcat): the relevance moves as the gradient of
    the op's float view on dequantized values moves it (its own straight-through gradient would scale it
    by ``x_scale / y_scale``)."""

    def gradients(self, relevance, outputs, output):
        return [relevance]

    def reduce(self, inputs, gradients):
        return gradients[0]
