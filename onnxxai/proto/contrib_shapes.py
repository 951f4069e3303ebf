"""Shape inference through onnxruntime's contrib ops, which onnx does not know.

onnx's shape inference stops at a com.microsoft node, so nothing after it gets a shape, and some
converters need one (MaxPool's rank, GlobalAveragePool, ...). Inference here runs on a copy of the
graph in which each contrib node whose output shape a standard op reproduces is replaced by that
op (its "shape twin": FusedConv by Conv, SkipLayerNormalization by Add, com.microsoft.nchwc Conv by
Conv, which gives the blocked tensor's logical (N, Cpad, H, W) shape, QLinearConcat by Concat, QGemm
by Gemm between Casts, ...); the inferred value
infos are then put on the real graph. Contrib nodes without a twin keep unknown outputs.
"""

from __future__ import annotations

import onnx
from onnx import helper

__all__ = ["CONTRIB_DOMAINS", "infer_shapes"]

CONTRIB_DOMAINS = ("com.microsoft", "com_microsoft", "com.microsoft.nchwc", "com_microsoft_nchwc")
_DEFAULT_ONLY = ("LayerNormalization", "SimplifiedLayerNormalization")
_DROP_ATTRS = {"activation", "activation_params", "activation_alpha", "activation_beta", "activation_gamma"}


def _ints(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, onnx.TensorProto.INT64, [len(values)], values))


def _channel_twin(node: onnx.NodeProto, channels: int | None, pad: bool) -> list[onnx.NodeProto] | None:
    """ReorderInput as a Pad of the channels to ``channels``, ReorderOutput as a Slice to them."""
    attrs = {a.name: a.i for a in node.attribute}
    if channels is None or attrs.get("channels_last", 0):
        return None
    out = node.output[0]
    if pad:
        return [_ints(f"{out}__cpad", [channels]), _ints(f"{out}__axis", [1]),
                helper.make_node("Shape", [node.input[0]], [f"{out}__shape"]),
                helper.make_node("Gather", [f"{out}__shape", f"{out}__axis"], [f"{out}__c"]),
                helper.make_node("Sub", [f"{out}__cpad", f"{out}__c"], [f"{out}__more"]),
                _ints(f"{out}__zero", [0]),
                helper.make_node("Concat", [f"{out}__zero", f"{out}__zero", f"{out}__zero", f"{out}__zero",
                                            f"{out}__zero", f"{out}__more", f"{out}__zero", f"{out}__zero"], [f"{out}__pads"], axis=0),
                helper.make_node("Pad", [node.input[0], f"{out}__pads"], [out], name=node.name)]
    return [_ints(f"{out}__start", [0]), _ints(f"{out}__end", [channels]), _ints(f"{out}__axis", [1]),
            helper.make_node("Slice", [node.input[0], f"{out}__start", f"{out}__end", f"{out}__axis"], [out], name=node.name)]


def _padded_channels(model: onnx.ModelProto, value: str) -> int | None:
    """The blocked channel count of ``value`` read off the filter of an nchwc Conv consuming it."""
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Conv" and node.domain.endswith("nchwc") and node.input and node.input[0] == value:
            w = dims.get(node.input[1]) if len(node.input) > 1 else None
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if w:
                return w[0] if group > 1 else w[1]
    return None


