"""onnxxai's converters: single-op models against onnxruntime, and float64 gradchecks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import onnxxai
from onnxxai.convert.pad import OnnxPad
from onnxxai.convert.pool import OnnxAveragePoolPadded
from onnxxai.convert.reduce import OnnxReduce
from onnxxai.convert.split import OnnxSplit
from onnx_cases import gradcheck, one_node, reference_outputs, typed_outputs


def single_op(op, shape, _out_shapes, opset, attrs=None, consts=(), n_outputs=1):
    """A model of one node fed by input ``x`` and constant inputs ``consts`` (name, array), its outputs
    typed from onnxruntime's run on zeros."""
    model = one_node(op, {"x": (TensorProto.FLOAT, shape)}, n_outputs, opset=opset, attrs=attrs, initializers=dict(consts))
    return typed_outputs(model, reference_outputs(model, {"x": np.zeros(shape, np.float32)}))


CASES = {
    "ReduceMean-18": single_op("ReduceMean", [2, 3, 4, 5], [None], 18, {"keepdims": 1}, [("axes", np.array([2, 3], np.int64))]),
    "ReduceMax-18-noaxes": single_op("ReduceMax", [2, 3, 4], [None], 18, {"keepdims": 0}),
    "ReduceL2-18": single_op("ReduceL2", [2, 3, 4], [None], 18, {"keepdims": 0}, [("axes", np.array([-1], np.int64))]),
    "ReduceLogSumExp-18": single_op("ReduceLogSumExp", [2, 3, 4], [None], 18, {}, [("axes", np.array([1], np.int64))]),
    "ReduceProd-18": single_op("ReduceProd", [2, 3, 4], [None], 18, {}, [("axes", np.array([0, 2], np.int64))]),
    "ReduceMean-18-noop": single_op("ReduceMean", [2, 3], [None], 18, {"noop_with_empty_axes": 1}),
    "Pad-18-constant-axes": single_op("Pad", [2, 3, 4, 5], [None], 18, {"mode": "constant"},
                                      [("pads", np.array([1, 2, 0, 3], np.int64)), ("value", np.array(1.5, np.float32)),
                                       ("axes", np.array([1, 3], np.int64))]),
    "Pad-19-reflect": single_op("Pad", [2, 3, 4, 5], [None], 19, {"mode": "reflect"}, [("pads", np.array([0, 0, 2, 1, 0, 0, 1, 3], np.int64))]),
    "Pad-19-edge": single_op("Pad", [2, 3, 4], [None], 19, {"mode": "edge"}, [("pads", np.array([0, 2, 3, 0, 1, 0], np.int64))]),
    "Pad-19-wrap": single_op("Pad", [2, 3, 4, 5], [None], 19, {"mode": "wrap"}, [("pads", np.array([0, 0, 2, 1, 0, 0, 1, 4], np.int64))]),
    "Pad-18-negative": single_op("Pad", [2, 3, 6], [None], 18, {"mode": "constant"}, [("pads", np.array([0, 0, -2, 0, 0, 1], np.int64))]),
    "AveragePool-19": single_op("AveragePool", [1, 2, 8, 8], [None], 19, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "AveragePool-11-asym-exclude": single_op("AveragePool", [1, 2, 6, 6], [None], 11, {"kernel_shape": [7, 7], "pads": [0, 0, 1, 1]}),
    "AveragePool-19-asym-include": single_op("AveragePool", [1, 2, 6, 6], [None], 19,
                                             {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 1, 2, 1], "count_include_pad": 1}),
    "AveragePool-11-wide-pads": single_op("AveragePool", [1, 1, 5, 5], [None], 11, {"kernel_shape": [3, 3], "pads": [2, 2, 2, 2]}),
    "Gelu-20": single_op("Gelu", [2, 7], [None], 20),
    "Gelu-20-tanh": single_op("Gelu", [2, 7], [None], 20, {"approximate": "tanh"}),
    "Split-18-num_outputs": single_op("Split", [2, 7], [None] * 3, 18, {"axis": 1, "num_outputs": 3}, n_outputs=3),
    "Split-18-sizes": single_op("Split", [6, 2], [None] * 2, 18, {"axis": 0}, [("split", np.array([4, 2], np.int64))], n_outputs=2),
    "Dropout-7": single_op("Dropout", [2, 5], [None], 7),
    "Reshape-19-allowzero": single_op("Reshape", [2, 3, 4], [None], 19, {"allowzero": 1}, [("shape", np.array([2, -1], np.int64))]),
    "Identity-21": single_op("Identity", [2, 3], [None], 21),
    "Asinh-9": single_op("Asinh", [2, 5], [None], 9),
    "Cosh-9": single_op("Cosh", [2, 5], [None], 9),
    "Sinh-22": single_op("Sinh", [2, 5], [None], 22),
    "Mish-18": single_op("Mish", [2, 5], [None], 18),
    "ThresholdedRelu-10": single_op("ThresholdedRelu", [2, 5], [None], 10, {"alpha": 0.3}),
    "Shrink-9": single_op("Shrink", [2, 5], [None], 9, {"lambd": 0.4, "bias": 0.1}),
    "Hardmax-13": single_op("Hardmax", [2, 3, 5], [None], 13, {"axis": 1}),
    "CastLike-15": single_op("CastLike", [2, 5], [None], 15, {}, [("like", np.zeros(1, np.float64))]),
    "GlobalMaxPool-1": single_op("GlobalMaxPool", [2, 3, 4, 5], [None], 1),
    "LpNormalization-1": single_op("LpNormalization", [2, 3, 4], [None], 1, {"axis": 1, "p": 1}),
    "MeanVarianceNormalization-13": single_op("MeanVarianceNormalization", [2, 3, 4, 5], [None], 13),
    "GroupNormalization-21": single_op("GroupNormalization", [2, 4, 3, 3], [None], 21, {"num_groups": 2},
                                       [("scale", np.array([1.0, 2.0, 0.5, -1.0], np.float32)),
                                        ("bias", np.array([0.1, 0.2, 0.3, 0.4], np.float32))]),
    "RMSNormalization-23": single_op("RMSNormalization", [2, 3, 4], [None], 23, {"axis": -1},
                                     [("scale", np.linspace(0.5, 2, 4).astype(np.float32))]),
    "Flatten-13-axis0": single_op("Flatten", [2, 3, 4], [None], 13, {"axis": 0}),
    "Flatten-13-axis-1": single_op("Flatten", [2, 3, 4], [None], 13, {"axis": -1}),
    # onnx2torch flattens from dimension 1, which these inputs lack (a transformers BERT export has the first)
    "Flatten-13-rank1-axis1": single_op("Flatten", [6], [None], 13, {"axis": 1}),
    "Flatten-11-axis-equals-rank": single_op("Flatten", [2, 3], [None], 11, {"axis": 2}),
    "Flatten-9-axis2": single_op("Flatten", [2, 3, 4, 5], [None], 9, {"axis": 2}),
    # Slice: onnx2torch's indexes with a list (torch's UserWarning), had no reachable Slice-1 converter
    "Slice-1-attributes": single_op("Slice", [3, 4, 5], [None], 1, {"starts": [1, -4], "ends": [3, 100], "axes": [0, 2]}),
    "Slice-13-negative-steps": single_op("Slice", [4, 5, 6], [None], 13, {},
                                         [("starts", np.array([-1, 9, -9], np.int64)), ("ends", np.array([-2**63, 0, 2**63 - 1], np.int64)),
                                          ("axes", np.array([0, -1, 1], np.int64)), ("steps", np.array([-2, -1, -3], np.int64))]),
    "Slice-13-no-axes": single_op("Slice", [4, 5], [None], 13, {},
                                  [("starts", np.array([1, -3], np.int64)), ("ends", np.array([2**63 - 1, -1], np.int64))]),
    "LpPool-18": single_op("LpPool", [1, 2, 6, 6], [None], 18, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 1], "p": 3}),
    "GridSample-16": single_op("GridSample", [1, 2, 4, 5], [None], 16, {"align_corners": 0},
                               [("grid", np.random.default_rng(0).uniform(-1.1, 1.1, (1, 3, 3, 2)).astype(np.float32))]),
    "GridSample-20-cubic-border": single_op("GridSample", [1, 2, 4, 5], [None], 20, {"mode": "cubic", "padding_mode": "border", "align_corners": 1},
                                            [("grid", np.random.default_rng(1).uniform(-1.1, 1.1, (1, 3, 3, 2)).astype(np.float32))]),
    "Conv-11-same-upper-even-kernel": single_op("Conv", [1, 2, 7, 6], [None], 11, {"auto_pad": "SAME_UPPER", "strides": [2, 1]},
                                                [("w", np.random.default_rng(2).standard_normal((3, 2, 4, 2)).astype(np.float32))]),
    "Conv-11-same-lower": single_op("Conv", [1, 2, 7, 6], [None], 11, {"auto_pad": "SAME_LOWER"},
                                    [("w", np.random.default_rng(3).standard_normal((3, 2, 3, 3)).astype(np.float32))]),
    "MaxPool-12-same-upper": single_op("MaxPool", [1, 2, 7, 7], [None], 12, {"auto_pad": "SAME_UPPER", "kernel_shape": [3, 3], "strides": [2, 2]}),
    "AveragePool-19-valid": single_op("AveragePool", [1, 2, 7, 7], [None], 19, {"auto_pad": "VALID", "kernel_shape": [3, 3]}),
    "LayerNormalization-17-stats": single_op("LayerNormalization", [2, 3, 4], [None] * 3, 17, {"axis": 1},
                                             [("scale", np.ones((3, 4), np.float32)), ("bias", np.zeros((3, 4), np.float32))],
                                             n_outputs=3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_single_op_parity_with_onnxruntime(name):
    model = CASES[name]
    loaded = onnxxai.load(model, probe_inputs=None)
    assert loaded.parity.ok, loaded.parity.summary()
    # the file's own declared shape (a fixed batch the loader relaxed shows as symbolic in loaded.inputs)
    declared = [d.dim_value or 2 for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(5).standard_normal(declared).astype(np.float32)
    from onnxxai.parity import run_onnxruntime

    ref = run_onnxruntime(model, {"x": x})
    out = loaded(x)
    out = out if isinstance(out, tuple) else (out,)
    for r, o in zip(ref, out):
        np.testing.assert_allclose(o, r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax", "ReduceL2", "ReduceLogSumExp", "ReduceProd", "ReduceSumSquare", "ReduceL1"])
def test_reduce_gradcheck(op):
    gradcheck(OnnxReduce(op, [1, -1], keepdims=False, noop_with_empty_axes=False), (2, 3, 4))


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_gradcheck(mode):
    pads = torch.tensor([0, 1, 2, 0, 2, 1])
    gradcheck(OnnxPad(mode), (2, 4, 5), constants=(pads,))


@pytest.mark.parametrize("include", [False, True])
def test_average_pool_gradcheck(include):
    gradcheck(OnnxAveragePoolPadded([3, 3], [2, 2], [0, 1, 2, 1], include), (1, 2, 6, 6))


def test_split_gradcheck():
    module = OnnxSplit(axis=1, n_outputs=3, sizes=None)
    x = torch.randn(2, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: torch.cat([p * (i + 1) for i, p in enumerate(module(t))], 1), (x,))
    assert [p.shape[1] for p in module(x)] == [3, 3, 1]


def test_refused_attribute_names_the_node_and_the_attribute():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])
    scales = numpy_helper.from_array(np.float32([1, 1, 0.5, 0.5]), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="the_resize", mode="area")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], [scales]), opset_imports=[helper.make_opsetid("", 19)])
    with pytest.raises(onnxxai.UnsupportedOpError, match="the_resize.*mode='area'"):
        onnxxai.load(model)


