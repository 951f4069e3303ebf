"""Normalization passes that settle exporters' static checks: static Shape reads and constant If."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import onnxxai
from onnxxai.proto.normalize import fold_static_shapes, inline_constant_if


class ScriptedChecks(torch.nn.Module):
    """A network whose forward tests shapes; TorchScript export keeps the test as an ONNX If."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.lin = torch.nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        if y.shape[1] == 4:
            y = y.mean(dim=(2, 3))
        else:
            y = y.sum(dim=(2, 3))
        return self.lin(y) * x.shape[0]  # the batch is dynamic: this Shape read must stay


@pytest.fixture(scope="module")
def scripted_export() -> tuple[onnx.ModelProto, torch.nn.Module]:
    torch.manual_seed(0)
    native = ScriptedChecks().eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.jit.script(native), (torch.randn(2, 3, 8, 8),), buffer, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}})
    return onnx.load_from_string(buffer.getvalue()), native


def test_scripted_shape_check_is_settled_and_matches_torch(scripted_export):
    proto, native = scripted_export
    assert "If" in {n.op_type for n in proto.graph.node}
    model = onnxxai.load(proto)
    changed = {p.name: p.changed for p in model.passes}
    assert changed["fold_static_shapes"] >= 1 and changed["inline_constant_if"] == 1
    assert "If" not in {n.op_type for n in model.onnx_model.graph.node}
    assert "Shape" in {n.op_type for n in model.onnx_model.graph.node}  # the dynamic batch read stays
    for batch, size in ((3, 10), (1, 7)):  # other batch and spatial sizes than the parity probe
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
        np.testing.assert_allclose(model(x.numpy()), want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(model(x.numpy()), native(x).detach().numpy(), rtol=1e-5, atol=1e-5)


def _if_model(cond_from_constant: bool) -> onnx.ModelProto:
    """y = If(c) then (x @ W + bias, W an initializer inside the branch) else (x @ V, V outside);
    c a Constant node (or a graph input when not ``cond_from_constant``)."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    then_graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"], name="mm"), helper.make_node("Add", ["xw", "bias"], ["t"], name="add")],
        "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["b", 3])],
        [numpy_helper.from_array(w, "w")],
    )
    else_graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "v"], ["e"], name="mm_else")], "else", [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["b", 3])],
    )
    nodes = [helper.make_node("If", ["c"], ["y"], name="the_if", then_branch=then_graph, else_branch=else_graph)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])]
    if cond_from_constant:
        nodes.insert(0, helper.make_node("Constant", [], ["c"], name="flag", value=numpy_helper.from_array(np.array(True), "v")))
    else:
        inputs.append(helper.make_tensor_value_info("c", TensorProto.BOOL, []))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3])],
                              [numpy_helper.from_array(np.float32([0.5, -1, 2]), "bias"), numpy_helper.from_array(-w, "v")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_constant_if_is_inlined_with_branch_initializers_and_outer_references():
    proto = _if_model(cond_from_constant=True)
    model = onnxxai.load(proto)
    assert [n.op_type for n in model.onnx_model.graph.node if n.op_type == "If"] == []
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(model(x), want, rtol=1e-6, atol=1e-6)
    assert want.shape == (5, 3)  # the then-branch ran


def test_inlining_leaves_the_callers_proto_and_run_time_conditions_alone():
    proto = _if_model(cond_from_constant=True)
    before = proto.SerializeToString()
    onnxxai.load(proto)
    assert proto.SerializeToString() == before
    dynamic = _if_model(cond_from_constant=False)
    assert inline_constant_if(dynamic) == 0 and fold_static_shapes(dynamic) == 0
    assert [n.op_type for n in dynamic.graph.node] == ["If"]


def test_omitted_outputs_do_not_capture_omitted_inputs():
    """LSTM(..) -> ["", "Y_h"] then Clip(Y_h, "", max): the Clip's omitted min must stay omitted."""
    rng = np.random.default_rng(1)
    hidden = 3
    inits = [numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, 2)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32), "R"),
             numpy_helper.from_array(np.float32(0.1), "high")]
    nodes = [helper.make_node("LSTM", ["x", "W", "R"], ["", "h"], name="lstm", hidden_size=hidden),
             helper.make_node("Clip", ["h", "", "high"], ["y"], name="clip")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, hidden])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = onnxxai.load(proto)
    assert {p.name: p.changed for p in model.passes}["name_omitted_outputs"] == 1
    x = rng.standard_normal((5, 2, 2)).astype(np.float32)
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-6)
    assert want.min() < 0  # the clip has no lower bound: a captured min would have changed this


