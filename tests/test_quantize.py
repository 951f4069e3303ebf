"""Casts to narrow types, quantization ops and unsigned arithmetic against ONNX's reference / onnxruntime,
plus the straight-through gradient of quantize->dequantize."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxxai.convert.quantize import DequantizeLinear
from onnxxai.convert.pipeline import convert
from onnx_cases import one_node, reference_outputs, run_converted


def _run(model, *arrays):
    """The converted graph's output tensor on ``arrays`` (a tuple of tensors for several outputs)."""
    outs = run_converted(model, arrays, as_numpy=False)
    return outs[0] if len(outs) == 1 else tuple(outs)


EDGES = np.array([0.0, -0.0, 0.3, -1.7, 17.2, 239.0, 250.0, 449.0, 464.0, 470.0, 1e6, -1e6, 57344.0, 61440.0, 1e-7,
                  np.inf, -np.inf, np.nan], np.float32)


@pytest.mark.parametrize("to", [TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E5M2FNUZ])
@pytest.mark.parametrize("saturate", [0, 1])
def test_cast_to_float8_matches_reference(to, saturate):
    x = np.concatenate([EDGES, np.random.default_rng(0).normal(0, 100, 200).astype(np.float32)])
    model = one_node("Cast", {"x": (TensorProto.FLOAT, [len(x)])}, opset=21, attrs={"to": to, "saturate": saturate}, output_type=to)
    want = ReferenceEvaluator(model).run(None, {"x": x})[0].astype(np.float32)
    got = _run(model, x)
    assert got.dtype.is_floating_point and got.element_size() == 1
    np.testing.assert_array_equal(got.float().numpy(), want)


def test_cast_bfloat16_and_int4():
    x = np.array([1.0, 1.00390625, -3.3e38, 65504.5, -9, 17, 7.9], np.float32)
    bf16 = one_node("Cast", {"x": (TensorProto.FLOAT, [7])}, opset=13, attrs={"to": TensorProto.BFLOAT16}, output_type=TensorProto.BFLOAT16)
    got = _run(bf16, x)
    assert got.dtype == torch.bfloat16
    np.testing.assert_array_equal(got.float().numpy(), x.astype(ml_dtypes.bfloat16).astype(np.float32))
    ints = np.arange(-20, 20, dtype=np.float32)
    for to in (TensorProto.INT4, TensorProto.UINT4, TensorProto.INT2):
        model = one_node("Cast", {"x": (TensorProto.FLOAT, [40])}, opset=21, attrs={"to": to}, output_type=to)
        want = ReferenceEvaluator(model).run(None, {"x": ints})[0].astype(np.int64)
        np.testing.assert_array_equal(_run(model, ints).numpy().astype(np.int64), want)


def test_castlike_float8_no_saturate():
    x = np.array([1.5, 470.0, -1e5, np.inf], np.float32)
    like = np.zeros(1, ml_dtypes.float8_e4m3fn)
    node_inputs = {"x": (TensorProto.FLOAT, [4]), "like": (TensorProto.FLOAT8E4M3FN, [1])}
    model = one_node("CastLike", node_inputs, opset=21, attrs={"saturate": 0}, output_type=TensorProto.FLOAT8E4M3FN)
    want = ReferenceEvaluator(model).run(None, {"x": x, "like": like})[0].astype(np.float32)
    _, _, module = convert(model, "test")
    got = module(torch.from_numpy(x), torch.zeros(1).to(torch.float8_e4m3fn))
    np.testing.assert_array_equal(got.float().numpy(), want)  # [1.5, nan, nan, nan]


QUANT_CASES = {
    "per-tensor-uint8": ([2, 6], {}, np.float32(0.05), np.uint8(128)),
    "per-axis-int8": ([2, 3, 4], {"axis": 1}, np.array([0.1, 0.02, 0.5], np.float32), np.array([0, -3, 5], np.int8)),
    "blocked-int8": ([2, 6], {"axis": 1, "block_size": 2}, np.array([[0.1, 0.2, 0.05], [0.3, 0.01, 0.02]], np.float32),
                     np.array([[1, 0, -2], [3, 0, 0]], np.int8)),
    "per-tensor-uint16": ([3, 5], {}, np.float32(0.001), np.uint16(30000)),
}