def _float_twin(node: onnx.NodeProto, opset: int) -> list[onnx.NodeProto] | None:
    """An integer op's twin: its float op on the inputs cast to float, cast to the output zero point's
    type (QGemm without an output scale and MatMulIntegerToFloat end in float)."""
    op, ins, out = node.op_type, list(node.input), node.output[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("channels_last", 0) or opset < 15:  # CastLike: opset 15
        return None
    if op == "QGemm":
        data, float_op, zp = [ins[0], ins[3]] + ([ins[6]] if len(ins) > 6 and ins[6] else []), "Gemm", ins[8] if len(ins) > 8 else ""
        keep = {k: v for k, v in attrs.items() if k in ("transA", "transB")}
    elif op == "MatMulIntegerToFloat":
        data, float_op, zp, keep = ins[:2], "MatMul", "", {}
    else:
        data, float_op, zp = ins[:1], op.removeprefix("QLinear"), ins[4] if len(ins) > 4 else ""
        keep = {k: v for k, v in attrs.items() if k in ("kernel_shape", "strides", "pads", "auto_pad", "ceil_mode",
                                                          "count_include_pad", "dilations")}
    nodes = [helper.make_node("Cast", [x], [f"{out}__f{i}"], to=onnx.TensorProto.FLOAT) for i, x in enumerate(data)]
    result = f"{out}__float" if zp else out
    nodes.append(helper.make_node(float_op, [n.output[0] for n in nodes], [result], name=node.name, **keep))
    if zp:
        nodes.append(helper.make_node("CastLike", [result, zp], [out]))
    return nodes


def _twin(node: onnx.NodeProto, opset: int) -> onnx.NodeProto | list[onnx.NodeProto] | None:
    """A standard node computing outputs of the same shape and type as contrib ``node``, or None."""
    op, ins, outs = node.op_type, list(node.input), list(node.output)
    attrs = [a for a in node.attribute if a.name not in _DROP_ATTRS]

    def make(op_type: str, inputs: list[str], n_out: int = 1, keep: bool = False) -> onnx.NodeProto:
        twin = helper.make_node(op_type, inputs, outs[:n_out], name=node.name)
        if keep:
            twin.attribute.extend(attrs)
        return twin

    if node.domain in ("", "ai.onnx"):
        if op == "SimplifiedLayerNormalization" or (op == "LayerNormalization" and opset < 17):
            return make("Identity", ins[:1])
        return None
    nchwc = node.domain.endswith("nchwc")
    if op in ("FusedConv",) or (nchwc and op == "Conv"):
        return make("Conv", ins[:3], keep=True)
    if nchwc and op in ("MaxPool", "AveragePool"):
        return make(op, ins[:1], keep=True)
    if nchwc and op in ("GlobalAveragePool", "GlobalMaxPool"):
        return make(op, ins[:1])
    if op == "FusedGemm":
        return make("Gemm", ins[:3], keep=True)
    if op == "FusedMatMul" and not any(a.i for a in node.attribute if a.name.startswith("trans")):
        return make("MatMul", ins[:2])
    if op in ("Gelu", "QuickGelu") or (op == "FastGelu" and (len(ins) < 2 or not ins[1])):
        return make("Identity", ins[:1])
    if op in ("BiasGelu", "FastGelu"):
        return make("Add", ins[:2])
    if op == "BiasAdd":
        return make("Add", [ins[0], ins[2]])
    if op in ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization"):
        return make("Add", ins[:2])
    if op == "EmbedLayerNormalization":
        return make("Gather", [ins[2], ins[0]])
    if op == "QLinearConcat":  # (Y_scale, Y_zero_point, then X, X_scale, X_zero_point per input)
        return make("Concat", ins[2::3], keep=True)
    if op in ("QLinearAdd", "QLinearMul"):
        return make(op.removeprefix("QLinear"), [ins[0], ins[3]])
    if op in ("QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax"):
        return make("Identity", ins[:1])
    if op in ("QLinearGlobalAveragePool", "QLinearAveragePool", "QGemm", "MatMulIntegerToFloat"):
        return _float_twin(node, opset)
    if op in ("QuantizeLinear", "DequantizeLinear"):  # x's shape, the zero point's / scale's type
        like = ins[1] if op == "DequantizeLinear" else (ins[2] if len(ins) > 2 and ins[2] else "")
        return make("CastLike", [ins[0], like]) if like and opset >= 15 else make(op, ins[:3], keep=True)
    return None


def infer_shapes(model: onnx.ModelProto, *, data_prop: bool) -> onnx.ModelProto:
    """``onnx.shape_inference.infer_shapes(model)``, seeing through contrib nodes by their twins."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    twins: dict[int, onnx.NodeProto | list[onnx.NodeProto] | None] = {}
    for i, node in enumerate(model.graph.node):
        if node.domain.endswith("nchwc") and node.op_type == "ReorderInput":
            twins[i] = _channel_twin(node, _padded_channels(model, node.output[0]), pad=True)
        elif node.domain.endswith("nchwc") and node.op_type == "ReorderOutput":
            channels = next((a.i for a in node.attribute if a.name == "channels"), None)
            twins[i] = _channel_twin(node, channels, pad=False)
        elif node.domain in CONTRIB_DOMAINS or (node.domain in ("", "ai.onnx") and node.op_type in _DEFAULT_ONLY):
            twins[i] = _twin(node, opset)
    twins = {i: t for i, t in twins.items() if not (t is None and model.graph.node[i].domain in ("", "ai.onnx"))}
    if not twins:
        return onnx.shape_inference.infer_shapes(model, data_prop=data_prop)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    nodes = []
    for i, node in enumerate(model.graph.node):
        twin = twins.get(i)
        nodes.extend([node] if twin is None else twin if isinstance(twin, list) else [twin])
    copy.graph.ClearField("node")
    copy.graph.node.extend(nodes)
    inferred = onnx.shape_inference.infer_shapes(copy, data_prop=data_prop)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    known = {v.name for v in result.graph.value_info} | {v.name for v in result.graph.output}
    produced = {o for n in model.graph.node for o in n.output}
    result.graph.value_info.extend(v for v in inferred.graph.value_info if v.name not in known and v.name in produced)
    return result
