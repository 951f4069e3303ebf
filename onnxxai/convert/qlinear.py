"""Quantized integer arithmetic as onnxruntime runs it: QLinearConv, QLinearMatMul, MatMulInteger,
ConvInteger and the com.microsoft QOperator ops (QGemm, QLinearAdd, QLinearMul, QLinearConcat,
QLinearGlobalAveragePool, QLinearAveragePool, QLinearSigmoid, QLinearLeakyRelu, QLinearSoftmax,
DynamicQuantizeLSTM).

Forward: integer accumulation (exact, in float64 or int64), then onnxruntime's requantization: the
multiplier computed in float32 as its kernels do (``a_scale * b_scale / y_scale``), the int32
accumulator converted to float32 and multiplied in float32, rounded half to even, saturated.
Lookup-table ops build onnxruntime's 256-entry table in float32 (the sigmoid with MLAS's
polynomial). QLinearAdd follows MLAS's AVX2 kernel (fused multiply-adds; a broadcast operand takes
another path than two full ones). Measured bit-exact against onnxruntime 1.32 (default session
options) on an AVX-512 VNNI / AMX CPU, whose u8s8 and s8s8 kernels accumulate exactly in int32; on
x86 CPUs without VNNI, onnxruntime's u8s8 kernels (vpmaddubsw) may saturate int16 pair sums when
large uint8 activations meet large int8 weights, and then differ from the exact accumulation here.

Backward: ``forward = exact integer result, backward = gradient of the dequantized float surrogate``
(see below): each module's :meth:`surrogate` computes the op in float on the
quantized values (``(q - zero_point) * scale`` through the float op, then ``/ y_scale + y_zero_point``
clamped to the values that round into the output range, ``[qmin - 1/2, qmax + 1/2]``, so the gradient
is zero where the output is clipped, see :func:`saturate_surrogate`) and the result is
``surrogate + (exact - surrogate).detach()``. A gradient check compares it with finite differences of
the surrogates (:func:`surrogate_forward` switches every such module of a graph to return its
surrogate), since the integer forward is piecewise constant.

Why float containers: torch integer tensors carry no gradient. A quantized tensor whose consumers all
read it as a number (quantized ops, DequantizeLinear, Cast, or ops that only move values such as
MaxPool and Reshape) therefore travels as a float tensor holding the exact integer values (float64
for int32 accumulators, so every value stays exact); its gradient is that of the op's dequantized
float surrogate. A quantized tensor that leaves the graph, or reaches any other op, keeps its exact
integer dtype.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from onnx import TensorProto
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.convert._util import consumers, elem_type, optional_result, result, torch_pads
from onnxxai.convert.registry import register, since
from onnxxai.proto.dtypes import TORCH_DTYPES

#: Integer quantization ranges (sub-byte types included).
INT_RANGES: dict[int, tuple[int, int]] = {
    TensorProto.UINT8: (0, 255), TensorProto.INT8: (-128, 127), TensorProto.UINT16: (0, 65535),
    TensorProto.INT16: (-32768, 32767), TensorProto.UINT4: (0, 15), TensorProto.INT4: (-8, 7),
    TensorProto.UINT2: (0, 3), TensorProto.INT2: (-2, 1),
}

#: op type -> indices of the inputs that read a quantized tensor as numbers (a float container works)
QUANTIZED_INPUTS: dict[str, tuple[int, ...]] = {
    "DequantizeLinear": (0,), "Cast": (0,), "QLinearConv": (0, 3), "QLinearMatMul": (0, 3), "QGemm": (0, 3),
    "QLinearAdd": (0, 3), "QLinearMul": (0, 3), "QLinearGlobalAveragePool": (0,), "QLinearAveragePool": (0,),
    "QLinearSigmoid": (0,), "QLinearLeakyRelu": (0,), "QLinearSoftmax": (0,), "ConvInteger": (0, 1),
    "MatMulInteger": (0, 1),
}
#: ops that only move values: a float container passes through them (op type -> data input indices;
#: None for every input)
PASS_THROUGH: dict[str, tuple[int, ...] | None] = {
    "MaxPool": (0,), "Flatten": (0,), "Reshape": (0,), "Transpose": (0,), "Squeeze": (0,), "Unsqueeze": (0,),
    "Identity": (0,), "Slice": (0,), "Split": (0,), "Gather": (0,), "Expand": (0,), "Tile": (0,),
    "DepthToSpace": (0,), "SpaceToDepth": (0,), "Concat": None,
}


def _reads_as_number(op: str, index: int) -> bool:
    if op == "QLinearConcat":
        return index >= 2 and (index - 2) % 3 == 0
    return index in QUANTIZED_INPUTS.get(op, ())


def float_container_ok(graph: OnnxGraph, name: str, _seen: frozenset[str] = frozenset()) -> bool:
    """Whether the quantized tensor ``name`` may travel as a float tensor holding its integer values:
    it is not a graph output, and every consumer reads it as numbers (directly, or through ops that
    only move values, whose outputs obey the same rule)."""
    if name in graph.output_values or name in _seen:
        return False
    readers = consumers(graph, name)
    if not readers:
        return False
    for node, index in readers:
        op = node.operation_type
        if _reads_as_number(op, index):
            continue
        if op not in PASS_THROUGH or (PASS_THROUGH[op] is not None and index not in PASS_THROUGH[op]):
            return False
        outputs = node.output_values if op == "Split" else node.output_values[:1]
        if not all(float_container_ok(graph, out, _seen | {name}) for out in outputs):
            return False
    return True


def container(x: torch.Tensor) -> torch.dtype:
    """The float dtype a quantized result travels in next to ``x``: float64 stays float64, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def integers(x: torch.Tensor) -> torch.Tensor:
    """The exact integer values of a quantized tensor (integer dtype or float container) as int64."""
    return x.detach().to(torch.int64)


