"""Sequence ops (lists of tensors): single-op models vs onnxruntime, a scripted list-building loop, gradients."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from onnx import TensorProto, helper

import onnxxai
from onnxxai.convert.sequence import OnnxConcatFromSequence
from onnx_cases import assert_matches, graph_model

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def test_split_concat_roundtrip_and_ops():
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    nodes = [
        helper.make_node("SplitToSequence", ["x", "s"], ["seq"], axis=0),           # sizes 2, 2, 1
        helper.make_node("SequenceErase", ["seq", "neg1"], ["seq2"]),               # drop last
        helper.make_node("SequenceInsert", ["seq2", "x", "zero"], ["seq3"]),        # x in front
        helper.make_node("SequenceAt", ["seq3", "neg1"], ["last"]),
        helper.make_node("SequenceLength", ["seq3"], ["n"]),
        helper.make_node("ConcatFromSequence", ["seq3"], ["cat"], axis=0),
        helper.make_node("SplitToSequence", ["x"], ["cols"], axis=1, keepdims=0),
        helper.make_node("ConcatFromSequence", ["cols"], ["stacked"], axis=-1, new_axis=1),
        helper.make_node("SequenceConstruct", ["x", "x"], ["pair"]),
        helper.make_node("SequenceEmpty", [], ["empty"]),
        helper.make_node("SequenceInsert", ["empty", "last"], ["one"]),
    ]
    inits = [helper.make_tensor("s", I64, [], [2]), helper.make_tensor("neg1", I64, [], [-1]),
             helper.make_tensor("zero", I64, [], [0])]
    outs = [helper.make_tensor_value_info("last", F, None), helper.make_tensor_value_info("n", I64, None),
            helper.make_tensor_value_info("cat", F, None), helper.make_tensor_value_info("stacked", F, None),
            helper.make_tensor_sequence_value_info("pair", F, None), helper.make_tensor_sequence_value_info("one", F, None)]
    assert_matches(graph_model(nodes, [helper.make_tensor_value_info("x", F, [5, 3])], outs, inits, opset=17), {"x": x},
                   rtol=1e-6, atol=0)


def test_split_to_sequence_list_and_keepdims():
    x = np.arange(24, dtype=np.float32).reshape(2, 6, 2)
    nodes = [helper.make_node("SplitToSequence", ["x", "s"], ["seq"], axis=1),
             helper.make_node("SplitToSequence", ["x"], ["ones"], axis=1, keepdims=1),
             helper.make_node("ConcatFromSequence", ["ones"], ["back"], axis=1)]
    outs = [helper.make_tensor_sequence_value_info("seq", F, None), helper.make_tensor_value_info("back", F, None)]
    assert_matches(graph_model(nodes, [helper.make_tensor_value_info("x", F, [2, 6, 2])], outs,
                               [helper.make_tensor("s", I64, [3], [1, 2, 3])], opset=17), {"x": x}, rtol=1e-6, atol=0)


class _Collect(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: list[torch.Tensor] = []
        for i in range(x.shape[1]):
            out.append(torch.tanh(x[:, i]) * float(i + 1))
        return torch.stack(out, 1).sum(1)


def test_scripted_loop_collecting_a_list(tmp_path):
    path = tmp_path / "collect.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.jit.script(_Collect()), (torch.randn(2, 4, 3),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "b", 1: "t"}})
    ops = {n.op_type for n in __import__("onnx").load(str(path)).graph.node}
    assert "Loop" in ops and ops & {"SequenceEmpty", "SequenceConstruct", "ConcatFromSequence"}
    model = onnxxai.load(path)  # parity against onnxruntime on probe inputs
    x = np.random.default_rng(1).standard_normal((3, 5, 3)).astype(np.float32)
    want = (np.tanh(x) * np.arange(1, 6, dtype=np.float32)[None, :, None]).sum(1)
    np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-6)


def test_concat_from_sequence_gradcheck():
    a = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    cat = OnnxConcatFromSequence(0, False)
    assert torch.autograd.gradcheck(lambda p, q: cat([p, q]), (a, b))
    c = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    stack = OnnxConcatFromSequence(-1, True)
    assert torch.autograd.gradcheck(lambda p, q: stack([p, q]), (a, c))
