"""Quantized integer ops (QOperator format, com.microsoft contrib ops, dynamic quantization) against
onnxruntime bit for bit, float64 gradchecks of their float surrogates, and quantized LeNets explained
like the float32 one.

The integer kernels onnxruntime picks depend on the CPU (u8s8 products without VNNI may saturate int16
pair sums); the single-op cases keep u8s8 products small enough that no kernel saturates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto

from onnxxai.convert import qlinear
from onnxxai.testing import calibration_reader
from onnx_cases import gradcheck, one_node, reference_outputs, run_converted

ROOT = Path(__file__).resolve().parents[1]
MS = "com.microsoft"
U8, I8 = TensorProto.UINT8, TensorProto.INT8
NP = {U8: np.uint8, I8: np.int8}
RANGE = {U8: (0, 256), I8: (-128, 128)}


def _ints(rng, elem, *shape, lo=None, hi=None):
    a, b = RANGE[elem]
    return rng.integers(a if lo is None else lo, b if hi is None else hi, shape).astype(NP[elem])


def _exact(model, feeds):
    """Converted outputs equal onnxruntime's bit for bit (and have its dtype)."""
    want = reference_outputs(model, feeds)
    got = run_converted(model, feeds)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype, (g.dtype, w.dtype)
        mismatch = np.flatnonzero(g.astype(np.float64) != w.astype(np.float64))
        assert mismatch.size == 0, (mismatch.size, g.size, np.abs(g.astype(np.float64) - w).max())
    return got


@pytest.mark.parametrize("xt,wt,per_channel", [(U8, I8, False), (U8, I8, True), (I8, I8, True), (U8, U8, False)])
def test_qlinear_conv_matches_onnxruntime(xt, wt, per_channel):
    rng = np.random.default_rng(0)
    x = _ints(rng, xt, 2, 4, 9, 9)
    w = _ints(rng, wt, 6, 2, 3, 3)
    ws = (rng.uniform(0.002, 0.02, 6) if per_channel else np.array(0.01)).astype(np.float32)
    wzp = np.zeros(6 if per_channel else (), NP[wt]) if wt == I8 else np.array(127, np.uint8)
    inits = {"xs": np.float32(0.023), "xzp": np.array(3 if xt == U8 else -5, NP[xt]), "w": w, "ws": ws, "wzp": wzp,
             "ys": np.float32(0.037), "yzp": np.array(120 if xt == U8 else -3, NP[xt]),
             "b": rng.integers(-2000, 2000, 6).astype(np.int32)}
    model = one_node("QLinearConv", {"x": x}, opset=13, initializers=inits, output_type=xt,
                     attrs={"pads": [1, 0, 2, 1], "strides": [1, 2], "group": 2})
    _exact(model, {"x": x})


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_qlinear_conv_and_conv_integer_auto_pad_match_onnxruntime(auto_pad):
    """auto_pad (jax2onnx writes SAME_UPPER): pads from the input's size, the odd one at the end or the start."""
    rng = np.random.default_rng(11)
    x, w = _ints(rng, U8, 1, 2, 7, 8), _ints(rng, I8, 3, 2, 3, 2)
    attrs = {"auto_pad": auto_pad, "strides": [2, 1]}
    inits = {"xs": np.float32(0.02), "xzp": np.uint8(120), "w": w, "ws": np.float32(0.01), "wzp": np.int8(0),
             "ys": np.float32(0.05), "yzp": np.uint8(128)}
    _exact(one_node("QLinearConv", {"x": x}, opset=13, initializers=inits, output_type=U8, attrs=attrs), {"x": x})
    iconv = one_node("ConvInteger", {"x": x}, opset=13, initializers={"w": w, "xzp": np.uint8(120)}, attrs=attrs,
                     node_inputs=["x", "w", "xzp"], output_type=TensorProto.INT32)
    _exact(iconv, {"x": x})


