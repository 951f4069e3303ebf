"""Scan, Loop and If: converted bodies against onnxruntime, outer-scope tensors, gradients, exports."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx2torch.node_converters.registry import get_converter

import onnxxai
from onnxxai.convert.registry import schema_versions
from onnxxai.convert.control_flow import OnnxIf, OnnxLoop, OnnxScan, OnnxScan8, outer_scope_names
from onnxxai.convert.pipeline import convert
from onnx_cases import assert_matches, graph_model, reference_outputs, run_converted
from onnx_cases import value_info as vi

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def test_every_schema_version_has_a_converter():
    onnxxai.convert.register_all()
    for op in ("Scan", "Loop", "If"):
        versions = schema_versions(op)
        assert versions
        for v in versions:
            get_converter(operation_type=op, version=v)


# -- Scan -------------------------------------------------------------------------------------------
def scan_model(elem=F, np_dtype=np.float32):
    """State s [3, 2]; x [3, T, 2] scanned on axis 1 backwards; outputs stacked on the last axis
    in reverse order; the body reads the parent's initializer W and graph input b."""
    body = helper.make_graph(
        [helper.make_node("Mul", ["s_in", "W"], ["sw"]),
         helper.make_node("Add", ["sw", "x_t"], ["pre"]),
         helper.make_node("Tanh", ["pre"], ["th"]),
         helper.make_node("Add", ["th", "b"], ["s_out"]),
         helper.make_node("Mul", ["s_out", "x_t"], ["y_t"])],
        "body", [vi("s_in", elem), vi("x_t", elem)], [vi("s_out", elem), vi("y_t", elem)])
    node = helper.make_node("Scan", ["s0", "x"], ["s_final", "ys"], name="the_scan", body=body, num_scan_inputs=1,
                            scan_input_axes=[1], scan_input_directions=[1], scan_output_axes=[-1], scan_output_directions=[1])
    w = numpy_helper.from_array(np.array([0.5, -1.5], np_dtype), "W")
    return graph_model([node], [vi("s0", elem, [3, 2]), vi("x", elem, [3, 4, 2]), vi("b", elem, [2])],
                 [vi("s_final", elem, [3, 2]), vi("ys", elem, [3, 2, 4])], [w], opset=16)


def test_outer_scope_names_are_found_recursively():
    body = scan_model().graph.node[0].attribute[0].g
    assert outer_scope_names(body) == ["W", "b"]
    inner = helper.make_graph([helper.make_node("Add", ["u", "far"], ["v"])], "inner", [], [vi("v")])
    outer = helper.make_graph([helper.make_node("Neg", ["a"], ["u"]), helper.make_node("If", ["c"], ["w"], then_branch=inner,
                                                                                         else_branch=inner)],
                              "outer", [vi("a")], [vi("w")])
    assert outer_scope_names(outer) == ["c", "far"]


def test_scan_axes_directions_and_outer_scope_match_onnxruntime():
    rng = np.random.default_rng(0)
    feeds = {"s0": rng.standard_normal((3, 2)).astype(np.float32), "x": rng.standard_normal((3, 4, 2)).astype(np.float32),
             "b": rng.standard_normal(2).astype(np.float32)}
    proto = scan_model()
    got = assert_matches(proto, feeds)
    # independent check: the recurrence written out in numpy
    s, ys = feeds["s0"], []
    for t in reversed(range(4)):
        s = np.tanh(s * np.array([0.5, -1.5], np.float32) + feeds["x"][:, t]) + feeds["b"]
        ys.append(s * feeds["x"][:, t])
    np.testing.assert_allclose(got[0], s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], np.stack(ys[::-1], -1), rtol=1e-5, atol=1e-6)
    loaded = onnxxai.load(proto, probe_inputs=feeds)
    assert loaded.parity.ok
    assert any(isinstance(m, OnnxScan) for m in loaded.torch_module.modules())


def test_scan_gradcheck_through_body_float64():
    _, _, module = convert(scan_model(TensorProto.DOUBLE, np.float64))
    rng = np.random.default_rng(1)
    s0 = torch.tensor(rng.standard_normal((3, 2)), requires_grad=True)
    x = torch.tensor(rng.standard_normal((3, 4, 2)), requires_grad=True)
    b = torch.tensor(rng.standard_normal(2), requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, xx, bb: module(s, xx, bb), (s0, x, b))