@pytest.mark.parametrize("name", list(QUANT_CASES))
def test_quantize_dequantize_match_reference(name):
    shape, attrs, scale, zp = QUANT_CASES[name]
    zp_type = helper.np_dtype_to_tensor_dtype(zp.dtype)
    x = np.random.default_rng(1).normal(0, 6, shape).astype(np.float32)
    x.flat[0] = 2.5 * scale.flat[0]  # a tie: rounds half to even
    q = one_node("QuantizeLinear", {"x": (TensorProto.FLOAT, shape)}, opset=21, attrs=attrs, initializers={"s": scale, "zp": zp},
                 output_type=zp_type)
    want_q = ReferenceEvaluator(q).run(None, {"x": x})[0]
    got_q = _run(q, x)
    np.testing.assert_array_equal(got_q.numpy().astype(np.int64), want_q.astype(np.int64))
    dq = one_node("DequantizeLinear", {"q": (zp_type, shape)}, opset=21, attrs=attrs, initializers={"s": scale, "zp": zp},
                  output_type=TensorProto.FLOAT)
    want_x = ReferenceEvaluator(dq).run(None, {"q": want_q})[0]
    _, _, module = convert(dq, "test")
    np.testing.assert_array_equal(module(got_q).numpy(), want_x)


def test_quantize_float8_and_onnxruntime_parity():
    x = np.linspace(-500, 500, 41, dtype=np.float32)
    # float8 initializers cannot be loaded by onnx2torch, so the target type comes from output_dtype
    q = one_node("QuantizeLinear", {"x": (TensorProto.FLOAT, [41])}, opset=21, attrs={"output_dtype": TensorProto.FLOAT8E4M3FN},
                 initializers={"s": np.float32(2.0)}, output_type=TensorProto.FLOAT8E4M3FN)
    want = ReferenceEvaluator(q).run(None, {"x": x})[0].astype(np.float32)
    np.testing.assert_array_equal(_run(q, x).float().numpy(), want)
    # uint8 per tensor, also against onnxruntime (an independent implementation)
    q8 = one_node("QuantizeLinear", {"x": (TensorProto.FLOAT, [41])}, opset=13,
                  initializers={"s": np.float32(3.0), "zp": np.uint8(100)}, output_type=TensorProto.UINT8)
    np.testing.assert_array_equal(_run(q8, x).numpy(), reference_outputs(q8, {"x": x})[0])


