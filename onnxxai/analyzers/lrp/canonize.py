"""Canonization: rewrite the ONNX graph (a copy) so that LRP rules see the layers they are made for.

LRP rules assume that a linear layer is followed by its activation; a BatchNormalization between
them is an affine map with its own, unrelated statistics. :func:`fold_batchnorm` merges every
BatchNormalization into the Conv, ConvTranspose or Gemm that feeds it (as Zennit's
``MergeBatchNorm`` canonizer does on torch modules). Residual Add/Sum, pooling and shape ops need
no rewriting: the composites give them rules that distribute relevance correctly.

Each pass edits the copy it is given and returns a line per change, so reports say what was done.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

from onnxxai.analyzers.lrp.ops import FOLDABLE_OPS

from onnxxai.proto.names import fresh_name, names_in_use

__all__ = ["canonize", "fold_batchnorm"]


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(onnx.helper.make_attribute(name, value))


def fold_batchnorm(model: onnx.ModelProto) -> list[str]:
    """Merge each inference BatchNormalization into the Conv/ConvTranspose/Gemm that is its only
    producer (constant weights, output used by nothing else). Returns one line per fold."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    used_names = names_in_use(graph)
    producer = {out: node for node in graph.node for out in node.output}
    consumers = Counter(v for node in graph.node for v in node.input)
    graph_outputs = {o.name for o in graph.output}
    done: list[str] = []
    removed: list[onnx.NodeProto] = []
    for bn in list(graph.node):
        if bn.op_type != "BatchNormalization" or bn.domain not in ("", "ai.onnx"):
            continue
        if _attr(bn, "training_mode", 0) or len([o for o in bn.output if o]) != 1:
            continue
        x = bn.input[0]
        prev = producer.get(x)
        if prev is None or prev.op_type not in FOLDABLE_OPS or consumers[x] != 1 or x in graph_outputs:
            continue
        if any(name not in inits for name in bn.input[1:5]) or prev.input[1] not in inits:
            continue
        if len(prev.input) > 2 and prev.input[2] and prev.input[2] not in inits:
            continue
        gamma, beta, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in bn.input[1:5])
        scale = gamma / np.sqrt(var + float(_attr(bn, "epsilon", 1e-5)))
        w_init = inits[prev.input[1]]
        w = numpy_helper.to_array(w_init).astype(np.float64)
        has_bias = len(prev.input) > 2 and bool(prev.input[2])
        if prev.op_type == "Conv":
            w = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
            b = numpy_helper.to_array(inits[prev.input[2]]).astype(np.float64) if has_bias else np.zeros_like(mean)
            b = (b - mean) * scale + beta
        elif prev.op_type == "ConvTranspose":
            if _attr(prev, "group", 1) != 1:
                continue
            w = w * scale.reshape(1, -1, *([1] * (w.ndim - 2)))
            b = numpy_helper.to_array(inits[prev.input[2]]).astype(np.float64) if has_bias else np.zeros_like(mean)
            b = (b - mean) * scale + beta
        else:  # Gemm: Y = alpha * A' B' + beta * C; BN acts on the columns of Y
            if _attr(prev, "transA", 0) or w.ndim != 2:
                continue
            gemm_beta = float(_attr(prev, "beta", 1.0))  # alpha scales A·B and stays as it is
            w = w * (scale.reshape(-1, 1) if _attr(prev, "transB", 0) else scale.reshape(1, -1))
            c = numpy_helper.to_array(inits[prev.input[2]]).astype(np.float64) * gemm_beta if has_bias else np.zeros(1)
            if c.ndim > 1 and c.shape[0] != 1:
                continue
            b = (np.broadcast_to(c.reshape(-1), mean.shape) - mean) * scale + beta
            _set_attr(prev, "beta", 1.0)
        dtype = numpy_helper.to_array(w_init).dtype
        w_name = fresh_name(prev.input[1] + "_bnfold", used_names)
        b_name = fresh_name((prev.input[2] if has_bias else prev.input[1]) + "_bnfold_bias", used_names)
        graph.initializer.extend([numpy_helper.from_array(w.astype(dtype), w_name), numpy_helper.from_array(b.astype(dtype), b_name)])
        inits[w_name], inits[b_name] = graph.initializer[-2], graph.initializer[-1]
        prev.input[1] = w_name
        if has_bias:
            prev.input[2] = b_name
        else:
            prev.input.append(b_name)
        prev.output[0] = bn.output[0]
        producer[bn.output[0]] = prev
        removed.append(bn)
        done.append(f"folded BatchNormalization {bn.name!r} into {prev.op_type} {prev.name!r}")
    for bn in removed:
        graph.node.remove(bn)
    if removed:
        _drop_unused(model, {bn.input[0] for bn in removed})
    return done


def _drop_unused(model: onnx.ModelProto, dead_values: set[str]) -> None:
    graph = model.graph
    needed = {v for n in graph.node for v in n.input}
    keep = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    keep_vi = [v for v in graph.value_info if v.name not in dead_values]
    del graph.value_info[:]
    graph.value_info.extend(keep_vi)


def canonize(model: onnx.ModelProto) -> list[str]:
    """Run every canonization pass on ``model`` (edited in place); returns what was changed."""
    return fold_batchnorm(model)