def _elementwise(op, **attrs):
    """onnxxai's Elementwise module for a one-input ``op`` node with ``attrs``."""
    from onnx2torch.onnx_node import OnnxNode

    from onnxxai.convert.unary import _FUNCTIONS, Elementwise

    node = OnnxNode(helper.make_node(op, ["x"], ["y"], **attrs), unique_name=op)
    return Elementwise(op, _FUNCTIONS[op](node))


@pytest.mark.parametrize(
    "make,shape",
    [
        (lambda: _elementwise("Asinh"), (2, 5)),
        (lambda: _elementwise("Sinh"), (2, 5)),
        (lambda: _elementwise("Cosh"), (2, 5)),
        (lambda: _elementwise("Mish"), (2, 5)),
        (lambda: _elementwise("Swish", alpha=0.7), (2, 5)),
        (lambda: __import__("onnxxai.convert.normalization", fromlist=["x"]).LpNormalization(1, 2), (2, 3, 4)),
        (lambda: __import__("onnxxai.convert.normalization", fromlist=["x"]).MeanVarianceNormalization([0, 2, 3]), (2, 3, 4, 5)),
        (lambda: __import__("onnxxai.convert.pool", fromlist=["x"]).GlobalMaxPool(), (2, 3, 4, 5)),
    ],
    ids=["asinh", "sinh", "cosh", "mish", "swish", "lpnorm", "mvn", "globalmaxpool"],
)
def test_new_module_gradcheck(make, shape):
    gradcheck(make(), shape)