def test_scan8_batch_axis_and_sequence_lens_match_onnxruntime():
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "x_t"], ["acc_out"]), helper.make_node("Mul", ["acc_out", "k"], ["y_t"])],
        "body", [vi("acc_in", F, [2]), vi("x_t", F, [2])], [vi("acc_out", F, [2]), vi("y_t", F, [2])])
    node = helper.make_node("Scan", ["lens", "acc0", "x"], ["acc", "ys"], name="scan8", body=body, num_scan_inputs=1,
                            directions=[1])
    k = numpy_helper.from_array(np.array([2.0, -1.0], np.float32), "k")
    proto = graph_model([node], [vi("lens", I64, [3]), vi("acc0", F, [3, 2]), vi("x", F, [3, 5, 2])],
                  [vi("acc", F, [3, 2]), vi("ys", F, [3, 5, 2])], [k], opset=8)
    rng = np.random.default_rng(2)
    feeds = {"lens": np.array([5, 3, 1], np.int64), "acc0": rng.standard_normal((3, 2)).astype(np.float32),
             "x": rng.standard_normal((3, 5, 2)).astype(np.float32)}
    want, got = reference_outputs(proto, feeds), run_converted(proto, feeds)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    for b, n in enumerate(feeds["lens"]):  # steps past a sequence's length are undefined in the spec; ours are zero
        np.testing.assert_allclose(got[1][b, :n], want[1][b, :n], rtol=1e-5, atol=1e-6)
        assert not got[1][b, n:].any()
    # without sequence_lens every row runs all steps: the final state is the plain sum
    no_lens = helper.make_node("Scan", ["", "acc0", "x"], ["acc", "ys"], body=body, num_scan_inputs=1)
    proto = graph_model([no_lens], [vi("acc0", F, [3, 2]), vi("x", F, [3, 5, 2])], [vi("acc", F, [3, 2]), vi("ys", F, [3, 5, 2])],
                  [k], opset=8)
    got = assert_matches(proto, {"acc0": feeds["acc0"], "x": feeds["x"]})
    np.testing.assert_allclose(got[0], feeds["acc0"] + feeds["x"].sum(1), rtol=1e-5, atol=1e-6)
    assert isinstance(convert(proto)[2].get_submodule("Scan_0"), OnnxScan8)


# -- Loop -------------------------------------------------------------------------------------------
def loop_model():
    """y += x * (i + 1) while sum(y) < limit, at most M times; scan output: y after every step."""
    body = helper.make_graph(
        [helper.make_node("Cast", ["i"], ["i_f"], to=F),
         helper.make_node("Add", ["i_f", "one"], ["i1"]),
         helper.make_node("Mul", ["x", "i1"], ["step"]),
         helper.make_node("Add", ["y_in", "step"], ["y_out"]),
         helper.make_node("ReduceSum", ["y_out"], ["total"], keepdims=0),
         helper.make_node("Less", ["total", "limit"], ["cond_out"]),
         helper.make_node("Identity", ["y_out"], ["scan"])],
        "body", [vi("i", I64, []), vi("cond_in", B, []), vi("y_in", F, [2])],
        [vi("cond_out", B, []), vi("y_out", F, [2]), vi("scan", F, [2])],
        [numpy_helper.from_array(np.array(1.0, np.float32), "one")])
    node = helper.make_node("Loop", ["M", "c0", "y0"], ["y", "ys"], name="the_loop", body=body)
    return graph_model([node], [vi("M", I64, []), vi("c0", B, []), vi("y0", F, [2]), vi("x", F, [2]), vi("limit", F, [])],
                 [vi("y", F, [2]), vi("ys", F, ["n", 2])], opset=13)


@pytest.mark.parametrize("limit,trips,expected_steps", [(100.0, 3, 3), (8.0, 10, 2), (-1.0, 5, 1)])
def test_loop_trip_count_and_condition_match_onnxruntime(limit, trips, expected_steps):
    feeds = {"M": np.array(trips, np.int64), "c0": np.array(True), "y0": np.array([0.5, 0.5], np.float32),
             "x": np.array([1.0, 2.0], np.float32), "limit": np.array(limit, np.float32)}
    got = assert_matches(loop_model(), feeds)
    assert got[1].shape == (expected_steps, 2)


def test_loop_that_runs_zero_times_gives_empty_scan_outputs():
    feeds = {"M": np.array(0, np.int64), "c0": np.array(True), "y0": np.array([0.5, 0.5], np.float32),
             "x": np.array([1.0, 2.0], np.float32), "limit": np.array(5.0, np.float32)}
    got = run_converted(loop_model(), feeds)
    np.testing.assert_array_equal(got[0], feeds["y0"])
    assert got[1].shape == (0, 2)


def test_nested_if_in_loop_reads_the_outermost_scope():
    then_g = helper.make_graph([helper.make_node("Add", ["acc_in", "a"], ["r"])], "then", [], [vi("r")])
    else_g = helper.make_graph([helper.make_node("Sub", ["acc_in", "a"], ["r2"])], "else", [], [vi("r2")])
    body = helper.make_graph(
        [helper.make_node("Mod", ["i", "two"], ["m"]),
         helper.make_node("Equal", ["m", "zero"], ["even"]),
         helper.make_node("If", ["even"], ["acc_out"], then_branch=then_g, else_branch=else_g)],
        "body", [vi("i", I64, []), vi("c", B, []), vi("acc_in", F, [3])], [vi("c", B, []), vi("acc_out", F, [3])],
        [numpy_helper.from_array(np.array(2, np.int64), "two"), numpy_helper.from_array(np.array(0, np.int64), "zero")])
    node = helper.make_node("Loop", ["M", "", "acc0"], ["acc"], body=body)
    proto = graph_model([node], [vi("M", I64, []), vi("acc0", F, [3]), vi("a", F, [3])], [vi("acc", F, [3])], opset=13)
    feeds = {"M": np.array(5, np.int64), "acc0": np.zeros(3, np.float32), "a": np.array([1.0, 2.0, 3.0], np.float32)}
    got = assert_matches(proto, feeds)
    np.testing.assert_allclose(got[0], feeds["a"])  # +a -a +a -a +a


