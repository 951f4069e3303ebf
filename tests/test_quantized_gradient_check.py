"""The gradient check of a quantized graph (issue 12, item 7): the straight-through gradient is compared
with finite differences of the graph's dequantized float surrogate (its int8 forward is piecewise
constant, so finite differences of that say nothing). Files made with onnxruntime's own quantizers
(static QOperator and QDQ, dynamic) pass; a deliberately wrong straight-through gradient fails."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import onnxxai
from onnxxai.convert.qlinear import StraightThrough, straight_through_modules, surrogate_forward
from onnxxai.diagnostics import gradient_flow
from onnxxai.proto.specs import probe_feeds
from conftest import ReluCNN
from onnxxai.testing import calibration_reader, export

from onnxruntime import quantization as q

SURROGATE = "float64 dequantized surrogate"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """float32 export and its int8 variants, keyed by kind."""
    folder = tmp_path_factory.mktemp("quantized_gradient")
    torch.manual_seed(0)
    path = export(ReluCNN(), torch.randn(1, 3, 16, 16), folder / "cnn.onnx")
    inputs = onnxxai.load(path).inputs
    calibration = [probe_feeds(inputs, seed=100 + i, batch=1) for i in range(4)]

    out = {"float32": path}
    for kind, fmt in (("int8 QOperator", q.QuantFormat.QOperator), ("int8 QDQ", q.QuantFormat.QDQ)):
        out[kind] = folder / f"{kind.split()[1]}.onnx"
        q.quantize_static(str(path), str(out[kind]), calibration_reader(calibration), quant_format=fmt)
    out["int8 dynamic"] = folder / "dynamic.onnx"
    q.quantize_dynamic(str(path), str(out["int8 dynamic"]))
    return out


def _check(path):
    model = onnxxai.load(path)
    return model, gradient_flow(model, onnx.load(str(path)))


@pytest.mark.parametrize("kind", ["int8 QOperator", "int8 QDQ", "int8 dynamic"])
def test_straight_through_gradient_matches_the_dequantized_surrogate(files, kind):
    model, report = _check(files[kind])
    assert straight_through_modules(model.torch_module), "the file should convert to quantized modules"
    print(f"{kind}: fd_rel_error={report.fd_rel_error:.3e} reference={report.reference!r}")
    assert report.reference == SURROGATE, report
    assert report.ok, report.summary()
    assert "dequantized surrogate" in report.summary()


def test_float_graph_keeps_the_plain_float64_reference(files):
    model, report = _check(files["float32"])
    assert not straight_through_modules(model.torch_module)
    assert report.reference == "float64" and report.ok, report


@pytest.mark.parametrize("kind", ["int8 QOperator", "int8 dynamic"])
def test_wrong_straight_through_gradient_fails(files, kind, monkeypatch):
    """Doubling one quantized module's backward (its forward values unchanged) is caught."""
    model = onnxxai.load(files[kind])
    victim = next(m for m in straight_through_modules(model.torch_module) if hasattr(m, "surrogate"))
    cls, original = type(victim), type(victim).surrogate

    def doubled(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        s = original(self, *args, **kwargs)
        return 2 * s - s.detach() if self is victim else s  # same values, twice the gradient

    monkeypatch.setattr(cls, "surrogate", doubled)
    report = gradient_flow(model, onnx.load(str(files[kind])))
    print(f"{kind} doubled {cls.__name__}: fd_rel_error={report.fd_rel_error:.3e} {report.summary()}")
    assert report.reference == SURROGATE
    assert not report.ok and report.fd_rel_error > 10 * report.tolerance, report


def test_surrogate_forward_is_scoped_and_exact_forward_is_the_default(files):
    """Outside the block the forward is the exact integer result (parity unchanged); inside it, the
    surrogate, which differs from it by less than the quantization error."""
    model = onnxxai.load(files["int8 QOperator"])
    module = model.torch_module
    x = torch.from_numpy(probe_feeds(model.inputs, seed=3, batch=1)[model.inputs[0].name])
    with torch.no_grad():
        exact = module(x)
        with surrogate_forward(module) as n:
            assert n == len(straight_through_modules(module)) > 0
            assert all(m.surrogate_mode for m in straight_through_modules(module))
            surrogate = module(x)
        again = module(x)
    assert not any(m.surrogate_mode for m in straight_through_modules(module))
    assert "surrogate_mode" not in vars(straight_through_modules(module)[0])
    assert StraightThrough.surrogate_mode is False
    torch.testing.assert_close(again, exact, rtol=0, atol=0)
    assert not torch.equal(surrogate, exact)
    assert float((surrogate - exact).abs().max()) < 0.1 * float(exact.abs().max())


def test_max_pool_ties_of_quantized_values_are_frozen_with_the_residuals(tmp_path, monkeypatch):
    """QuantizeLinear -> DequantizeLinear -> MaxPool -> Gemm with a coarse scale: quantized values tie
    inside the pool windows, where the backward takes the first maximum and a central difference of
    the surrogate would average the tied entries. The frozen surrogate keeps the pools' choices, so
    the check passes; with the choices not frozen it fails."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["d"]),
             helper.make_node("MaxPool", ["d"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["y"], transB=1)]
    inits = [numpy_helper.from_array(np.float32(4.0), "s"), numpy_helper.from_array(np.int8(0), "zp"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, (3, 16)).astype(np.float32), "w")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], inits)
    path = tmp_path / "qdq_pool.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    model, report = _check(path)
    q = np.round(probe_feeds(model.inputs, seed=0, batch=1)["x"] / 4.0)
    windows = q.reshape(4, 2, 4, 2).transpose(0, 2, 1, 3).reshape(16, 4)
    assert ((windows == windows.max(1, keepdims=True)).sum(1) > 1).sum() >= 12, "the probe should tie inside most windows"
    assert report.reference == SURROGATE and report.ok, report.summary()

    from onnxxai.convert import qlinear

    monkeypatch.setattr(qlinear, "_MAX_POOLS", ())  # the pools' choices not frozen
    assert not _check(path)[1].ok


def test_frozen_copy_is_linearized_at_the_models_own_exact_results():
    """0.35f / 0.1f is 3.5 in float32 (rounds half to even: 4) and 3.4999999 in float64 (rounds to 3): a
    plain float64 copy of QuantizeLinear -> DequantizeLinear starts from another integer than the
    float32 model; frozen_copy's frozen surrogate starts from the model's own result."""
    import copy

    from onnx import TensorProto, helper, numpy_helper

    from onnxxai.convert.pipeline import convert
    from onnxxai.convert.qlinear import frozen_copy

    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "zp")])
    module = convert(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), "t")[2]
    x = torch.tensor([0.35, 0.25], dtype=torch.float32)
    exact = module(x).double()
    assert exact.tolist() == pytest.approx([0.4, 0.2])  # onnxruntime's (and ONNX's) float32 result
    plain = copy.deepcopy(module).double()
    with surrogate_forward(plain, frozen=True):
        assert plain(x.double())[0].item() == pytest.approx(0.3)  # the float64 copy's own rounding
    frozen = frozen_copy(module, x)
    assert not any("_exact_record" in m.__dict__ for m in straight_through_modules(module))  # the model is left as it was
    with surrogate_forward(frozen, frozen=True):
        torch.testing.assert_close(frozen(x.double()), exact, rtol=0, atol=1e-9)
    with surrogate_forward(frozen, frozen=True):  # replayed: moves like the surrogate around the model's result
        torch.testing.assert_close(frozen(x.double() + 0.01), exact + 0.01, rtol=0, atol=1e-9)