def _qdq_model(scale, zp, zp_dtype):
    q = helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"])
    dq = helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"])
    graph = helper.make_graph([q, dq], "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [40])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [40])],
                              [numpy_helper.from_array(np.float64(scale), "s"), numpy_helper.from_array(zp_dtype(zp), "zp")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_qdq_straight_through_gradient_is_range_indicator():
    scale, zp = 0.1, 10
    model = _qdq_model(scale, zp, np.int8)
    _, _, module = convert(model, "test")
    x = torch.linspace(-15.0, 13.0, 40, dtype=torch.float64, requires_grad=True)
    y = module(x)
    want = ReferenceEvaluator(model).run(None, {"x": x.detach().numpy()})[0]
    np.testing.assert_allclose(y.detach().numpy(), want, rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad(y.sum(), x)
    # the gradient passes wherever the value rounds into [-128, 127] without being clipped:
    # x / scale + zp in [-128.5, 127.5]
    unrounded = x.detach() / scale + zp
    inside = ((unrounded >= -128.5) & (unrounded <= 127.5)).to(torch.float64)
    assert 0 < inside.sum() < 40  # both regions are exercised
    torch.testing.assert_close(grad, inside, rtol=0, atol=0)


def test_qdq_gradient_passes_at_the_top_of_the_range_and_stops_past_the_clip():
    """Values at qmax, and just above it (they round to qmax, unclipped), keep the straight-through
    gradient; a value past qmax + 1/2 is clipped and has none."""
    scale, zp = 0.1, 10
    model = _qdq_model(scale, zp, np.int8)
    module = convert(model, "test")[2]
    steps = torch.tensor([117.0, 117.3, 117.45, 117.6, 118.0, -138.4, -138.6] + [0.0] * 33, dtype=torch.float64)
    x = (steps * scale).requires_grad_()  # x / scale + zp: 127, 127.3, 127.45, 127.6, 128, -128.4, -128.6
    y = module(x)
    np.testing.assert_allclose(y.detach().numpy(), ReferenceEvaluator(model).run(None, {"x": x.detach().numpy()})[0], rtol=0, atol=1e-12)
    assert y[:5].detach().tolist() == pytest.approx([11.7] * 5)  # all five saturate to qmax = 127
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert grad[:7].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]


def test_dequantize_gradcheck():
    module = DequantizeLinear(axis=1, block_size=0, dtype=None)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([0.5, 2.0, 0.1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, s: module(a, s, torch.tensor([1, 0, -3], dtype=torch.int8)), (x, scale))


def test_integer_matmul_ops_match_onnxruntime():
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 255, (3, 4)).astype(np.uint8), rng.integers(0, 255, (4, 5)).astype(np.uint8)
    mm = one_node("MatMulInteger", {"a": (TensorProto.UINT8, [3, 4]), "b": (TensorProto.UINT8, [4, 5])}, opset=10,
                  initializers={"azp": np.uint8(12), "bzp": np.uint8(200)}, output_type=TensorProto.INT32)
    np.testing.assert_array_equal(_run(mm, a, b).numpy(), reference_outputs(mm, {"a": a, "b": b})[0])
    ql = one_node("QLinearMatMul", {"a": (TensorProto.UINT8, [3, 4])}, opset=10, output_type=TensorProto.UINT8,
                  initializers={"as": np.float32(0.02), "azp": np.uint8(113), "b": b, "bs": np.float32(0.007),
                                "bzp": np.uint8(114), "ys": np.float32(0.1), "yzp": np.uint8(118)})
    np.testing.assert_array_equal(_run(ql, a).numpy(), reference_outputs(ql, {"a": a})[0])
    x = rng.normal(0, 3, (2, 5)).astype(np.float32)
    dyn = one_node("DynamicQuantizeLinear", {"x": (TensorProto.FLOAT, [2, 5])}, opset=11, outputs=["y", "s", "zp"],
                   output_type=[TensorProto.UINT8, TensorProto.FLOAT, TensorProto.UINT8])
    for got, want in zip(_run(dyn, x), reference_outputs(dyn, {"x": x})):
        np.testing.assert_array_equal(got.numpy(), want)


def _binary(op, elem, opset=13, out=None):
    return one_node(op, {"a": (elem, [4]), "b": (elem, [4])}, opset=opset, output_type=out or elem)


def test_unsigned_arithmetic_is_exact():
    big = np.array([2**64 - 1, 2**63 + 5, 7, 0], np.uint64)
    small = np.array([1, 2**63, 9, 3], np.uint64)
    with np.errstate(over="ignore"):
        for op, fn in (("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply)):
            np.testing.assert_array_equal(_run(_binary(op, TensorProto.UINT64), big, small).numpy(), fn(big, small))
    np.testing.assert_array_equal(_run(_binary("Greater", TensorProto.UINT64, out=TensorProto.BOOL), big, small).numpy(), big > small)
    np.testing.assert_array_equal(_run(_binary("Max", TensorProto.UINT64), big, small).numpy(), np.maximum(big, small))
    with pytest.raises(NotImplementedError, match="uint64 values >= 2\\*\\*63"):
        _run(_binary("Div", TensorProto.UINT64), big, small)
    a32, b32 = np.array([5, 2**32 - 1, 100, 0], np.uint32), np.array([7, 3, 9, 1], np.uint32)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(_run(_binary("Sub", TensorProto.UINT32), a32, b32).numpy(), a32 - b32)
    np.testing.assert_array_equal(_run(_binary("Mod", TensorProto.UINT32, opset=13), a32, b32).numpy(), a32 % b32)
    result = _run(_binary("Div", TensorProto.UINT16), a32.astype(np.uint16), b32.astype(np.uint16))
    assert result.dtype == torch.uint16
    np.testing.assert_array_equal(result.numpy(), a32.astype(np.uint16) // b32.astype(np.uint16))