# -- If ---------------------------------------------------------------------------------------------
def if_model():
    """If sum(x) > 0 then x * W (W: the branch's initializer) else x - c (c: the parent's initializer)."""
    then_g = helper.make_graph([helper.make_node("Mul", ["x", "W"], ["t"])], "then", [], [vi("t", F, [2, 3])],
                               [numpy_helper.from_array(np.full((2, 3), 3.0, np.float32), "W")])
    else_g = helper.make_graph([helper.make_node("Sub", ["x", "c"], ["e"])], "else", [], [vi("e", F, [2, 3])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], name="the_if", then_branch=then_g, else_branch=else_g)]
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "zero"), numpy_helper.from_array(np.float32(10.0), "c")]
    return graph_model(nodes, [vi("x", F, [2, 3])], [vi("y", F, [2, 3])], inits, opset=13)


def test_data_dependent_if_runs_both_branches_like_onnxruntime():
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 1.0
    for sign, expected in ((1.0, x * 3.0), (-1.0, -x - 10.0)):
        feeds = {"x": sign * x}
        got = assert_matches(if_model(), feeds)
        np.testing.assert_allclose(got[0], expected)
    loaded = onnxxai.load(if_model())
    assert any(isinstance(m, OnnxIf) for m in loaded.torch_module.modules())


def test_if_gradient_flows_through_the_taken_branch():
    _, _, module = convert(if_model())
    x = torch.ones(2, 3, requires_grad=True)
    module(x).sum().backward()
    assert torch.equal(x.grad, torch.full((2, 3), 3.0))


def test_if_with_branches_of_different_output_counts_is_refused():
    then_g = helper.make_graph([helper.make_node("Neg", ["x"], ["t"])], "then", [], [vi("t")])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"]), helper.make_node("Abs", ["x"], ["e2"])], "else", [],
                               [vi("e"), vi("e2")])
    node = helper.make_node("If", ["cond"], ["y"], name="bad_if", then_branch=then_g, else_branch=else_g)
    with pytest.raises(onnxxai.UnsupportedOpError, match="bad_if.*else_branch body returns 2 outputs, expected 1"):
        convert(graph_model([node], [vi("cond", B, []), vi("x", F, [2])], [vi("y", F, [2])], opset=13))


def test_unconvertible_body_names_the_control_flow_node_and_the_inner_op():
    body = helper.make_graph([helper.make_node("Mystery", ["s_in", "x_t"], ["s_out"], domain="com.example")], "body",
                             [vi("s_in"), vi("x_t")], [vi("s_out")])
    node = helper.make_node("Scan", ["s0", "x"], ["s"], name="outer_scan", body=body, num_scan_inputs=1)
    proto = graph_model([node], [vi("s0", F, [2]), vi("x", F, [4, 2])], [vi("s", F, [2])], opset=16)
    proto.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(onnxxai.UnsupportedOpError, match=r"Scan node 'outer_scan'.*com\.example::Mystery"):
        convert(proto)


# -- a real export ----------------------------------------------------------------------------------
class Recurrence(torch.nn.Module):
    """A scripted time loop followed by a data-dependent branch: exports as Loop and If."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros_like(x[:, 0])
        for t in range(x.shape[1]):
            h = torch.tanh(h * 0.5 + x[:, t])
        if bool(h.sum() > 0):
            h = h * 2.0
        else:
            h = h - 1.0
        return h


def test_torch_script_export_with_loop_and_if_loads_with_parity():
    scripted = torch.jit.script(Recurrence())
    buffer = io.BytesIO()
    torch.onnx.export(scripted, (torch.randn(2, 5, 3),), buffer, dynamo=False, input_names=["x"], output_names=["y"],
                      opset_version=17, dynamic_axes={"x": {1: "T"}})
    proto = onnx.load_from_string(buffer.getvalue())
    assert {"Loop", "If"} <= {n.op_type for n in proto.graph.node}
    loaded = onnxxai.load(proto)  # checks parity with onnxruntime on a probe
    assert loaded.parity.ok
    assert any(isinstance(m, OnnxLoop) for m in loaded.torch_module.modules())
    for x in (torch.rand(2, 4, 3), -torch.rand(2, 7, 3)):  # both branches, two sequence lengths
        np.testing.assert_allclose(loaded(x.numpy()), Recurrence()(x).numpy(), rtol=1e-5, atol=1e-6)
