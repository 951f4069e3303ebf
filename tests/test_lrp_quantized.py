"""LRP on int8 files (onnxruntime's quantize_static, QDQ and QOperator): a quantized linear layer is,
for relevance, the float layer with the dequantized weights on the dequantized activations. Checked
against Zennit on a torch twin built from the int8 file's dequantized weights whose activations are
pinned to the int8 file's own dequantized activations, against conservation on a bias-free CNN
(residual QLinearAdd, QLinearConcat, quantized average pooling), and through deployment shift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import onnxxai
from onnxxai import metrics
from onnxxai.analyzers.lrp import LRP, Composite, Epsilon, EpsilonPlusFlat, LRPModelError, base_rules
from onnxxai.preprocess import image_spec, load_images
from conftest import BiasFreeNet
from onnxxai.testing import export, make_deployment_variant

from zennit.attribution import Gradient as ZennitGradient  # noqa: E402
from zennit.composites import EpsilonPlusFlat as ZennitEpsilonPlusFlat  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "models" / "lenet5_mnist.onnx"


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    model = onnxxai.load_runtime(LENET)
    return load_images([ROOT / "examples" / f"digit_{d}.png" for d in range(10)], image_spec(model.input_spec()))


@pytest.fixture(scope="module")
def lenet_files(tmp_path_factory, digits) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("int8")
    calibration = [{"image": digits[i:i + 1]} for i in range(len(digits))]
    return {kind: make_deployment_variant(LENET, kind, folder, calibration) for kind in ("int8 QDQ", "int8 QOperator")}


@pytest.fixture(scope="module")
def lenet_float():
    return onnxxai.load(LENET)


@pytest.fixture(scope="module")
def lenet_qdq(lenet_files):
    return onnxxai.load(lenet_files["int8 QDQ"])


def _nonconstant(v: np.ndarray) -> bool:
    flat = v.reshape(len(v), -1)
    return bool((flat.max(1) > flat.min(1)).all())


@pytest.mark.parametrize("kind", ["int8 QDQ", "int8 QOperator"])
def test_lrp_runs_on_int8_lenet(lenet_files, lenet_float, digits, kind):
    model = onnxxai.load(lenet_files[kind])
    ops = {n.op_type for n in model.onnx_model.graph.node}
    assert {"QLinearConv", "QGemm"} <= ops  # the integer ops onnxruntime runs (QDQ groups fused at load)
    index = np.asarray(lenet_float(digits)).argmax(1)
    e = LRP(model)(digits, index)
    v = np.asarray(e.val)
    assert v.shape == digits.shape and np.isfinite(v).all() and _nonconstant(v)
    rules = {name: rule for name, rule in e.extras["rules"].items()}
    convs = [n.name for n in model.onnx_model.graph.node if n.op_type == "QLinearConv"]
    assert rules[convs[0]].startswith("Flat(") and rules[convs[1]].startswith("ZPlus(")  # Conv's rules by position
    assert all(r.startswith("Pass(") for n, r in rules.items() if "QuantizeLinear" in n or "DequantizeLinear" in n)


# -- Zennit on the twin of the int8 file -------------------------------------------------------------
class Pin(torch.nn.Module):
    """Takes the recorded values in forward and passes the gradient unchanged (no Zennit rule)."""

    def __init__(self, values: torch.Tensor) -> None:
        super().__init__()
        self.values = values

    def forward(self, x):
        return x + (self.values - x).detach()


def _dequantized(model: onnx.ModelProto, name: str) -> np.ndarray:
    """The float32 values of the DequantizeLinear of initializer ``name`` (per tensor or per axis)."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == name)
    q, scale = inits[dq.input[0]], inits[dq.input[1]].astype(np.float32)
    zp = inits[dq.input[2]].astype(np.float32) if len(dq.input) > 2 and dq.input[2] else np.zeros((), np.float32)
    if scale.size > 1:  # per output channel (axis 0)
        scale, zp = scale.reshape(-1, *[1] * (q.ndim - 1)), zp.reshape(-1, *[1] * (q.ndim - 1))
    return (q.astype(np.float32) - zp) * scale


def _recorded(model, x: np.ndarray) -> list[torch.Tensor]:
    """The int8 graph's dequantized activations: the first linear layer's input, then each quantized
    linear layer's output (recorded by an fx interpreter over the loaded model; parity with
    onnxruntime was verified at load)."""
    found: list[torch.Tensor] = []

    class Recorder(torch.fx.Interpreter):
        def call_module(self, target, args, kwargs):
            out = super().call_module(target, args, kwargs)
            inner = getattr(self.module.get_submodule(target), "module", None)
            name = type(inner).__name__
            if name in ("QLinearConv", "QGemm"):
                if not found:
                    found.append((args[0].float() - args[2].float()) * args[1].float())
                ys, yz = (args[6], args[7]) if name == "QLinearConv" else (args[7], args[8])
                found.append((out.float() - yz.float()) * ys.float())
            return out

    with torch.no_grad():
        Recorder(model.torch_module).run(torch.from_numpy(x))
    return found