def wants_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd records and any of ``tensors`` is a float tensor that requires grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def saturate_surrogate(y: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """An unrounded quantized value ``y`` (in steps, zero point added) clamped to ``[qmin - 1/2, qmax + 1/2]``:
    the window of values that round into ``[qmin, qmax]`` without being clipped. A value in
    ``(qmax, qmax + 1/2)`` rounds to ``qmax`` as it would without the clip -- the quantized function is
    not saturated there -- so the straight-through gradient passes; beyond the window the output is clipped and the gradient is zero. Clamping at
    ``[qmin, qmax]`` instead gives an output whose calibrated maximum lands a hair above ``qmax``
    (static int8 files calibrated on the input explained) no gradient at all."""
    return y.clamp(qmin - 0.5, qmax + 0.5)


def straight_through(exact: torch.Tensor, surrogate: torch.Tensor | None) -> torch.Tensor:
    """``exact``'s values with ``surrogate``'s gradient (``exact`` itself when there is no surrogate)."""
    if surrogate is None:
        return exact
    return surrogate + (exact.to(surrogate.dtype) - surrogate).detach()


def f32(x: torch.Tensor | float) -> torch.Tensor:
    """``x`` as float32 (scales are float32 numbers in onnxruntime's kernels)."""
    return torch.as_tensor(x).detach().to(torch.float32)


def fma32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """float32 fused multiply-add ``a * b + c`` rounded once (exact product and sum in float64: right
    whenever the exact sum fits 53 bits, as it does for 8-bit operands and float32 scales)."""
    return (a.to(torch.float64) * b.to(torch.float64) + c.to(torch.float64)).to(torch.float32)


def requantize(acc: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | int, qmin: int, qmax: int) -> torch.Tensor:
    """onnxruntime's MlasRequantizeOutput: the int32 accumulator converted to float32, times the float32
    ``scale``, rounded half to even, plus ``zero_point``, saturated to [qmin, qmax]; float64 result."""
    value = acc.to(torch.float64).to(torch.float32) * f32(scale)
    zp = zero_point.to(torch.float64) if isinstance(zero_point, torch.Tensor) else float(zero_point)
    return (torch.round(value).to(torch.float64) + zp).clamp(qmin, qmax)


def quantize_mlas(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | int, qmin: int, qmax: int) -> torch.Tensor:
    """onnxruntime's MlasQuantizeLinear on float32 ``x``: ``x / scale`` in float32, rounded half to even,
    plus ``zero_point``, saturated; float64 result."""
    zp = zero_point.to(torch.float64) if isinstance(zero_point, torch.Tensor) else float(zero_point)
    return (torch.round(f32(x) / f32(scale)).to(torch.float64) + zp).clamp(qmin, qmax)


MS = "com_microsoft"  #: com.microsoft, as normalization renames it (torch module names refuse dots)


def _scalar(t: torch.Tensor | None, default: float = 0.0) -> torch.Tensor:
    return torch.tensor(default, dtype=torch.float64) if t is None else t.detach().reshape(()).to(torch.float64)


def _per_axis(t: torch.Tensor, rank: int, axis: int) -> torch.Tensor:
    """A per-tensor (one value) or per-``axis`` (1-D) parameter shaped to broadcast at ``rank``."""
    if t.numel() == 1:
        return t.reshape(())
    shape = [1] * rank
    shape[axis] = t.numel()
    return t.reshape(shape)


class StraightThrough(torch.nn.Module):
    """Base (and marker) of every module whose forward is exact and whose gradient is a float
    surrogate's (straight-through): the quantized ops here and :mod:`onnxxai.convert.quantize`'s
    fake-quant QuantizeLinear / DynamicQuantizeLinear.

    ``surrogate_mode`` (off by default; switched by :func:`surrogate_forward`) makes the forward
    return the surrogate itself, so the graph computes the dequantized float function whose gradient
    the straight-through estimator is: what a gradient check compares finite differences of, since
    the exact integer forward is piecewise constant. Outputs with an exact integer dtype stay exact.
    """

    surrogate_mode: bool = False

    def wants_surrogate(self, *tensors: torch.Tensor | None) -> bool:
        """Whether to compute the surrogate: in surrogate mode, or when autograd needs its gradient (or
        while :func:`frozen_copy` records, so its calls match a surrogate forward's one for one)."""
        return self.surrogate_mode or "_exact_record" in self.__dict__ or wants_grad(*tensors)

    def straight_through(self, exact: torch.Tensor, surrogate: torch.Tensor | None) -> torch.Tensor:
        """:func:`straight_through`, or in surrogate mode the surrogate itself (plus, with frozen
        residuals, the rounding residual ``exact - surrogate`` recorded at the first forward)."""
        if self.surrogate_mode and surrogate is not None:
            frozen = self.__dict__.get("_frozen")
            if frozen is None:
                return surrogate
            call = self._call
            self._call = call + 1
            if self._recording:
                base = self.__dict__.get("_exact_base")  # the exact results of the module frozen_copy copied
                if base is not None and call < len(base) and base[call].shape == surrogate.shape:
                    exact = base[call]
                frozen.append((exact.to(surrogate.device, surrogate.dtype) - surrogate).detach())
                return surrogate + frozen[-1]
            residual = frozen[call] if call < len(frozen) else None
            if residual is None or residual.shape != surrogate.shape:
                raise RuntimeError(f"{type(self).__name__}: frozen-residual forward called with other shapes than at the first one")
            return surrogate + residual
        record = self.__dict__.get("_exact_record")
        if record is not None and surrogate is not None:  # the calls a frozen surrogate forward counts
            record.append(exact.detach().clone())
        return straight_through(exact, surrogate)


def straight_through_modules(module: torch.nn.Module) -> list[StraightThrough]:
    """The straight-through (quantized) submodules of ``module`` (itself included)."""
    return [m for m in module.modules() if isinstance(m, StraightThrough)]


def frozen_copy(module: torch.nn.Module, *args: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    """A deep copy of ``module`` in ``dtype`` whose first frozen surrogate forward (:func:`surrogate_forward`)
    takes as each straight-through op's exact result the one ``module`` itself computes on ``args``
    (run here, without gradient), not the one the copy computes: in float64 the copy's integer results
    can differ by a step from the float32 arithmetic onnxruntime's kernels (and ``module``) use, a
    difference that grows layer by layer (ResNet-18's QDQ file: up to 5 steps in its last block, and
    an 18% different gradient). Frozen at ``module``'s own results, the copy's surrogate is linearized
    at the activations the explanation's gradient was computed at. ``module`` is left as it was."""
    switched = straight_through_modules(module)
    for m in switched:
        m._exact_record = []
    try:
        with torch.no_grad():
            module(*args)
        copied = copy.deepcopy(module)
    finally:
        for m in switched:
            del m._exact_record
    for m in straight_through_modules(copied):
        m._exact_base = m.__dict__.pop("_exact_record")
    return copied.to(dtype)


_MAX_POOLS = (torch.nn.MaxPool1d, torch.nn.MaxPool2d, torch.nn.MaxPool3d)


def _frozen_max_pool(pool: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor | None:
    """Forward hook of a max pool in a frozen surrogate forward: the first forward records which input
    entry each output took (the first maximum, as torch's backward takes it); later forwards read
    those entries, so the frozen function is linear in the pool's input like its backward."""
    x = inputs[0]
    dims = {torch.nn.MaxPool1d: 1, torch.nn.MaxPool2d: 2, torch.nn.MaxPool3d: 3}[type(pool)]
    call = pool._argmax_call
    pool._argmax_call = call + 1
    if pool._argmax_recording:
        pool_fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[dims - 1]
        _, index = pool_fn(x, pool.kernel_size, pool.stride, pool.padding, pool.dilation, ceil_mode=pool.ceil_mode, return_indices=True)
        pool._frozen_argmax.append(index)
        return None
    index = pool._frozen_argmax[call] if call < len(pool._frozen_argmax) else None
    if index is None or index.shape[:-dims] != x.shape[:-dims]:
        raise RuntimeError("frozen max pool called with other shapes than at the first forward")
    taken = x.flatten(start_dim=x.dim() - dims).gather(-1, index.flatten(start_dim=index.dim() - dims))
    return taken.reshape(index.shape)


@contextlib.contextmanager
def surrogate_forward(module: torch.nn.Module, *, frozen: bool = False) -> Iterator[int]:
    """Within the block, every straight-through submodule of ``module`` returns its dequantized float
    surrogate in forward (see :class:`StraightThrough`); yields how many there are. The exact
    forward is restored on exit.

    ``frozen``: each module adds to its surrogate the rounding residual ``exact - surrogate`` it
    recorded in the first frozen forward of ``module`` (the base point; later frozen blocks replay
    the residuals, call by call). The frozen function equals the exact forward at the base point
    and moves like the surrogates around it, so its finite differences there are the
    straight-through gradient evaluated on the exact activations -- what the explanation uses --
    instead of on the surrogate's own (unrounded) activations, which differ from them by the
    quantization noise of every layer. The max pools' choices are frozen too (:func:`_frozen_max_pool`):
    quantized values tie often, and at a tie the straight-through backward takes the first maximum
    while a central difference averages the tied entries' derivatives."""
    switched = straight_through_modules(module)
    before = [m.__dict__.get("surrogate_mode") for m in switched]
    hooks = []
    for m in switched:
        m.surrogate_mode = True
        if frozen:
            m._recording = "_frozen" not in m.__dict__
            if m._recording:
                m._frozen = []
            m._call = 0
    if frozen and switched:
        for pool in module.modules():
            if isinstance(pool, _MAX_POOLS) and not pool.return_indices:
                pool._argmax_recording = "_frozen_argmax" not in pool.__dict__
                if pool._argmax_recording:
                    pool._frozen_argmax = []
                pool._argmax_call = 0
                hooks.append(pool.register_forward_hook(_frozen_max_pool))
    try:
        yield len(switched)
    finally:
        for hook in hooks:
            hook.remove()
        for m, was in zip(switched, before):
            if was is None:
                del m.surrogate_mode
            else:
                m.surrogate_mode = was


class DequantizedTap(torch.nn.Module):
    """``embed`` (a graph computing a quantized integer tensor, e.g. a lookup in an int8 embedding
    table) followed by its dequantization ``(q - zero_point) * scale``: the float values the graph
    means by it, which an attribution is taken at."""

    def __init__(self, embed: torch.nn.Module, scale: float, zero_point: int) -> None:
        super().__init__()
        self.embed, self.scale, self.zero_point = embed, float(scale), int(zero_point)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        q = self.embed(*inputs)
        dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        return (q.to(dtype) - self.zero_point) * self.scale


class RequantizedTap(StraightThrough):
    """``substitute`` (the graph with a quantized integer tensor taken as its last argument) fed the
    quantization of a float value: ``round(value / scale) + zero_point`` saturated to ``[qmin, qmax]``,
    as exact integers in a float container, with the straight-through gradient of the unrounded
    quantization (so the attribution at the dequantized tensor reaches every consumer)."""

    def __init__(self, substitute: torch.nn.Module, scale: float, zero_point: int, qmin: int, qmax: int) -> None:
        super().__init__()
        self.substitute, self.scale, self.zero_point = substitute, float(scale), int(zero_point)
        self.qmin, self.qmax = int(qmin), int(qmax)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        *inputs, value = args
        y = value / self.scale + self.zero_point
        q = self.straight_through(torch.round(y).clamp(self.qmin, self.qmax), saturate_surrogate(y, self.qmin, self.qmax))
        return self.substitute(*inputs, q)


class Quantized(StraightThrough):
    """Base of the quantized ops: the output's integer range, dtype and whether it travels in a float
    container (``fake``, with the surrogate's gradient) or as the exact integer dtype."""

    def __init__(self, target: int, fake: bool) -> None:
        super().__init__()
        self.target, self.fake = target, fake
        self.qmin, self.qmax = INT_RANGES.get(target, (-(2**31), 2**31 - 1))

    def emit(self, exact: torch.Tensor, surrogate: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """The exact result as the output dtype, or in a float container with ``surrogate``'s gradient."""
        if not self.fake:
            return exact.to(TORCH_DTYPES[self.target])
        dtype = torch.float64 if self.target == TensorProto.INT32 else container(like)
        return self.straight_through(exact.to(dtype), None if surrogate is None else surrogate.to(dtype))

    def saturate(self, y: torch.Tensor) -> torch.Tensor:
        """The surrogate clamped to the window that rounds into the output range (:func:`saturate_surrogate`:
        zero gradient where the output is clipped)."""
        return saturate_surrogate(y, self.qmin, self.qmax)

    def extra_repr(self) -> str:
        return f"to={TensorProto.DataType.Name(self.target)}, fake={self.fake}"


def _centered_weight(w: torch.Tensor, w_zp: torch.Tensor | None) -> torch.Tensor:
    zp = torch.zeros(()) if w_zp is None else w_zp.detach()
    return w.to(torch.float64) - _per_axis(zp.to(torch.float64), w.dim(), 0)


class _ConvBase(Quantized):
    def __init__(self, pads: list[int], strides: list[int], dilations: list[int], group: int, target: int, fake: bool) -> None:
        super().__init__(target, fake)
        self.pads, self.strides, self.dilations, self.group = pads, strides, dilations, group

    def conv(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """conv of centered input and weight (zero padding: the padded value is the zero point); ``pads``
        "SAME_UPPER" / "SAME_LOWER" (auto_pad) are computed from the input's size."""
        pads = self.pads
        if isinstance(pads, str):
            from onnxxai.convert.conv import same_pads

            pads = same_pads(list(x.shape[2:]), list(w.shape[2:]), self.strides, self.dilations, pads == "SAME_UPPER")
        x = F.pad(x, torch_pads(pads)) if any(pads) else x
        fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[w.dim() - 2]
        return fn(x, w, stride=self.strides, dilation=self.dilations, groups=self.group)


class QLinearConv(_ConvBase):
    """QLinearConv as onnxruntime computes it: int32 conv of the centered values plus the int32 bias,
    requantized with the float32 multiplier ``x_scale * w_scale / y_scale`` (per output channel)."""

    def ratio(self, x_scale: torch.Tensor, w_scale: torch.Tensor, y_scale: torch.Tensor, rank: int) -> torch.Tensor:
        return _per_axis(f32(x_scale).reshape(()) * f32(w_scale).reshape(-1) / f32(y_scale).reshape(()), rank, 1)

    def forward(self, x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp=None, bias=None) -> torch.Tensor:  # noqa: ANN001
        ratio = self.ratio(x_scale, w_scale, y_scale, w.dim())
        wc = _centered_weight(w, w_zp)
        acc = torch.round(self.conv((integers(x) - integers(x_zp).reshape(())).to(torch.float64), wc))
        if bias is not None:
            acc = acc + _per_axis(bias.detach().to(torch.float64), w.dim(), 1)
        exact = requantize(acc, ratio, _scalar(y_zp), self.qmin, self.qmax)
        sur = self.surrogate(x, x_zp, wc, ratio, y_zp, bias) if self.wants_surrogate(x) else None
        return self.emit(exact, sur, x)

    def surrogate(self, x, x_zp, wc, ratio, y_zp=None, bias=None) -> torch.Tensor:  # noqa: ANN001
        """The float conv on centered values, rescaled and clamped to the output range."""
        dtype = container(x)
        acc = self.conv(x.to(dtype) - _scalar(x_zp).to(dtype), wc.to(dtype))
        if bias is not None:
            acc = acc + _per_axis(bias.detach().to(dtype), wc.dim(), 1)
        return self.saturate(acc * ratio.to(dtype) + _scalar(y_zp).to(dtype))


class ConvInteger(_ConvBase):
    """``conv(x - x_zero_point, w - w_zero_point)`` in int32 (computed exactly in float64)."""

    def forward(self, x: torch.Tensor, w: torch.Tensor, x_zero_point: torch.Tensor | None = None,
                w_zero_point: torch.Tensor | None = None) -> torch.Tensor:
        wc = _centered_weight(w, w_zero_point)
        exact = torch.round(self.conv((integers(x) - (0 if x_zero_point is None else integers(x_zero_point).reshape(()))).to(torch.float64), wc))
        sur = self.surrogate(x, wc, x_zero_point) if self.wants_surrogate(x) else None
        return self.emit(exact, sur, x)

    def surrogate(self, x: torch.Tensor, wc: torch.Tensor, x_zero_point: torch.Tensor | None = None) -> torch.Tensor:
        """The same conv in float64 on the (float) input."""
        return self.conv(x.to(torch.float64) - _scalar(x_zero_point), wc)


def _centered_rows(a: torch.Tensor, zp: torch.Tensor | None, rows: bool = True) -> torch.Tensor:
    """``a - zp`` in float64; a 1-D zero point with several entries is per row of A (``rows``) or
    per column of B."""
    v = a.to(torch.float64) if a.is_floating_point() else integers(a).to(torch.float64)
    if zp is None:
        return v
    z = zp.detach().to(torch.float64)
    if rows and z.dim() == 1 and z.numel() > 1:
        z = z.unsqueeze(-1)
    return v - z


class MatMulInteger(Quantized):
    """``(A - a_zero_point) @ (B - b_zero_point)`` in int32 (exact in float64)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor, a_zero_point: torch.Tensor | None = None,
                b_zero_point: torch.Tensor | None = None) -> torch.Tensor:
        exact = torch.matmul(_centered_rows(a.detach(), a_zero_point), _centered_rows(b.detach(), b_zero_point, rows=False))
        sur = self.surrogate(a, b, a_zero_point, b_zero_point) if self.wants_surrogate(a, b) else None
        return self.emit(exact, sur, a)

    def surrogate(self, a: torch.Tensor, b: torch.Tensor, a_zero_point: torch.Tensor | None = None,
                  b_zero_point: torch.Tensor | None = None) -> torch.Tensor:
        """The same product in float64 on the (float) operands."""
        return torch.matmul(_centered_rows(a, a_zero_point), _centered_rows(b, b_zero_point, rows=False))


class QLinearMatMul(Quantized):
    """QLinearMatMul: the int32 product requantized with onnxruntime's float32 multiplier
    ``a_scale * b_scale / y_scale`` (per column of B); with float16 scales, ONNX's reference (the
    multiplier in the scales' precision, the product in float64)."""

    def forward(self, a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point=None) -> torch.Tensor:  # noqa: ANN001
        c = torch.matmul(_centered_rows(a.detach(), a_zero_point), _centered_rows(b.detach(), b_zero_point, rows=False))
        if a_scale.dim() == 1 and a_scale.numel() > 1:
            a_scale = a_scale.unsqueeze(-1)
        zp = _scalar(y_zero_point)
        if a_scale.dtype == torch.float32:
            ratio = f32(a_scale) * f32(b_scale) / f32(y_scale)
            exact = requantize(c, ratio, zp, self.qmin, self.qmax)
        else:
            ratio = (a_scale * b_scale / y_scale).to(torch.float64)
            exact = torch.round(c * ratio + zp).clamp(self.qmin, self.qmax)
        sur = self.surrogate(a, a_zero_point, b, b_zero_point, ratio, zp) if self.wants_surrogate(a, b) else None
        return self.emit(exact, sur, a)

    def surrogate(self, a, a_zero_point, b, b_zero_point, ratio, zp) -> torch.Tensor:  # noqa: ANN001
        """The float product on centered values, rescaled and clamped to the output range."""
        dtype = container(a)
        c = torch.matmul(_centered_rows(a, a_zero_point).to(dtype), _centered_rows(b, b_zero_point, rows=False).to(dtype))
        return self.saturate(c * ratio.to(dtype) + zp.to(dtype))


class QGemm(Quantized):
    """com.microsoft QGemm: ``alpha * A' @ B' + C`` in int32, requantized with the float32 multiplier
    ``alpha * a_scale * b_scale / y_scale`` (per column of B), or, without ``y_scale``, scaled to float32."""

    def __init__(self, alpha: float, trans_a: bool, trans_b: bool, target: int, fake: bool) -> None:
        super().__init__(target, fake)
        self.alpha, self.trans_a, self.trans_b = alpha, trans_a, trans_b

    def operands(self, a: torch.Tensor, b: torch.Tensor, a_zp, b_zp) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
        a = a.t() if self.trans_a else a
        b = b.t() if self.trans_b else b
        bzp = b_zp.detach().to(torch.float64).reshape(-1)
        return a - _scalar(a_zp).to(a.dtype), b - (bzp if bzp.numel() > 1 else bzp.reshape(())).to(b.dtype)

    def forward(self, a, a_scale, a_zp, b, b_scale, b_zp, c=None, y_scale=None, y_zp=None) -> torch.Tensor:  # noqa: ANN001
        ac, bc = self.operands(integers(a).to(torch.float64), integers(b).to(torch.float64), a_zp, b_zp)
        acc = torch.matmul(ac, bc)
        if c is not None:
            acc = acc + c.detach().to(torch.float64)
        ratio = f32(self.alpha) * f32(a_scale).reshape(()) * f32(b_scale).reshape(-1)
        if y_scale is not None:
            ratio = ratio / f32(y_scale).reshape(())
        ratio = ratio if ratio.numel() > 1 else ratio.reshape(())
        if y_scale is None:  # float output: float32(acc) * multiplier
            exact = acc.to(torch.float32) * ratio
            sur = self.surrogate(a, a_zp, b, b_zp, c, ratio, None) if self.wants_surrogate(a) else None
            return exact if sur is None else self.straight_through(exact, sur.to(torch.float32) if a.dtype != torch.float64 else sur)
        exact = requantize(acc, ratio, _scalar(y_zp), self.qmin, self.qmax)
        sur = self.surrogate(a, a_zp, b, b_zp, c, ratio, y_zp) if self.wants_surrogate(a) else None
        return self.emit(exact, sur, a)

    def surrogate(self, a, a_zp, b, b_zp, c, ratio, y_zp) -> torch.Tensor:  # noqa: ANN001
        """The float Gemm on centered values, rescaled (and, with an output scale, clamped)."""
        dtype = container(a)
        ac, bc = self.operands(a.to(dtype), b.detach().to(dtype), a_zp, b_zp)
        acc = torch.matmul(ac, bc)
        if c is not None:
            acc = acc + c.detach().to(dtype)
        if y_zp is None and self.target == TensorProto.FLOAT:
            return acc * ratio.to(dtype)
        return self.saturate(acc * ratio.to(dtype) + _scalar(y_zp).to(dtype))


def _broadcast_mode(a: torch.Size, b: torch.Size) -> str:
    """Which operand onnxruntime's broadcast loop treats as a scalar per span: the one of size 1 on
    the innermost axis where the output has more than one entry ("a", "b") or neither ("none")."""
    rank = max(len(a), len(b))
    pa, pb = [1] * (rank - len(a)) + list(a), [1] * (rank - len(b)) + list(b)
    if math.prod(pa) == 1:
        return "a"
    if math.prod(pb) == 1:
        return "b"
    for da, db in zip(reversed(pa), reversed(pb)):
        if max(da, db) != 1:
            return "a" if da == 1 else "b" if db == 1 else "none"
    return "none"


class QLinearBinary(Quantized):
    """com.microsoft QLinearAdd / QLinearMul with numpy broadcasting, as MLAS computes them:
    Add with the AVX2 kernel's float32 fused multiply-adds (``ratio_a = a_scale / c_scale``, ...),
    Mul as ``round(float32((a - za) * (b - zb)) * (a_scale * b_scale / c_scale) + zc)``."""

    def __init__(self, op: str, target: int, fake: bool) -> None:
        super().__init__(target, fake)
        self.op = op

    def forward(self, a, a_scale, a_zp, b, b_scale, b_zp, c_scale, c_zp=None) -> torch.Tensor:  # noqa: ANN001
        ia, ib = integers(a).to(torch.float64), integers(b).to(torch.float64)
        za, zb, zc = _scalar(a_zp), _scalar(b_zp), _scalar(c_zp)
        sa, sb, sc = f32(a_scale).reshape(()), f32(b_scale).reshape(()), f32(c_scale).reshape(())
        if self.op == "QLinearAdd":
            exact = self._add(ia, sa, za, ib, sb, zb, sc, zc)
        else:
            prod = ((ia - za) * (ib - zb)).to(torch.float32)
            exact = torch.round(prod * (sa * sb / sc) + zc.to(torch.float32)).to(torch.float64)
        exact = exact.clamp(self.qmin, self.qmax)
        sur = self.surrogate(a, za, sa, b, zb, sb, sc, zc) if self.wants_surrogate(a, b) else None
        return self.emit(exact, sur, a if a.is_floating_point() else b)

    @staticmethod
    def _add(ia, sa, za, ib, sb, zb, sc, zc) -> torch.Tensor:  # noqa: ANN001
        mode = _broadcast_mode(ia.shape, ib.shape)
        if mode == "a":  # the kernel takes the broadcast operand as its scalar B
            ia, sa, za, ib, sb, zb = ib, sb, zb, ia, sa, za
        ra, rb = sa / sc, sb / sc
        fixed = zc.to(torch.float32) - (ra * za.to(torch.float32) + rb * zb.to(torch.float32))
        if mode == "none":
            value = fma32(ia.to(torch.float32), ra, fma32(ib.to(torch.float32), rb, fixed))
        else:
            value = fma32(ia.to(torch.float32), ra, fixed + ib.to(torch.float32) * rb)
        return torch.round(value).to(torch.float64)

    def surrogate(self, a, za, sa, b, zb, sb, sc, zc) -> torch.Tensor:  # noqa: ANN001
        """The float op on dequantized values, requantized without rounding and clamped."""
        dtype = container(a if a.is_floating_point() else b)
        da = (a.to(dtype) - za.to(dtype)) * sa.to(dtype)
        db = (b.to(dtype) - zb.to(dtype)) * sb.to(dtype)
        value = da + db if self.op == "QLinearAdd" else da * db
        return self.saturate(value / sc.to(dtype) + zc.to(dtype))


def _mlas_logistic(x: torch.Tensor) -> torch.Tensor:
    """MLAS's float32 logistic (Eigen's rational polynomial, fused multiply-adds as in its FMA3 kernel)."""
    alpha = [4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05, 8.51377133304701e-03, 2.48287947061529e-01]
    beta = [6.10247389755681e-13, 5.76102136993427e-09, 6.29106785017040e-06, 1.70198817374094e-03, 1.16817656904453e-01,
            9.93151921023180e-01]
    v = f32(x).clamp(-18.0, 18.0)
    v2 = v * v
    p = fma32(v2, f32(alpha[0]), f32(alpha[1]))
    for k in alpha[2:]:
        p = fma32(p, v2, f32(k))
    p = p * v
    q = fma32(v2, f32(beta[0]), f32(beta[1]))
    for k in beta[2:]:
        q = fma32(q, v2, f32(k))
    return (p / q + f32(0.5)).clamp(0.0, 1.0)


class QLinearLookup(Quantized):
    """com.microsoft QLinearSigmoid / QLinearLeakyRelu: onnxruntime's 256-entry table (inputs
    dequantized in float32, the float32 function, MlasQuantizeLinear), indexed by the input."""

    def __init__(self, op: str, alpha: float, target: int, fake: bool) -> None:
        super().__init__(target, fake)
        self.op, self.alpha = op, alpha

    def function(self, x: torch.Tensor, exact: bool) -> torch.Tensor:
        if self.op == "QLinearSigmoid":
            return _mlas_logistic(x) if exact else torch.sigmoid(x)
        alpha = f32(self.alpha) if exact else self.alpha
        return torch.where(x >= 0, x, x * alpha)

    def forward(self, x, x_scale, x_zp=None, y_scale=None, y_zp=None) -> torch.Tensor:  # noqa: ANN001
        values = torch.arange(self.qmin, self.qmax + 1, dtype=torch.float64)
        dequantized = f32(x_scale).reshape(()) * (values - _scalar(x_zp)).to(torch.float32)
        table = quantize_mlas(self.function(dequantized, True), f32(y_scale).reshape(()), _scalar(y_zp), self.qmin, self.qmax)
        exact = table[integers(x) - self.qmin]
        sur = self.surrogate(x, x_scale, x_zp, y_scale, y_zp) if self.wants_surrogate(x) else None
        return self.emit(exact, sur, x)

    def surrogate(self, x, x_scale, x_zp, y_scale, y_zp) -> torch.Tensor:  # noqa: ANN001
        """The float function on dequantized values, requantized without rounding and clamped."""
        dtype = container(x)
        real = (x.to(dtype) - _scalar(x_zp).to(dtype)) * x_scale.detach().reshape(()).to(dtype)
        return self.saturate(self.function(real, False) / y_scale.detach().reshape(()).to(dtype) + _scalar(y_zp).to(dtype))


class QLinearConcat(Quantized):
    """com.microsoft QLinearConcat: inputs whose scale and zero point equal the output's are copied,
    the others requantized through onnxruntime's table (float32 dequantize, MlasQuantizeLinear)."""

    def __init__(self, axis: int, target: int, fake: bool) -> None:
        super().__init__(target, fake)
        self.axis = axis

    def forward(self, y_scale, y_zp, *triples) -> torch.Tensor:  # noqa: ANN001, ANN002
        ys, yz = f32(y_scale).reshape(()), _scalar(y_zp)
        exact, surs, grad = [], [], self.wants_surrogate(*triples[0::3])
        for x, s, z in zip(triples[0::3], triples[1::3], triples[2::3]):
            xs, xz = f32(s).reshape(()), _scalar(z)
            ix = integers(x).to(torch.float64)
            if bool(xs == ys) and bool(xz == yz):
                exact.append(ix)
            else:
                exact.append(quantize_mlas(xs * (ix - xz).to(torch.float32), ys, yz, self.qmin, self.qmax))
            if grad:
                dtype = torch.float64 if any(t.dtype == torch.float64 for t in triples[0::3]) else torch.float32
                surs.append((x.to(dtype) - xz.to(dtype)) * xs.to(dtype) / ys.to(dtype) + yz.to(dtype))
        out = torch.cat(exact, self.axis)
        sur = self.saturate(torch.cat(surs, self.axis)) if grad else None
        return self.emit(out, sur, sur if sur is not None else triples[0])


class QLinearGlobalAveragePool(Quantized):
    """com.microsoft QLinearGlobalAveragePool (NCHW or channels_last): the int32 sum of centered values
    requantized with ``x_scale / (y_scale * size)`` in float32."""

    def __init__(self, channels_last: bool, target: int, fake: bool) -> None:
        super().__init__(target, fake)
        self.channels_last = channels_last

    def dims(self, x: torch.Tensor) -> tuple[int, ...]:
        return tuple(range(1, x.dim() - 1)) if self.channels_last else tuple(range(2, x.dim()))

    def forward(self, x, x_scale, x_zp, y_scale, y_zp=None) -> torch.Tensor:  # noqa: ANN001
        dims = self.dims(x)
        size = math.prod(x.shape[d] for d in dims)
        acc = (integers(x).to(torch.float64) - _scalar(x_zp)).sum(dims, keepdim=True)
        scale = f32(x_scale).reshape(()) / (f32(y_scale).reshape(()) * f32(float(size)))
        exact = requantize(acc, scale, _scalar(y_zp), self.qmin, self.qmax)
        sur = self.surrogate(x, x_scale, x_zp, y_scale, y_zp) if self.wants_surrogate(x) else None
        return self.emit(exact, sur, x)

    def surrogate(self, x, x_scale, x_zp, y_scale, y_zp) -> torch.Tensor:  # noqa: ANN001
        """The mean of dequantized values, requantized without rounding and clamped."""
        dtype = container(x)
        mean = (x.to(dtype) - _scalar(x_zp).to(dtype)).mean(self.dims(x), keepdim=True)
        return self.saturate(mean * (x_scale.detach().reshape(()).to(dtype) / y_scale.detach().reshape(()).to(dtype))
                             + _scalar(y_zp).to(dtype))


class QLinearAveragePool(Quantized):
    """com.microsoft QLinearAveragePool as onnxruntime computes it: inputs dequantized in float32, each
    window summed in float32 in row-major order, divided by its count, then ``round(y / y_scale + y_zp)``
    saturated (2-D pools; other ranks average with torch's pooling, which may differ by one step)."""

    def __init__(self, kernel: list[int], strides: list[int], pads: list[int], count_include_pad: bool, ceil_mode: bool,
                 channels_last: bool, target: int, fake: bool) -> None:
        super().__init__(target, fake)
        self.kernel, self.strides, self.pads = kernel, strides, pads
        self.count_include_pad, self.ceil_mode, self.channels_last = count_include_pad, ceil_mode, channels_last

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Average pool of NCHW... ``x`` (padding excluded from the count unless ``count_include_pad``)."""
        rank = len(self.kernel)
        xp = F.pad(x, torch_pads(self.pads))
        fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank]
        y = fn(xp, self.kernel, self.strides, 0, ceil_mode=self.ceil_mode)
        if not self.count_include_pad:
            ones = F.pad(torch.ones_like(x[:1, :1]), torch_pads(self.pads))
            y = y * (math.prod(self.kernel) / fn(ones, self.kernel, self.strides, 0, ceil_mode=self.ceil_mode))
        return y

    def exact_pool(self, x: torch.Tensor) -> torch.Tensor:
        """onnxruntime's float32 window sums (sequential, row-major) divided by the window counts."""
        if len(self.kernel) != 2 or self.ceil_mode:
            return self.pool(x)
        n, c = x.shape[:2]
        xp = F.pad(x, torch_pads(self.pads))  # padded zeros leave a float sum unchanged
        windows = F.unfold(xp.reshape(n * c, 1, *xp.shape[2:]), self.kernel, stride=self.strides)
        total = windows[:, 0]
        for k in range(1, windows.shape[1]):
            total = total + windows[:, k]
        if self.count_include_pad:
            count = torch.full_like(total[:1], float(math.prod(self.kernel)))
        else:
            ones = F.pad(torch.ones_like(x[:1, :1]), torch_pads(self.pads))
            count = F.unfold(ones, self.kernel, stride=self.strides).sum(1)
        out = [(s + b + e - k) // st + 1 for s, b, e, k, st in zip(x.shape[2:], self.pads[:2], self.pads[2:], self.kernel, self.strides)]
        return (total / count).reshape(n, c, *out)

    def forward(self, x, x_scale, x_zp, y_scale, y_zp=None) -> torch.Tensor:  # noqa: ANN001
        xi = integers(x).movedim(-1, 1) if self.channels_last else integers(x)
        dequantized = f32(x_scale).reshape(()) * (xi.to(torch.float64) - _scalar(x_zp)).to(torch.float32)
        value = self.exact_pool(dequantized) / f32(y_scale).reshape(()) + _scalar(y_zp).to(torch.float32)
        exact = torch.round(value).to(torch.float64).clamp(self.qmin, self.qmax)
        exact = exact.movedim(1, -1) if self.channels_last else exact
        sur = self.surrogate(x, x_scale, x_zp, y_scale, y_zp) if self.wants_surrogate(x) else None
        return self.emit(exact, sur, x)

    def surrogate(self, x, x_scale, x_zp, y_scale, y_zp) -> torch.Tensor:  # noqa: ANN001
        """The average pool of dequantized values, requantized without rounding and clamped."""
        dtype = container(x)
        real = (x.to(dtype) - _scalar(x_zp).to(dtype)) * x_scale.detach().reshape(()).to(dtype)
        real = real.movedim(-1, 1) if self.channels_last else real
        y = self.saturate(self.pool(real) / y_scale.detach().reshape(()).to(dtype) + _scalar(y_zp).to(dtype))
        return y.movedim(1, -1) if self.channels_last else y


class QLinearSoftmax(Quantized):
    """com.microsoft QLinearSoftmax as onnxruntime computes it: a float32 table of
    ``exp((i - 255 + shift) * x_scale)``, the row maximum aligned to entry 255, a float32 running sum,
    ``round(e * floor(1 / y_scale) / sum) + y_zp``."""

    def __init__(self, axis: int, opset: int, target: int, fake: bool) -> None:
        super().__init__(target, fake)
        self.axis, self.opset = axis, opset

    def rows(self, x: torch.Tensor) -> tuple[torch.Tensor, callable]:
        """``x`` as (rows, D) with the reduced axes last, and the inverse reshaping."""
        axis = self.axis % x.dim()
        if self.opset < 13:
            return x.reshape(math.prod(x.shape[:axis]), -1), lambda y: y.reshape(x.shape)
        moved = x.movedim(axis, -1)
        return moved.reshape(-1, x.shape[axis]), lambda y: y.reshape(moved.shape).movedim(-1, axis)

    def forward(self, x, x_scale, x_zp, y_scale, y_zp=None) -> torch.Tensor:  # noqa: ANN001
        rows, back = self.rows(integers(x))
        d = rows.shape[1]
        xs = float(f32(x_scale).reshape(()))
        limit = f32(torch.finfo(torch.float32).max) / f32(float(d))  # float32 division, float32 log, as onnxruntime
        shift = max(0.0, float(torch.log(limit)) - 5.0) / xs
        index = torch.arange(256, dtype=torch.float64)
        table = torch.exp((index - 255 + shift) * xs).to(torch.float32)
        e = table[255 - (rows.max(1, keepdim=True).values - rows)]
        total = torch.zeros(rows.shape[0], 1, dtype=torch.float32)
        for j in range(d):  # onnxruntime's sequential float32 sum
            total = total + e[:, j:j + 1]
        inv = torch.floor(1.0 / f32(y_scale).reshape(()))
        q = torch.round(e * inv / total).to(torch.int64) + integers(_scalar(y_zp))
        exact = back(q.to(torch.float64).clamp(self.qmin, self.qmax))  # onnxruntime 1.32 saturates int8 too
        sur = self.surrogate(x, x_scale, x_zp, y_scale, y_zp) if self.wants_surrogate(x) else None
        return self.emit(exact, sur, x)

    def surrogate(self, x, x_scale, x_zp, y_scale, y_zp) -> torch.Tensor:  # noqa: ANN001
        """The float softmax of dequantized values, requantized without rounding and clamped."""
        dtype = container(x)
        rows, back = self.rows((x.to(dtype) - _scalar(x_zp).to(dtype)) * x_scale.detach().reshape(()).to(dtype))
        y = torch.softmax(rows, dim=1) / y_scale.detach().reshape(()).to(dtype) + _scalar(y_zp).to(dtype)
        return self.saturate(back(y))


# ----------------------------------------------------------------------------------------- converters


def _target(graph: OnnxGraph, node: OnnxNode, zp_index: int, default: int = TensorProto.UINT8) -> int:
    """The output element type: the output zero point's type, else the output's inferred type, else ``default``."""
    names = node.input_values
    if zp_index < len(names) and names[zp_index]:
        found = elem_type(graph, names[zp_index])
        if found:
            return found
    return elem_type(graph, node.output_values[0]) or default


def _fake(graph: OnnxGraph, node: OnnxNode) -> bool:
    return float_container_ok(graph, node.output_values[0])


def _conv_attrs(node: OnnxNode, graph: OnnxGraph, w_index: int) -> tuple[list[int], list[int], list[int], int]:
    attrs = node.attributes
    auto_pad = attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise NotImplementedError(f"{node.operation_type} with auto_pad={auto_pad} is not supported")
    w_info = graph.value_info.get(node.input_values[w_index])
    if w_info is not None and w_info.type.tensor_type.shape.dim:
        rank = len(w_info.type.tensor_type.shape.dim) - 2
    elif node.input_values[w_index] in graph.initializers:
        rank = graph.initializers[node.input_values[w_index]].to_torch().dim() - 2
    else:
        rank = len(attrs.get("kernel_shape", [0, 0]))
    pads = auto_pad if auto_pad.startswith("SAME") else [0] * 2 * rank if auto_pad == "VALID" else list(attrs.get("pads", [0] * 2 * rank))
    return (pads, list(attrs.get("strides", [1] * rank)), list(attrs.get("dilations", [1] * rank)), int(attrs.get("group", 1)))


@register("QLinearConv", since(1))
def convert_qlinear_conv(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """QLinearConv-10: per-tensor or per-channel weights, optional int32 bias, explicit pads."""
    return optional_result(QLinearConv(*_conv_attrs(node, graph, 3), _target(graph, node, 7), _fake(graph, node)), node, 9)


@register("ConvInteger", since(1))
def convert_conv_integer(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """ConvInteger-10 with explicit pads (auto_pad=NOTSET), strides, dilations, group."""
    return optional_result(ConvInteger(*_conv_attrs(node, graph, 1), TensorProto.INT32, _fake(graph, node)), node, 4)


@register("MatMulInteger", since(1))
def convert_matmul_integer(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """MatMulInteger-10: per-tensor or per-row (A) / per-column (B) zero points."""
    return optional_result(MatMulInteger(TensorProto.INT32, _fake(graph, node)), node, 4)


@register("QLinearMatMul", since(1))
def convert_qlinear_matmul(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """QLinearMatMul (10, 21): uint8/int8 operands, per-tensor or per-row/column parameters."""
    target = _target(graph, node, 7, elem_type(graph, node.input_values[0]) or TensorProto.UINT8)
    if target not in (TensorProto.UINT8, TensorProto.INT8):
        raise NotImplementedError(f"QLinearMatMul with output type {TensorProto.DataType.Name(target)} is not supported")
    return optional_result(QLinearMatMul(target, _fake(graph, node)), node, 8)


@register("QGemm", [1], domain=MS)
def convert_qgemm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft QGemm-1: int8/uint8 operands, optional int32 C; quantized output, or float32
    without y_scale."""
    names = list(node.input_values) + [""] * 9
    target = _target(graph, node, 8) if names[8] else TensorProto.FLOAT
    attrs = node.attributes
    module = QGemm(float(attrs.get("alpha", 1.0)), bool(attrs.get("transA", 0)), bool(attrs.get("transB", 0)), target,
                   target != TensorProto.FLOAT and _fake(graph, node))
    return optional_result(module, node, 9)


@register("QLinearAdd", [1], domain=MS)
def convert_qlinear_add(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft QLinearAdd-1 (uint8/int8, broadcasting)."""
    return optional_result(QLinearBinary("QLinearAdd", _target(graph, node, 7, elem_type(graph, node.input_values[0]) or TensorProto.UINT8),
                                         _fake(graph, node)), node, 8)


@register("QLinearMul", [1], domain=MS)
def convert_qlinear_mul(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft QLinearMul-1 (uint8/int8, broadcasting)."""
    return optional_result(QLinearBinary("QLinearMul", _target(graph, node, 7, elem_type(graph, node.input_values[0]) or TensorProto.UINT8),
                                         _fake(graph, node)), node, 8)


def _lookup(op: str, node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    target = _target(graph, node, 4, elem_type(graph, node.input_values[0]) or TensorProto.UINT8)
    return optional_result(QLinearLookup(op, float(node.attributes.get("alpha", 0.01)), target, _fake(graph, node)), node, 5)


@register("QLinearSigmoid", [1], domain=MS)
def convert_qlinear_sigmoid(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft QLinearSigmoid-1 (table of MLAS's float32 logistic)."""
    return _lookup("QLinearSigmoid", node, graph)


@register("QLinearLeakyRelu", [1], domain=MS)
def convert_qlinear_leaky_relu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft QLinearLeakyRelu-1 (``alpha``, default 0.01)."""
    return _lookup("QLinearLeakyRelu", node, graph)


@register("QLinearConcat", [1], domain=MS)
def convert_qlinear_concat(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft QLinearConcat-1: (Y_scale, Y_zero_point, then X, X_scale, X_zero_point per input)."""
    return result(QLinearConcat(int(node.attributes["axis"]), _target(graph, node, 1), _fake(graph, node)), node)


@register("QLinearGlobalAveragePool", [1], domain=MS)
def convert_qlinear_global_average_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft QLinearGlobalAveragePool-1 (``channels_last``)."""
    module = QLinearGlobalAveragePool(bool(node.attributes.get("channels_last", 0)), _target(graph, node, 4), _fake(graph, node))
    return optional_result(module, node, 5)


@register("QLinearAveragePool", [1], domain=MS)
def convert_qlinear_average_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft QLinearAveragePool-1 with explicit pads (auto_pad NOTSET) or none (VALID)."""
    attrs = node.attributes
    auto_pad = attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "", "VALID"):
        raise NotImplementedError(f"QLinearAveragePool with auto_pad={auto_pad} is not supported")
    kernel = list(attrs["kernel_shape"])
    pads = [0] * 2 * len(kernel) if auto_pad == "VALID" else list(attrs.get("pads", [0] * 2 * len(kernel)))
    module = QLinearAveragePool(kernel, list(attrs.get("strides", [1] * len(kernel))), pads,
                                bool(attrs.get("count_include_pad", 0)), bool(attrs.get("ceil_mode", 0)),
                                bool(attrs.get("channels_last", 0)), _target(graph, node, 4), _fake(graph, node))
    return optional_result(module, node, 5)


@register("QLinearSoftmax", [1], domain=MS)
def convert_qlinear_softmax(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """com.microsoft QLinearSoftmax-1 (``axis``, ``opset`` attributes)."""
    attrs = node.attributes
    opset = int(attrs["opset"])
    module = QLinearSoftmax(int(attrs.get("axis", 1 if opset < 13 else -1)), opset,
                            _target(graph, node, 4, elem_type(graph, node.input_values[0]) or TensorProto.UINT8), _fake(graph, node))
    return optional_result(module, node, 5)



def _dynamic_params(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """onnxruntime's dynamic uint8 quantization parameters of ``x`` (its range with 0, in float32):
    ``(scale, zero_point)``, as DynamicQuantizeLinear and its quantized recurrent kernels compute them."""
    xf = x.detach().to(torch.float32)
    hi, lo = xf.max().clamp(min=0), xf.min().clamp(max=0)
    scale = torch.where(hi == lo, torch.ones_like(hi), (hi - lo) / 255.0)
    return scale, torch.round((0.0 - lo / scale).clamp(0, 255))


class DynamicQuantizeLSTM(StraightThrough):
    """com.microsoft DynamicQuantizeLSTM: an LSTM whose W ``(directions, input, 4*hidden)`` and R
    ``(directions, hidden, 4*hidden)`` are int8/uint8 with per-direction or per-column scales, run as
    onnxruntime's quantized LSTM does: each matrix product quantizes its float operand (all time
    steps of X at once, then the hidden state at every step) to uint8 with dynamic parameters,
    accumulates exactly in int32 and scales the accumulator by ``a_scale * w_scale`` in float32; the
    recurrent product is accumulated onto the input product, then the bias is added. Gradient: the
    float LSTM on the dequantized weights (each product straight-through)."""

    def __init__(self, lstm: torch.nn.Module, chunk: int = 1) -> None:
        super().__init__()
        self.lstm = lstm  # an OnnxLSTM: directions, layout, activations, clip, outputs
        self.chunk = chunk

    def _product(self, a: torch.Tensor, w_q: torch.Tensor, w_zp: torch.Tensor, w_scale: torch.Tensor,
                 w_float: torch.Tensor, chunk: int = 0) -> torch.Tensor:
        """``a @ w`` for every direction d: a (d, rows, k), w (d, k, n) -> (d, rows, n); the operand is
        quantized per direction, and per ``chunk`` rows when given (onnxruntime's batch-parallel
        recurrence quantizes each thread's rows of the hidden state on their own)."""
        exact = []
        for d in range(a.shape[0]):
            for start in range(0, a.shape[1], chunk or a.shape[1]):
                rows = a[d, start:start + (chunk or a.shape[1])]
                scale, zp = _dynamic_params(rows)
                q = (torch.round(rows.detach().to(torch.float32) / scale) + zp).clamp(0, 255)
                acc = torch.matmul((q - zp).to(torch.float64), (w_q[d].to(torch.float64) - w_zp[d].to(torch.float64)))
                exact.append(acc.to(torch.float32) * (scale * w_scale[d].to(torch.float32)))
        exact = torch.cat(exact).reshape(a.shape[0], a.shape[1], -1)
        surrogate = torch.matmul(a, w_float.to(a.dtype)) if self.wants_surrogate(a) else None
        return self.straight_through(exact.to(a.dtype), surrogate)

    def forward(self, *inputs: torch.Tensor | None):
        lstm = self.lstm
        inputs = lstm._slotted(inputs)
        inputs = inputs + (None,) * (12 - len(inputs))
        X, W, R, B, sequence_lens, initial_h, initial_c, P, w_scale, w_zp, r_scale, r_zp = inputs[:12]
        x = X.transpose(0, 1) if lstm.layout else X
        n_dirs, hidden = W.shape[0], R.shape[1]
        dtype = x.dtype

        def per_column(scale: torch.Tensor, zp: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            scale = scale.reshape(n_dirs, 1, -1)
            zp = torch.zeros_like(scale) if zp is None else zp.reshape(n_dirs, 1, -1)
            return scale, zp

        ws, wz = per_column(w_scale, w_zp)
        rs, rz = per_column(r_scale, r_zp)
        w_float = (W.to(torch.float32) - wz.to(torch.float32)) * ws.to(torch.float32)
        r_float = (R.to(torch.float32) - rz.to(torch.float32)) * rs.to(torch.float32)
        bias = None if B is None else (B[:, : 4 * hidden] + B[:, 4 * hidden:]).to(dtype)
        steps, batch = x.shape[0], x.shape[1]
        flat = x.reshape(1, steps * batch, -1).expand(n_dirs, -1, -1)
        xw = self._product(flat, W, wz, ws, w_float).reshape(n_dirs, steps, batch, 4 * hidden)
        xw = lstm._orient(xw)
        p_i = p_o = p_f = None
        if P is not None:
            p_i, p_o, p_f = (p[:, None, :] for p in P.to(dtype).chunk(3, -1))

        def step(s: int, states: list[torch.Tensor]) -> list[torch.Tensor]:
            h, c = states
            gates = xw[:, s] + self._product(h, R, rz, rs, r_float, chunk=self.chunk)
            if bias is not None:
                gates = gates + bias[:, None, :]
            return lstm._cell(gates, c, p_i, p_o, p_f)

        states = [lstm._states(x, initial_h, n_dirs, hidden), lstm._states(x, initial_c, n_dirs, hidden)]
        return lstm._outputs(lstm._run(x, sequence_lens, states, step))


@register("DynamicQuantizeLSTM", [1], domain=MS)
def convert_dynamic_quantize_lstm(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    """com.microsoft DynamicQuantizeLSTM-1 (quantize_dynamic's LSTM): see :class:`DynamicQuantizeLSTM`."""
    from onnxxai.convert.recurrent import OnnxLSTM, _common, _result

    lstm = OnnxLSTM(**_common(node), input_forget=bool(int(node.attributes.get("input_forget", 0))))
    converted = _result(lstm, node)
    return OperationConverterResult(torch_module=DynamicQuantizeLSTM(lstm), onnx_mapping=converted.onnx_mapping)

__all__ = ["INT_RANGES", "float_container_ok", "DequantizedTap", "RequantizedTap", "DynamicQuantizeLSTM", "saturate_surrogate", "frozen_copy", "straight_through", "StraightThrough", "straight_through_modules", "surrogate_forward", "requantize", "quantize_mlas", "Quantized", "QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "QGemm", "QLinearBinary",
           "QLinearLookup", "QLinearConcat", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSoftmax"]
