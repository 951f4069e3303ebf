"""The gradient check (diagnostics.gradient_flow, onnxxai check): the inputs it checks (the analyzers'
choice, every float input, each float consumer of an integer input), no false alarms (float64
reference through Cast nodes, a second reference before FAILED), and a wrong gradient still FAILED."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY

import onnxxai
from onnxxai.cli import main
from onnxxai.convert._util import result
from onnxxai.diagnostics import gradient_flow, gradient_targets
from onnxxai.testing import export
from conftest import TwoInputNet
from onnx_cases import graph_model, value_info

RNG = np.random.default_rng(5)


def _init(name: str, *shape: int, scale: float = 1.0) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    torch.manual_seed(0)
    return export(TwoInputNet(), (torch.randn(1, 6), torch.randn(1, 3)), tmp_path_factory.mktemp("two") / "two.onnx")


def test_several_float_inputs_are_each_checked(two_inputs):
    model = onnxxai.load(two_inputs)
    report = gradient_flow(model, model.original)
    assert report.ok, report.summary()
    assert [c.input_name for c in report.checks] == ["x0", "x1"]
    only = gradient_flow(model, model.original, input_name="x1")
    assert only.ok and only.input_name == "x1" and not only.checks


def test_integer_input_with_several_float_consumers_checks_each():
    """ids feed an embedding lookup and, cast to float, a scaling: both float tensors are checked."""
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"]),
             helper.make_node("Cast", ["ids"], ["idsf"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["idsf", "axis"], ["idsu"]),
             helper.make_node("Mul", ["idsu", "w"], ["scaled"]),
             helper.make_node("Add", ["emb", "scaled"], ["h"]),
             helper.make_node("Tanh", ["h"], ["t"]),
             helper.make_node("ReduceMean", ["t"], ["y"], axes=[1], keepdims=0)]
    model = graph_model(nodes, [value_info("ids", TensorProto.INT64, ["batch", 5])], [value_info("y", TensorProto.FLOAT, ["batch", 4])],
                        [_init("table", 10, 4), _init("w", 4, scale=0.1), numpy_helper.from_array(np.array([-1], np.int64), "axis")],
                        opset=13)
    loaded = onnxxai.load(model)
    assert [t for _, t in gradient_targets(loaded)] == ["emb", "idsf"]
    report = gradient_flow(loaded, model)
    assert report.ok, report.summary()
    assert len(report.checks) == 2


def test_cli_check_input_option(two_inputs, capsys):
    assert main(["check", str(two_inputs), "--input", "x0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["gradient"]["input_name"] == "x0" and report["gradient"]["ok"]
    assert main(["check", str(two_inputs), "--input", "all", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [c["input_name"] for c in report["gradient"]["checks"]] == ["x0", "x1"]


def _offset_model() -> onnx.ModelProto:
    """A small gradient on a large output (bias 1e3) behind a Cast to float: the float64 copy ran
    into the float32 Cast, and float32 finite differences of onnxruntime drowned in rounding."""
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]),
             helper.make_node("Tanh", ["a"], ["t"]),
             helper.make_node("Cast", ["t"], ["c"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["c", "w2"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["y"])]
    return graph_model(nodes, [value_info("x", TensorProto.FLOAT, ["batch", 8])], [value_info("y", TensorProto.FLOAT, ["batch", 3])],
                       [_init("w1", 8, 8), _init("w2", 8, 3, scale=1e-3),
                        numpy_helper.from_array(np.full(3, 1e3, np.float32), "b")], opset=13)


def test_no_false_alarm_behind_a_cast_to_float():
    model = _offset_model()
    report = gradient_flow(onnxxai.load(model), model)
    assert report.ok, report.summary()
    assert report.reference == "float64" and not report.fallback_cause


class DoubledTanhGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return 2 * grad * (1 - y * y)  # twice the true derivative


class WrongTanh(torch.nn.Module):
    def forward(self, x):
        return DoubledTanhGradient.apply(x)


def test_a_wrong_gradient_is_still_reported_failed(monkeypatch):
    """A converter whose backward is doubled (forward exact, so parity passes) must fail the check,
    both references agreeing."""
    def convert_wrong_tanh(node, graph):  # noqa: ARG001
        return result(WrongTanh(), node)

    for key in [k for k in _CONVERTER_REGISTRY if k.operation_type == "Tanh" and k.domain == ""]:
        monkeypatch.setitem(_CONVERTER_REGISTRY, key, convert_wrong_tanh)
    model = _offset_model()
    loaded = onnxxai.load(model)
    assert loaded.parity.ok
    report = gradient_flow(loaded, model)
    assert not report.ok, report.summary()
    assert "confirmed by onnxruntime" in report.confirmation
    assert report.fd_rel_error > 0.3
