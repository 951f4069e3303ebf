"""Transformer-era ops (attention.py): single-op models against onnxruntime or ONNX's reference
evaluator (where onnxruntime 1.32 lacks the op), and float64 gradchecks of the new modules."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from onnxxai.convert.attention import FlexAttention, LinearAttention, OnnxAttention, RotaryEmbedding, SwiGLU
from onnxxai.convert.pipeline import convert
from onnx_cases import assert_matches, one_node, randn

PREVIEW = "ai.onnx.preview"


# -- Attention: sliding windows, external-cache padding -----------------------------------------
@pytest.mark.parametrize("left, right, causal, past", [(2, 0, 1, 0), (1, 1, 0, 0), (2, -1, 0, 0), (-1, 1, 0, 0), (1, 0, 1, 3)])
def test_attention_window_matches_onnxruntime(left, right, causal, past):
    rng = np.random.default_rng(0)
    feeds = {"q": randn(rng, 2, 4, 5, 8), "k": randn(rng, 2, 2, 5, 8), "v": randn(rng, 2, 2, 5, 6)}
    names = ["q", "k", "v"]
    n_outputs = 1
    if past:
        feeds |= {"mask": rng.random((5, 5 + past)) > 0.2, "pk": randn(rng, 2, 2, past, 8), "pv": randn(rng, 2, 2, past, 6)}
        names += ["mask", "pk", "pv"]
        n_outputs = 3
    model = one_node("Attention", feeds, n_outputs, opset=25, node_inputs=names, output_type=TensorProto.FLOAT,
                     attrs=dict(is_causal=causal, left_window_size=left, right_window_size=right))
    assert_matches(model, feeds)


def test_attention_nonpad_kv_seqlen_matches_reference():
    rng = np.random.default_rng(1)
    feeds = {"q": randn(rng, 2, 3, 16), "k": randn(rng, 2, 6, 8), "v": randn(rng, 2, 6, 8),
             "n": np.array([4, 6], dtype=np.int64)}
    model = one_node("Attention", feeds, opset=25, node_inputs=["q", "k", "v", "", "", "", "n"], output_type=TensorProto.FLOAT,
                     attrs=dict(is_causal=1, q_num_heads=4, kv_num_heads=2, left_window_size=1))
    assert_matches(model, feeds, "onnx")


def test_attention_window_can_fail():
    """The window changes the result (a converter that ignored it would not pass the tests above)."""
    rng = np.random.default_rng(2)
    q, k, v = (torch.from_numpy(randn(rng, 1, 2, 6, 4)) for _ in range(3))
    full = OnnxAttention(None, None, None, 0.0, False, 0, 1)(q, k, v)
    windowed = OnnxAttention(None, None, None, 0.0, False, 0, 1, left_window=1, right_window=0)(q, k, v)
    assert not torch.allclose(full, windowed)
    torch.testing.assert_close(windowed[:, :, 0], v[:, :, 0])  # the first query sees only the first key


def test_attention_window_gradcheck_with_empty_rows():
    """Float64 gradients stay finite where a boolean mask and the window leave a row no key."""
    rng = np.random.default_rng(3)
    q, k, v = (torch.tensor(randn(rng, 1, 2, 4, 3, dtype="float64"), requires_grad=True) for _ in range(3))
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[2] = False  # query 2 attends nothing
    module = OnnxAttention(None, None, None, 0.0, True, 0, 1, left_window=1, right_window=0)
    assert torch.autograd.gradcheck(lambda a, b, c: module(a, b, c, mask), (q, k, v))
    assert torch.all(module(q, k, v, mask)[:, :, 2] == 0)


# -- LinearAttention ------------------------------------------------------------------------------
LINEAR_CASES = {
    "linear": dict(rule="linear", hq=2, hkv=2, decay=None, beta=None, past=False),
    "gated_per_key": dict(rule="gated", hq=2, hkv=2, decay="key", beta=None, past=False),
    "gated_per_head": dict(rule="gated", hq=2, hkv=2, decay="head", beta=None, past=True),
    "delta": dict(rule="delta", hq=2, hkv=2, decay=None, beta="head", past=False),
    "gated_delta_gqa": dict(rule="gated_delta", hq=4, hkv=2, decay="key", beta="head", past=True),
    "gated_delta_mqa": dict(rule="gated_delta", hq=4, hkv=1, decay="head", beta="one", past=False),
}


def _linear_feeds(case: dict, b: int = 2, t: int = 5, dk: int = 3, dv: int = 4, dtype: str = "float32", seed: int = 4):
    rng = np.random.default_rng(seed)
    hq, hkv = case["hq"], case["hkv"]
    feeds = {"q": randn(rng, b, t, hq * dk, dtype=dtype), "k": randn(rng, b, t, hkv * dk, dtype=dtype) * 0.5,
             "v": randn(rng, b, t, hkv * dv, dtype=dtype)}
    names = ["q", "k", "v", "", "", ""]
    if case["past"]:
        feeds["s"], names[3] = randn(rng, b, hkv, dk, dv, dtype=dtype), "s"
    if case["decay"]:
        width = hkv * dk if case["decay"] == "key" else hkv
        feeds["g"], names[4] = -rng.random((b, t, width)).astype(dtype), "g"
    if case["beta"]:
        width = hkv if case["beta"] == "head" else 1
        feeds["beta"], names[5] = rng.random((b, t, width)).astype(dtype), "beta"
    while names and not names[-1]:
        names.pop()
    return feeds, names


@pytest.mark.parametrize("name", list(LINEAR_CASES))
def test_linear_attention_matches_reference(name):
    case = LINEAR_CASES[name]
    feeds, names = _linear_feeds(case)
    scale = {"scale": 0.7} if name == "delta" else {}
    model = one_node("LinearAttention", feeds, 2, opset=27, node_inputs=names, output_type=TensorProto.FLOAT,
                     attrs=dict(q_num_heads=case["hq"], kv_num_heads=case["hkv"], update_rule=case["rule"], **scale))
    assert_matches(model, feeds, "onnx", rtol=1e-4, atol=1e-4)


def test_linear_attention_refuses_unknown_rule():
    feeds, names = _linear_feeds(LINEAR_CASES["linear"])
    model = one_node("LinearAttention", feeds, 2, opset=27, node_inputs=names, output_type=TensorProto.FLOAT,
                     attrs=dict(q_num_heads=2, kv_num_heads=2, update_rule="mamba"))
    with pytest.raises(Exception, match="update_rule='mamba' is not supported"):
        convert(model, "mamba")


def test_linear_attention_gradcheck():
    case = LINEAR_CASES["gated_delta_gqa"]
    feeds, _ = _linear_feeds(case, b=1, t=3, dk=2, dv=2, dtype="float64")
    args = [torch.tensor(feeds[n], requires_grad=True) for n in ("q", "k", "v", "s", "g", "beta")]
    module = LinearAttention(case["hq"], case["hkv"], 0.0, gated=True, delta=True)
    assert torch.autograd.gradcheck(lambda *a: module(*a), args)


# -- SwiGLU, RotaryEmbedding ------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.0, 1.702])
def test_swiglu_matches_reference(alpha):
    rng = np.random.default_rng(5)
    feeds = {"a": randn(rng, 2, 3, 8), "b": randn(rng, 2, 3, 8)}
    model = one_node("SwiGLU", feeds, opset=28, output_type=TensorProto.FLOAT, attrs=dict(alpha=alpha))
    assert_matches(model, feeds, "onnx")


def test_swiglu_gradcheck():
    a, b = (torch.randn(3, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(SwiGLU(1.5), (a, b))


@pytest.mark.parametrize("interleaved, rotary_dim, positions, three_d",
                         [(0, 0, True, False), (1, 0, True, False), (0, 4, True, True), (1, 4, False, False), (0, 0, False, True)])
def test_rotary_embedding_matches_onnxruntime(interleaved, rotary_dim, positions, three_d):
    rng = np.random.default_rng(6)
    b, h, s, d = 2, 3, 5, 8
    half = (rotary_dim or d) // 2
    x = randn(rng, b, s, h * d) if three_d else randn(rng, b, h, s, d)
    cache_shape = (10, half) if positions else (b, s, half)
    angles = rng.random(cache_shape).astype("float32") * 3
    feeds = {"x": x, "cos": np.cos(angles), "sin": np.sin(angles)}
    if positions:
        feeds["pos"] = rng.integers(0, 10, (b, s)).astype(np.int64)
    attrs = {"num_heads": h} if three_d else {}
    model = one_node("RotaryEmbedding", feeds, opset=23, output_type=TensorProto.FLOAT,
                     attrs=dict(interleaved=interleaved, rotary_embedding_dim=rotary_dim, **attrs))
    assert_matches(model, feeds)


def test_rotary_embedding_gradcheck():
    x = torch.randn(1, 2, 3, 6, dtype=torch.float64, requires_grad=True)
    cos, sin = (torch.randn(4, 2, dtype=torch.float64, requires_grad=True) for _ in range(2))
    pos = torch.tensor([[3, 0, 1]])
    module = RotaryEmbedding(None, 4, interleaved=True)
    assert torch.autograd.gradcheck(lambda a, c, s: module(a, c, s, pos), (x, cos, sin))


# -- FlexAttention (ai.onnx.preview) -----------------------------------------------------------
def _causal_score_mod() -> onnx.GraphProto:
    """score_mod: -inf above the diagonal, built from Shape/Range/Where as exporters write it."""
    ints = lambda name, v: helper.make_tensor(name, TensorProto.INT64, [len(v)] if len(v) > 1 else [], v)  # noqa: E731
    nodes = [
        helper.make_node("Shape", ["s"], ["shape"]),
        helper.make_node("Gather", ["shape", "two"], ["l"], axis=0),
        helper.make_node("Gather", ["shape", "three"], ["m"], axis=0),
        helper.make_node("Range", ["zero", "l", "one"], ["qr"]),
        helper.make_node("Reshape", ["qr", "qshape"], ["qi"]),
        helper.make_node("Range", ["zero", "m", "one"], ["kr"]),
        helper.make_node("Reshape", ["kr", "kshape"], ["ki"]),
        helper.make_node("GreaterOrEqual", ["qi", "ki"], ["allowed"]),
        helper.make_node("Where", ["allowed", "s", "neg"], ["out"]),
    ]
    inits = [ints("zero", [0]), ints("one", [1]), ints("two", [2]), ints("three", [3]),
             ints("qshape", [1, 1, -1, 1]), ints("kshape", [1, 1, 1, -1]),
             helper.make_tensor("neg", TensorProto.FLOAT, [], [-np.inf])]
    dims = ["B", "H", "L", "S"]
    return helper.make_graph(nodes, "causal", [helper.make_tensor_value_info("s", TensorProto.FLOAT, dims)],
                             [helper.make_tensor_value_info("out", TensorProto.FLOAT, dims)], initializer=inits)


def _prob_mod() -> onnx.GraphProto:
    dims = ["B", "H", "L", "S"]
    return helper.make_graph([helper.make_node("Mul", ["p", "half"], ["out"])], "half",
                             [helper.make_tensor_value_info("p", TensorProto.FLOAT, dims)],
                             [helper.make_tensor_value_info("out", TensorProto.FLOAT, dims)],
                             initializer=[helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])])


@pytest.mark.parametrize("mods", [{}, {"score_mod": "causal"}, {"score_mod": "causal", "prob_mod": "half", "scale": 0.3}])
def test_flex_attention_matches_reference(mods):
    rng = np.random.default_rng(7)
    feeds = {"q": randn(rng, 2, 4, 5, 8), "k": randn(rng, 2, 2, 6, 8), "v": randn(rng, 2, 2, 6, 3)}
    attrs = {"scale": mods["scale"]} if "scale" in mods else {}
    if "score_mod" in mods:
        attrs["score_mod"] = _causal_score_mod()
    if "prob_mod" in mods:
        attrs["prob_mod"] = _prob_mod()
    model = one_node("FlexAttention", feeds, opset=26, domain=PREVIEW, output_type=TensorProto.FLOAT, attrs=attrs)
    assert_matches(model, feeds, "onnx")


def test_flex_attention_refuses_outer_scope_modifier():
    rng = np.random.default_rng(8)
    feeds = {"q": randn(rng, 1, 1, 2, 4), "k": randn(rng, 1, 1, 2, 4), "v": randn(rng, 1, 1, 2, 4)}
    mod = _prob_mod()
    del mod.initializer[:]  # "half" now comes from the outer scope
    model = one_node("FlexAttention", feeds, opset=26, domain=PREVIEW, output_type=TensorProto.FLOAT, attrs=dict(prob_mod=mod))
    with pytest.raises(Exception, match="outer-scope values"):
        convert(model, "outer")


def test_flex_attention_gradcheck():
    rng = np.random.default_rng(9)
    feeds = {"q": randn(rng, 1, 2, 3, 4), "k": randn(rng, 1, 1, 3, 4), "v": randn(rng, 1, 1, 3, 2)}
    model = one_node("FlexAttention", feeds, opset=26, domain=PREVIEW, output_type=TensorProto.FLOAT,
                     attrs=dict(score_mod=_causal_score_mod()))
    _, _, graph_module = convert(model, "flex")
    module = next(m for m in graph_module.modules() if isinstance(m, FlexAttention))
    args = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in feeds.values()]
    assert torch.autograd.gradcheck(module, args)
