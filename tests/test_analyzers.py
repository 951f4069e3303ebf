"""The gradient family against independent references: finite differences through onnxruntime,
IG completeness, SmoothGrad's limit, batch == per-sample, seeds, array types."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import onnxxai
from conftest import TwoInputNet
from onnxxai.testing import export


def _ort_selected(path, x, index):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.astype(np.float32)})[0][:, index]


def test_gradient_matches_central_finite_differences_of_onnxruntime(smooth_cnn, smooth_cnn_path, rng):
    x = rng.standard_normal((2, 1, 7, 7)).astype(np.float32)
    expl = onnxxai.analyze(x, onnxxai.Gradient(smooth_cnn), 3)
    h = 1e-2
    coords = [(0, 0, 3, 3), (0, 0, 0, 6), (1, 0, 5, 1), (1, 0, 2, 2), (0, 0, 6, 6)]
    for coord in coords:
        plus, minus = x.astype(np.float64), x.astype(np.float64)
        plus[coord] += h
        minus[coord] -= h
        fd = (_ort_selected(smooth_cnn_path, plus, 3) - _ort_selected(smooth_cnn_path, minus, 3)) / (2 * h)
        assert expl.val[coord] == pytest.approx(fd[coord[0]], rel=2e-2, abs=2e-4)
    assert np.abs(expl.val).max() > 0


def test_input_times_gradient_is_input_times_gradient(smooth_cnn, rng):
    x = rng.standard_normal((3, 1, 7, 7)).astype(np.float32)
    g = onnxxai.analyze(x, onnxxai.Gradient(smooth_cnn), 1).val
    ixg = onnxxai.analyze(x, onnxxai.InputTimesGradient(smooth_cnn), 1)
    np.testing.assert_allclose(ixg.val, x * g, rtol=1e-6)
    assert ixg.heatmap == "attribution" and ixg.analyzer == "InputTimesGradient"


@pytest.mark.parametrize("method", ["gausslegendre", "trapezoid", "riemann_middle"])
def test_integrated_gradients_completeness(smooth_cnn, rng, method):
    x = rng.standard_normal((3, 1, 7, 7)).astype(np.float32)
    baseline = np.full((1, 1, 7, 7), -0.5, np.float32)
    expl = onnxxai.analyze(x, onnxxai.IntegratedGradients(smooth_cnn, n=256, baseline=baseline, method=method), [0, 2, 4])
    out_x = smooth_cnn(x)[np.arange(3), [0, 2, 4]]
    out_b = smooth_cnn(np.repeat(baseline, 3, axis=0))[np.arange(3), [0, 2, 4]]
    sums = expl.val.reshape(3, -1).sum(axis=1)
    np.testing.assert_allclose(sums, out_x - out_b, rtol=1e-2)
    np.testing.assert_allclose(expl.extras["completeness_delta"], sums - (out_x - out_b), atol=1e-4)
    assert np.all(expl.extras["completeness_relative"] < 1e-2)


def test_integrated_gradients_sign_and_zero_path(smooth_cnn, rng):
    """A baseline equal to the input gives exactly zero attribution (and not a sign-flipped map)."""
    x = rng.standard_normal((2, 1, 7, 7)).astype(np.float32)
    expl = onnxxai.analyze(x, onnxxai.IntegratedGradients(smooth_cnn, n=8, baseline=x), 0)
    assert np.all(expl.val == 0)


def test_smoothgrad_with_zero_noise_is_gradient(smooth_cnn, rng):
    x = rng.standard_normal((2, 1, 7, 7)).astype(np.float32)
    g = onnxxai.analyze(x, onnxxai.Gradient(smooth_cnn), 2).val
    sg = onnxxai.analyze(x, onnxxai.SmoothGrad(smooth_cnn, n=5, std=0.0), 2).val
    np.testing.assert_allclose(sg, g, rtol=1e-5, atol=1e-7)
    tiny = onnxxai.analyze(x, onnxxai.SmoothGrad(smooth_cnn, n=5, std=1e-5), 2).val
    np.testing.assert_allclose(tiny, g, rtol=1e-3, atol=1e-5)


def test_smoothgrad_same_seed_same_result(smooth_cnn, rng):
    x = rng.standard_normal((2, 1, 7, 7)).astype(np.float32)
    a = onnxxai.SmoothGrad(smooth_cnn, n=6, std=0.3, generator=11)(x).val
    b = onnxxai.SmoothGrad(smooth_cnn, n=6, std=0.3, generator=11)(x).val
    c = onnxxai.SmoothGrad(smooth_cnn, n=6, std=0.3, generator=12)(x).val
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    gen = torch.Generator().manual_seed(5)
    d = onnxxai.SmoothGrad(smooth_cnn, n=6, std=0.3, generator=gen)(x).val
    e = onnxxai.SmoothGrad(smooth_cnn, n=6, std=0.3, generator=gen)(x).val  # the generator advanced
    assert not np.allclose(d, e)


def test_smoothgrad_default_std_is_relative_to_input_range(smooth_cnn, rng):
    x = rng.standard_normal((2, 1, 7, 7)).astype(np.float32)
    expl = onnxxai.SmoothGrad(smooth_cnn, n=2)(x)
    assert "0.15*(max-min)" in expl.extras["noise"]
    assert expl.heatmap == "sensitivity" and expl.analyzer == "SmoothGrad"


@pytest.mark.parametrize(
    "make",
    [
        lambda m: onnxxai.Gradient(m),
        lambda m: onnxxai.InputTimesGradient(m, batch_size=2),
        lambda m: onnxxai.IntegratedGradients(m, n=7, batch_size=5),
        lambda m: onnxxai.SmoothGrad(m, n=3, std=0.0, batch_size=4),
    ],
    ids=["gradient", "ixg-chunked", "ig-chunked", "smoothgrad-nonoise"],
)
def test_batch_equals_per_sample(smooth_cnn, rng, make):
    x = rng.standard_normal((5, 1, 7, 7)).astype(np.float32)
    analyzer = make(smooth_cnn)
    batched = analyzer(x)
    singles = [analyzer(x[i : i + 1]) for i in range(5)]
    np.testing.assert_allclose(batched.val, np.concatenate([s.val for s in singles]), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(batched.output_selection, [int(s.output_selection[0]) for s in singles])


def test_output_selection_forms(smooth_cnn, rng):
    x = rng.standard_normal((3, 1, 7, 7)).astype(np.float32)
    out = smooth_cnn(x)
    grad = onnxxai.Gradient(smooth_cnn)
    np.testing.assert_array_equal(grad(x).output_selection, out.argmax(1))
    np.testing.assert_array_equal(grad(x, 4).output_selection, [4, 4, 4])
    np.testing.assert_array_equal(grad(x, -1).output_selection, [4, 4, 4])
    np.testing.assert_array_equal(grad(x, [0, 3, 1]).output_selection, [0, 3, 1])
    lowest = grad(x, lambda o: o.argmin(dim=1))
    np.testing.assert_array_equal(lowest.output_selection, out.argmin(1))
    # per-sample selection equals three single-class calls
    per = grad(x, [0, 3, 1]).val
    for i, c in enumerate([0, 3, 1]):
        np.testing.assert_allclose(per[i], grad(x, c).val[i], rtol=1e-6)


def test_array_types_follow_input(smooth_cnn, rng):
    x = rng.standard_normal((2, 1, 7, 7)).astype(np.float32)
    for analyzer in (onnxxai.Gradient(smooth_cnn), onnxxai.IntegratedGradients(smooth_cnn, n=4)):
        e_np = onnxxai.analyze(x, analyzer)
        e_t = onnxxai.analyze(torch.from_numpy(x), analyzer)
        assert isinstance(e_np.val, np.ndarray) and e_np.val.shape == x.shape and e_np.val.dtype == np.float32
        assert isinstance(e_np.output, np.ndarray) and isinstance(e_np.output_selection, np.ndarray)
        assert isinstance(e_t.val, torch.Tensor) and e_t.val.device == torch.device("cpu")
        assert isinstance(e_t.output, torch.Tensor)
        np.testing.assert_allclose(e_t.val.numpy(), e_np.val, rtol=1e-6)
        assert e_np.input is x


def test_explanation_fields(smooth_cnn, rng):
    x = rng.standard_normal((2, 1, 7, 7)).astype(np.float32)
    expl = onnxxai.IntegratedGradients(smooth_cnn, n=4)(x, 1)
    assert expl.analyzer == "IntegratedGradients" and expl.heatmap == "attribution"
    assert expl.extras["parity"].ok and expl.extras["n"] == 4 and expl.extras["method"] == "gausslegendre"
    np.testing.assert_allclose(expl.output, smooth_cnn(x), rtol=1e-6)


def test_analysis_leaves_model_untouched(smooth_cnn, rng):
    module = smooth_cnn.torch_module
    before = {k: v.clone() for k, v in module.state_dict().items()}
    hooks_before = sum(len(m._forward_hooks) + len(m._backward_hooks) for m in module.modules())
    x = rng.standard_normal((2, 1, 7, 7)).astype(np.float32)
    onnxxai.SmoothGrad(smooth_cnn, n=3)(x)
    onnxxai.IntegratedGradients(smooth_cnn, n=3)(x)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert not module.training and all(not p.requires_grad for p in module.parameters())
    assert sum(len(m._forward_hooks) + len(m._backward_hooks) for m in module.modules()) == hooks_before
    assert torch.is_grad_enabled()


def test_multi_input_model_attributes_to_named_input(tmp_path, rng):
    torch.manual_seed(0)
    net = TwoInputNet()
    path = export(net, (torch.randn(1, 6), torch.randn(1, 3)), tmp_path / "two.onnx", input_names=["signal", "state"])
    model = onnxxai.load(path)
    signal = rng.standard_normal((4, 6)).astype(np.float32)
    state = rng.standard_normal((4, 3)).astype(np.float32)
    expl = onnxxai.analyze(signal, onnxxai.Gradient(model, input_name="signal", fixed_inputs={"state": state}), 2)
    s = torch.from_numpy(signal).requires_grad_(True)
    net(s, torch.from_numpy(state))[:, 2].sum().backward()
    np.testing.assert_allclose(expl.val, s.grad.numpy(), rtol=1e-5, atol=1e-7)
    # IG with a shared (batch-1) state: fixed inputs follow every augmented row
    ig = onnxxai.analyze(signal, onnxxai.IntegratedGradients(model, n=64, input_name="signal", fixed_inputs={"state": state[:1]}), 2)
    gap = model(signal, np.repeat(state[:1], 4, 0))[:, 2] - model(np.zeros_like(signal), np.repeat(state[:1], 4, 0))[:, 2]
    np.testing.assert_allclose(ig.val.sum(1), gap, rtol=1e-3, atol=1e-5)
    with pytest.raises(onnxxai.InputError, match="need values"):
        onnxxai.Gradient(model, input_name="signal")


class RandomAnalyzer(onnxxai.Analyzer):
    """The README's custom analyzer: one method, explain()."""

    def __init__(self, model):
        self.model = model

    def explain(self, input, selector):
        output = self.model(input)
        generator = torch.Generator().manual_seed(0)
        return onnxxai.Explanation(torch.rand(input.shape, generator=generator), input, output, selector(output),
                                   "RandomAnalyzer", "sensitivity")


