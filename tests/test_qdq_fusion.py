"""QDQ groups onnxruntime fuses into integer kernels run as those kernels (onnxxai.proto.qdq):
single groups bit for bit against onnxruntime, the groups it leaves in float left in float, and
quantize_static QDQ files of LeNet and a ResNet-18 end to end.

onnxruntime 1.32 on x86 (no int8 QDQ kernels; its s8->u8 pass re-encodes int8 Q->DQ pairs with one
consumer), measured: uint8-activation QDQ files fuse every Conv/Add/GlobalAveragePool/Gemm and run
bit-exact here; int8-activation files fuse only the groups whose pairs it re-encodes, and the groups
it runs in float (MLAS's float convolution, another summation order than torch's) leave differences of
a few output steps; 16-bit QDQ fuses nothing.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxxai.convert.pipeline import convert
from onnxxai.proto.qdq import onnxruntime_fusions
from onnxxai.testing import calibration_reader

ROOT = Path(__file__).resolve().parents[1]
MS = "com.microsoft"
U8, I8 = TensorProto.UINT8, TensorProto.INT8
NP = {U8: np.uint8, I8: np.int8, TensorProto.INT32: np.int32, TensorProto.UINT16: np.uint16, TensorProto.INT16: np.int16}


class Builder:
    """A float-in, float-out graph: x -> Q -> DQ -> [group] -> Q -> DQ -> y, with helpers for QDQ pairs."""

    def __init__(self, act: int = U8, opset: int = 17) -> None:
        self.act, self.opset, self.nodes, self.inits, self.n = act, opset, [], [], 0

    def const(self, value: np.ndarray, name: str | None = None) -> str:
        self.n += 1
        name = name or f"c{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], domain: str = "", **attrs) -> str:  # noqa: ANN003
        self.n += 1
        out = f"{op}_{self.n}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{self.n}", domain=domain, **attrs))
        return out

    def qdq(self, x: str, scale: float, zp: int, act: int | None = None, domain: str = "") -> str:
        """Quantize then dequantize ``x`` (per tensor, activation type)."""
        act = act or self.act
        s, z = self.const(np.float32(scale)), self.const(NP[act](zp))
        return self.node("DequantizeLinear", [self.node("QuantizeLinear", [x, s, z], domain), s, z], domain)

    def weight(self, values: np.ndarray, scale: np.ndarray | float, zp: np.ndarray | int = 0, axis: int = 0, dtype: int = I8) -> str:
        s = self.const(np.asarray(scale, np.float32))
        z = self.const(np.broadcast_to(np.asarray(zp), np.shape(scale)).astype(NP[dtype]))
        return self.node("DequantizeLinear", [self.const(values.astype(NP[dtype])), s, z], axis=axis)

    def model(self, out: str, x_shape: list[int]) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                                  [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset), helper.make_opsetid(MS, 1)])
        model.ir_version = 8
        return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, onnx.ModelProto]:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x})[0]
    normalized, _, module = convert(model)
    with torch.no_grad():
        got = module(torch.from_numpy(x))
    return got.numpy(), want, normalized


def _conv_group(b: Builder, x: str, relu: bool, per_channel: bool, rng: np.random.Generator) -> str:
    w = rng.integers(-60, 61, (8, 4, 3, 3))
    w_scale = rng.uniform(0.005, 0.02, 8).astype(np.float32) if per_channel else np.float32(0.01)
    bias_scale = np.float32(4 / 255) * w_scale
    bias = b.node("DequantizeLinear", [b.const(rng.integers(-500, 500, 8).astype(np.int32)), b.const(np.asarray(bias_scale, np.float32)),
                                       b.const(np.zeros(np.shape(bias_scale), np.int32))], axis=0)
    y = b.node("Conv", [x, b.weight(w, w_scale), bias], pads=[1, 1, 1, 1], strides=[2, 1])
    return b.node("Relu", [y]) if relu else y


def _groups() -> dict[str, tuple[callable, list[int], str]]:
    """name -> (build(builder, dequantized x, rng) -> float output before the last QDQ, x shape, fused op)."""
    def conv(relu, per_channel):  # noqa: ANN001, ANN202
        return lambda b, x, rng: _conv_group(b, x, relu, per_channel, rng)

    def unary(op, **attrs):  # noqa: ANN001, ANN003, ANN202
        return lambda b, x, rng: b.node(op, [x], **attrs)

    def binary(op):  # noqa: ANN001, ANN202
        return lambda b, x, rng: b.node(op, [x, b.qdq(b.node("Sigmoid", ["x"]), 1 / 255, 0)])

    def matmul(b, x, rng):  # noqa: ANN001, ANN202
        return b.node("MatMul", [x, b.weight(rng.integers(-60, 61, (8, 6)), rng.uniform(0.005, 0.02, 6), axis=1)])

    def gemm(b, x, rng):  # noqa: ANN001, ANN202
        w = b.weight(rng.integers(-60, 61, (6, 8)), rng.uniform(0.005, 0.02, 6), axis=0)
        bias = b.node("DequantizeLinear", [b.const(rng.integers(-500, 500, 6).astype(np.int32)), b.const(np.float32(4 / 255 * 0.01)),
                                           b.const(np.int32(0))])
        return b.node("Gemm", [x, w, bias], transB=1)

    def concat(b, x, rng):  # noqa: ANN001, ANN202
        return b.node("Concat", [x, b.qdq(b.node("Tanh", ["x"]), 2 / 255, 128 if b.act == U8 else 0)], axis=1)

    return {
        "Conv": (conv(False, False), [2, 4, 9, 9], "QLinearConv"),
        "Conv+Relu per-channel": (conv(True, True), [2, 4, 9, 9], "QLinearConv"),
        "MatMul per-column": (matmul, [3, 5, 8], "QLinearMatMul"),
        "Gemm": (gemm, [5, 8], "QGemm"),
        "Add": (binary("Add"), [2, 3, 4, 5], "QLinearAdd"),
        "Mul": (binary("Mul"), [2, 3, 4, 5], "QLinearMul"),
        "Concat": (concat, [2, 3, 4, 5], "QLinearConcat"),
        "GlobalAveragePool": (unary("GlobalAveragePool"), [2, 3, 5, 6], "QLinearGlobalAveragePool"),
        "AveragePool": (unary("AveragePool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), [2, 3, 7, 8], "QLinearAveragePool"),
        "Sigmoid": (unary("Sigmoid"), [2, 3, 4, 5], "QLinearSigmoid"),
        "LeakyRelu": (unary("LeakyRelu", alpha=0.2), [2, 3, 4, 5], "QLinearLeakyRelu"),
        "Softmax": (unary("Softmax", axis=-1), [2, 3, 7], "QLinearSoftmax"),
    }


@pytest.mark.parametrize("act", [U8, I8], ids=["uint8", "int8"])
@pytest.mark.parametrize("name", list(_groups()))
def test_single_group_fuses_as_onnxruntime_and_matches_bit_for_bit(name, act):
    build, shape, fused_op = _groups()[name]
    rng = np.random.default_rng(0)
    b = Builder(act)
    zp = 128 if act == U8 else 0
    out = build(b, b.qdq("x", 4 / 255, zp), rng)
    relu = name.endswith("per-channel")
    y = b.qdq(out, 6 / 255, 0 if relu and act == U8 else -128 if relu else zp)
    model = b.model(y, shape)
    x = rng.standard_normal(shape).astype(np.float32)
    got, want, normalized = _run(model, x)
    ops = {n.op_type for n in normalized.graph.node}
    assert (fused_op in ops) == (fused_op in set(onnxruntime_fusions(model).values())), ops
    assert fused_op in ops  # every pair has one consumer: onnxruntime re-encodes int8 pairs as uint8 and fuses
    np.testing.assert_array_equal(got, want)


def test_groups_onnxruntime_leaves_in_float_stay_float():
    """int8 activations whose Q feeds two DQs (no s8->u8 re-encoding on x86) and a per-channel
    activation quantization are not fused, by onnxruntime nor here."""
    rng = np.random.default_rng(1)
    b = Builder(I8)
    shared = b.node("QuantizeLinear", ["x", b.const(np.float32(4 / 255)), b.const(np.int8(0))])
    left = b.node("DequantizeLinear", [shared, "c1", "c2"])
    right = b.node("DequantizeLinear", [shared, "c1", "c2"])
    conv = _conv_group(b, left, False, False, rng)
    pooled = b.node("Add", [b.qdq(conv, 8 / 255, 0), b.node("Conv", [right, b.weight(rng.integers(-60, 61, (8, 4, 3, 3)), 0.01)],
                                                               pads=[1, 1, 1, 1], strides=[2, 1])])
    model = b.model(b.qdq(pooled, 8 / 255, 0), [1, 4, 9, 9])
    x = rng.standard_normal((1, 4, 9, 9)).astype(np.float32)
    got, want, normalized = _run(model, x)
    assert onnxruntime_fusions(model) == {}
    assert not {n.op_type for n in normalized.graph.node} & {"QLinearConv", "QLinearAdd"}
    assert np.abs(got - want).max() <= 8 / 255 + 1e-6  # float simulation: at most one output step


def _reader(name: str, batches: list[np.ndarray]):  # noqa: ANN202
    return calibration_reader([{name: batch} for batch in batches])


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    from PIL import Image

    return np.concatenate([np.asarray(Image.open(ROOT / "examples" / f"digit_{i}.png").convert("L"), np.float32)[None, None] / 255
                           for i in range(10)])


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_qdq_lenet_is_bit_exact_and_explains_like_float32(per_channel, digits, tmp_path):
    from onnxruntime.quantization import QuantFormat, quantize_static

    import onnxxai

    source = ROOT / "models" / "lenet5_mnist.onnx"
    name = onnx.load(source).graph.input[0].name
    rng = np.random.default_rng(0)
    batches = [digits[i:i + 1] for i in range(10)] + [rng.uniform(0, 1, (1, 1, 28, 28)).astype(np.float32) for _ in range(2)]
    path = tmp_path / "lenet_qdq.onnx"
    quantize_static(source, path, _reader(name, batches), quant_format=QuantFormat.QDQ, per_channel=per_channel)
    model = onnxxai.load(path)
    assert {n.op_type for n in model.onnx_model.graph.node} >= {"QLinearConv", "QGemm"}  # the converted graph
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = session.run(None, {name: digits})[0]
    np.testing.assert_array_equal(model(digits), want)
    reference = onnxxai.load(source)
    classes = reference(digits).argmax(1)
    assert (want.argmax(1) == classes).all()
    float_ig = onnxxai.analyze(digits, onnxxai.IntegratedGradients(reference, n=32), classes).val.reshape(10, -1)
    ig = onnxxai.analyze(digits, onnxxai.IntegratedGradients(model, n=32), classes).val.reshape(10, -1)
    cosine = (ig * float_ig).sum(1) / np.linalg.norm(ig, axis=1) / np.linalg.norm(float_ig, axis=1)
    assert cosine.min() >= 0.95, cosine  # measured 0.983-0.997


@pytest.fixture(scope="module")
def resnet18() -> bytes:
    """torchvision's ResNet-18 with seeded random weights and batch-norm statistics (so each folded
    conv has its own bias), exported by TorchScript at opset 17 for a 64x64 input."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    buffer = io.BytesIO()
    torch.onnx.export(net, torch.randn(1, 3, 64, 64), buffer, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"])
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["uint8 per-tensor", "uint8 per-channel reduce_range", "int8 per-tensor"])
def test_qdq_resnet18_matches_onnxruntime(kind, resnet18, tmp_path):
    """uint8 activations: every group fuses, bit-exact. int8 activations: onnxruntime fuses 11 of 30
    groups on x86 and runs the rest in float; the fused set is the same here, and the output stays
    within three output steps (MLAS's float convolutions sum in another order than torch's)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    source = tmp_path / "resnet18.onnx"
    source.write_bytes(resnet18)
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((1, 3, 64, 64)).astype(np.float32) for _ in range(3)]
    options = {"uint8 per-tensor": dict(activation_type=QuantType.QUInt8),
               "uint8 per-channel reduce_range": dict(activation_type=QuantType.QUInt8, per_channel=True, reduce_range=True),
               "int8 per-tensor": {}}[kind]
    path = tmp_path / "resnet18_qdq.onnx"
    quantize_static(source, path, _reader("x", batches), quant_format=QuantFormat.QDQ, **options)
    model = onnx.load(path)
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    got, want, normalized = _run(model, x)
    fused = {n.name for n in normalized.graph.node if n.op_type.startswith("QLinear") or n.op_type == "QGemm"}
    assert fused == set(onnxruntime_fusions(model))
    if kind.startswith("uint8"):
        assert len(fused) == 30
        np.testing.assert_array_equal(got, want)
    else:
        step = float(numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == next(
            n for n in model.graph.node if n.output[0] == "y").input[1])))
        assert np.abs(got - want).max() <= 3 * step + 1e-6


@pytest.mark.parametrize("domain", [MS, ""], ids=["com.microsoft Q/DQ", "opset 21"])
def test_sixteen_bit_qdq_is_not_fused_and_runs_in_float(domain):
    """onnxruntime writes 16-bit QDQ with its com.microsoft Q/DQ (UseQDQContribOps) or at opset 21; it
    fuses none of it, so the groups stay float simulations (within one output step here)."""
    rng = np.random.default_rng(2)
    b = Builder(TensorProto.UINT16, opset=17 if domain else 21)
    x = b.qdq("x", 8 / 65535, 32768, domain=domain)
    w = b.node("DequantizeLinear", [b.const(rng.integers(-60, 61, (8, 4, 3, 3)).astype(np.int8)), b.const(np.float32(0.01)),
                                    b.const(np.int8(0))], domain=domain)
    y = b.qdq(b.node("Conv", [x, w], pads=[1, 1, 1, 1]), 16 / 65535, 32768, domain=domain)
    model = b.model(y, [1, 4, 9, 9])
    xv = rng.standard_normal((1, 4, 9, 9)).astype(np.float32)
    got, want, normalized = _run(model, xv)
    assert onnxruntime_fusions(model) == {}
    assert "Conv" in {n.op_type for n in normalized.graph.node}
    assert np.abs(got - want).max() <= 16 / 65535 + 1e-7


def test_fused_group_gradient_is_the_float_simulations(monkeypatch):
    """The straight-through gradient of the fused integer group follows that of the float simulation
    (QuantizeLinear's straight-through estimator around a float Conv)."""
    import onnxxai.proto.normalize as normalize

    rng = np.random.default_rng(3)
    b = Builder(U8)
    model = b.model(b.qdq(_conv_group(b, b.qdq("x", 4 / 255, 128), True, True, rng), 6 / 255, 0), [2, 4, 9, 9])
    x = torch.from_numpy(rng.standard_normal((2, 4, 9, 9)).astype(np.float32))

    def gradient() -> torch.Tensor:
        normalized, _, module = convert(model)
        xg = x.clone().requires_grad_(True)
        module(xg).sum().backward()
        return xg.grad.flatten(), {n.op_type for n in normalized.graph.node}

    fused, fused_ops = gradient()
    monkeypatch.setattr(normalize, "PASSES", [p for p in normalize.PASSES if p[0] != "fuse_qdq_groups"])
    simulated, simulated_ops = gradient()
    assert "QLinearConv" in fused_ops and "QLinearConv" not in simulated_ops
    assert fused.abs().sum() > 0
    assert torch.nn.functional.cosine_similarity(fused, simulated, dim=0) > 0.99


def test_parity_tolerance_of_a_quantized_graph_is_two_output_steps(tmp_path):
    """The derived tolerance of a graph whose output is dequantized: atol = 2 steps of the output's
    scale (read through a Flatten), the rule says so; a tolerance given to load wins and is said."""
    from onnxxai import load
    from onnxxai.parity import QUANT_STEPS, parity_tolerance
    from onnxxai.proto.qdq import output_steps

    rng = np.random.default_rng(5)
    b = Builder()
    y = b.qdq(_conv_group(b, b.qdq("x", 4 / 255, 128), False, True, rng), 0.037, 128)
    model = b.model(b.node("Flatten", [y]), [2, 4, 9, 9])
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info(model.graph.output[0].name, TensorProto.FLOAT, [2, 360]))
    assert output_steps(model) == {model.graph.output[0].name: pytest.approx(0.037)}
    tol = parity_tolerance(model)
    assert tol.atol == pytest.approx(QUANT_STEPS * 0.037) and tol.rtol == 1e-4
    assert tol.rule.startswith("quantized output: atol=2*step=0.074"), tol.rule
    path = tmp_path / "q.onnx"
    onnx.save(model, path)
    loaded = load(path)
    assert loaded.parity.ok and loaded.parity.tolerance_rule == tol.rule and loaded.parity.atol == tol.atol
    given = load(path, atol=1e-3)
    assert given.parity.atol == 1e-3 and given.parity.tolerance_rule.startswith("user: atol=0.001 (derived would be quantized output")
    # a float graph has no output step; a float output computed after the last dequantization neither
    assert output_steps(b.model(b.node("Softmax", [y]), [2, 4, 9, 9])) == {}
    assert parity_tolerance(b.model(b.node("Softmax", [y]), [2, 4, 9, 9])).atol == 1e-6


