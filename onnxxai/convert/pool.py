"""Pooling: AveragePool with asymmetric or wide padding or dilations (any opset) and opset 19/22;
MaxPool with wide or asymmetric pads and its Indices output; GlobalMaxPool; LpPool; MaxUnpool."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import int_list, result, torch_pads
from onnxxai.convert.conv import same_pads
from onnxxai.convert.registry import register, since, upstream_converter


class OnnxAveragePoolPadded(torch.nn.Module):
    """Average pooling with explicit (possibly asymmetric) ONNX pads, counting or excluding the pad."""

    def __init__(self, kernel: list[int], strides: list[int], pads: list[int], count_include_pad: bool) -> None:
        super().__init__()
        rank = len(kernel)
        self.kernel, self.strides, self.count_include_pad = kernel, strides, count_include_pad
        self.torch_pads = torch_pads(pads)
        self.area = math.prod(kernel)
        self.pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank]

    def _window_sum(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.pad(x, self.torch_pads), self.kernel, self.strides) * self.area

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self._window_sum(x)
        if self.count_include_pad:
            return total / self.area
        count = self._window_sum(torch.ones_like(x[:1, :1]))
        return total / count


@register("AveragePool", (19, 22))
@register("AveragePool", (7, 10, 11), extends=True)
def convert_average_pool(node: OnnxNode, graph: OnnxGraph, fallback=None) -> OperationConverterResult:
    """AveragePool: ours for dilations, asymmetric or wide pads; onnx2torch's for the rest."""
    attrs = node.attributes
    kernel = [int(k) for k in attrs["kernel_shape"]]
    rank = len(kernel)
    pads = [int(p) for p in attrs.get("pads", [])]
    auto_pad = _auto_pad(attrs)
    ceil_mode = bool(int(attrs.get("ceil_mode", 0)))
    dilated = any(int(d) != 1 for d in attrs.get("dilations", []))
    # torch's pooling takes only symmetric pads of at most half the kernel: pad explicitly otherwise
    explicit = bool(pads) and (pads[:rank] != pads[rank:] or any(p > k // 2 for p, k in zip(pads, kernel)))
    if explicit and auto_pad == "NOTSET" and not ceil_mode and not dilated:
        strides = [int(s) for s in attrs.get("strides", [1] * rank)]
        return result(OnnxAveragePoolPadded(kernel, strides, pads, bool(int(attrs.get("count_include_pad", 0)))), node)
    if explicit or dilated:
        return result(OnnxPool.from_attributes("avg", attrs), node)
    base = fallback or upstream_converter("AveragePool", 11)
    return base(node, graph)


class GlobalMaxPool(torch.nn.Module):
    """Maximum over every spatial axis, keeping them as size 1 (Keras exports use it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(x, dim=tuple(range(2, x.dim())), keepdim=True)


@register("GlobalMaxPool", since(1))
def convert_global_max_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """GlobalMaxPool-1/22."""
    return result(GlobalMaxPool(), node)


def _auto_pad(attrs: dict) -> str:
    value = attrs.get("auto_pad", "NOTSET")
    value = value.decode() if isinstance(value, bytes) else str(value)
    return "NOTSET" if value == "" else value


class OnnxPool(torch.nn.Module):
    """Max, average or Lp pooling with ONNX's whole window geometry, for what torch's pooling refuses.

    Handles dilations (torch's average pooling has none), pads of any size and asymmetry, auto_pad
    SAME_UPPER/SAME_LOWER/VALID computed from the run-time input size, and ceil_mode (a last window
    must start inside the input or the left pad). The input is padded (with -inf for max, 0 otherwise)
    to exactly the extent the output windows cover; window sums come from a depthwise convolution with
    a dilated all-ones kernel, and the average divides by the count of cells inside the input (or
    inside input and pads with ``count_include_pad``). MaxPool's Indices output (flat indices into the
    input tensor, row or column major) is returned when ``with_indices``.
    """

    def __init__(self, mode: str, kernel: list[int], strides: list[int], dilations: list[int], pads: list[int],
                 auto_pad: str = "NOTSET", ceil_mode: bool = False, count_include_pad: bool = False,
                 p: float = 2.0, with_indices: bool = False, column_major: bool = False) -> None:
        super().__init__()
        if mode not in ("max", "avg", "lp"):
            raise ValueError(f"unknown pooling mode {mode!r}")
        self.mode, self.kernel, self.strides, self.dilations, self.pads = mode, kernel, strides, dilations, pads
        self.auto_pad, self.ceil_mode, self.count_include_pad, self.p = auto_pad, ceil_mode, count_include_pad, p
        self.with_indices, self.column_major = with_indices, column_major

    @classmethod
    def from_attributes(cls, mode: str, attrs: dict, with_indices: bool = False) -> OnnxPool:
        """The module for an ONNX MaxPool/AveragePool/LpPool node's attributes."""
        kernel = [int(k) for k in attrs["kernel_shape"]]
        rank = len(kernel)
        return cls(
            mode, kernel,
            [int(s) for s in attrs.get("strides", [1] * rank)],
            [int(d) for d in attrs.get("dilations", [1] * rank)],
            [int(p) for p in attrs.get("pads", [0] * 2 * rank)],
            _auto_pad(attrs), bool(int(attrs.get("ceil_mode", 0))), bool(int(attrs.get("count_include_pad", 0))),
            float(attrs.get("p", 2)), with_indices, bool(int(attrs.get("storage_order", 0))),
        )

    def _geometry(self, sizes: list[int]) -> tuple[list[int], list[int], list[int]]:
        """(pads begin, pads end, extra cells at the end so that the windows fit exactly; may be negative)."""
        rank = len(sizes)
        extent = [(k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations)]
        if self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads = same_pads(sizes, self.kernel, self.strides, self.dilations, self.auto_pad == "SAME_UPPER")
        elif self.auto_pad == "VALID":
            pads = [0] * 2 * rank
        else:
            pads = self.pads
        begin, end, extra = pads[:rank], pads[rank:], []
        for n, b, e, k, s in zip(sizes, begin, end, extent, self.strides):
            span = n + b + e - k
            if self.ceil_mode and self.auto_pad == "NOTSET":
                out = -(-span // s) + 1
                if (out - 1) * s >= n + b:  # a last window may not start in the right pad
                    out -= 1
            else:
                out = span // s + 1
            extra.append((out - 1) * s + k - (n + b + e))
        return begin, end, extra

    def _window_sum(self, x: torch.Tensor) -> torch.Tensor:
        rank = len(self.kernel)
        flat = x.reshape(-1, 1, *x.shape[2:])
        ones = torch.ones(1, 1, *self.kernel, dtype=x.dtype, device=x.device)
        total = _CONV[rank](flat, ones, None, self.strides, 0, self.dilations)
        return total.reshape(*x.shape[:2], *total.shape[2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        sizes = list(x.shape[2:])
        begin, end, extra = self._geometry(sizes)
        padding: list[int] = []
        for b, e, more in zip(reversed(begin), reversed(end), reversed(extra)):
            padding += [b, e + more]
        if self.mode == "max":
            padded = F.pad(x, padding, value=float("-inf"))
            pooled = _MAX_POOL[len(sizes)](padded, self.kernel, self.strides, 0, self.dilations, return_indices=True)
            if not self.with_indices:
                return pooled[0]
            return pooled[0], self._onnx_indices(pooled[1], x.shape, [int(s) for s in padded.shape[2:]], begin)
        values = x if self.mode == "avg" else x.abs() ** self.p
        total = self._window_sum(F.pad(values, padding))
        if self.mode == "lp":
            return total ** (1.0 / self.p)
        ones = torch.ones(1, 1, *sizes, dtype=x.dtype, device=x.device)
        if self.count_include_pad:  # cells of input and pads count, the ceil_mode overhang does not
            inside: list[int] = []
            for b, e in zip(reversed(begin), reversed(end)):
                inside += [b, e]
            mask = F.pad(F.pad(ones, inside, value=1.0), [v for more in reversed(extra) for v in (0, more)])
        else:
            mask = F.pad(ones, padding)
        return total / self._window_sum(mask)

    def _onnx_indices(self, indices: torch.Tensor, shape: torch.Size, padded: list[int], begin: list[int]) -> torch.Tensor:
        """torch's per-(n, c) flat indices into the padded input -> ONNX's flat indices into the input."""
        rank = len(padded)
        coords, rest = [], indices
        for size in reversed(padded):
            coords.append(rest % size)
            rest = torch.div(rest, size, rounding_mode="floor")
        coords = [c - b for c, b in zip(reversed(coords), begin)]  # row-major order of the spatial axes
        sizes = list(shape[2:])
        order = range(rank) if not self.column_major else reversed(range(rank))
        flat = torch.zeros_like(indices)
        for axis in order:
            flat = flat * sizes[axis] + coords[axis]
        n, c = shape[0], shape[1]
        channel = torch.arange(n * c, device=indices.device).reshape(n, c, *[1] * rank)
        return flat + channel * math.prod(sizes)


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


@register("LpPool", since(1))
def convert_lp_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """LpPool: explicit or auto pads, dilations and ceil_mode."""
    auto_pad = _auto_pad(node.attributes)
    if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise NotImplementedError(f"LpPool with auto_pad={auto_pad} is not supported")
    return result(OnnxPool.from_attributes("lp", node.attributes), node)


@register("MaxPool", (1,))
@register("MaxPool", (8, 10, 11, 12), extends=True)
def convert_max_pool(node: OnnxNode, graph: OnnxGraph, fallback=None) -> OperationConverterResult:
    """MaxPool: ours for pads torch refuses (over half the window, asymmetric), the Indices output and
    column-major indices; onnx2torch's nn.MaxPoolNd for the rest."""
    attrs = node.attributes
    kernel = [int(k) for k in attrs["kernel_shape"]]
    rank = len(kernel)
    dilations = [int(d) for d in attrs.get("dilations", [1] * rank)]
    pads = [int(p) for p in attrs.get("pads", [])]
    auto_pad = _auto_pad(attrs)
    if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise NotImplementedError(f"MaxPool with auto_pad={auto_pad} is not supported")
    with_indices = len([name for name in node.output_values if name]) > 1
    wide = bool(pads) and (pads[:rank] != pads[rank:]
                           or any(2 * p > (k - 1) * d + 1 for p, k, d in zip(pads, kernel, dilations)))
    if (wide and auto_pad == "NOTSET") or with_indices or int(attrs.get("storage_order", 0)):
        return result(OnnxPool.from_attributes("max", attrs, with_indices), node)
    base = fallback or upstream_converter("MaxPool", 8)
    return base(node, graph)


# --------------------------------------------------------------------------------------------------
# MaxUnpool (opsets 9, 11, 22)


class MaxUnpool(torch.nn.Module):
    """ONNX MaxUnpool: scatter ``x`` into zeros at MaxPool's flat indices (which count over the
    whole (N, C, *spatial) tensor) of the inferred shape ``(in - 1) * stride + kernel - pads`` per
    spatial axis; an ``output_shape`` input zero-pads that at the end of each axis."""

    def __init__(self, kernel_shape: list[int], strides: list[int] | None, pads: list[int] | None) -> None:
        super().__init__()
        self.kernel_shape, self.strides, self.pads = kernel_shape, strides, pads

    def forward(self, x: torch.Tensor, indices: torch.Tensor, output_shape: torch.Tensor | None = None) -> torch.Tensor:
        rank = len(self.kernel_shape)
        strides = self.strides or [1] * rank
        pads = self.pads or [0] * (2 * rank)
        shape = list(x.shape[:2]) + [(x.shape[2 + d] - 1) * strides[d] + self.kernel_shape[d] - pads[d] - pads[d + rank]
                                     for d in range(rank)]
        out = x.new_zeros(math.prod(shape))
        out = out.scatter(0, indices.reshape(-1).to(torch.int64), x.reshape(-1)).reshape(shape)
        if output_shape is not None:
            # like ONNX's reference: indices address the inferred shape, which is then zero-padded
            # at the end of each axis to output_shape
            wanted = int_list(output_shape)
            if len(wanted) != len(shape) or any(w < s for w, s in zip(wanted, shape)):
                raise ValueError(f"MaxUnpool output_shape {wanted} is smaller than the inferred shape {shape}")
            out = F.pad(out, [p for w, s in zip(reversed(wanted), reversed(shape)) for p in (0, w - s)])
        return out


@register("MaxUnpool", since(1))
def convert_max_unpool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """MaxUnpool (opsets 9, 11, 22): kernel_shape, strides, pads, optional output_shape."""
    get = node.attributes.get
    return result(MaxUnpool(list(get("kernel_shape")), get("strides"), get("pads")), node)
