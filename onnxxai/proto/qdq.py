"""QDQ groups as onnxruntime runs them: DequantizeLinear -> op -> QuantizeLinear rewritten into the
integer op onnxruntime fuses it into (QLinearConv, QLinearMatMul, com.microsoft QGemm / QLinearAdd /
QLinearMul / QLinearConcat / QLinearGlobalAveragePool / QLinearAveragePool / QLinearSigmoid /
QLinearLeakyRelu / QLinearSoftmax), so the converted graph computes them with the integer kernels of
:mod:`onnxxai.convert.qlinear` (bit-exact forward, straight-through gradients) instead of simulating
them in float. Parity still compares with onnxruntime on the original file.

Which groups fuse follows onnxruntime's QDQ selectors
(``core/optimizer/qdq_transformer/selectors_actions/qdq_selectors.cc``, ``qdq_selector_action_transformer.cc``):

- every data input of the target comes from a DequantizeLinear, and the target's single output goes
  to one QuantizeLinear (Gemm may also end in float; a Relu or Clip between target and Q is absorbed
  when the Q's range makes it redundant: Relu when the zero point is the type's minimum, Clip when
  the Q's representable range lies inside [min, max]); the target's and the Relu's outputs are not
  graph outputs; scales and zero points are initializers, activations per tensor;
- Conv and MatMul: 8-bit activations; int8 activations only where onnxruntime may run int8 kernels
  (ARM builds) or where its s8->u8 pass re-encodes the pair (a Q whose only consumer is one DQ, int8
  scalar zero points equal); an int8 activation needs int8 weights; the bias is int32;
- Gemm: int8 A needs int8 B; beta 1 with an int32 bias; Add, Mul, Concat, the unary ops: one 8-bit
  element type for every input and the output; 16-bit QDQ is not fused (measured on onnxruntime
  1.32: none of its ops fuse, whether written with the com.microsoft Q/DQ ops or opset 21).
- A DQ that feeds several nodes is shared, as after onnxruntime's EnsureUniqueDQForNodeUnit.

onnxruntime's own level-1 rewrites (Identity elimination, constant-node sharing) decide a few groups
in ways no local rule reproduces (a bias reached through an Identity fuses or not depending on the
order the rewrites meet it). So when onnxruntime is importable, the pass also asks it which target
nodes it fused (the EXTENDED-level optimized graph names each fused node after its target) and
fuses exactly the groups both agree on; disagreements are reported in ``skipped``. Ops onnxruntime
merely strips Q/DQ around (MaxPool, Reshape, Flatten, ...) compute the same values in float and stay.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxxai.errors import ResourceLimitError
from onnxxai.proto import limits

__all__ = ["fuse_qdq_groups", "onnxruntime_fusions", "QDQGroup", "output_steps"]

MS = "com.microsoft"
_EIGHT_BIT = (TensorProto.UINT8, TensorProto.INT8)
_QMIN = {TensorProto.UINT8: 0, TensorProto.INT8: -128}
_QMAX = {TensorProto.UINT8: 255, TensorProto.INT8: 127}
#: target op -> (fused op, domain)
FUSED: dict[str, tuple[str, str]] = {
    "Conv": ("QLinearConv", ""), "MatMul": ("QLinearMatMul", ""), "Gemm": ("QGemm", MS),
    "Add": ("QLinearAdd", MS), "Mul": ("QLinearMul", MS), "Concat": ("QLinearConcat", MS),
    "GlobalAveragePool": ("QLinearGlobalAveragePool", MS), "AveragePool": ("QLinearAveragePool", MS),
    "Sigmoid": ("QLinearSigmoid", MS), "LeakyRelu": ("QLinearLeakyRelu", MS), "Softmax": ("QLinearSoftmax", MS),
}
#: data inputs read through DQ nodes (None: every input)
_DATA_INPUTS: dict[str, tuple[int, ...] | None] = {
    "Conv": (0, 1, 2), "MatMul": (0, 1), "Gemm": (0, 1, 2), "Add": (0, 1), "Mul": (0, 1), "Concat": None,
    "GlobalAveragePool": (0,), "AveragePool": (0,), "Sigmoid": (0,), "LeakyRelu": (0,), "Softmax": (0,),
}


@dataclass
class QDQGroup:
    """One fusable group: the DQ node of each data input, the target, an absorbed Relu/Clip, the Q."""

    target: onnx.NodeProto
    dqs: list[onnx.NodeProto]
    q: onnx.NodeProto | None
    clip: onnx.NodeProto | None = None
    nodes: list[onnx.NodeProto] = field(default_factory=list)


class _Graph:
    """Producers, consumers, initializers and element types of one graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model, self.graph = model, model.graph
        self.inits = {t.name: t for t in model.graph.initializer}
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in model.graph.output}
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)

    def array(self, name: str) -> np.ndarray | None:
        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def int_type(self, dq_or_q: onnx.NodeProto, quantized: str) -> int | None:
        """The integer element type of a Q output / DQ input: its zero point's, else uint8 (the default)."""
        if len(dq_or_q.input) > 2 and dq_or_q.input[2]:
            zp = self.inits.get(dq_or_q.input[2])
            return zp.data_type if zp is not None else None
        if quantized in self.inits:
            return self.inits[quantized].data_type
        return TensorProto.UINT8

    def single_consumer(self, name: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None


def _attr(node: onnx.NodeProto, name: str, default):  # noqa: ANN001, ANN202
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _per_tensor(g: _Graph, node: onnx.NodeProto) -> bool:
    """Scale and zero point are initializers holding one value."""
    names = [n for n in node.input[1:3] if n]
    return all(n in g.inits for n in names) and all(g.array(n).size == 1 for n in names)


def _constant_params(g: _Graph, node: onnx.NodeProto) -> bool:
    return all(n in g.inits for n in node.input[1:3] if n)


def _redundant_clip(g: _Graph, clip: onnx.NodeProto, q: onnx.NodeProto) -> bool:
    """onnxruntime's ReluQuantFusion / ClipQuantFusion: the Q's range already clips."""
    if not _per_tensor(g, q) or len(q.input) < 3 or not q.input[2]:
        return False
    zp_t = g.inits[q.input[2]].data_type
    if zp_t not in _EIGHT_BIT:
        return False
    zp = int(g.array(q.input[2]).reshape(()))
    if clip.op_type == "Relu":
        return zp == _QMIN[zp_t]
    scale = np.float32(g.array(q.input[1]).reshape(()))
    if g.inits[q.input[1]].data_type != TensorProto.FLOAT:
        return False
    lower, upper = scale * np.float32(_QMIN[zp_t] - zp), scale * np.float32(_QMAX[zp_t] - zp)
    if len(clip.input) > 1 or g.opset >= 11:
        bounds = []
        for i, default in ((1, -np.inf), (2, np.inf)):
            name = clip.input[i] if len(clip.input) > i else ""
            if name and name not in g.inits:
                return False
            bounds.append(float(g.array(name).reshape(())) if name else default)
        low, high = bounds
    else:
        low, high = float(_attr(clip, "min", -np.finfo(np.float32).max)), float(_attr(clip, "max", np.finfo(np.float32).max))
    eps = float(np.finfo(np.float32).eps)
    return not (eps < low - float(lower) or eps < float(upper) - high)


def _s8_pair_to_u8(g: _Graph, dq: onnx.NodeProto) -> bool:
    """onnxruntime's QDQS8ToU8Transformer re-encodes this int8 Q->DQ pair as uint8: the Q's only
    consumer is this DQ, both zero points are int8 scalars of equal value."""
    q = g.producer.get(dq.input[0])
    if q is None or q.op_type != "QuantizeLinear" or g.single_consumer(q.output[0]) is not dq \
            or len(g.consumers.get(dq.output[0], [])) > 1:  # a shared DQ was duplicated (EnsureUniqueDQForNodeUnit) first
        return False
    if len(q.input) < 3 or len(dq.input) < 3 or not (q.input[2] in g.inits and dq.input[2] in g.inits):
        return False
    zq, zd = g.inits[q.input[2]], g.inits[dq.input[2]]
    return (zq.data_type == zd.data_type == TensorProto.INT8 and g.array(q.input[2]).size == 1
            and g.array(dq.input[2]).size == 1 and int(g.array(q.input[2]).reshape(())) == int(g.array(dq.input[2]).reshape(())))


def _effective_type(g: _Graph, dq: onnx.NodeProto | None, q: onnx.NodeProto | None) -> int | None:
    """The element type onnxruntime's kernels see for a DQ input or a Q output: int8 pairs its s8->u8
    pass re-encodes read as uint8 (x86 builds, where int8 QDQ kernels are not allowed)."""
    if dq is not None:
        declared = g.int_type(dq, dq.input[0])
        return TensorProto.UINT8 if declared == TensorProto.INT8 and _s8_pair_to_u8(g, dq) else declared
    declared = g.int_type(q, q.output[0])
    after = g.single_consumer(q.output[0])
    if declared == TensorProto.INT8 and after is not None and after.op_type == "DequantizeLinear" and _s8_pair_to_u8(g, after):
        return TensorProto.UINT8
    return declared


def _find_group(g: _Graph, node: onnx.NodeProto, strict: bool = True) -> tuple[QDQGroup | None, str]:
    """The group around target ``node`` and '' when onnxruntime's selectors accept it, else None and why
    (``strict=False`` lets a DQ shared through Identity nodes in, for groups onnxruntime says it fused)."""
    op = node.op_type
    wanted = _DATA_INPUTS[op]
    indices = [i for i in (range(len(node.input)) if wanted is None else wanted) if i < len(node.input) and node.input[i]]
    dqs = []
    for i in indices:
        dq = g.producer.get(node.input[i])
        while dq is not None and dq.op_type == "Identity":  # onnxruntime eliminates Identity nodes first,
            if strict and len(g.consumers.get(dq.input[0], [])) > 1:  # but a DQ shared through Identities mostly stays
                return None, f"input {i} is a DequantizeLinear shared through Identity nodes"
            dq = g.producer.get(dq.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or node.input[i] in g.outputs:
            return None, f"input {i} does not come from a DequantizeLinear"
        if not _constant_params(g, dq):
            return None, f"input {i}'s scale or zero point is not an initializer"
        dqs.append(dq)
    clip, q = None, None
    if node.output[0] not in g.outputs:
        nxt = g.single_consumer(node.output[0])
        if nxt is not None and nxt.op_type in ("Relu", "Clip") and g.single_consumer(nxt.output[0]) is not None:
            after = g.single_consumer(nxt.output[0])
            if after.op_type == "QuantizeLinear" and _redundant_clip(g, nxt, after):
                clip, q = nxt, after
            else:
                return None, f"its {nxt.op_type} is not made redundant by a following QuantizeLinear"
        elif nxt is not None and nxt.op_type == "QuantizeLinear":
            q = nxt
    if q is None and op != "Gemm":
        return None, "its output does not go to one QuantizeLinear"
    if q is not None and not _constant_params(g, q):
        return None, "the QuantizeLinear's scale or zero point is not an initializer"
    types = [_effective_type(g, dq, None) for dq in dqs]
    out_t = _effective_type(g, None, q) if q is not None else None
    if any(t is None for t in types) or (q is not None and out_t is None):
        return None, "an element type is unknown"
    if op in ("Conv", "MatMul", "Gemm"):
        x_t, w_t = types[0], types[1]
        if x_t not in _EIGHT_BIT or w_t not in _EIGHT_BIT or (out_t is not None and out_t != x_t):
            return None, "activation, weight and output are not one 8-bit type"
        if len(dqs) > 2 and types[2] != TensorProto.INT32:
            return None, "the bias is not int32"
        if op == "Gemm" and len(dqs) > 2 and (float(_attr(node, "beta", 1.0)) != 1.0 or float(_attr(node, "alpha", 1.0)) != 1.0):
            return None, "Gemm with a bias and alpha or beta other than 1"  # measured: onnxruntime 1.32 leaves it
        if x_t == TensorProto.INT8 and w_t != TensorProto.INT8:
            return None, "int8 activations with uint8 weights"
        if op != "Gemm" and x_t == TensorProto.INT8:
            return None, "int8 activations that onnxruntime does not re-encode as uint8 (x86 has no int8 QDQ kernels)"
        if not (_per_tensor(g, dqs[0]) and (q is None or _per_tensor(g, q))):
            return None, "per-channel activations"
        if len(dqs) > 2 and not _per_tensor(g, dqs[2]) and g.array(dqs[2].input[1]).size != g.array(dqs[1].input[1]).size:
            return None, "bias scale does not match the weight's"
    else:
        if any(t not in _EIGHT_BIT for t in types) or len(set(types + [out_t])) != 1:
            return None, "inputs and output are not one 8-bit type"
        if not all(_per_tensor(g, n) for n in dqs + [q]):
            return None, "per-channel activations"
    nodes = dqs + [node] + [n for n in (clip, q) if n is not None]
    return QDQGroup(node, dqs, q, clip, nodes), ""


def onnxruntime_fusions(model: onnx.ModelProto) -> dict[str, str] | str:
    """Target node name -> the integer op onnxruntime (CPU, EXTENDED optimizations) fused it into; or,
    when onnxruntime is not installed or cannot load the graph, the reason as a string. The session
    is built under the current time budget (:func:`onnxxai.proto.limits.onnxruntime_session`): past
    it, TimeLimitError."""
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime is not installed"
    fused_ops = {op for op, _ in FUSED.values()} | {"MatMulIntegerToFloat"}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = path
        options.log_severity_level = 3
        try:
            limits.onnxruntime_session(model, options, ["CPUExecutionProvider"])
            optimized = onnx.load(path)
        except ResourceLimitError:  # out of time: that is the answer, not a reason to fall back
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime cannot load it: the cause is reported, local rules decide
            return f"onnxruntime could not optimize the graph ({exc.__class__.__name__}: {str(exc)[:200]})"
    return {n.name: n.op_type for n in optimized.graph.node if n.op_type in fused_ops}


def _zero_point(g: _Graph, node: onnx.NodeProto, used: set[str]) -> str:
    """The node's zero-point input, or a new uint8 zero initializer (the Q/DQ default) when omitted."""
    if len(node.input) > 2 and node.input[2]:
        return node.input[2]
    name = f"{node.name}/zero_point"
    while name in used:
        name += "_"
    used.add(name)
    g.graph.initializer.append(numpy_helper.from_array(np.zeros((), np.uint8), name))
    return name


def _fused_node(g: _Graph, group: QDQGroup, used: set[str]) -> onnx.NodeProto:
    """The integer node onnxruntime's action writes for ``group`` (same name as the target)."""
    node, dqs, q = group.target, group.dqs, group.q
    op, domain = FUSED[node.op_type]

    def triple(dq: onnx.NodeProto) -> list[str]:
        return [dq.input[0], dq.input[1], _zero_point(g, dq, used)]

    out = q.output[0] if q is not None else (group.clip or node).output[0]
    y = [q.input[1], _zero_point(g, q, used)] if q is not None else []
    attrs: dict = {}
    if node.op_type == "Conv":
        inputs = triple(dqs[0]) + triple(dqs[1]) + y + ([dqs[2].input[0]] if len(dqs) > 2 else [])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    elif node.op_type == "MatMul":
        inputs = triple(dqs[0]) + triple(dqs[1]) + y
    elif node.op_type == "Gemm":
        inputs = triple(dqs[0]) + triple(dqs[1]) + [dqs[2].input[0] if len(dqs) > 2 else ""] + y
        attrs = {k: _attr(node, k, d) for k, d in (("alpha", 1.0), ("transA", 0), ("transB", 0))}
    elif node.op_type in ("Add", "Mul"):
        inputs = triple(dqs[0]) + triple(dqs[1]) + y
    elif node.op_type == "Concat":
        inputs = y + [name for dq in dqs for name in triple(dq)]
        attrs = {"axis": _attr(node, "axis", 0)}
    else:
        inputs = triple(dqs[0]) + y
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "GlobalAveragePool":
            attrs["channels_last"] = 0
        if node.op_type == "Softmax":
            attrs = {"axis": _attr(node, "axis", 1 if g.opset < 13 else -1), "opset": g.opset}
    while inputs and not inputs[-1]:
        inputs.pop()
    return helper.make_node(op, inputs, [out], name=node.name, domain=domain, **attrs)


def _reencode_pairs(g: _Graph, groups: list[QDQGroup], used: set[str]) -> None:
    """Re-encode the int8 Q->DQ pairs at the groups' inputs and outputs as uint8 (zero point + 128),
    as onnxruntime's s8->u8 pass does before fusing: the values are the same, but kernels such as
    QLinearAdd round differently with the shifted operands."""
    pairs = []
    for group in groups:
        for dq in group.dqs:
            q = g.producer.get(dq.input[0])
            if g.int_type(dq, dq.input[0]) == TensorProto.INT8 and _s8_pair_to_u8(g, dq):
                pairs.append((q, dq))
        after = g.single_consumer(group.q.output[0]) if group.q is not None else None
        if after is not None and after.op_type == "DequantizeLinear" and g.int_type(group.q, group.q.output[0]) == TensorProto.INT8 \
                and _s8_pair_to_u8(g, after):
            pairs.append((group.q, after))
    done: set[int] = set()
    retyped: set[str] = set()
    for q, dq in pairs:
        if id(q) in done:
            continue
        done.add(id(q))
        name = f"{q.input[2]}/uint8"
        if name not in used:
            used.add(name)
            g.graph.initializer.append(numpy_helper.from_array(np.asarray(g.array(q.input[2]).astype(np.int16) + 128, np.uint8), name))
        q.input[2] = dq.input[2] = name
        retyped.add(q.output[0])
    stale = [v for v in g.graph.value_info if v.name in retyped]
    for v in stale:
        g.graph.value_info.remove(v)


def fuse_qdq_groups(model: onnx.ModelProto) -> tuple[int, list[str]]:
    """Rewrite the QDQ groups onnxruntime fuses into its integer ops (see the module docstring);
    return how many, and each group left in float with the reason."""
    g = _Graph(model)
    candidates = [n for n in model.graph.node if n.op_type in FUSED and n.domain in ("", "ai.onnx")
                  and any(g.producer.get(i) is not None and g.producer[i].op_type == "DequantizeLinear" for i in n.input)]
    if not candidates:
        return 0, []
    ort_fused = onnxruntime_fusions(model)
    groups, skipped = [], []
    if isinstance(ort_fused, str):
        skipped.append(f"local rules alone decided: {ort_fused}")
        ort_fused = None
    for node in candidates:
        group, why = _find_group(g, node)
        if ort_fused is not None and node.name in ort_fused and group is None:
            group, _ = _find_group(g, node, strict=False)
            if group is None:
                skipped.append(f"{node.op_type} {node.name!r}: onnxruntime fuses it into {ort_fused[node.name]}, "
                               f"but it cannot be emulated: {why}")
                continue
        elif ort_fused is not None and node.name not in ort_fused and group is not None:
            skipped.append(f"{node.op_type} {node.name!r}: onnxruntime leaves it unfused")
            continue
        if group is None:
            skipped.append(f"{node.op_type} {node.name!r}: {why}")
        else:
            groups.append(group)
    if not groups:
        return 0, skipped
    used = {o for n in model.graph.node for o in n.output} | set(g.inits) | {i.name for i in model.graph.input}
    _reencode_pairs(g, groups, used)
    fused = {id(gr.target): _fused_node(g, gr, used) for gr in groups}
    drop = {id(n) for gr in groups for n in gr.nodes if n.op_type != "DequantizeLinear"}
    fused_targets = {id(gr.target) for gr in groups}
    kept: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if id(node) in fused:
            kept.append(fused[id(node)])
        elif id(node) not in drop:
            kept.append(node)
    # a DQ survives while something other than a fused target still reads it
    readers: dict[str, int] = {}
    for node in kept:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    outputs = {o.name for o in model.graph.output}
    kept = [n for n in kept if not (n.op_type == "DequantizeLinear" and not readers.get(n.output[0]) and n.output[0] not in outputs
                                    and any(id(c) in fused_targets for c in g.consumers.get(n.output[0], [])))]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    if any(node.domain == MS for node in fused.values()) and not any(o.domain == MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS, 1))
    return len(groups), skipped


#: ops that only move or select values: an output reached through them keeps its input's step
_MOVES_VALUES = {"Reshape", "Flatten", "Identity", "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "Slice",
                 "Gather", "Expand", "Tile", "GlobalMaxPool", "ReduceMax", "ReduceMin", "Split", "Concat"}


def _constant(g: _Graph, name: str) -> np.ndarray | None:
    """An initializer's or Constant node's value."""
    if name in g.inits:
        return g.array(name)
    node = g.producer.get(name)
    if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(node.attribute[0].t)
    return None


def output_steps(model: onnx.ModelProto) -> dict[str, float]:
    """Graph output name -> the quantization step of its values, for each float output that is the
    dequantized result of a quantized tensor: the scale of the DequantizeLinear producing it (the
    largest, for per-axis scales), reached from the output through ops that only move values
    (Reshape, Flatten, Transpose, MaxPool, Concat, ...: Concat takes its inputs' largest step). The
    DequantizeLinear reads the output of the graph's last QuantizeLinear or QLinear op, so the step is
    that op's output scale. Outputs computed in float after the last dequantization have no step."""
    g = _Graph(model)
    float_outputs = {o.name for o in model.graph.output
                     if o.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE,
                                                          TensorProto.BFLOAT16)}

    def step(name: str, depth: int = 0) -> float | None:
        node = g.producer.get(name)
        if node is None or depth > 64:
            return None
        if node.op_type == "DequantizeLinear" and len(node.input) > 1:
            scale = _constant(g, node.input[1])
            return float(np.abs(scale.astype(np.float64)).max()) if scale is not None and scale.size else None
        if node.op_type not in _MOVES_VALUES:
            return None
        data = node.input if node.op_type == "Concat" else node.input[:1]
        found = [step(i, depth + 1) for i in data if i]
        return None if not found or any(s is None for s in found) else max(found)  # type: ignore[type-var]

    steps = {name: step(name) for name in float_outputs}
    return {k: v for k, v in steps.items() if v is not None and v > 0}