@pytest.mark.parametrize("flags, vnni", [("fpu sse avx2 avx512bw avx512_vnni amx_int8", "yes"), ("fpu sse avx2", "no")])
def test_parity_report_records_the_integer_instruction_set(tmp_path, flags, vnni):
    from onnxxai.parity import compare_outputs
    from onnxxai.proto.cpu import integer_isa

    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    line = integer_isa(str(info))
    assert line.endswith(f"(VNNI: {vnni})") and "AVX2" in line and ("AVX512-VNNI" in line) == (vnni == "yes")
    assert integer_isa(str(tmp_path / "missing")).endswith("unknown (no " + str(tmp_path / "missing") + ")")
    report = compare_outputs(["y"], [np.zeros(2, np.float32)], [np.zeros(2, np.float32)], artifact="int8 static QDQ")
    assert report.cpu == integer_isa() and f"CPU {integer_isa()}" in report.summary() and report.to_dict()["cpu"] == integer_isa()


def test_split_verifies_with_the_models_derived_tolerance():
    """graph.split checks head(features(x)) against the model with the model's own derived tolerance
    (float16 here: onnxruntime no longer fuses across the cut), and a tolerance given wins."""
    from onnxxai.graph.split import split, verify_split
    from onnxxai.parity import parity_tolerance

    rng = np.random.default_rng(6)
    h = TensorProto.FLOAT16
    w1, w2 = (numpy_helper.from_array(rng.standard_normal(s).astype(np.float16) * 0.3, n) for n, s in (("w1", (6, 3, 3, 3)), ("w2", (4, 6, 3, 3))))
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "half", [helper.make_tensor_value_info("x", h, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", h, [1, 4, 8, 8])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    features, head, name = split(model, "r1")
    report = verify_split(model, features, head)
    assert report.ok and report.tolerance_rule == parity_tolerance(model).rule and report.tolerance_rule.startswith("float16 compute")
    assert verify_split(model, features, head, rtol=0.5).tolerance_rule.startswith("user: rtol=0.5")
