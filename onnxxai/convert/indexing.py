"""Scatter, cumulative, triangular, selection, reversal and uniqueness ops.

Ops onnx2torch lacks (Trilu, CumProd, ScatterElements, Scatter, TensorScatter, Unique, Compress,
ReverseSequence) and
ops where its converter computes the wrong thing or refuses valid attributes, which ours replace:
CumSum (``reverse`` defaulted to 1), TopK (ties not broken by the lower index, no opset-1 ``k``
attribute), IsInf (``detect_negative``/``detect_positive`` ignored), ScatterND (no ``reduction``),
Slice (indexes with a list, which torch deprecates with a UserWarning on every call; the attribute form of
Slice-1 was unreachable, its module reading attributes it never set; with a negative step, starts below
``-dim`` and the end INT_MAX, which onnxruntime reads as "through the first element", gave empty slices).
Every scatter is a single vectorised torch scatter, so gradients flow to ``data`` and ``updates``.
"""

from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import constant_input, optional_result, result
from onnxxai.convert.registry import register, since

# ---------------------------------------------------------------------------------------------
# helpers


def _str_attr(node: OnnxNode, name: str, default: str) -> str:
    value = node.attributes.get(name, default)
    return value.decode() if isinstance(value, bytes) else str(value)


def _scalar(value: torch.Tensor | int | None) -> int | None:
    if value is None:
        return None
    return int(value.reshape(-1)[0]) if isinstance(value, torch.Tensor) else int(value)


_TORCH_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


def _reduction(node: OnnxNode, op: str) -> str:
    reduction = _str_attr(node, "reduction", "none")
    if reduction != "none" and reduction not in _TORCH_REDUCE:
        raise NotImplementedError(f"{op} with reduction={reduction!r} is not supported")
    return reduction


def _scatter(data: torch.Tensor, dim: int, index: torch.Tensor, updates: torch.Tensor, reduction: str) -> torch.Tensor:
    """``data`` with ``updates`` written (or reduced) at ``index`` along ``dim``; out of place."""
    if reduction == "none":
        return torch.scatter(data, dim, index, updates)
    return torch.scatter_reduce(data, dim, index, updates, reduce=_TORCH_REDUCE[reduction], include_self=True)


# ---------------------------------------------------------------------------------------------
# Trilu


