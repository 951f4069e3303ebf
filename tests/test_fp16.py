"""float16 files: the parity tolerance comes from the graph's float types, explanations run in float32,
and a gradient that stops at a node is never a silent explanation."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import onnxxai
from onnxxai.analyzers.core import GradientStopWarning
from onnxxai.parity import DEFAULT_ATOL, DEFAULT_RTOL, parity_tolerance
from conftest import ReluCNN
from onnxxai.testing import export

from onnxconverter_common import float16


@pytest.fixture(scope="module")
def cnn(tmp_path_factory) -> onnx.ModelProto:
    torch.manual_seed(0)
    return onnx.load(export(ReluCNN(), torch.randn(1, 3, 16, 16), tmp_path_factory.mktemp("fp16") / "cnn.onnx"))


def half(model: onnx.ModelProto, keep_io_types: bool) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float16.convert_float_to_float16(model, keep_io_types=keep_io_types)


def test_float32_keeps_todays_tolerance(cnn):
    tol = parity_tolerance(cnn)
    assert (tol.rtol, tol.atol) == (DEFAULT_RTOL, DEFAULT_ATOL) and tol.rule.startswith("float32 compute")
    model = onnxxai.load(cnn)
    assert (model.parity.rtol, model.parity.atol) == (1e-4, 1e-6) and not model.widened
    assert str(model.artifact) == "float32" and "[" not in model.parity.summary()


@pytest.mark.parametrize("keep_io_types", [False, True])
def test_float16_loads_with_derived_tolerance_and_explains_in_float32(cnn, keep_io_types):
    fp16 = half(cnn, keep_io_types)
    model = onnxxai.load(fp16)  # no flag: the tolerance comes from the graph
    eps, depth = 2.0**-10, 8 if keep_io_types else 6
    assert model.parity.ok and model.parity.rtol == pytest.approx(eps * max(2.0, depth**0.5))
    assert model.parity.tolerance_rule.startswith("float16 compute") and "float16 compute" in model.parity.summary()
    assert model.artifact.precision == "float16"
    assert str(model.artifact) == ("float16 (float32 I/O)" if keep_io_types else "float16")
    assert model.widened and all(p.dtype == torch.float32 for p in model.torch_module.parameters())
    dtype = np.float32 if keep_io_types else np.float16
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(dtype)
    assert model(x).dtype == dtype  # outputs keep the file's element types
    expl = onnxxai.Gradient(model)(x)
    assert expl.val.dtype == np.float32  # computed in float32, not rounded to float16
    # the float32 explanation of the float16 file follows the float32 model's
    reference = onnxxai.Gradient(onnxxai.load(cnn))(x.astype(np.float32))
    a, b = expl.val.ravel().astype(np.float64), reference.val.ravel().astype(np.float64)
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.99


def test_user_tolerance_wins_and_is_reported(cnn):
    fp16 = half(cnn, False)
    model = onnxxai.load(fp16, rtol=5e-2, strict=False)
    assert model.parity.rtol == 5e-2 and model.parity.atol == DEFAULT_ATOL
    assert model.parity.tolerance_rule.startswith("user: rtol=0.05") and "derived would be float16" in model.parity.tolerance_rule
    strict = onnxxai.load(fp16, rtol=1e-6, atol=1e-9, strict=False)  # a user tolerance too tight for float16 fails
    assert not strict.parity.ok and "user: rtol=1e-06, atol=1e-09" in strict.parity.summary()


def _blocked(kind: str) -> onnx.ModelProto:
    """x -> MatMul -> (Round | Cast int32 -> Cast float) -> MatMul -> y, no QDQ."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32) * 3, "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((6, 3)).astype(np.float32), "w2")
    if kind == "round":
        middle = [helper.make_node("Round", ["h"], ["r"], name="the_round")]
    else:
        middle = [helper.make_node("Cast", ["h"], ["i"], to=TensorProto.INT32, name="to_int"),
                  helper.make_node("Cast", ["i"], ["r"], to=TensorProto.FLOAT, name="to_float")]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"), *middle,
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="second")],
        "blocked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], [w1, w2],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_disconnected_gradient_raises_naming_the_node():
    model = onnxxai.load(_blocked("cast"))
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    with pytest.raises(onnxxai.errors.AnalyzerError, match="stops at node 'to_int'.*integer tensor"):
        onnxxai.Gradient(model)(x)


@pytest.mark.parametrize("kind, node", [("round", "the_round")])
def test_a_stopped_gradient_is_never_silent(kind, node):
    model = onnxxai.load(_blocked(kind))
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    with pytest.warns(GradientStopWarning, match=node) as caught:
        expl = onnxxai.Gradient(model)(x)
    assert np.all(expl.val == 0) and node in expl.extras["warning"]
    assert expl.extras["gradient_stop"]["samples"] == [0, 1]
    assert "Gradient attributions of this graph are not explanations" in str(caught[0].message)
    with pytest.warns(GradientStopWarning, match=node):
        onnxxai.IntegratedGradients(model, n=4)(x)


def test_zero_gradient_of_a_constant_output_is_not_flagged(cnn):
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "zero"], ["y"], name="times_zero")], "constant",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [numpy_helper.from_array(np.zeros(4, np.float32), "zero")],
    )
    model = onnxxai.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientStopWarning)
        expl = onnxxai.Gradient(model)(np.ones((1, 4), np.float32))
    assert np.all(expl.val == 0) and "gradient_stop" not in expl.extras