def _twin(qdq: onnx.ModelProto, pins: list[torch.Tensor]) -> torch.nn.Sequential:
    """LeNet's layers with the int8 file's dequantized weights and biases, each linear layer's input
    and output pinned to the int8 activations (ReLU kept: onnxruntime's quantizer folds it into the
    requantization's range)."""
    layers: list[torch.nn.Module] = [Pin(pins[0])]
    pin = iter(pins[1:])
    linear = [n for n in qdq.graph.node if n.op_type in ("Conv", "Gemm", "MaxPool", "Flatten")]
    for k, node in enumerate(linear):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "MaxPool":
            layers.append(torch.nn.MaxPool2d(list(attrs["kernel_shape"]), list(attrs.get("strides", attrs["kernel_shape"]))))
            continue
        if node.op_type == "Flatten":
            layers.append(torch.nn.Flatten())
            continue
        w, b = torch.from_numpy(_dequantized(qdq, node.input[1])), torch.from_numpy(_dequantized(qdq, node.input[2]))
        if node.op_type == "Conv":
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            assert pads[:2] == pads[2:]
            layer = torch.nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), stride=tuple(attrs.get("strides", [1, 1])),
                                    padding=tuple(pads[:2]))
        else:
            assert attrs.get("transB") == 1
            layer = torch.nn.Linear(w.shape[1], w.shape[0])
        layer.weight.data, layer.bias.data = w, b
        last = all(n.op_type not in ("Conv", "Gemm") for n in linear[k + 1:])
        layers += [layer] + ([] if last else [torch.nn.ReLU()]) + [Pin(next(pin))]
    net = torch.nn.Sequential(*layers).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def test_int8_lrp_equals_zennit_on_the_dequantized_twin(lenet_files, lenet_qdq, digits):
    """Same rules, same dequantized weights, same (int8) activations: Zennit's EpsilonPlusFlat on the
    twin and onnxxai's on the int8 file agree to float32 rounding."""
    x = digits
    pins = _recorded(lenet_qdq, x)
    qdq = onnx.load(str(lenet_files["int8 QDQ"]))
    net = _twin(qdq, pins)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        out = net(xt)
    np.testing.assert_array_equal(out.numpy(), np.asarray(lenet_qdq.runtime(x)))  # the twin runs the int8 file's values
    index = out.argmax(1)
    start = torch.zeros_like(out)
    start[torch.arange(len(x)), index] = out[torch.arange(len(x)), index]
    with ZennitGradient(model=net, composite=ZennitEpsilonPlusFlat()) as attributor:
        _, want = attributor(xt.clone(), start)
    got = torch.as_tensor(np.asarray(LRP(lenet_qdq, EpsilonPlusFlat())(x, index.numpy()).val))
    err = float((got - want).norm() / want.norm())
    assert err < 1e-4, err
    # and the float twin without the pins (activations not rounded) differs by the rounding, not by a bug
    free = torch.nn.Sequential(*[m for m in net if not isinstance(m, Pin)])
    with ZennitGradient(model=free, composite=ZennitEpsilonPlusFlat()) as attributor:
        _, unpinned = attributor(xt.clone(), start)
    assert 1e-4 < float((unpinned - want).norm() / want.norm()) < 0.2


# -- conservation on a quantized residual CNN --------------------------------------------------------
@pytest.fixture(scope="module")
def bias_free_files(tmp_path_factory):
    torch.manual_seed(0)
    net = BiasFreeNet().eval()
    folder = tmp_path_factory.mktemp("biasfree")
    path = export(net, torch.randn(1, 3, 8, 8), folder / "biasfree.onnx")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 8, 8)).astype(np.float32)
    calibration = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(16)]
    return {kind: make_deployment_variant(path, kind, folder, calibration) for kind in ("int8 QDQ", "int8 QOperator")}, x


#: what each file holds once loaded: onnxruntime fuses this file's QDQ Conv/Add/Concat groups into no
#: integer op (int8 activations with int8 weights on x86), so they stay float ops between DQ and Q
HOLDS = {"int8 QDQ": {"Conv", "Add", "Concat", "QLinearAveragePool", "QLinearMatMul", "QuantizeLinear", "DequantizeLinear"},
         "int8 QOperator": {"QLinearConv", "QLinearAdd", "QLinearConcat", "QLinearAveragePool", "QLinearMatMul"}}


@pytest.mark.parametrize("kind", ["int8 QDQ", "int8 QOperator"])
def test_epsilon_conserves_relevance_through_quantized_residual_concat_and_pooling(bias_free_files, kind):
    files, x = bias_free_files
    model = onnxxai.load(files[kind])
    ops = {n.op_type for n in model.onnx_model.graph.node}
    assert HOLDS[kind] <= ops, ops
    e = LRP(model, Composite({**base_rules(), **{op: Epsilon(1e-9) for op in ("Conv", "Gemm", "MatMul")}}))(x)
    # no biases, ε → 0: every layer conserves, so the input's relevance sums to the explained int8 logit
    np.testing.assert_allclose(np.asarray(e.extras["relevance_sum"]), np.asarray(e.extras["score"]), rtol=1e-4)
    assert _nonconstant(np.asarray(e.val))


# -- deployment shift ----------------------------------------------------------------------------------
def test_deployment_shift_compares_lrp_of_the_float_and_int8_files(lenet_float, lenet_qdq, digits):
    shift = metrics.deployment_shift(lenet_qdq, lenet_float, digits, ["lrp"])
    assert "lrp" not in shift.errors, shift.errors
    sims = shift.similarity["lrp"]
    print(f"lrp deployment shift (10 digits): spearman {sims['spearman'].value:.3f}, ssim {sims['ssim'].value:.3f}")
    assert sims["spearman"].value > 0.9 and sims["ssim"].value > 0.5
    assert not sims["spearman"].details["constant_maps"]["model"]


def test_dynamic_quantization_is_refused_naming_the_node(tmp_path, digits):
    path = make_deployment_variant(LENET, "int8 dynamic", tmp_path, [])
    with pytest.raises(LRPModelError, match=r"DynamicQuantizeLinear\): dynamic quantization") as info:
        LRP(onnxxai.load(path))
    assert all(p.op_type not in ("QuantizeLinear", "DequantizeLinear") for p in info.value.problems)