class Trilu(torch.nn.Module):
    """Keep the upper (``upper=1``) or lower triangle of the last two dimensions, shifted by the
    diagonal offset ``k`` (static, or given at run time); zero elsewhere. Causal masks in exported
    transformers are built with it."""

    def __init__(self, upper: bool, k: int | None) -> None:
        super().__init__()
        self.upper, self.k = upper, k

    def forward(self, x: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
        diagonal = self.k if k is None else _scalar(k)
        return torch.triu(x, diagonal or 0) if self.upper else torch.tril(x, diagonal or 0)


@register("Trilu", (14,))
def convert_trilu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Trilu-14: ``k`` (optional second input) becomes static when it is an initializer."""
    k = constant_input(node, graph, 1)
    dynamic = len(node.input_values) > 1 and bool(node.input_values[1]) and k is None
    module = Trilu(bool(node.attributes.get("upper", 1)), _scalar(k) if k is not None else 0)
    return result(module, node, 2 if dynamic else 1)


# ---------------------------------------------------------------------------------------------
# CumSum / CumProd


class Cumulative(torch.nn.Module):
    """Cumulative sum or product along ``axis`` (static, or a run-time scalar tensor), optionally
    ``exclusive`` (the running value before each element: 0 / 1 first) and ``reverse``
    (accumulating from the end). Built out of place (flip, pad, cumsum/cumprod) so it stays
    differentiable."""

    def __init__(self, op: str, exclusive: bool, reverse: bool, axis: int | None) -> None:
        super().__init__()
        self.op, self.exclusive, self.reverse, self.axis = op, exclusive, reverse, axis

    def forward(self, x: torch.Tensor, axis: torch.Tensor | None = None) -> torch.Tensor:
        dim = self.axis if axis is None else _scalar(axis)
        dim = dim % x.dim()
        if self.reverse:
            x = torch.flip(x, (dim,))
        if self.exclusive and x.shape[dim]:
            shape = list(x.shape)
            shape[dim] = 1
            start = torch.zeros(shape, dtype=x.dtype, device=x.device) if self.op == "CumSum" else torch.ones(shape, dtype=x.dtype, device=x.device)
            x = torch.cat([start, x.narrow(dim, 0, x.shape[dim] - 1)], dim=dim)
        y = torch.cumsum(x, dim) if self.op == "CumSum" else torch.cumprod(x, dim)
        y = y.to(x.dtype)  # cumsum of int32 promotes to int64
        return torch.flip(y, (dim,)) if self.reverse else y


@register("CumProd", (26,))
@register("CumSum", (11, 14), replaces=True)
def convert_cumulative(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """CumSum-11/14 (replacing onnx2torch's, whose ``reverse`` defaulted to 1) and CumProd-26."""
    axis = constant_input(node, graph, 1)
    module = Cumulative(node.operation_type, bool(node.attributes.get("exclusive", 0)), bool(node.attributes.get("reverse", 0)),
                        None if axis is None else _scalar(axis))
    return result(module, node, 1 if axis is not None else 2)


# ---------------------------------------------------------------------------------------------
# ScatterElements / Scatter / ScatterND / TensorScatter


class ScatterElements(torch.nn.Module):
    """ONNX ScatterElements (and the deprecated Scatter): ``updates`` written into a copy of
    ``data`` at ``indices`` along ``axis`` (negative indices count from the end), replacing or
    reduced with add / mul / max / min. Differentiable in ``data`` and ``updates``."""

    def __init__(self, axis: int, reduction: str) -> None:
        super().__init__()
        self.axis, self.reduction = axis, reduction

    def forward(self, data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        dim = self.axis % data.dim()
        index = indices.to(torch.int64)
        index = torch.where(index < 0, index + data.shape[dim], index)
        return _scatter(data, dim, index, updates, self.reduction)


@register("ScatterElements", since(1))
@register("Scatter", since(1))
def convert_scatter_elements(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """ScatterElements-11/13/16/18 and Scatter-9/11."""
    return result(ScatterElements(int(node.attributes.get("axis", 0)), _reduction(node, node.operation_type)), node)


class ScatterND(torch.nn.Module):
    """ONNX ScatterND: slices of ``updates`` written into a copy of ``data`` at the index tuples in
    the last dimension of ``indices``, replacing or reduced with add / mul / max / min. The index
    tuples become flat row numbers of ``data`` seen as (rows, slice), so one scatter does it all."""

    def __init__(self, reduction: str) -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        k = indices.shape[-1]
        lead = data.shape[:k]
        tuples = indices.to(torch.int64).reshape(-1, k)
        sizes = torch.tensor(lead, dtype=torch.int64, device=data.device)
        tuples = torch.where(tuples < 0, tuples + sizes, tuples)
        strides = torch.ones(k, dtype=torch.int64, device=data.device)
        if k > 1:
            strides[:-1] = torch.flip(torch.cumprod(torch.flip(sizes[1:], (0,)), 0), (0,))
        rows = (tuples * strides).sum(-1)
        flat = data.reshape(-1, *data.shape[k:]) if k else data.reshape(1, *data.shape)
        flat = flat.reshape(flat.shape[0], -1)
        src = updates.reshape(rows.shape[0], -1)
        out = _scatter(flat, 0, rows[:, None].expand(-1, flat.shape[1]), src, self.reduction)
        return out.reshape(data.shape)


@register("ScatterND", since(1), replaces=True)  # 18 (max/min) is a schema change
def convert_scatter_nd(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """ScatterND-11/13/16/18 with every reduction (onnx2torch's refuses all but none)."""
    return result(ScatterND(_reduction(node, "ScatterND")), node)


class TensorScatter(torch.nn.Module):
    """ONNX TensorScatter (opset 24, KV-cache update): ``update`` written into a copy of
    ``past_cache`` along ``axis``, starting at each batch row's ``write_indices`` (0 when absent),
    modulo the cache length in ``circular`` mode. Differentiable in both tensors."""

    def __init__(self, axis: int, circular: bool) -> None:
        super().__init__()
        self.axis, self.circular = axis, circular

    def forward(self, past: torch.Tensor, update: torch.Tensor, write_indices: torch.Tensor | None = None) -> torch.Tensor:
        dim = self.axis % past.dim()
        batch, length = past.shape[0], update.shape[dim]
        start = torch.zeros(batch, dtype=torch.int64, device=past.device) if write_indices is None else write_indices.to(torch.int64)
        positions = start[:, None] + torch.arange(length, device=past.device)  # (batch, length)
        if self.circular:
            positions = positions % past.shape[dim]
        shape = [1] * past.dim()
        shape[0] = batch
        shape[dim] = length
        if dim == 0:  # the batch axis is the sequence axis: one start for everyone
            positions = positions[0]
            shape[0] = length
        index = positions.reshape(shape).expand(update.shape)
        return torch.scatter(past, dim, index, update)


@register("TensorScatter", since(1))
def convert_tensor_scatter(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """TensorScatter-24, linear or circular mode."""
    mode = _str_attr(node, "mode", "linear")
    if mode not in ("linear", "circular"):
        raise NotImplementedError(f"TensorScatter with mode={mode!r} is not supported")
    return result(TensorScatter(int(node.attributes.get("axis", -2)), mode == "circular"), node)


# ---------------------------------------------------------------------------------------------
# TopK / Unique / Compress / IsInf


class TopK(torch.nn.Module):
    """The ``k`` largest (or smallest) values along ``axis`` and their indices. A stable sort
    breaks ties by the lower index first, as ONNX requires (torch.topk does not promise it)."""

    def __init__(self, axis: int, largest: bool, k: int | None = None) -> None:
        super().__init__()
        self.axis, self.largest, self.k = axis, largest, k

    def forward(self, x: torch.Tensor, k: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.k if k is None else _scalar(k)
        values, indices = torch.sort(x, dim=self.axis, descending=self.largest, stable=True)
        return values.narrow(self.axis, 0, n), indices.narrow(self.axis, 0, n)


@register("TopK", (1, 10, 11), replaces=True)
def convert_topk(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """TopK-1 (``k`` attribute) and -10/11/24 (``k`` input; constant ``k`` becomes static).
    ``sorted=0`` lets any order through, so the sorted order is a valid answer."""
    axis, largest = int(node.attributes.get("axis", -1)), bool(node.attributes.get("largest", 1))
    if "k" in node.attributes:
        return result(TopK(axis, largest, int(node.attributes["k"])), node, 1)
    k = constant_input(node, graph, 1)
    if k is not None:
        return result(TopK(axis, largest, _scalar(k)), node, 1)
    return result(TopK(axis, largest), node)


class Unique(torch.nn.Module):
    """ONNX Unique: the distinct values (or slices along ``axis``), sorted or in order of first
    occurrence, with the index of each one's first occurrence, the inverse mapping and the counts."""

    def __init__(self, axis: int | None, sorted_: bool) -> None:
        super().__init__()
        self.axis, self.sorted = axis, sorted_

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.axis is None:
            x = x.reshape(-1)
            dim = 0
        else:
            dim = self.axis % x.dim()
        _, inverse, counts = torch.unique(x, sorted=True, return_inverse=True, return_counts=True, dim=dim)
        n = counts.shape[0]
        positions = torch.arange(inverse.shape[0], device=x.device)
        first = torch.full((n,), inverse.shape[0], dtype=torch.int64, device=x.device)
        first = first.scatter_reduce(0, inverse, positions, reduce="amin", include_self=True)
        if not self.sorted:  # re-rank the unique entries by first occurrence
            order = torch.argsort(first)
            rank = torch.empty_like(order)
            rank[order] = torch.arange(n, device=x.device)
            first, counts, inverse = first[order], counts[order], rank[inverse]
        return torch.index_select(x, dim, first), first, inverse, counts


@register("Unique", since(1))
def convert_unique(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Unique-11/28 (all four outputs; unused trailing ones may be omitted)."""
    axis = int(node.attributes["axis"]) if "axis" in node.attributes else None
    return result(Unique(axis, bool(node.attributes.get("sorted", 1))), node)


class Compress(torch.nn.Module):
    """Select the slices along ``axis`` (of the flattened input when there is no axis) whose
    ``condition`` entry is true; a shorter condition selects among the leading slices only."""

    def __init__(self, axis: int | None) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        if self.axis is None:
            x, dim = x.reshape(-1), 0
        else:
            dim = self.axis % x.dim()
        keep = torch.nonzero(condition.reshape(-1).to(torch.bool)).reshape(-1)
        return torch.index_select(x, dim, keep)


@register("Compress", since(1))
def convert_compress(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Compress-9/11/28."""
    return result(Compress(int(node.attributes["axis"]) if "axis" in node.attributes else None), node)


class IsInf(torch.nn.Module):
    """True where the input is +inf (if ``detect_positive``) or -inf (if ``detect_negative``)."""

    def __init__(self, detect_positive: bool, detect_negative: bool) -> None:
        super().__init__()
        self.detect_positive, self.detect_negative = detect_positive, detect_negative

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.detect_positive and self.detect_negative:
            return torch.isinf(x)
        if self.detect_positive:
            return torch.isposinf(x)
        if self.detect_negative:
            return torch.isneginf(x)
        return torch.zeros_like(x, dtype=torch.bool)


@register("IsInf", (10,), replaces=True)
def convert_isinf(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """IsInf-10/20 honouring ``detect_positive`` and ``detect_negative`` (onnx2torch ignores them)."""
    module = IsInf(bool(node.attributes.get("detect_positive", 1)), bool(node.attributes.get("detect_negative", 1)))
    return result(module, node, 1)


# ---------------------------------------------------------------------------------------------
# registration

class GatherElements(torch.nn.Module):
    """ONNX GatherElements: ``torch.gather`` with negative indices counted from the end of the axis."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, data: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        indices = indices.long()
        indices = torch.where(indices < 0, indices + data.shape[self.axis], indices)
        return torch.gather(data, self.axis, indices)


@register("GatherElements", (11, 13), replaces=True)
def convert_gather_elements(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """GatherElements (11, 13), negative indices included."""
    return result(GatherElements(int(node.attributes.get("axis", 0))), node)


class GatherND(torch.nn.Module):
    """ONNX GatherND with ``batch_dims``: the leading ``batch_dims`` axes of data and indices are
    matched, the last axis of indices addresses the following axes of data (negative indices
    count from the end)."""

    def __init__(self, batch_dims: int) -> None:
        super().__init__()
        self.batch_dims = batch_dims

    def forward(self, data: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        b = self.batch_dims
        batch_shape = data.shape[:b]
        depth = indices.shape[-1]
        index_dims = data.shape[b : b + depth]
        indices = indices.long()
        sizes = torch.tensor(index_dims, device=indices.device, dtype=torch.long)
        indices = torch.where(indices < 0, indices + sizes, indices)
        nbatch = int(torch.tensor(batch_shape).prod()) if b else 1
        flat_data = data.reshape(nbatch, -1, *data.shape[b + depth :])  # (B, prod(index_dims), ...)
        strides = torch.ones(depth, dtype=torch.long, device=indices.device)
        for k in range(depth - 2, -1, -1):
            strides[k] = strides[k + 1] * index_dims[k + 1]
        flat_index = (indices * strides).sum(-1).reshape(nbatch, -1)  # (B, n)
        picked = flat_data[torch.arange(nbatch, device=data.device).unsqueeze(1), flat_index]
        return picked.reshape(*indices.shape[:-1], *data.shape[b + depth :])


@register("GatherND", (11, 12, 13), replaces=True)
def convert_gather_nd(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """GatherND (11, 12, 13) with any ``batch_dims``."""
    return result(GatherND(int(node.attributes.get("batch_dims", 0))), node)


# --------------------------------------------------------------------------------------------------
# Slice (opset 1, 10, 11, 13)


#: ends onnxruntime reads as numpy's None (slice to the end of the axis), whatever the step's sign
_INT_MAX = (2**31 - 1, 2**63 - 1)


def _ints(values: torch.Tensor | list[int] | None) -> list[int] | None:
    return None if values is None else [int(v) for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]


class Slice(torch.nn.Module):
    """ONNX Slice as one basic-indexing step (a tuple of slices), with ONNX's clamping of starts and ends;
    a negative step flips the axis and slices it forwards. ``starts``/``ends``/``axes`` given here are
    Slice-1's attributes; otherwise they (and ``steps``) are the node's inputs."""

    def __init__(self, starts: list[int] | None = None, ends: list[int] | None = None, axes: list[int] | None = None) -> None:
        super().__init__()
        self.starts, self.ends, self.axes = starts, ends, axes

    def forward(self, x: torch.Tensor, starts: torch.Tensor | None = None, ends: torch.Tensor | None = None,
                axes: torch.Tensor | None = None, steps: torch.Tensor | None = None) -> torch.Tensor:
        begin = self.starts if self.starts is not None else _ints(starts)
        end = self.ends if self.ends is not None else _ints(ends)
        axis_list = self.axes if self.axes is not None else _ints(axes)
        axis_list = list(range(len(begin))) if axis_list is None else axis_list
        step_list = _ints(steps) or [1] * len(begin)
        index: list[slice] = [slice(None)] * x.dim()
        flips = []
        for b, e, a, step in zip(begin, end, axis_list, step_list):
            a %= x.dim()
            d = x.shape[a]
            if e in _INT_MAX:  # onnxruntime (the parity reference): "to the end" in the step's direction
                e = -1 if step < 0 else d
            else:
                e = e + d if e < 0 else e
            b = b + d if b < 0 else b
            if step > 0:
                index[a] = slice(min(max(b, 0), d), min(max(e, 0), d), step)
            else:  # clamped to [0, d-1] and [-1, d-1], then counted from the end of the flipped axis
                b, e = min(max(b, 0), d - 1), min(max(e, -1), d - 1)
                flips.append(a)
                index[a] = slice(d - 1 - b, d - 1 - e, -step) if d else slice(0, 0)
        if flips:
            x = torch.flip(x, flips)
        return x[tuple(index)]


@register("Slice", since(1), replaces=True)
def convert_slice(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """Slice-1 (attributes) and Slice-10/11/13 (inputs; axes and steps optional)."""
    if "starts" in node.attributes:
        return result(Slice(_ints(node.attributes["starts"]), _ints(node.attributes["ends"]),
                            _ints(node.attributes.get("axes"))), node, 1)
    if all(node.input_values):
        return result(Slice(), node)
    return optional_result(Slice(), node, len(node.input_values))


# --------------------------------------------------------------------------------------------------
# ReverseSequence (opset 10, 28)


class ReverseSequence(torch.nn.Module):
    """Reverse the first ``sequence_lens[b]`` steps along the time axis of each batch entry ``b``,
    as one gather (the rest of each sequence is copied)."""

    def __init__(self, batch_axis: int, time_axis: int) -> None:
        super().__init__()
        self.batch_axis, self.time_axis = batch_axis, time_axis

    def forward(self, x: torch.Tensor, sequence_lens: torch.Tensor) -> torch.Tensor:
        moved = x.movedim((self.batch_axis, self.time_axis), (0, 1))
        steps = torch.arange(moved.shape[1], device=x.device)[None, :]
        lens = sequence_lens.to(torch.int64).reshape(-1, 1)
        source = torch.where(steps < lens, lens - 1 - steps, steps)  # (batch, time)
        source = source.reshape(*source.shape, *([1] * (moved.dim() - 2))).expand_as(moved)
        return moved.gather(1, source).movedim((0, 1), (self.batch_axis, self.time_axis))


@register("ReverseSequence", since(1))
def convert_reverse_sequence(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """ReverseSequence (opsets 10, 28): batch_axis / time_axis 0 or 1."""
    return result(ReverseSequence(int(node.attributes.get("batch_axis", 1)), int(node.attributes.get("time_axis", 0))), node)
