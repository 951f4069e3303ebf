"""onnxruntime's contrib ops (convert/contrib_fused.py, convert/contrib_transformer.py): single-op
models against onnxruntime 1.32, float64 gradchecks, and files written by onnxruntime's own
optimizers (a ResNet at ORT_ENABLE_EXTENDED and ORT_ENABLE_ALL, a BERT-like encoder through
``onnxruntime.transformers.optimizer``) loading with parity and correct gradients."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import onnxxai
from onnxxai.convert.contrib_fused import (FastGelu, FusedConv, FusedMatMul, _Activation, block, dequantize_nbits, nchwc_block_size,
                                           unblock)
from onnxxai.convert.conv import ConvDynamicWeight
from onnxxai.convert.contrib_transformer import (ContribAttention, EmbedLayerNormalization, MultiHeadAttention,
                                                 SimplifiedLayerNormalization, SkipLayerNormalization)
from onnxxai.diagnostics import gradient_flow
from onnx_cases import assert_matches, gradcheck, graph_model, one_node, randn, value_info

MS = "com.microsoft"


def ms_node(op, inputs, n_outputs=1, *, initializers=None, node_inputs=None, attrs=None, opset=17, domain=MS):
    return one_node(op, inputs, n_outputs, opset=opset, domain=domain, initializers=initializers, node_inputs=node_inputs,
                    attrs=attrs, output_type=TensorProto.FLOAT)


def check(model, feeds, rtol=1e-5, atol=1e-5):
    return assert_matches(model, feeds, rtol=rtol, atol=atol)


# -- fused conv / gemm / matmul ------------------------------------------------------------------
@pytest.mark.parametrize("activation, params, with_z", [("Relu", [], False), ("LeakyRelu", [0.2], True), ("Clip", [-0.5, 0.7], False),
                                                        ("HardSigmoid", [0.3, 0.4], False), ("Sigmoid", [], True), ("Tanh", [], False)])
def test_fused_conv_matches_onnxruntime(activation, params, with_z):
    rng = np.random.default_rng(0)
    feeds = {"x": randn(rng, 2, 4, 7, 6)}
    if with_z:
        feeds["z"] = randn(rng, 2, 6, 4, 3)
    inits = {"w": randn(rng, 6, 2, 3, 3), "b": randn(rng, 6)}
    names = ["x", "w", "b"] + (["z"] if with_z else [])
    model = ms_node("FusedConv", feeds, initializers=inits, node_inputs=names,
                    attrs=dict(activation=activation, group=2, strides=[2, 2], pads=[1, 0, 1, 1]) | ({"activation_params": params} if params else {}))
    check(model, feeds)


def test_nhwc_conv_matches_onnxruntime():
    rng = np.random.default_rng(1)
    feeds = {"x": randn(rng, 1, 6, 5, 4)}
    model = ms_node("NhwcConv", feeds, initializers={"w": randn(rng, 3, 4, 3, 3), "b": randn(rng, 3)}, attrs=dict(pads=[1, 1, 1, 1]))
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - onnxruntime's CPU provider may lack the kernel
        pytest.skip("onnxruntime's CPU provider has no NhwcConv kernel")
    check(model, feeds)


@pytest.mark.parametrize("attrs", [dict(activation="Relu", transB=1, alpha=0.5, beta=2.0),
                                   dict(activation="LeakyRelu", activation_alpha=0.1, transA=1)])
def test_fused_gemm_matches_onnxruntime(attrs):
    rng = np.random.default_rng(2)
    a = randn(rng, 5, 3) if attrs.get("transA") else randn(rng, 3, 5)
    feeds = {"a": a}
    b = randn(rng, 4, 5) if attrs.get("transB") else randn(rng, 5, 4)
    check(ms_node("FusedGemm", feeds, initializers={"b": b, "c": randn(rng, 4)}, attrs=attrs), feeds)


@pytest.mark.parametrize("attrs, a_shape, b_shape", [
    (dict(alpha=0.5), (2, 3, 4, 5), (5, 6)),
    (dict(transA=1, transB=1), (2, 5, 4), (2, 6, 5)),
    (dict(transBatchA=1), (3, 2, 4), (2, 4, 5)),
    (dict(transBatchB=1, transB=1), (2, 3, 4), (5, 2, 4)),
])
def test_fused_matmul_matches_onnxruntime(attrs, a_shape, b_shape):
    rng = np.random.default_rng(3)
    feeds = {"a": randn(rng, *a_shape), "b": randn(rng, *b_shape)}
    check(ms_node("FusedMatMul", feeds, attrs=attrs), feeds)


# -- element-wise fusions ------------------------------------------------------------------------
@pytest.mark.parametrize("op, n_inputs, attrs", [("Gelu", 1, {}), ("FastGelu", 1, {}), ("FastGelu", 2, {}), ("BiasGelu", 2, {}),
                                                 ("QuickGelu", 1, dict(alpha=1.3)), ("BiasAdd", 3, {})])
def test_elementwise_fusions_match_onnxruntime(op, n_inputs, attrs):
    rng = np.random.default_rng(4)
    feeds = {"x": 3 * randn(rng, 2, 4, 8)}
    if op == "BiasAdd":
        feeds |= {"bias": randn(rng, 8), "skip": randn(rng, 2, 4, 8)}
    elif n_inputs == 2:
        feeds["bias"] = randn(rng, 8)
    model = ms_node(op, feeds, attrs=attrs)
    if op == "BiasAdd":  # onnxruntime's CPU provider has no BiasAdd kernel
        assert_matches(model, feeds, [feeds["x"] + feeds["bias"] + feeds["skip"]], rtol=1e-6, atol=1e-6)
    else:
        check(model, feeds)


# -- MatMulNBits ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bits, zero_points, k", [(4, None, 64), (4, "uint8", 80), (8, "uint8", 64), (4, "float", 64), (2, "uint8", 48)])
def test_matmul_nbits_matches_onnxruntime(bits, zero_points, k):
    rng = np.random.default_rng(5)
    n, block_size = 6, 16
    k_blocks = -(-k // block_size)
    packed = rng.integers(0, 256, size=(n, k_blocks, block_size * bits // 8), dtype=np.uint8)
    inits = {"B": packed, "scales": (rng.random((n, k_blocks)) * 0.1 + 0.01).astype(np.float32)}
    if zero_points == "uint8":
        inits["zp"] = rng.integers(0, 256, size=(n, -(-k_blocks * bits // 8)), dtype=np.uint8)
    elif zero_points == "float":
        inits["zp"] = rng.integers(0, 1 << bits, size=(n, k_blocks)).astype(np.float32)
    feeds = {"a": randn(rng, 3, k)}
    try:
        check(ms_node("MatMulNBits", feeds, initializers=inits, attrs=dict(K=k, N=n, bits=bits, block_size=block_size)), feeds,
              rtol=1e-4, atol=1e-4)
    except onnxxai.OnnxxaiError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime may refuse a bit width / zero-point kind on this CPU
        if "onnxruntime" in type(exc).__module__.lower() or "ONNXRuntimeError" in str(exc):
            pytest.skip(f"onnxruntime cannot run this MatMulNBits: {exc}")
        raise


def test_matmul_nbits_dequantizes_low_nibble_first():
    packed = np.array([[[0x21, 0x43] + [0] * 6]], dtype=np.uint8)  # values 1, 2, 3, 4, then zeros
    w = dequantize_nbits(packed, np.ones((1, 1), np.float32), None, None, k=16, n=1, bits=4, block_size=16)
    np.testing.assert_array_equal(w[:5, 0], [1 - 8, 2 - 8, 3 - 8, 4 - 8, -8])


# -- normalization -------------------------------------------------------------------------------
def test_layer_norm_before_opset_17_and_simplified_layer_norm_match_onnxruntime():
    rng = np.random.default_rng(6)
    feeds = {"x": randn(rng, 2, 3, 8)}
    inits = {"s": randn(rng, 8), "b": randn(rng, 8)}
    check(ms_node("LayerNormalization", feeds, initializers=inits, attrs=dict(epsilon=1e-3), opset=13, domain=""), feeds)
    model = one_node("SimplifiedLayerNormalization", feeds, 1, opset=17, initializers={"s": inits["s"]}, attrs=dict(epsilon=1e-3),
                     output_type=TensorProto.FLOAT)
    check(model, feeds)


@pytest.mark.parametrize("op, with_beta, with_bias, skip_shape, n_outputs", [
    ("SkipLayerNormalization", True, True, (2, 3, 8), 1), ("SkipLayerNormalization", False, False, (3, 8), 4),
    ("SkipLayerNormalization", True, False, (1, 3, 8), 1), ("SkipSimplifiedLayerNormalization", False, True, (2, 3, 8), 4)])
def test_skip_layer_norms_match_onnxruntime(op, with_beta, with_bias, skip_shape, n_outputs):
    rng = np.random.default_rng(7)
    feeds = {"x": randn(rng, 2, 3, 8), "skip": randn(rng, *skip_shape)}
    inits = {"gamma": randn(rng, 8)}
    names = ["x", "skip", "gamma"]
    if op == "SkipLayerNormalization":
        names.append("beta" if with_beta else "")
        if with_beta:
            inits["beta"] = randn(rng, 8)
    if with_bias:
        inits["bias"] = randn(rng, 8)
        names.append("bias")
    outputs = ["y", "mean", "inv_std", "sum"][:n_outputs]
    if n_outputs == 4:  # onnxruntime's CPU kernel leaves mean and inv_std_var out: compare Y and the sum
        outputs = ["y", "", "", "sum"]
    model = one_node(op, feeds, opset=17, domain=MS, initializers=inits, node_inputs=names, outputs=outputs,
                     attrs=dict(epsilon=1e-4), output_type=TensorProto.FLOAT)
    model.graph.ClearField("output")
    model.graph.output.extend(value_info(o, TensorProto.FLOAT) for o in outputs if o)
    check(model, feeds)


def test_embed_layer_norm_matches_onnxruntime():
    rng = np.random.default_rng(8)
    feeds = {"ids": rng.integers(0, 20, (2, 5)).astype(np.int32), "seg": rng.integers(0, 2, (2, 5)).astype(np.int32),
             "mask": np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32)}
    inits = {"word": randn(rng, 20, 8), "pos": randn(rng, 7, 8), "segment": randn(rng, 2, 8), "gamma": randn(rng, 8), "beta": randn(rng, 8)}
    model = one_node("EmbedLayerNormalization", feeds, opset=17, domain=MS, initializers=inits,
                     node_inputs=["ids", "seg", "word", "pos", "segment", "gamma", "beta", "mask"], outputs=["y", "mask_index", "sum"])
    model.graph.ClearField("output")
    model.graph.output.extend([value_info("y"), value_info("mask_index", TensorProto.INT32), value_info("sum")])
    got = check(model, feeds)
    np.testing.assert_array_equal(got[1], [3, 5])


# -- attention -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mask, causal, with_past, with_bias", [
    (None, 0, False, False), ("lengths", 0, False, True), ("raw", 1, False, False), ("raw3d", 0, False, False),
    ("ends_starts", 0, False, False), (None, 1, True, False), ("raw", 0, True, False)])
def test_attention_matches_onnxruntime(mask, causal, with_past, with_bias):
    rng = np.random.default_rng(9)
    b, s, hidden, heads, past = 2, 4, 8, 2, 3
    feeds = {"x": randn(rng, b, s, hidden)}
    inits = {"w": randn(rng, hidden, 3 * hidden) / 3, "bias": randn(rng, 3 * hidden)}
    total = s + (past if with_past else 0)
    masks = {"lengths": np.array([3, 4], np.int32), "raw": (rng.random((b, total)) > 0.3).astype(np.int32),
             "raw3d": (rng.random((b, s, total)) > 0.3).astype(np.int32), "ends_starts": np.array([4, 3, 1, 0], np.int32)}
    names = ["x", "w", "bias", ""]
    if mask:
        feeds["mask"] = masks[mask]
        names[3] = "mask"
    outputs = ["y"]
    if with_past:
        feeds["past"] = randn(rng, 2, b, heads, past, hidden // heads)
        names.append("past")
        outputs.append("present")
    if with_bias:
        feeds["attn_bias"] = randn(rng, 1, heads, s, total)
        names += [""] * (5 - len(names)) + ["attn_bias"]
    model = one_node("Attention", feeds, opset=17, domain=MS, initializers=inits, node_inputs=names, outputs=outputs,
                     attrs=dict(num_heads=heads, unidirectional=causal), output_type=TensorProto.FLOAT)
    check(model, feeds, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", ["qkv_bias_mask", "packed_qkv", "past_causal", "cross_bnsh"])
def test_multi_head_attention_matches_onnxruntime(case):
    rng = np.random.default_rng(10)
    b, s, heads, head = 2, 3, 2, 4
    hidden = heads * head
    names, outputs = ["q"], ["y"]
    if case == "packed_qkv":
        feeds = {"q": randn(rng, b, s, heads, 3, head)}
    elif case == "cross_bnsh":
        feeds = {"q": randn(rng, b, s, hidden), "k": randn(rng, b, heads, 5, head), "v": randn(rng, b, heads, 5, head)}
        names += ["k", "v"]
    else:
        feeds = {"q": randn(rng, b, s, hidden), "k": randn(rng, b, s, hidden), "v": randn(rng, b, s, hidden), "bias": randn(rng, 3 * hidden)}
        names += ["k", "v", "bias"]
        if case == "qkv_bias_mask":
            feeds["mask"] = np.array([[1, 1, 0], [1, 1, 1]], np.int32)
            names.append("mask")
        else:
            feeds |= {"pk": randn(rng, b, heads, 2, head), "pv": randn(rng, b, heads, 2, head)}
            names += ["", "", "pk", "pv"]
            outputs += ["present_key", "present_value"]
    attrs = dict(num_heads=heads, unidirectional=int(case == "past_causal"))
    model = one_node("MultiHeadAttention", feeds, opset=17, domain=MS, node_inputs=names, outputs=outputs, attrs=attrs,
                     output_type=TensorProto.FLOAT)
    if case != "packed_qkv":
        check(model, feeds, rtol=1e-4, atol=1e-5)
        return
    # onnxruntime's CPU provider refuses packed QKV: the reference is its unpacked form
    q, k, v = (np.ascontiguousarray(feeds["q"][:, :, :, i].reshape(b, s, hidden)) for i in range(3))
    unpacked = {"q": q, "k": k, "v": v}
    reference = one_node("MultiHeadAttention", unpacked, opset=17, domain=MS, attrs=attrs, output_type=TensorProto.FLOAT)
    assert_matches(model, feeds, ort.InferenceSession(reference.SerializeToString()).run(None, unpacked), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("interleaved, four_d, offset", [(0, False, True), (1, False, False), (0, True, False)])
def test_rotary_embedding_matches_onnxruntime(interleaved, four_d, offset):
    rng = np.random.default_rng(11)
    b, s, heads, head, max_seq = 2, 3, 2, 8, 10
    x = randn(rng, b, heads, s, head) if four_d else randn(rng, b, s, heads * head)
    angles = np.arange(max_seq)[:, None] * (1.0 / 10000 ** (np.arange(0, head, 2) / head))[None, :]
    positions = np.array([2], np.int64) if offset else rng.integers(0, max_seq, (b, s)).astype(np.int64)
    feeds = {"x": x, "pos": positions}
    inits = {"cos": np.cos(angles).astype(np.float32), "sin": np.sin(angles).astype(np.float32)}
    attrs = dict(interleaved=interleaved) | ({} if four_d else dict(num_heads=heads))
    check(ms_node("RotaryEmbedding", feeds, initializers=inits, attrs=attrs), feeds)


# -- NCHWc -----------------------------------------------------------------------------------
def test_blocked_layout_is_onnxruntimes_memory_order():
    size = 4
    x = torch.arange(2 * 6 * 2 * 3, dtype=torch.float32).reshape(2, 6, 2, 3)
    y = block(x, size)
    assert y.shape == (2, 8, 2, 3)
    flat = y.reshape(-1)  # [N][C/B][H][W][B]: element (n=0, c=1, h=0, w=1) sits at ((0*2+0)*2+0)*3+1 blocks, lane 1
    assert flat[(0 * 3 + 1) * size + 1] == x[0, 1, 0, 1]
    torch.testing.assert_close(unblock(y, size)[:, :6], x)


def _optimized(model: onnx.ModelProto, level: ort.GraphOptimizationLevel, path) -> onnx.ModelProto:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.optimized_model_filepath = str(path)
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(path))


@pytest.mark.parametrize("channels_in, channels_out, group", [(3, 20, 1), (20, 24, 1), (32, 32, 32)])
def test_nchwc_conv_pool_upsample_graph_matches_onnxruntime(tmp_path, channels_in, channels_out, group):
    """Conv (+Add, Relu) -> MaxPool -> Resize -> AveragePool, which onnxruntime rewrites to the nchwc
    domain with reordered filters and channel padding at ORT_ENABLE_ALL."""
    rng = np.random.default_rng(12)
    inits = [numpy_helper.from_array(randn(rng, channels_out, channels_in // group, 3, 3), "w"),
             numpy_helper.from_array(randn(rng, channels_out), "b"),
             numpy_helper.from_array(randn(rng, channels_out, channels_out, 1, 1), "w2"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], group=group),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["c2"]), helper.make_node("Add", ["c2", "r"], ["a"]),
             helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Resize", ["p", "", "scales"], ["u"], mode="nearest"),
             helper.make_node("AveragePool", ["u"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])]
    model = graph_model(nodes, [value_info("x", TensorProto.FLOAT, [1, channels_in, 8, 8])], [value_info("y")], inits, opset=17)
    optimized = _optimized(model, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, tmp_path / "all.onnx")
    assert any(n.domain == "com.microsoft.nchwc" and n.op_type == "Conv" for n in optimized.graph.node)
    x = randn(rng, 1, channels_in, 8, 8)
    assert_matches(optimized, {"x": x}, reference=[ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]],
                   rtol=1e-4, atol=1e-4)
    assert_matches(optimized, {"x": x}, rtol=1e-5, atol=1e-4)  # summation order differs (values ~50)


def test_block_size_is_onnxruntimes():
    assert nchwc_block_size() in (8, 16)


def _conv_parts_for_test():
    return ConvDynamicWeight([1, 1], [0, 0, 0, 0], None, 1), _Activation("LeakyRelu", [0.1])


# -- gradchecks ----------------------------------------------------------------------------------
def test_contrib_modules_gradcheck():
    gradcheck(FastGelu(), (2, 5), (5,))
    gradcheck(lambda x, w, b, z: FusedConv(*_conv_parts_for_test())(x, w, b, z), (1, 2, 4, 4), (3, 2, 3, 3), (3,), (1, 3, 2, 2))
    gradcheck(FusedMatMul(0.5, True, False, True, False), (3, 2, 4), (2, 3, 5))
    gradcheck(SimplifiedLayerNormalization(-1, 1e-3, False), (2, 3, 6), (6,))
    gradcheck(lambda x, s, g, b, bias: SkipLayerNormalization(1e-3, False, 4)(x, s, g, b, bias)[3] * 0
              + SkipLayerNormalization(1e-3, False, 1)(x, s, g, b, bias), (2, 3, 6), (2, 3, 6), (6,), (6,), (6,))
    ids = torch.tensor([[1, 4, 2], [0, 3, 3]])
    gradcheck(lambda w, p, g, b: EmbedLayerNormalization(1e-3, 1)(ids, None, w, p, None, g, b), (5, 6), (4, 6), (6,), (6,))
    mask = torch.tensor([2, 3], dtype=torch.int32)
    gradcheck(lambda x, w, b: ContribAttention(2, None, None, True, -10000.0, 1)(x, w, b, mask), (2, 3, 4), (4, 12), (12,))
    gradcheck(lambda q, k, v: MultiHeadAttention(2, 0.3, False, -10000.0, 1)(q, k, v), (2, 3, 4), (2, 5, 4), (2, 5, 4))


# -- files written by onnxruntime's optimizers -------------------------------------------------
@pytest.mark.parametrize("level", ["EXTENDED", "ALL"])
def test_optimized_resnet_loads_with_parity_and_gradients(tmp_path, level):
    import torchvision
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    path = tmp_path / "resnet.onnx"
    torch.onnx.export(net, torch.randn(1, 3, 32, 32), str(path), dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}})
    optimized = _optimized(onnx.load(str(path)), getattr(ort.GraphOptimizationLevel, f"ORT_ENABLE_{level}"), tmp_path / "opt.onnx")
    domains = {n.domain for n in optimized.graph.node}
    assert ("com.microsoft.nchwc" if level == "ALL" else "com.microsoft") in domains
    model = onnxxai.load(optimized)
    assert model.parity.ok, model.parity.summary()
    if level == "ALL":  # (one gradient check keeps the file fast; EXTENDED's FusedConv is gradchecked above)
        report = gradient_flow(model, optimized, directions=2)
        assert report.ok, report.summary()


class _Layer(torch.nn.Module):
    def __init__(self, hidden: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (torch.nn.Linear(hidden, hidden) for _ in range(4))
        self.ln1, self.ln2 = torch.nn.LayerNorm(hidden, eps=1e-12), torch.nn.LayerNorm(hidden, eps=1e-12)
        self.f1, self.f2 = torch.nn.Linear(hidden, ff), torch.nn.Linear(ff, hidden)

    def _split(self, x):
        b, t, h = x.shape
        return x.view(b, t, self.heads, h // self.heads).permute(0, 2, 1, 3)

    def forward(self, x, extended_mask):
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + extended_mask
        context = torch.matmul(scores.softmax(-1), v).permute(0, 2, 1, 3).contiguous()
        x = self.ln1(self.o(context.view(context.shape[0], context.shape[1], -1)) + x)
        return self.ln2(self.f2(torch.nn.functional.gelu(self.f1(x))) + x)


class _Bert(torch.nn.Module):
    """BERT's embedding and encoder pattern (what onnxruntime's bert optimizer fuses)."""

    def __init__(self, vocab=50, hidden=32, heads=4, ff=64, layers=2, positions=64, types=10):
        super().__init__()
        self.words, self.positions, self.types = (torch.nn.Embedding(n, hidden) for n in (vocab, positions, types))
        self.ln = torch.nn.LayerNorm(hidden, eps=1e-12)
        self.layers = torch.nn.ModuleList([_Layer(hidden, heads, ff) for _ in range(layers)])
        self.cls = torch.nn.Linear(hidden, 3)

    def forward(self, ids, mask, types):
        x = self.ln(self.words(ids) + self.positions(torch.arange(ids.shape[1]).unsqueeze(0)) + self.types(types))
        extended = (1.0 - mask[:, None, None, :].float()) * -10000.0
        for layer in self.layers:
            x = layer(x, extended)
        return self.cls(x[:, 0])


def test_bert_from_the_transformers_optimizer_loads_with_parity_and_gradients(tmp_path):
    from onnxruntime.transformers.optimizer import optimize_model

    torch.manual_seed(0)
    net = _Bert().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    rng = np.random.default_rng(13)
    feeds = {"input_ids": rng.integers(0, 50, (2, 8)), "attention_mask": np.array([[1] * 8, [1] * 5 + [0] * 3]),
             "token_type_ids": np.array([[0] * 4 + [1] * 4] * 2)}
    path = tmp_path / "bert.onnx"
    torch.onnx.export(net, tuple(torch.from_numpy(feeds[n]) for n in names), str(path), dynamo=False, opset_version=17,
                      input_names=names, output_names=["logits"], dynamic_axes={n: {0: "b", 1: "s"} for n in names})
    optimize_model(str(path), model_type="bert", num_heads=4, hidden_size=32).save_model_to_file(str(tmp_path / "opt.onnx"))
    optimized = onnx.load(str(tmp_path / "opt.onnx"))
    ops = {n.op_type for n in optimized.graph.node if n.domain == MS}
    assert {"EmbedLayerNormalization", "Attention", "SkipLayerNormalization"} <= ops
    model = onnxxai.load(optimized, probe_inputs=feeds)
    assert model.parity.ok, model.parity.summary()
    # token ids are tapped at EmbedLayerNormalization's output; its gradient matches float64 differences
    fixed = {k: v for k, v in feeds.items() if k != "input_ids"}
    expl = onnxxai.Gradient(model, input_name="input_ids", fixed_inputs=fixed)(feeds["input_ids"])
    tensor = expl.extras["attributed_at"]
    assert tensor == next(n.output[0] for n in optimized.graph.node if n.op_type == "EmbedLayerNormalization")
    grad = np.asarray(expl.extras["tap_attribution"], dtype=np.float64)
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