@pytest.mark.parametrize("at,bt", [(U8, U8), (U8, I8), (I8, I8)])
def test_qlinear_matmul_matches_onnxruntime(at, bt):
    rng = np.random.default_rng(1)
    a, b = _ints(rng, at, 3, 40, 64), _ints(rng, bt, 64, 17)
    inits = {"as": np.float32(0.0123), "azp": np.array(7, NP[at]), "b": b, "bs": np.float32(0.0071),
             "bzp": np.array(0, NP[bt]), "ys": np.float32(0.53), "yzp": np.array(100 if at == U8 else 4, NP[at])}
    model = one_node("QLinearMatMul", {"a": a}, opset=13, initializers=inits, output_type=at)
    _exact(model, {"a": a})


@pytest.mark.parametrize("bt,per_column,output", [(I8, False, "q"), (I8, True, "q"), (U8, False, "q"), (I8, True, "float")])
def test_qgemm_matches_onnxruntime(bt, per_column, output):
    rng = np.random.default_rng(2)
    a, b = _ints(rng, U8, 33, 50), _ints(rng, bt, 21, 50)
    bs = (rng.uniform(0.001, 0.01, 21) if per_column else np.array(0.004)).astype(np.float32)
    bzp = np.zeros(bs.shape, NP[bt]) if bt == I8 else np.full(bs.shape, 128, np.uint8)
    inits = {"as": np.float32(0.021), "azp": np.uint8(90), "b": b, "bs": bs, "bzp": bzp,
             "c": rng.integers(-5000, 5000, 21).astype(np.int32)}
    if output == "q":
        inits |= {"ys": np.float32(0.3), "yzp": np.uint8(131)}
    model = one_node("QGemm", {"a": a}, opset=13, initializers=inits, domain=MS, attrs={"transB": 1, "alpha": 0.75},
                     output_type=U8 if output == "q" else TensorProto.FLOAT)
    _exact(model, {"a": a})


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("elem", [U8, I8])
@pytest.mark.parametrize("shapes", [((2, 3, 37), (2, 3, 37)), ((2, 3, 37), (3, 1)), ((1,), (4, 37)), ((5, 1, 7), (1, 6, 1))])
def test_qlinear_binary_matches_onnxruntime(op, elem, shapes):
    rng = np.random.default_rng(3)
    a, b = _ints(rng, elem, *shapes[0]), _ints(rng, elem, *shapes[1])
    zero = {U8: (131, 97, 120), I8: (3, -7, -2)}[elem]
    inits = {"as": np.float32(0.0371), "azp": np.array(zero[0], NP[elem]), "bs": np.float32(0.0193 if op == "QLinearAdd" else 0.0093),
             "bzp": np.array(zero[1], NP[elem]), "cs": np.float32(0.0412), "czp": np.array(zero[2], NP[elem])}
    model = one_node(op, {"a": a, "b": b}, opset=13, domain=MS, initializers=inits, output_type=elem,
                     node_inputs=["a", "as", "azp", "b", "bs", "bzp", "cs", "czp"])
    _exact(model, {"a": a, "b": b})


@pytest.mark.parametrize("op,attrs", [("QLinearSigmoid", {}), ("QLinearLeakyRelu", {"alpha": 0.13})])
@pytest.mark.parametrize("elem", [U8, I8])
def test_lookup_ops_match_onnxruntime_on_every_input(op, attrs, elem):
    x = np.arange(*RANGE[elem]).astype(NP[elem])
    zp = (128, 0) if elem == U8 else (0, -128)
    inits = {"xs": np.float32(0.0627), "xzp": np.array(zp[0], NP[elem]), "ys": np.float32(1 / 256 if op == "QLinearSigmoid" else 0.05),
             "yzp": np.array(zp[1] if op == "QLinearSigmoid" else zp[0], NP[elem])}
    model = one_node(op, {"x": x}, opset=13, domain=MS, initializers=inits, output_type=elem, attrs=attrs)
    _exact(model, {"x": x})


