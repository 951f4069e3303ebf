"""GradCAM on int8 files made by onnxruntime's quantization tools (QDQ, QOperator, dynamic): the default
boundary is the counterpart of the float32 file's, a quantized boundary is read dequantized with the
straight-through gradient (checked against GradCAM computed by hand with a forward hook on the converted
module, and against the float DequantizeLinear output of the same tensor), and LeNet's int8 GradCAM
follows its float32 GradCAM (also through metrics.deployment_shift)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import onnxxai
from conftest import ReluCNN
from onnxxai import graph, metrics
from onnxxai.analyzers.gradcam import GradCAM
from onnxxai.errors import BoundaryError
from onnxxai.graph.surgery import tensor_source
from onnxxai.preprocess import image_spec, load_images
from onnxxai.proto.specs import probe_feeds
from onnxxai.testing import export, make_deployment_variant

import onnxruntime.quantization  # noqa: F401 - the int8 files are made with its tools

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "models" / "lenet5_mnist.onnx"
KINDS = ("int8 QDQ", "int8 QOperator", "int8 dynamic")
#: LeNet's float32 default boundary is /features/features.5/MaxPool_output_0; its int8 counterparts
LENET_DEFAULTS = {
    "int8 QDQ": "/features/features.5/MaxPool_output_0_DequantizeLinear_Output",
    "int8 QOperator": "/features/features.5/MaxPool_output_0_quantized",
    "int8 dynamic": "/features/features.5/MaxPool_output_0",
}
#: the small CNN's float32 default is /Relu_1_output_0 (its second convolution stage)
CNN_DEFAULTS = {
    "int8 QDQ": "/Relu_1_output_0_DequantizeLinear_Output",
    "int8 QOperator": "/c2/Conv_output_0_quantized",
    "int8 dynamic": "/Relu_1_output_0",
}


@pytest.fixture(scope="module")
def lenet(tmp_path_factory) -> tuple[np.ndarray, dict[str, Path]]:
    """The ten example digits and LeNet's int8 files calibrated on them."""
    x = load_images([ROOT / "examples" / f"digit_{d}.png" for d in range(10)],
                    image_spec(onnxxai.load_runtime(LENET).input_spec()))
    folder = tmp_path_factory.mktemp("lenet_int8")
    return x, {k: make_deployment_variant(LENET, k, folder, [{"image": x[i:i + 1]} for i in range(len(x))]) for k in KINDS}


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> tuple[np.ndarray, dict[str, Path]]:
    """Seeded inputs and the int8 files of a small two-convolution CNN calibrated on them (the float32
    file under key "float32")."""
    folder = tmp_path_factory.mktemp("cnn_int8")
    torch.manual_seed(0)
    path = export(ReluCNN(), torch.randn(1, 3, 16, 16), folder / "cnn.onnx")
    specs = onnxxai.load_runtime(path).inputs
    calibration = [probe_feeds(specs, seed=100 + i, batch=1) for i in range(4)]
    # explained on the calibration inputs: outside the calibrated range the int8 logits saturate, and a
    # saturated output has a zero straight-through gradient (a constant map, rightly)
    x = np.concatenate([c["x"] for c in calibration])
    return x, {"float32": path, **{k: make_deployment_variant(path, k, folder, calibration) for k in KINDS}}