def test_normalizations_with_parameters_gradcheck():
    from onnxxai.convert.normalization import GroupNormalization, LayerNormalization, RMSNormalization

    scale = torch.linspace(0.5, 2.0, 4, dtype=torch.float64)
    gradcheck(RMSNormalization(-1, 1e-5, True), (2, 3, 4), constants=(scale,))
    gradcheck(GroupNormalization(2, 1e-5, False), (2, 4, 3, 3), constants=(scale, scale * 0.1))
    stats = LayerNormalization(1, 1e-5, with_stats=True)
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.ones(3, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: stats(t, w)[0] * 2 + stats(t, w)[2], (x,))


def test_clip_with_run_time_bounds():
    from onnxxai.convert.activation import ClipDynamic

    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    low, high = torch.tensor(-0.5, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    assert torch.equal(ClipDynamic()(x, low, high), x.clamp(-0.5, 0.7))
    assert torch.equal(ClipDynamic()(x, None, high), x.clamp(max=0.7))
    assert torch.autograd.gradcheck(lambda t: ClipDynamic()(t, low, high), (x,))


def test_graph_output_taken_from_a_multi_output_node():
    """Only the second piece of a Split is a graph output: the module must return that piece alone."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])
    y = helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 2])
    z = helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 3])
    split = helper.make_node("Split", ["x", "sizes"], ["a", "b", "c"], name="split", axis=1)
    relu = helper.make_node("Relu", ["a"], ["r"], name="relu")
    graph = helper.make_graph([split, relu], "g", [x], [z, y], [numpy_helper.from_array(np.array([1, 2, 3], np.int64), "sizes")])
    model = onnxxai.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    assert model.parity.ok, model.parity.summary()
    data = np.arange(12, dtype=np.float32).reshape(2, 6)
    c, b = model(data)
    np.testing.assert_array_equal(b, data[:, 1:3])
    np.testing.assert_array_equal(c, data[:, 3:])


def test_attention_matches_torch_sdpa():
    from onnxxai.convert.attention import OnnxAttention

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 5, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.rand(5, 5) > 0.3
    mask.fill_diagonal_(True)
    ours = OnnxAttention(None, None, None, 0.0, False, 0, 1)(q, k, v, mask)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(ours, ref)
    causal = OnnxAttention(None, None, 0.3, 0.0, True, 0, 1)(q, k, v)
    torch.testing.assert_close(causal, torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3))
    assert torch.autograd.gradcheck(lambda t: OnnxAttention(None, None, None, 0.0, True, 0, 1)(t, k, v), (q,))


def test_ml_domain_array_feature_extractor_like_skl2onnx():
    """skl2onnx maps argmax to class labels with ai.onnx.ml's ArrayFeatureExtractor."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    classes = numpy_helper.from_array(np.array([10, 20, 30], np.int64), "classes")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["scores"], name="mm"),
             helper.make_node("ArgMax", ["scores"], ["idx"], name="argmax", axis=1, keepdims=0),
             helper.make_node("ArrayFeatureExtractor", ["classes", "idx"], ["label"], name="afe", domain="ai.onnx.ml")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, [1, "n"]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 3])], [w, classes])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])
    model = onnxxai.load(proto)
    assert model.parity.ok, model.parity.summary()
    assert any(p.name == "alias_dotted_domains" and p.changed == 1 for p in model.passes)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    label, scores = model(x)
    np.testing.assert_array_equal(label.reshape(-1), np.array([10, 20, 30])[scores.argmax(1)])
    assert [n.domain for n in proto.graph.node][-1] == "ai.onnx.ml"  # the user's model is untouched
