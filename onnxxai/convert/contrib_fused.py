"""onnxruntime's fused contrib ops (domain com.microsoft, and com.microsoft.nchwc): what its graph
optimizers write into an optimized file (``SessionOptions.optimized_model_filepath``).

FusedConv / FusedGemm / FusedMatMul / NhwcConv, the element-wise fusions Gelu, FastGelu, BiasGelu,
QuickGelu and BiasAdd, MatMulNBits (block-quantized 2/4/8-bit weights, dequantized once at
conversion: the gradient with respect to the float input is exact), and the NCHWc family that
onnxruntime's NchwcTransformer writes at ORT_ENABLE_ALL.

NCHWc: a blocked tensor has the logical shape (N, Cpad, H, W) of its ONNX value, Cpad the channel
count rounded up to the CPU's block size B (8 on AVX2, 16 on AVX-512), and memory order
[N][Cpad/B][H][W][B]. The converted graph carries exactly that tensor (a contiguous torch tensor
holding the same numbers in the same order as onnxruntime's buffer), so element-wise ops between
nchwc nodes and every intermediate value agree with onnxruntime. Filters are stored reordered
(OIHWBo, or OIHWBiBo with blocked input); they are put back to OIHW once, at conversion. B is not
written in the file: it is the block size of the onnxruntime that runs here (the file is only valid
on the kind of CPU that wrote it), probed once by letting onnxruntime optimize a one-node model.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from collections.abc import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

from onnxxai.convert._util import constant_input, optional_result, result
from onnxxai.convert.conv import ConvDynamicWeight, conv_geometry
from onnxxai.convert.pool import OnnxPool
from onnxxai.convert.registry import register
from onnxxai.convert.sampling import Resize
from onnxxai.errors import ConversionError
from onnxxai.proto import limits

#: com.microsoft and com.microsoft.nchwc as normalization renames them (torch module names refuse dots)
MS_DOMAIN = "com_microsoft"
NCHWC_DOMAIN = "com_microsoft_nchwc"

__all__ = ["MS_DOMAIN", "NCHWC_DOMAIN", "activation", "nchwc_block_size", "block", "unblock", "blocked_tensors", "FusedConv", "FusedGemm",
           "FusedMatMul", "NchwcConv", "MatMulNBits", "dequantize_nbits", "FastGelu", "BiasAdd"]


def _text(value, default: str = "") -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def activation(name: str, params: list[float]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation onnxruntime fuses into a Conv/Gemm (MLAS's and its functors' definitions),
    with its parameters (alpha, beta, ...) in order; an empty name is the identity."""
    p = list(params)

    def param(i: int, default: float) -> float:
        return float(p[i]) if i < len(p) else default

    table: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "": lambda x: x,
        "Relu": torch.relu,
        "Sigmoid": torch.sigmoid,
        "Tanh": torch.tanh,
        "LeakyRelu": lambda x: F.leaky_relu(x, param(0, 0.01)),
        "Clip": lambda x: torch.clamp(x, param(0, -math.inf), param(1, math.inf)),
        "HardSigmoid": lambda x: torch.clamp(param(0, 0.2) * x + param(1, 0.5), 0.0, 1.0),
        "Elu": lambda x: F.elu(x, param(0, 1.0)),
        "Selu": lambda x: param(1, 1.0507009873554805) * torch.where(x > 0, x, param(0, 1.6732632423543772) * torch.expm1(x)),
        "Softsign": F.softsign,
        "Softplus": F.softplus,
        "ThresholdedRelu": lambda x: torch.where(x > param(0, 1.0), x, torch.zeros_like(x)),
        "ScaledTanh": lambda x: param(0, 1.0) * torch.tanh(param(1, 1.0) * x),
        "ParametricSoftplus": lambda x: param(0, 1.0) * F.softplus(param(1, 1.0) * x),
    }
    if name not in table:
        raise NotImplementedError(f"fused activation {name!r} is not supported")
    return table[name]