def test_qlinear_concat_matches_onnxruntime():
    rng = np.random.default_rng(4)
    a, b = _ints(rng, U8, 2, 3, 5), _ints(rng, U8, 2, 4, 5)
    inits = {"ys": np.float32(0.05), "yzp": np.uint8(128), "as": np.float32(0.05), "azp": np.uint8(128),
             "bs": np.float32(0.0731), "bzp": np.uint8(77)}
    model = one_node("QLinearConcat", {"a": a, "b": b}, opset=13, domain=MS, initializers=inits, output_type=U8,
                     attrs={"axis": 1}, node_inputs=["ys", "yzp", "a", "as", "azp", "b", "bs", "bzp"])
    _exact(model, {"a": a, "b": b})


@pytest.mark.parametrize("follower", ["MaxPool", "QLinearGlobalAveragePool", "QLinearAdd"])
def test_ops_after_contrib_quantized_ops_get_shapes(follower):
    """A standard MaxPool after QLinearConcat needs its input's rank (squeezenet's int8 files):
    shape inference sees through QLinearConcat/QLinearAdd/QLinearGlobalAveragePool by their twins."""
    from onnx import helper

    rng = np.random.default_rng(8)
    a, b = _ints(rng, U8, 2, 3, 6, 7), _ints(rng, U8, 2, 4, 6, 7)
    inits = {"ys": np.float32(0.05), "yzp": np.uint8(128), "as": np.float32(0.05), "azp": np.uint8(128),
             "bs": np.float32(0.0731), "bzp": np.uint8(77)}
    nodes = [helper.make_node("QLinearConcat", ["ys", "yzp", "a", "as", "azp", "b", "bs", "bzp"], ["c"], domain=MS, axis=1)]
    if follower == "QLinearAdd":
        nodes.append(helper.make_node("QLinearAdd", ["c", "ys", "yzp", "c", "ys", "yzp", "bs", "bzp"], ["d"], domain=MS))
    elif follower == "QLinearGlobalAveragePool":
        nodes.append(helper.make_node("QLinearGlobalAveragePool", ["c", "ys", "yzp", "bs", "bzp"], ["d"], domain=MS, channels_last=0))
    else:
        nodes.append(helper.make_node("Identity", ["c"], ["d"]))
    nodes.append(helper.make_node("MaxPool", ["d"], ["y"], kernel_shape=[2, 2], ceil_mode=1, strides=[2, 2]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, U8, list(v.shape)) for n, v in (("a", a), ("b", b))],
                              [helper.make_tensor_value_info("y", U8, None)],
                              [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)])
    model.ir_version = 8
    _exact(model, {"a": a, "b": b})