@pytest.mark.parametrize("narrow", [TensorProto.BFLOAT16, TensorProto.FLOAT8E4M3FN])
def test_narrow_float_weights_load_and_match_onnxruntime(narrow):
    """A bfloat16 / float8 initializer and Constant (torch.from_numpy refuses their numpy types)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((2, 5)).astype(np.float32)
    b = rng.standard_normal((5,)).astype(np.float32)
    w_narrow = helper.make_tensor("w", narrow, w.shape, w.ravel().tolist())
    b_narrow = helper.make_tensor("bv", narrow, b.shape, b.ravel().tolist())
    nodes = [helper.make_node("Constant", [], ["b"], name="bias", value=b_narrow),
             helper.make_node("Cast", ["w"], ["w32"], name="w_up", to=TensorProto.FLOAT),
             helper.make_node("Cast", ["b"], ["b32"], name="b_up", to=TensorProto.FLOAT),
             helper.make_node("Mul", ["x", "w32"], ["xw"], name="mul"),
             helper.make_node("Add", ["xw", "b32"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, 5])], [w_narrow])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model = onnxxai.load(proto)
    assert {p.name: p.changed for p in model.passes}["widen_narrow_constants"] >= 1
    x = rng.standard_normal((3, 2, 5)).astype(np.float32)
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(model(x), want)
    assert not np.allclose(want, x * w + b, rtol=1e-6)  # the narrow rounding is really there


def test_float4_zero_point_initializer_converts_and_matches_the_reference():
    """A FLOAT4E2M1 zero point stored as an initializer (onnxruntime has no float4 QuantizeLinear,
    so the ONNX reference implementation is the comparison)."""
    from onnx.reference import ReferenceEvaluator

    from onnxxai.convert.pipeline import convert

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    inits = [helper.make_tensor("zp", TensorProto.FLOAT4E2M1, [], [0.0]), helper.make_tensor("sc", TensorProto.FLOAT, [], [0.5])]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sc", "zp"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "sc", "zp"], ["y"], name="dq")]
    proto = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 23)])
    xv = np.linspace(-4, 4, 8, dtype=np.float32).reshape(2, 4)
    _, passes, module = convert(proto)
    assert {p.name: p.changed for p in passes}["widen_narrow_constants"] >= 1
    with torch.no_grad():
        np.testing.assert_array_equal(module(torch.from_numpy(xv)).numpy(), ReferenceEvaluator(proto).run(None, {"x": xv})[0])


def _small_mlp() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw"], name="mm"), helper.make_node("Relu", ["xw"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_pass_that_cannot_run_records_its_cause_and_the_load_goes_on(monkeypatch):
    """onnx shape inference refusing a graph (as it does for some exporters' contrib-domain graphs)
    is recorded in the pass results of the passes that need it, not reported as "0 changed"."""
    def refuse(model, *args, **kwargs):
        raise onnx.shape_inference.InferenceError("[ShapeInferenceError] com.microsoft::Gelu has no schema")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", refuse)
    model = onnxxai.load(_small_mlp())
    results = {p.name: p for p in model.passes}
    for name in ("fold_static_shapes", "infer_shapes"):
        assert results[name].changed == 0
        assert "InferenceError" in results[name].error and "has no schema" in results[name].error
        assert "not run" in str(results[name])
    assert results["name_nodes"].error is None and str(results["name_nodes"]) == "name_nodes (0)"
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(model(x), np.maximum(x @ (np.arange(12, dtype=np.float32).reshape(4, 3) / 10), 0), rtol=1e-6)


def test_a_pass_that_fails_part_way_fails_the_load_naming_the_pass(monkeypatch):
    from onnxxai.proto import normalize as passes

    def broken(model: onnx.ModelProto) -> int:
        del model.graph.node[0]
        raise KeyError("lost track of a value")

    table = [(name, broken if name == "reshape_allowzero" else fn, desc) for name, fn, desc in passes.PASSES]
    monkeypatch.setattr(passes, "PASSES", table)
    with pytest.raises(onnxxai.NormalizationError, match="reshape_allowzero.*KeyError.*lost track") as info:
        onnxxai.load(_small_mlp())
    assert info.value.pass_name == "reshape_allowzero"
    assert isinstance(info.value, onnxxai.ConversionError)


def test_a_node_the_reference_cannot_fold_is_named_in_the_pass_result(monkeypatch):
    """fold_constants leaves a node the ONNX reference evaluator cannot run to the converter and says so."""
    from onnxxai.proto import normalize as passes

    evaluate = passes._evaluate

    def no_transpose(node, feeds, opsets):
        if node.op_type == "Transpose":
            raise NotImplementedError("no Transpose in this evaluator")
        return evaluate(node, feeds, opsets)

    monkeypatch.setattr(passes, "_evaluate", no_transpose)
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4) / 10, "w_t")
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["w_t"], ["w"], name="weight_transpose"),
         helper.make_node("Neg", ["w"], ["w_neg"], name="negate"),
         helper.make_node("MatMul", ["x", "w_neg"], ["y"], name="mm")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], [w])
    model = onnxxai.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    fold = next(p for p in model.passes if p.name == "fold_constants")
    assert fold.skipped == ("weight_transpose (Transpose): NotImplementedError: no Transpose in this evaluator",)
    assert fold.error is None
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(model(x), x @ -(np.arange(12, dtype=np.float32).reshape(3, 4).T / 10), rtol=1e-6)