def test_custom_analyzer(smooth_cnn, rng):
    x = rng.standard_normal((2, 1, 7, 7)).astype(np.float32)
    expl = onnxxai.analyze(torch.from_numpy(x), RandomAnalyzer(smooth_cnn), 1)
    assert expl.analyzer == "RandomAnalyzer" and expl.val.shape == x.shape
    assert expl.output_selection.tolist() == [1, 1]
    assert expl.extras["parity"] is smooth_cnn.parity
    with pytest.raises(onnxxai.InputError, match="axis 3 must be 7"):
        onnxxai.analyze(np.zeros((1, 1, 7, 9), np.float32), RandomAnalyzer(smooth_cnn))


def test_default_output_is_the_first_float_output(tmp_path, rng):
    """A classifier exporting (label: int64, scores: float) is explained by its scores."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["scores"], name="mm"),
             helper.make_node("ArgMax", ["scores"], ["label"], name="argmax", axis=1, keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, ["n"]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 3])], [w])
    model = onnxxai.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = rng.standard_normal((2, 4)).astype(np.float32)
    expl = onnxxai.Gradient(model)(x, 1)
    assert expl.extras["output_name"] == "scores"
    np.testing.assert_allclose(expl.val, np.repeat(numpy_helper.to_array(w)[:, 1][None], 2, 0), rtol=1e-6)


@pytest.mark.parametrize("precision", ["bf16", "tf32"])
def test_reduced_precision_reports_its_error_against_float32(smooth_cnn, rng, precision):
    x = rng.standard_normal((3, 1, 7, 7)).astype(np.float32)
    exact = onnxxai.IntegratedGradients(smooth_cnn, n=16)(x, 2).val
    expl = onnxxai.IntegratedGradients(smooth_cnn, n=16, precision=precision, check_precision=True)(x, 2)
    report = expl.extras["precision_error"]
    assert report["precision"] == precision
    assert expl.val.dtype == np.float32
    err = np.linalg.norm(expl.val - exact) / np.linalg.norm(exact)
    assert report["relative_l2"] == pytest.approx(err, rel=1e-3, abs=1e-9)
    if precision == "bf16":  # bfloat16 keeps 8 bits of mantissa: visibly inexact, still aligned
        assert 1e-4 < report["relative_l2"] < 0.1 and report["cosine"] > 0.99
    else:  # TF32 only changes CUDA matmuls/convolutions: exact on the CPU
        assert report["relative_l2"] < 1e-6


def test_precision_flags_are_restored(smooth_cnn, rng):
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    onnxxai.Gradient(smooth_cnn, precision="tf32")(rng.standard_normal((1, 1, 7, 7)).astype(np.float32))
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with pytest.raises(onnxxai.AnalyzerError, match="precision"):
        onnxxai.Gradient(smooth_cnn, precision="fp8")


def test_compiled_graph_gives_the_same_attribution(smooth_cnn, rng):
    x = rng.standard_normal((2, 1, 7, 7)).astype(np.float32)
    eager = onnxxai.Gradient(smooth_cnn)(x, 1).val
    compiled = onnxxai.Gradient(smooth_cnn, compile=True)(x, 1).val
    np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-6)


def test_row_chunks_resize_after_the_first_piece():
    from onnxxai.analyzers.batching import RowChunks

    assert list(RowChunks(10, 4)) == [(0, 4), (4, 8), (8, 10)]
    seen = []
    plan = RowChunks(20, 3, resize=lambda rows: seen.append(rows) or 7)
    assert list(plan) == [(0, 3), (3, 10), (10, 17), (17, 20)]
    assert seen == [3]  # measured once, on the first piece