class _Activation(torch.nn.Module):
    def __init__(self, name: str, params: list[float]) -> None:
        super().__init__()
        self.name, self.params = name, [float(v) for v in params]
        self.fn = activation(name, self.params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _conv_parts(node: OnnxNode) -> tuple[ConvDynamicWeight, _Activation]:
    attrs = node.attributes
    conv = ConvDynamicWeight(*conv_geometry(attrs, node.operation_type))
    return conv, _Activation(_text(attrs.get("activation")), list(attrs.get("activation_params", [])))


class FusedConv(torch.nn.Module):
    """com.microsoft FusedConv: ``activation(conv(X, W) + B + Z)`` (Z, the fused residual, optional)."""

    def __init__(self, conv: ConvDynamicWeight, act: _Activation) -> None:
        super().__init__()
        self.conv, self.act = conv, act

    def forward(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv(x, w, b)
        return self.act(y if z is None else y + z)


@register("FusedConv", (1,), domain=MS_DOMAIN)
def convert_fused_conv(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """com.microsoft FusedConv-1 (Conv + activation, optionally + a residual Z before it)."""
    return optional_result(FusedConv(*_conv_parts(node)), node, 4)


class NhwcConv(torch.nn.Module):
    """com.microsoft NhwcConv: Conv on channels-last input and output (weights OIHW)."""

    def __init__(self, conv: ConvDynamicWeight) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        rank = x.dim()
        to_first = [0, rank - 1] + list(range(1, rank - 1))
        to_last = [0] + list(range(2, rank)) + [1]
        return self.conv(x.permute(to_first), w, b).permute(to_last)


@register("NhwcConv", (1,), domain=MS_DOMAIN)
def convert_nhwc_conv(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """com.microsoft NhwcConv-1."""
    return optional_result(NhwcConv(_conv_parts(node)[0]), node, 3)


class FusedGemm(torch.nn.Module):
    """com.microsoft FusedGemm: ``activation(alpha * A' B' + beta * C)``."""

    def __init__(self, alpha: float, beta: float, trans_a: bool, trans_b: bool, act: _Activation) -> None:
        super().__init__()
        self.alpha, self.beta, self.trans_a, self.trans_b, self.act = alpha, beta, trans_a, trans_b, act

    def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        y = self.alpha * ((a.t() if self.trans_a else a) @ (b.t() if self.trans_b else b))
        if c is not None:
            y = y + self.beta * c
        return self.act(y)


@register("FusedGemm", (1,), domain=MS_DOMAIN)
def convert_fused_gemm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """com.microsoft FusedGemm-1 (Gemm + activation; parameters activation_alpha/beta/gamma)."""
    attrs = node.attributes
    params = [attrs[k] for k in ("activation_alpha", "activation_beta", "activation_gamma") if k in attrs]
    name = _text(attrs.get("activation"))
    if name == "LeakyRelu" and "activation_alpha" not in attrs:
        params = [0.01]
    module = FusedGemm(float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0)), bool(attrs.get("transA", 0)),
                       bool(attrs.get("transB", 0)), _Activation(name, params))
    return optional_result(module, node, 3)


class FusedMatMul(torch.nn.Module):
    """com.microsoft FusedMatMul: ``alpha * op(A) @ op(B)`` (numpy matmul broadcasting), where op may
    move the first (batch) dimension next to the matrix dimensions (``transBatch*``) and/or swap the
    last two (``trans*``)."""

    def __init__(self, alpha: float, trans_a: bool, trans_b: bool, trans_batch_a: bool, trans_batch_b: bool) -> None:
        super().__init__()
        self.alpha, self.trans_a, self.trans_b = alpha, trans_a, trans_b
        self.trans_batch_a, self.trans_batch_b = trans_batch_a, trans_batch_b

    @staticmethod
    def _op(x: torch.Tensor, trans_batch: bool, trans: bool) -> torch.Tensor:
        if trans_batch and x.dim() > 2:
            x = x.permute(list(range(1, x.dim() - 1)) + [0, x.dim() - 1])
        if trans:
            x = x.transpose(-1, -2) if x.dim() > 1 else x
        return x

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(self._op(a, self.trans_batch_a, self.trans_a), self._op(b, self.trans_batch_b, self.trans_b))
        return y if self.alpha == 1.0 else y * self.alpha


@register("FusedMatMul", (1,), domain=MS_DOMAIN)
def convert_fused_matmul(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """com.microsoft FusedMatMul-1."""
    attrs = node.attributes
    module = FusedMatMul(float(attrs.get("alpha", 1.0)), bool(attrs.get("transA", 0)), bool(attrs.get("transB", 0)),
                         bool(attrs.get("transBatchA", 0)), bool(attrs.get("transBatchB", 0)))
    return result(module, node)


# -- element-wise fusions ------------------------------------------------------------------------
class Gelu(torch.nn.Module):
    """Exact (erf) GELU of ``x`` (+ ``bias`` for BiasGelu)."""

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return F.gelu(x if bias is None else x + bias)


class FastGelu(torch.nn.Module):
    """com.microsoft FastGelu: ``0.5 x (1 + tanh(0.7978845608 (x + 0.044715 x³)))`` of ``x`` (+ ``bias``)."""

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if bias is not None:
            x = x + bias
        return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


class QuickGelu(torch.nn.Module):
    """com.microsoft QuickGelu: ``x * sigmoid(alpha x)``."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.alpha * x)


class BiasAdd(torch.nn.Module):
    """com.microsoft BiasAdd: ``X + bias + skip``."""

    def forward(self, x: torch.Tensor, bias: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return x + bias + skip


@register("Gelu", (1,), domain=MS_DOMAIN)
def convert_ms_gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """com.microsoft Gelu-1 (exact)."""
    return result(Gelu(), node, 1)


@register("BiasGelu", (1,), domain=MS_DOMAIN)
def convert_bias_gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """com.microsoft BiasGelu-1: exact GELU of A + B."""
    return result(Gelu(), node, 2)


@register("FastGelu", (1,), domain=MS_DOMAIN)
def convert_fast_gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """com.microsoft FastGelu-1 (tanh approximation, optional bias)."""
    return optional_result(FastGelu(), node, 2)


@register("QuickGelu", (1,), domain=MS_DOMAIN)
def convert_quick_gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """com.microsoft QuickGelu-1."""
    return result(QuickGelu(float(node.attributes.get("alpha", 1.702))), node)


@register("BiasAdd", (1,), domain=MS_DOMAIN)
def convert_bias_add(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """com.microsoft BiasAdd-1."""
    return result(BiasAdd(), node)


# -- MatMulNBits ---------------------------------------------------------------------------------
def _unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The first ``count`` ``bits``-bit unsigned values packed little-endian along the last axis of
    uint8 ``packed`` (the low bits of a byte hold the earlier value)."""
    per_byte = 8 // bits
    shifts = np.arange(per_byte, dtype=np.uint8) * bits
    values = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return values.reshape(*packed.shape[:-1], -1)[..., :count]


def dequantize_nbits(b: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None, g_idx: np.ndarray | None, *,
                     k: int, n: int, bits: int, block_size: int) -> np.ndarray:
    """MatMulNBits' logical weight (K, N) in float32: ``(q - zero_point) * scale`` per block of
    ``block_size`` along K (block of row k: ``g_idx[k]`` when given, else ``k // block_size``)."""
    k_blocks = -(-k // block_size)
    q = _unpack(b.reshape(n, k_blocks, -1), bits, block_size).reshape(n, k_blocks * block_size)[:, :k].astype(np.float32)
    scales = scales.reshape(n, k_blocks).astype(np.float32)
    if zero_points is None:
        zp = np.full((n, k_blocks), float(1 << (bits - 1)), np.float32)
    elif zero_points.dtype == np.uint8:
        zp = _unpack(zero_points.reshape(n, -1), bits, k_blocks).astype(np.float32)
    else:
        zp = zero_points.reshape(n, k_blocks).astype(np.float32)
    block = g_idx.astype(np.int64) if g_idx is not None else np.arange(k) // block_size
    w = (q - zp[:, block]) * scales[:, block]
    return np.ascontiguousarray(w.T)


class MatMulNBits(torch.nn.Module):
    """com.microsoft MatMulNBits: ``A @ W + bias`` with W the dequantized block-quantized weight (K, N)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)

    def forward(self, a: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        y = torch.matmul(a, self.weight.to(a.dtype))
        return y if bias is None else y + bias


@register("MatMulNBits", (1,), domain=MS_DOMAIN)
def convert_matmul_nbits(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft MatMulNBits-1 with stored (initializer) weights, scales and zero points."""
    attrs = node.attributes
    if int(attrs.get("weight_prepacked", 0)):
        raise NotImplementedError("MatMulNBits with weight_prepacked weights (an execution provider's own layout)")
    stored = [constant_input(node, graph, i) for i in range(5)]
    names = list(node.input_values) + [""] * (6 - len(node.input_values))
    for i, label in ((1, "B"), (2, "scales"), (3, "zero_points"), (4, "g_idx")):
        if names[i] and stored[i] is None:
            raise NotImplementedError(f"MatMulNBits with a computed (not stored) {label}")
    arrays = [None if t is None else t.numpy() for t in stored]
    weight = dequantize_nbits(arrays[1], arrays[2], arrays[3], arrays[4], k=int(attrs["K"]), n=int(attrs["N"]),
                              bits=int(attrs.get("bits", 4)), block_size=int(attrs["block_size"]))
    module = MatMulNBits(torch.from_numpy(weight))
    inputs = [names[0]] + ([names[5]] if names[5] else [])
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=tuple(inputs), outputs=node.output_values))


# -- NCHWc ---------------------------------------------------------------------------------------
def _probe_block_size() -> int:
    """onnxruntime's NCHWc block size on this CPU: the output channels it pads a 4-channel Conv to."""
    import onnxruntime as ort  # noqa: PLC0415 - only graphs with nchwc nodes need it

    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = os.path.join(folder, "probe.onnx")
        options.log_severity_level = 3
        limits.onnxruntime_session(model, options, ["CPUExecutionProvider"])  # under the current time budget
        optimized = onnx.load(options.optimized_model_filepath)
    convs = [n for n in optimized.graph.node if n.op_type == "Conv" and n.domain == "com.microsoft.nchwc"]
    inits = {t.name: t for t in optimized.graph.initializer}
    if not convs or convs[0].input[1] not in inits:
        raise ConversionError("cannot find onnxruntime's NCHWc block size: it did not rewrite a probe Conv to com.microsoft.nchwc")
    return int(inits[convs[0].input[1]].dims[0])


@functools.lru_cache(maxsize=1)
def nchwc_block_size() -> int:
    """onnxruntime's NCHWc channel block size on this CPU (8 or 16; ``ONNXXAI_NCHWC_BLOCK`` overrides)."""
    forced = os.environ.get("ONNXXAI_NCHWC_BLOCK")
    return int(forced) if forced else _probe_block_size()


def block(x: torch.Tensor, size: int) -> torch.Tensor:
    """NCHW -> NCHWc: channels zero-padded to a multiple of ``size``, memory [N][C/size][H][W][size]."""
    n, c = x.shape[:2]
    padded = -(-c // size) * size
    if padded != c:
        x = F.pad(x, [0, 0] * (x.dim() - 2) + [0, padded - c])
    spatial = x.shape[2:]
    x = x.reshape(n, padded // size, size, *spatial).movedim(2, -1)
    return x.reshape(n, padded, *spatial)


def unblock(x: torch.Tensor, size: int) -> torch.Tensor:
    """NCHWc -> NCHW (channels still padded): the inverse of :func:`block` on a blocked tensor."""
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    if c % size:
        raise ConversionError(f"an NCHWc tensor of {c} channels is not blocked by onnxruntime's block size {size} on this CPU "
                              "(the file was optimized on another kind of CPU)")
    return x.reshape(n, c // size, *spatial, size).movedim(-1, 2).reshape(n, c, *spatial)


def blocked_tensors(model: onnx.ModelProto) -> set[str]:
    """The tensors of ``model``'s main graph the converted graph holds in NCHWc memory order: outputs of
    com.microsoft.nchwc nodes other than ReorderOutput, and of the plain element-wise nodes onnxruntime
    leaves between them (an Add of two blocked tensors is blocked). Read as NCHW they mix channels and
    positions; :func:`unblock` puts them back."""
    blocked: set[str] = set()
    for node in model.graph.node:
        if node.domain in (NCHWC_DOMAIN, "com.microsoft.nchwc"):
            if node.op_type != "ReorderOutput":
                blocked.update(o for o in node.output if o)
        elif node.domain in ("", "ai.onnx") and any(i in blocked for i in node.input):
            blocked.update(o for o in node.output if o)
    return blocked


class Blocked(torch.nn.Module):
    """Runs an NCHW ``inner`` module on NCHWc tensors: the blocked inputs are unblocked, the output blocked."""

    def __init__(self, inner: torch.nn.Module, size: int, blocked_inputs: list[bool]) -> None:
        super().__init__()
        self.inner, self.size, self.blocked_inputs = inner, size, blocked_inputs

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        args = tuple(unblock(a, self.size) if b else a for a, b in zip(args, self.blocked_inputs))
        return block(self.inner(*args), self.size)


def _reordered_filter(stored: torch.Tensor, size: int, blocked_input: bool) -> torch.Tensor:
    """The OIHW filter that onnxruntime stored as OIHWBo (``blocked_input`` False or depthwise) or
    OIHWBiBo: dims (Opad, I, kH, kW), the data in the blocked order."""
    o, i = stored.shape[:2]
    kernel = stored.shape[2:]
    if blocked_input:  # [O/B][I/B][kernel][Bi][Bo]
        w = stored.reshape(o // size, i // size, *kernel, size, size)
        rank = len(kernel)
        w = w.permute(0, 3 + rank, 1, 2 + rank, *range(2, 2 + rank))
    else:  # [O/B][I][kernel][Bo]
        w = stored.reshape(o // size, i, *kernel, size).movedim(-1, 1)
    return w.reshape(o, i, *kernel).contiguous()


class NchwcConv(torch.nn.Module):
    """com.microsoft.nchwc Conv: ``activation(conv(X, W) + B + Sum)`` on NCHWc tensors (X may be plain
    NCHW when it has fewer channels than a block); the filter is held in OIHW order."""

    def __init__(self, conv: ConvDynamicWeight, act: _Activation, weight: torch.Tensor, size: int, blocked_input: bool,
                 present: list[bool]) -> None:
        super().__init__()
        self.conv, self.act, self.size, self.blocked_input, self.present = conv, act, size, blocked_input, present
        self.register_buffer("weight", weight)

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        given = iter(rest)
        bias, total = (next(given) if p else None for p in self.present)
        y = self.conv(unblock(x, self.size) if self.blocked_input else x, self.weight.to(x.dtype), bias)
        if total is not None:
            y = y + unblock(total, self.size)
        return block(self.act(y), self.size)


@register("Conv", (1,), domain=NCHWC_DOMAIN)
def convert_nchwc_conv(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft.nchwc Conv-1 (stored, reordered filter)."""
    size = nchwc_block_size()
    stored = constant_input(node, graph, 1)
    if stored is None:
        raise NotImplementedError("com.microsoft.nchwc Conv with a computed (not stored) filter")
    group = int(node.attributes.get("group", 1))
    blocked_input = group > 1 or stored.shape[1] >= size
    weight = _reordered_filter(stored.float(), size, blocked_input=group == 1 and blocked_input)
    conv, act = _conv_parts(node)
    names = list(node.input_values) + [""] * (4 - len(node.input_values))
    present = [bool(names[2]), bool(names[3])]
    module = NchwcConv(conv, act, weight, size, blocked_input, present)
    inputs = [names[0]] + [n for n in names[2:4] if n]
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=tuple(inputs), outputs=node.output_values))


class _GlobalPool(torch.nn.Module):
    def __init__(self, reduce: str) -> None:
        super().__init__()
        self.reduce = reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.dim()))
        return x.mean(dim=dims, keepdim=True) if self.reduce == "avg" else x.amax(dim=dims, keepdim=True)


def _nchwc_pool(op: str, mode: str) -> Callable[[OnnxNode, OnnxGraph], OperationConverterResult]:
    def convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
        inner = _GlobalPool(mode) if op.startswith("Global") else OnnxPool.from_attributes(mode, node.attributes)
        return result(Blocked(inner, nchwc_block_size(), [True]), node, 1)

    convert.__name__ = convert.__qualname__ = f"convert_nchwc_{op.lower()}"
    convert.__doc__ = f"com.microsoft.nchwc {op}-1: ONNX {op} per channel of the blocked tensor."
    return convert


convert_nchwc_max_pool = register("MaxPool", (1,), domain=NCHWC_DOMAIN)(_nchwc_pool("MaxPool", "max"))
convert_nchwc_average_pool = register("AveragePool", (1,), domain=NCHWC_DOMAIN)(_nchwc_pool("AveragePool", "avg"))
convert_nchwc_global_average_pool = register("GlobalAveragePool", (1,), domain=NCHWC_DOMAIN)(_nchwc_pool("GlobalAveragePool", "avg"))
convert_nchwc_global_max_pool = register("GlobalMaxPool", (1,), domain=NCHWC_DOMAIN)(_nchwc_pool("GlobalMaxPool", "max"))


class NchwcUpsample(torch.nn.Module):
    """com.microsoft.nchwc Upsample: integer ``scales`` (N, C, H, W) of a blocked tensor, nearest or linear."""

    def __init__(self, scales: list[int], mode: str, coordinate_transformation_mode: str, size: int) -> None:
        super().__init__()
        self.scales, self.size = [float(s) for s in scales], size
        self.resize = Resize(mode=mode, coordinate_transformation_mode=coordinate_transformation_mode, nearest_mode="simple")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scales = torch.tensor(self.scales, dtype=torch.float64)
        return block(self.resize(unblock(x, self.size), scales=scales), self.size)


@register("Upsample", (1,), domain=NCHWC_DOMAIN)
def convert_nchwc_upsample(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """com.microsoft.nchwc Upsample-1."""
    attrs = node.attributes
    module = NchwcUpsample(list(attrs["scales"]), _text(attrs.get("mode"), "nearest"),
                           _text(attrs.get("coordinate_transformation_mode"), "asymmetric"), nchwc_block_size())
    return result(module, node, 1)


class ReorderInput(torch.nn.Module):
    """com.microsoft.nchwc ReorderInput: NCHW (or NHWC with ``channels_last``) to NCHWc."""

    def __init__(self, channels_last: bool, size: int) -> None:
        super().__init__()
        self.channels_last, self.size = channels_last, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.movedim(-1, 1)
        return block(x, self.size)


class ReorderOutput(torch.nn.Module):
    """com.microsoft.nchwc ReorderOutput: NCHWc to NCHW (or NHWC with ``channels_last``), keeping
    the first ``channels`` channels (the block padding dropped)."""

    def __init__(self, channels: int | None, channels_last: bool, size: int) -> None:
        super().__init__()
        self.channels, self.channels_last, self.size = channels, channels_last, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = unblock(x, self.size)
        if self.channels is not None:
            y = y[:, : self.channels]
        return y.movedim(1, -1) if self.channels_last else y


@register("ReorderInput", (1,), domain=NCHWC_DOMAIN)
def convert_reorder_input(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """com.microsoft.nchwc ReorderInput-1."""
    return result(ReorderInput(bool(node.attributes.get("channels_last", 0)), nchwc_block_size()), node)


@register("ReorderOutput", (1,), domain=NCHWC_DOMAIN)
def convert_reorder_output(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """com.microsoft.nchwc ReorderOutput-1."""
    channels = node.attributes.get("channels")
    module = ReorderOutput(None if channels is None else int(channels), bool(node.attributes.get("channels_last", 0)),
                           nchwc_block_size())
    return result(module, node)