@pytest.mark.parametrize("elem", [U8, I8])
def test_qlinear_pools_match_onnxruntime(elem):
    rng = np.random.default_rng(5)
    x = _ints(rng, elem, 2, 3, 11, 13)
    inits = {"xs": np.float32(0.031), "xzp": np.array(5, NP[elem]), "ys": np.float32(0.017), "yzp": np.array(9, NP[elem])}
    gap = one_node("QLinearGlobalAveragePool", {"x": x}, opset=13, domain=MS, initializers=inits, output_type=elem)
    _exact(gap, {"x": x})
    for attrs in ({"kernel_shape": [3, 3], "strides": [2, 2]}, {"kernel_shape": [2, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1},
                  {"kernel_shape": [3, 2], "pads": [1, 0, 1, 1]},
                  {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "VALID", "count_include_pad": 1}):
        avg = one_node("QLinearAveragePool", {"x": x}, opset=13, domain=MS, initializers=inits, output_type=elem, attrs=attrs)
        _exact(avg, {"x": x})


@pytest.mark.parametrize("elem", [U8, I8])
def test_qlinear_softmax_matches_onnxruntime(elem):
    rng = np.random.default_rng(6)
    x = _ints(rng, elem, 4, 3, 10)
    yzp = 0 if elem == U8 else -128
    inits = {"xs": np.float32(0.083), "xzp": np.array(0, NP[elem]), "ys": np.float32(1 / 256), "yzp": np.array(yzp, NP[elem])}
    for axis in (-1, 1):
        model = one_node("QLinearSoftmax", {"x": x}, opset=13, domain=MS, initializers=inits, output_type=elem,
                         attrs={"axis": axis, "opset": 13})
        _exact(model, {"x": x})


def test_integer_ops_match_onnxruntime():
    rng = np.random.default_rng(7)
    x, w = _ints(rng, U8, 2, 3, 8, 8), _ints(rng, I8, 4, 3, 3, 3)
    conv = one_node("ConvInteger", {"x": x}, opset=13, initializers={"w": w, "xzp": np.uint8(100)},
                    node_inputs=["x", "w", "xzp"], output_type=TensorProto.INT32, attrs={"pads": [1, 1, 1, 1]})
    _exact(conv, {"x": x})
    a, b = _ints(rng, U8, 5, 30), _ints(rng, I8, 30, 7)
    mm = one_node("MatMulInteger", {"a": a}, opset=13, initializers={"b": b, "azp": np.uint8(3)}, node_inputs=["a", "b", "azp"],
                  output_type=TensorProto.INT32)
    _exact(mm, {"a": a})


# ------------------------------------------------------------------------------------------ gradients


def test_surrogates_gradcheck():
    """Each op's float surrogate (the gradient the straight-through forward carries) in float64."""
    rng = np.random.default_rng(8)
    w = torch.from_numpy(_ints(rng, I8, 4, 2, 3, 3)).double()
    conv = qlinear.QLinearConv([1, 1, 1, 1], [1, 1], [1, 1], 1, U8, True)
    ratio = conv.ratio(torch.tensor(0.02), torch.tensor([0.01, 0.02, 0.005, 0.01]), torch.tensor(0.05), 4)
    zp, yzp = torch.tensor(128, dtype=torch.uint8), torch.tensor(120, dtype=torch.uint8)
    gradcheck(lambda x: conv.surrogate(x * 20 + 128, zp, w, ratio, yzp), (1, 2, 5, 5), seed=0)
    gemm = qlinear.QGemm(1.0, False, True, U8, True)
    b = torch.from_numpy(_ints(rng, I8, 3, 6))
    gradcheck(lambda a: gemm.surrogate(a * 20 + 128, zp, b, torch.tensor(0, dtype=torch.int8), None, torch.tensor(0.004), yzp),
              (2, 6), seed=1)
    scales = [torch.tensor(s) for s in (0.03, 0.02, 0.04)]
    for op in ("QLinearAdd", "QLinearMul"):
        binary = qlinear.QLinearBinary(op, U8, True)
        gradcheck(lambda a, c: binary.surrogate(a * 10 + 128, zp.double(), scales[0], c * 10 + 128, zp.double(), scales[1],
                                                scales[2], yzp.double()), (2, 5), (5,), seed=2)
    for op in ("QLinearSigmoid", "QLinearLeakyRelu"):
        lookup = qlinear.QLinearLookup(op, 0.1, U8, True)
        gradcheck(lambda x: lookup.surrogate(x * 30 + 128, torch.tensor(0.05), zp, torch.tensor(1 / 256), torch.tensor(0)), (7,), seed=3)
    softmax = qlinear.QLinearSoftmax(-1, 13, U8, True)
    gradcheck(lambda x: softmax.surrogate(x * 10 + 128, torch.tensor(0.1), zp, torch.tensor(1 / 256), torch.tensor(0)), (2, 6), seed=4)
    gap = qlinear.QLinearGlobalAveragePool(False, U8, True)
    gradcheck(lambda x: gap.surrogate(x * 10 + 128, torch.tensor(0.1), zp, torch.tensor(0.05), yzp), (1, 2, 3, 3), seed=5)


def test_straight_through_gradient_is_the_surrogates():
    """Forward: onnxruntime's integers; backward: the surrogate's gradient (QuantizeLinear -> QLinearConv -> DequantizeLinear)."""
    rng = np.random.default_rng(9)
    w = _ints(rng, I8, 3, 1, 3, 3, lo=-30, hi=30)  # small enough that no output saturates
    nodes = [onnx.helper.make_node("QuantizeLinear", ["x", "xs", "xzp"], ["xq"]),
             onnx.helper.make_node("QLinearConv", ["xq", "xs", "xzp", "w", "ws", "wzp", "ys", "yzp"], ["yq"]),
             onnx.helper.make_node("DequantizeLinear", ["yq", "ys", "yzp"], ["y"])]
    inits = {"xs": np.float32(0.01), "xzp": np.uint8(128), "w": w, "ws": np.float32(0.02), "wzp": np.int8(0),
             "ys": np.float32(0.05), "yzp": np.uint8(128)}
    graph = onnx.helper.make_graph(nodes, "g", [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
                                   [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                   [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    x = rng.uniform(-1, 1, (1, 1, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(run_converted(model, {"x": x})[0], reference_outputs(model, {"x": x})[0])
    from onnxxai.convert.pipeline import convert

    module = convert(model, "t")[2]
    xt = torch.from_numpy(x).requires_grad_()
    module(xt).sum().backward()
    # float reference: d/dx sum(conv(x, w_real)) = conv-transpose of ones with the dequantized weights
    wr = torch.from_numpy(w.astype(np.float32) * 0.02)
    xr = torch.from_numpy(x).requires_grad_()
    torch.nn.functional.conv2d(xr, wr).sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), xr.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_gradient_passes_where_the_output_rounds_to_qmax_and_stops_where_it_is_clipped():
    """QuantizeLinear -> QLinearGlobalAveragePool -> DequantizeLinear with y_scale = x_scale / 2, so the
    unrounded output of a channel is twice its mean step: exactly qmax (255), 255.125 (rounds to 255,
    not clipped) and 256 (clipped). The first two keep the gradient of the mean (1/16 per element),
    the third has none; the forward is onnxruntime's."""
    sums = (2040, 2041, 2048)  # 16 uint8 steps per channel: means 127.5, 127.5625, 128
    steps = np.stack([np.full(16, s // 16) + (np.arange(16) < s % 16) for s in sums]).astype(np.float32)
    xs = np.float32(0.1)
    x = (steps * xs).reshape(1, 3, 4, 4)
    nodes = [onnx.helper.make_node("QuantizeLinear", ["x", "xs", "zp"], ["xq"]),
             onnx.helper.make_node("QLinearGlobalAveragePool", ["xq", "xs", "zp", "ys", "zp"], ["yq"], domain=MS),
             onnx.helper.make_node("DequantizeLinear", ["yq", "ys", "zp"], ["y"])]
    inits = {"xs": xs, "ys": np.float32(xs / 2), "zp": np.uint8(0)}
    graph = onnx.helper.make_graph(nodes, "g", [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                                   [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                   [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13), onnx.helper.make_opsetid(MS, 1)])
    want = reference_outputs(model, {"x": x})[0]
    np.testing.assert_array_equal(run_converted(model, {"x": x})[0], want)
    assert (want.reshape(-1) == np.float32(255 * inits["ys"])).all()  # every channel at the top of the range
    from onnxxai.convert.pipeline import convert

    xt = torch.from_numpy(x).requires_grad_()
    convert(model, "t")[2](xt).sum().backward()
    grad = xt.grad.reshape(3, 16)
    torch.testing.assert_close(grad[:2], torch.full((2, 16), 1 / 16), rtol=1e-6, atol=0)
    assert (grad[2] == 0).all()


# ------------------------------------------------------------------------------- quantized LeNets


@pytest.fixture(scope="module")
def digits():
    from PIL import Image

    return np.concatenate([np.asarray(Image.open(ROOT / "examples" / f"digit_{i}.png").convert("L"), np.float32)[None, None] / 255
                           for i in range(10)])


@pytest.fixture(scope="module")
def float_lenet(digits):
    import onnxxai

    model = onnxxai.load(ROOT / "models" / "lenet5_mnist.onnx")
    classes = model(digits).argmax(1)
    ig = onnxxai.analyze(digits, onnxxai.IntegratedGradients(model, n=32), classes).val
    return classes, ig.reshape(len(digits), -1)


def _quantized_lenet(kind: str, path: Path, digits: np.ndarray) -> Path:
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    source = ROOT / "models" / "lenet5_mnist.onnx"
    if kind == "dynamic":
        quantize_dynamic(source, path)
        return path
    name = onnx.load(source).graph.input[0].name
    rng = np.random.default_rng(0)
    batches = [digits[i:i + 1] for i in range(10)] + [rng.uniform(0, 1, (1, 1, 28, 28)).astype(np.float32) for _ in range(2)]

    quantize_static(source, path, calibration_reader([{name: batch} for batch in batches]),
                    quant_format=QuantFormat.QOperator, per_channel=kind == "per-channel")
    return path


@pytest.mark.parametrize("kind", ["per-tensor", "per-channel", "dynamic"])
def test_quantized_lenet_runs_bit_exact_and_explains_like_float32(kind, tmp_path, digits, float_lenet):
    import onnxruntime

    import onnxxai

    path = _quantized_lenet(kind, tmp_path / f"lenet_{kind}.onnx", digits)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert ops >= ({"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"} if kind == "dynamic" else {"QLinearConv", "QGemm"})
    model = onnxxai.load(path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: digits})[0]
    np.testing.assert_array_equal(model(digits), want)  # bit-exact on this CPU (see the module docstring)
    classes, float_ig = float_lenet
    assert (want.argmax(1) == classes).all()
    ig = onnxxai.analyze(digits, onnxxai.IntegratedGradients(model, n=32), classes).val.reshape(len(digits), -1)
    cosine = (ig * float_ig).sum(1) / np.linalg.norm(ig, axis=1) / np.linalg.norm(float_ig, axis=1)
    assert cosine.min() >= 0.95, cosine


@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
def test_dynamic_quantize_lstm_matches_onnxruntime_and_gradchecks(bidirectional, tmp_path):
    """quantize_dynamic turns an LSTM into com.microsoft DynamicQuantizeLSTM (int8 W and R, X and the
    hidden state quantized at run time): its integer products are onnxruntime's (a quantization step
    off would move outputs by ~1e-3), the gates' float arithmetic agrees to float32 rounding, and its
    straight-through gradient passes the gradient check against the float64 surrogate."""
    from onnxruntime.quantization import quantize_dynamic

    import onnxxai
    from onnxxai.diagnostics import gradient_flow
    from onnxxai.testing import export

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.LSTM(6, 12, bidirectional=bidirectional, batch_first=True)
            self.head = torch.nn.Linear(24 if bidirectional else 12, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(x)[0][:, -1])

    torch.manual_seed(0)
    source = export(Net(), torch.randn(2, 5, 6), tmp_path / "lstm.onnx")
    path = tmp_path / "lstm_dynamic.onnx"
    quantize_dynamic(source, path)
    assert "DynamicQuantizeLSTM" in {n.op_type for n in onnx.load(path).graph.node}
    model = onnxxai.load(path)
    x = np.random.default_rng(3).standard_normal((2, 5, 6)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(model(x), session.run(None, {session.get_inputs()[0].name: x})[0], rtol=1e-5, atol=1e-6)
    assert model.parity.ok and model.parity.max_rel < 1e-5, model.parity.summary()
    report = gradient_flow(model, onnx.load(path))
    assert report.ok and report.reference.endswith("surrogate"), report.summary()