def _reading(model: onnxxai.Model, tensor: str) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point of a quantized tensor, read off the graph by hand: the y_scale / y_zero_point
    inputs of the QLinearConv or QuantizeLinear that wrote it (through MaxPool / Flatten)."""
    nodes = {o: n for n in model.onnx_model.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in model.onnx_model.graph.initializer}
    node = nodes[tensor]
    while node.op_type in ("MaxPool", "Flatten"):
        node = nodes[node.input[0]]
    s, z = {"QLinearConv": (6, 7), "QuantizeLinear": (1, 2)}[node.op_type]
    return inits[node.input[s]], inits[node.input[z]]


def hooked_gradcam(model: onnxxai.Model, tensor: str, x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """GradCAM by hand at quantized ``tensor``: a forward hook on the converted module that computes it
    swaps its integers q for a straight-through requantization of A = scale * (q - zero_point) (same
    values, gradient 1/scale), so autograd gives d(logit)/dA; the map is ReLU(sum_c mean(dA) * A)."""
    scale, zp = (torch.as_tensor(v.astype(np.float64)) for v in _reading(model, tensor))
    module = dict(model.torch_module.named_modules())[tensor_source(model.onnx_model, tensor).module]
    store = {}

    def hook(_module, _args, q):
        a = ((q.detach().double() - zp) * scale).requires_grad_(True)
        store["a"] = a
        back = a / scale + zp
        return (back + (q.double() - back).detach()).to(q.dtype)

    handle = module.register_forward_hook(hook)
    try:
        out = model.torch_module(torch.as_tensor(x))
    finally:
        handle.remove()
    assert not module._forward_hooks
    picked = out.gather(1, torch.as_tensor(target).long().view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(picked, store["a"])
    a = store["a"].detach()
    return torch.relu((grad.mean(dim=(2, 3), keepdim=True) * a).sum(1)).numpy()


def _check_maps(expl, n: int) -> None:
    cam = np.asarray(expl.extras["cam"])
    assert cam.shape[0] == n and np.isfinite(cam).all() and np.isfinite(np.asarray(expl.val)).all()
    assert all(np.ptp(c) > 0 for c in cam), "a constant GradCAM map"


@pytest.mark.parametrize("kind", KINDS)
def test_lenet_int8_default_boundary_is_the_float_ones_counterpart(lenet, kind):
    x, files = lenet
    model = onnxxai.load(files[kind])
    analyzer = GradCAM(model)
    assert analyzer.boundary == LENET_DEFAULTS[kind]
    assert GradCAM(onnxxai.load(LENET)).boundary == "/features/features.5/MaxPool_output_0"
    expl = onnxxai.analyze(x, analyzer)
    _check_maps(expl, len(x))
    assert (expl.extras["quantization"] is not None) == (kind == "int8 QOperator")


@pytest.mark.parametrize("kind", KINDS)
def test_small_cnn_int8_default_boundary(cnn, kind):
    x, files = cnn
    assert GradCAM(onnxxai.load(files["float32"])).boundary == "/Relu_1_output_0"
    analyzer = GradCAM(onnxxai.load(files[kind]))
    assert analyzer.boundary == CNN_DEFAULTS[kind]
    _check_maps(onnxxai.analyze(x, analyzer), len(x))


@pytest.mark.parametrize("which, kind, boundary", [
    ("lenet", "int8 QOperator", None),  # the default: a MaxPool of a QLinearConv's int8 output
    ("lenet", "int8 QOperator", "/features/features.3/Conv_output_0_quantized"),
    ("lenet", "int8 QDQ", "/features/features.4/Relu_output_0_QuantizeLinear_Output"),  # fused QLinearConv output
    ("cnn", "int8 QOperator", None),
    ("cnn", "int8 QDQ", "/Relu_1_output_0_QuantizeLinear_Output"),
])
def test_quantized_boundary_matches_gradcam_by_hand(lenet, cnn, which, kind, boundary):
    x, files = {"lenet": lenet, "cnn": cnn}[which]
    model = onnxxai.load(files[kind])
    analyzer = GradCAM(model, boundary)
    expl = onnxxai.analyze(x, analyzer)
    assert expl.extras["quantization"] is not None, analyzer.boundary
    cam = np.asarray(expl.extras["cam"])
    reference = hooked_gradcam(model, analyzer.boundary, x, np.asarray(expl.output_selection))
    assert reference.max() > 0
    np.testing.assert_allclose(cam, reference, rtol=1e-5, atol=1e-5 * reference.max())


def test_quantized_reading_equals_the_files_dequantize_linear(lenet):
    """The same activation twice: the QLinearConv's uint8 output (dequantized by GradCAM) and the float
    output of the DequantizeLinear the QDQ file reads it with (a float boundary, no dequantizing)."""
    x, files = lenet
    model = onnxxai.load(files["int8 QDQ"])
    q = onnxxai.analyze(x, GradCAM(model, "/features/features.4/Relu_output_0_QuantizeLinear_Output"))
    f = onnxxai.analyze(x, GradCAM(model, "/features/features.4/Relu_output_0_DequantizeLinear_Output"))
    assert f.extras["quantization"] is None
    np.testing.assert_allclose(np.asarray(q.extras["cam"]), np.asarray(f.extras["cam"]), rtol=1e-5,
                               atol=1e-6 * float(np.asarray(f.extras["cam"]).max()))


def test_split_graphs_at_a_quantized_boundary(lenet):
    """one_pass=False converts the features and head graphs (uint8 between them; onnxruntime checks the
    split of the normalized graph, com.microsoft ops included) and gives the one-pass maps."""
    x, files = lenet
    model = onnxxai.load(files["int8 QOperator"])
    one = onnxxai.analyze(x, GradCAM(model))
    two = onnxxai.analyze(x, GradCAM(model, one_pass=False))
    assert not two.extras["one_pass"]
    np.testing.assert_allclose(np.asarray(two.val), np.asarray(one.val), rtol=1e-6, atol=1e-7)


def test_lenet_int8_gradcam_follows_float32(lenet):
    x, files = lenet
    reference = onnxxai.load(LENET)
    base = onnxxai.analyze(x, GradCAM(reference))
    for kind in KINDS:
        model = onnxxai.load(files[kind])
        expl = onnxxai.analyze(x, GradCAM(model), np.asarray(base.output_selection))
        sims = metrics.compare(np.asarray(expl.val), np.asarray(base.val), ("spearman", "ssim"))
        assert sims["spearman"].mean() > 0.95 and sims["ssim"].mean() > 0.95, (kind, sims)
    shift = metrics.deployment_shift(onnxxai.load(files["int8 QDQ"]), reference, x, ["gradcam"])
    assert shift.errors == {}
    assert shift.similarity["gradcam"]["spearman"].value > 0.95
    assert shift.similarity["gradcam"]["ssim"].value > 0.95


def test_dynamic_quantized_input_is_no_cut(lenet):
    """In a dynamic int8 file the run-time scale of DynamicQuantizeLinear also carries the input: its
    uint8 output is bypassed, and the error says by which path."""
    _, files = lenet
    model = onnxxai.load(files["int8 dynamic"])
    with pytest.raises(BoundaryError, match=r"not a cut.*bypass.*_scale"):
        GradCAM(model, "/features/features.2/MaxPool_output_0_quantized")


def test_integer_cut_without_a_constant_reading(tmp_path):
    """A quantized tensor whose scale is not a constant (here a second graph input) has no float reading:
    it is never the default, and naming it says why; the float tensors around it still work."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((3, 64)).astype(np.float32), "fc"),
             numpy_helper.from_array(np.array(0, np.uint8), "zp")]
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "s", "zp"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["d"]),
        helper.make_node("Conv", ["d", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["h"]),
        helper.make_node("Flatten", ["h"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc"], ["y"], transB=1),
    ]
    proto = helper.make_model(helper.make_graph(
        nodes, "input_scale", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4]),
                               helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits), opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "input_scale.onnx"
    onnx.save(proto, path)
    scale = np.array(0.05, np.float32)
    model = onnxxai.load(path, probe_inputs={"x": rng.random((2, 1, 4, 4), np.float32), "s": scale})
    flow = graph.DataFlow(model.onnx_model, "x")
    assert "q" in flow.quantized and flow.quantized["q"] is None
    options = {"input_name": "x", "fixed_inputs": {"s": scale}}
    assert GradCAM(model, **options).boundary == "h"
    with pytest.raises(BoundaryError, match=r"'q'.*no constant per-tensor or per-axis scale and zero point"):
        GradCAM(model, "q", **options)


def test_a_per_tensor_reading_stored_as_one_element_vectors(tmp_path):
    """Scale and zero point stored with shape [1] (per tensor, as some exporters write them): GradCAM at the
    QuantizeLinear output reads them as scalars (it raised numpy's TypeError describing the reading) and
    gives the map of the DequantizeLinear output of the same activation."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((3, 64)).astype(np.float32), "fc"),
             numpy_helper.from_array(np.array([0.05], np.float32), "s"),
             numpy_helper.from_array(np.array([3], np.uint8), "zp")]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "s", "zp"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["d"]),
        helper.make_node("Flatten", ["d"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc"], ["y"], transB=1),
    ]
    proto = helper.make_model(helper.make_graph(
        nodes, "vector_reading", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits), opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "vector_reading.onnx"
    onnx.save(proto, path)
    model = onnxxai.load(path)
    x = rng.random((3, 1, 4, 4), np.float32)
    q = onnxxai.analyze(x, GradCAM(model, "q"))
    assert q.extras["quantization"].startswith("scale 0.05, zero point 3 (QuantizeLinear")
    f = onnxxai.analyze(x, GradCAM(model, "d"), np.asarray(q.output_selection))
    assert f.extras["quantization"] is None and np.asarray(f.extras["cam"]).max() > 0
    np.testing.assert_allclose(np.asarray(q.extras["cam"]), np.asarray(f.extras["cam"]), rtol=1e-5,
                               atol=1e-6 * float(np.asarray(f.extras["cam"]).max()))


def test_a_blocked_quantization_is_refused_by_name(tmp_path):
    """QuantizeLinear-21 with block_size has a scale per block, no per-tensor or per-axis reading: naming its
    output as the boundary is a BoundaryError (it was torch's RuntimeError reshaping the scale); the
    default boundary is the float activation after it."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((3, 64)).astype(np.float32), "fc"),
             numpy_helper.from_array(np.full((2, 1, 4, 2), 0.05, np.float32), "s"),
             numpy_helper.from_array(np.zeros((2, 1, 4, 2), np.uint8), "zp")]
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "s", "zp"], ["q"], axis=3, block_size=2),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["d"], axis=3, block_size=2),
        helper.make_node("Conv", ["d", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["h"]),
        helper.make_node("Flatten", ["h"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc"], ["y"], transB=1),
    ]
    proto = helper.make_model(helper.make_graph(
        nodes, "blocked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], inits), opset_imports=[helper.make_opsetid("", 21)])
    path = tmp_path / "blocked.onnx"
    onnx.save(proto, path)
    model = onnxxai.load(path)
    assert GradCAM(model).boundary == "h"
    with pytest.raises(BoundaryError, match=r"'q'.*blocked quantization"):
        GradCAM(model, "q")


def test_a_per_tensor_reading_is_the_same_whether_stored_as_scalar_or_vector():
    """A Concat of two activations quantized with the same per-tensor scale, one stored as shape [] and one
    as [1], keeps a reading (it was refused as 'mixed scales'); different values or axes still differ."""
    from onnxxai.graph.quantized import Quantization

    def q(scale, zp, axis=1):
        return Quantization("t", np.asarray(scale, np.float32), np.asarray(zp, np.uint8), axis, "n", "QuantizeLinear")

    assert q(0.05, 3).same_reading(q([0.05], [3]))
    assert not q(0.05, 3).same_reading(q([0.06], [3]))
    assert not q([0.05, 0.1], [0, 0], axis=1).same_reading(q([0.05, 0.1], [0, 0], axis=0))
