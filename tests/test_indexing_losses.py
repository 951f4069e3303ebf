"""Losses (losses.py), scatter / cumulative / triangular / selection ops (indexing.py) and ReduceMax/Min
over an empty set (reduce.py): single-op models against onnxruntime (or ONNX's reference evaluator
where onnxruntime lacks the opset), and float64 gradchecks of the differentiable modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper

from onnxxai.convert.indexing import Cumulative, ScatterElements, ScatterND, TensorScatter, Trilu
from onnxxai.convert.losses import NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss
from onnxxai.convert.pipeline import convert
from onnx_cases import check_node, double, randn

RNG = np.random.default_rng(0)
F32 = np.float32
I64 = np.int64


def f32(*shape: int) -> np.ndarray:
    return randn(RNG, *shape)


def check(op: str, feeds: dict, *, opset: int = 22, consts: dict | None = None, **kwargs) -> None:
    """One ``op`` node fed by graph inputs ``feeds`` and initializers ``consts``, its outputs typed from
    the reference run (onnxruntime, or ONNX's own with ``reference="onnx"``), against that run: equal
    dtypes and shapes, values within 1e-5 compared in float64."""
    check_node(op, feeds, opset=opset, initializers=consts, typed=True, check_dtype=True, in_float64=True, **kwargs)


LABELS = np.array([[0, 2, -1], [1, -1, 3]], I64)  # (N=2, d1=3), -1 is the ignored class below
TIES = np.array([[3, 1, 3, 2, 1, 3], [0, 0, 5, 0, 5, 0]], F32)

CASES = {
    "NLL-22-NCd1-mean-weight-negative-ii": ("NegativeLogLikelihoodLoss", {"x": f32(2, 4, 3), "t": LABELS, "w": np.abs(f32(4))},
                                            {"attrs": {"ignore_index": -1}}),
    "NLL-13-NC-sum": ("NegativeLogLikelihoodLoss", {"x": f32(5, 3), "t": np.array([0, 2, 1, 1, 0], I64)},
                      {"attrs": {"reduction": "sum"}, "opset": 13}),
    "NLL-22-NCd1d2-none-high-ii": ("NegativeLogLikelihoodLoss", {"x": f32(2, 3, 2, 2), "t": np.array([[[0, 9], [2, 1]], [[9, 1], [0, 2]]], I64)},
                                   {"attrs": {"reduction": "none", "ignore_index": 9}}),
    "SCE-13-mean-weight-ii-log_prob": ("SoftmaxCrossEntropyLoss", {"x": f32(2, 4, 3), "t": LABELS, "w": np.abs(f32(4))},
                                       {"attrs": {"ignore_index": -1}, "opset": 13, "n_outputs": 2}),
    "SCE-13-none-4d": ("SoftmaxCrossEntropyLoss", {"x": f32(2, 3, 2, 2), "t": RNG.integers(0, 3, (2, 2, 2))},
                       {"attrs": {"reduction": "none"}, "opset": 13}),
    "Trilu-14-upper-k-input": ("Trilu", {"x": f32(2, 4, 5), "k": np.array(-1, I64)}, {"opset": 14}),
    "Trilu-14-lower-const-k": ("Trilu", {"x": f32(3, 5)}, {"attrs": {"upper": 0}, "opset": 14, "consts": {"k": np.array(2, I64)}}),
    "Trilu-14-lower-int": ("Trilu", {"x": RNG.integers(0, 9, (4, 3))}, {"attrs": {"upper": 0}, "opset": 14}),
    "CumSum-14-default": ("CumSum", {"x": f32(3, 4), "a": np.array(1, I64)}, {"opset": 14}),
    "CumSum-14-exclusive-reverse": ("CumSum", {"x": f32(3, 4)}, {"attrs": {"exclusive": 1, "reverse": 1}, "opset": 14,
                                                                 "consts": {"a": np.array(-2, I64)}}),
    "CumSum-11-int32-exclusive": ("CumSum", {"x": np.arange(1, 6, dtype=np.int32), "a": np.array(0, np.int32)},
                                  {"attrs": {"exclusive": 1}, "opset": 11}),
    "CumProd-26-reverse-exclusive": ("CumProd", {"x": f32(3, 4), "a": np.array(0, I64)},
                                     {"attrs": {"exclusive": 1, "reverse": 1}, "opset": 26, "reference": "onnx"}),
    "ScatterElements-18-add-duplicates": ("ScatterElements", {"d": f32(3, 4), "i": np.array([[1, 1, -1], [0, 0, 2]], I64), "u": f32(2, 3)},
                                          {"attrs": {"axis": 1, "reduction": "add"}, "opset": 18}),
    "ScatterElements-18-mul": ("ScatterElements", {"d": f32(3, 4), "i": np.array([[1, 2, 0, 1]], I64), "u": f32(1, 4)},
                               {"attrs": {"reduction": "mul"}, "opset": 18}),
    "ScatterElements-18-max-negative-axis": ("ScatterElements", {"d": f32(3, 4), "i": np.array([[3, 3], [0, 1]], I64), "u": f32(2, 2)},
                                             {"attrs": {"axis": -1, "reduction": "max"}, "opset": 18}),
    "ScatterElements-18-min": ("ScatterElements", {"d": f32(3, 4), "i": np.array([[2, 2, 0, 1]], I64), "u": f32(1, 4)},
                               {"attrs": {"reduction": "min"}, "opset": 18}),
    "Scatter-9": ("Scatter", {"d": f32(3, 3), "i": np.array([[1, 0, 2], [0, 2, 1]], I64), "u": f32(2, 3)}, {"opset": 9}),
    "ScatterND-18-add": ("ScatterND", {"d": f32(4, 3, 2), "i": np.array([[0], [2], [0]], I64), "u": f32(3, 3, 2)},
                         {"attrs": {"reduction": "add"}, "opset": 18}),
    "ScatterND-18-max-element-indices": ("ScatterND", {"d": f32(3, 4), "i": np.array([[0, 1], [2, -1], [0, 1]], I64), "u": f32(3)},
                                         {"attrs": {"reduction": "max"}, "opset": 18}),
    "ScatterND-16-mul": ("ScatterND", {"d": f32(2, 3, 4), "i": np.array([[1, 2], [0, 0]], I64), "u": f32(2, 4)},
                         {"attrs": {"reduction": "mul"}, "opset": 16}),
    "ScatterND-13-none": ("ScatterND", {"d": f32(2, 3, 4), "i": np.array([[[1, 2]], [[0, -3]]], I64), "u": f32(2, 1, 4)}, {"opset": 13}),
    "TensorScatter-24-circular": ("TensorScatter", {"c": f32(2, 3, 5, 4), "u": f32(2, 3, 2, 4), "w": np.array([4, 1], I64)},
                                  {"attrs": {"mode": "circular"}, "opset": 24, "reference": "onnx"}),
    "TensorScatter-24-axis1-prefill": ("TensorScatter", {"c": f32(2, 6, 3), "u": f32(2, 3, 3)},
                                       {"attrs": {"axis": 1}, "opset": 24, "reference": "onnx"}),
    "TopK-11-ties-largest": ("TopK", {"x": TIES, "k": np.array([4], I64)}, {"opset": 11, "n_outputs": 2}),
    "TopK-11-ties-smallest-axis0": ("TopK", {"x": TIES.T.copy()}, {"attrs": {"axis": 0, "largest": 0}, "opset": 11, "n_outputs": 2,
                                                                   "consts": {"k": np.array([3], I64)}}),
    "TopK-1-attribute": ("TopK", {"x": TIES}, {"attrs": {"k": 2}, "opset": 1, "n_outputs": 2}),
    "Unique-11-sorted": ("Unique", {"x": np.array([2, 1, 1, 3, 4, 3, 2], F32)}, {"opset": 11, "n_outputs": 4}),
    "Unique-11-unsorted": ("Unique", {"x": np.array([2, 1, 1, 3, 4, 3, 2], F32)}, {"attrs": {"sorted": 0}, "opset": 11, "n_outputs": 4}),
    "Unique-11-axis": ("Unique", {"x": np.array([[1, 0, 0], [1, 0, 0], [2, 3, 4], [1, 0, 0]], F32)},
                       {"attrs": {"axis": -2}, "opset": 11, "n_outputs": 4}),
    "Compress-11-axis": ("Compress", {"x": f32(3, 4), "c": np.array([True, False, True], bool)}, {"attrs": {"axis": 0}, "opset": 11}),
    "Compress-11-flat-short": ("Compress", {"x": f32(3, 4), "c": np.array([False, True, True, False, True], bool)}, {"opset": 11}),
    "IsInf-20-positive": ("IsInf", {"x": np.array([-np.inf, 1.0, np.inf, np.nan], F32)}, {"attrs": {"detect_negative": 0}, "opset": 20}),
    "IsInf-10-negative": ("IsInf", {"x": np.array([-np.inf, 1.0, np.inf, np.nan], F32)}, {"attrs": {"detect_positive": 0}, "opset": 10}),
    "ReduceMax-20-empty-set": ("ReduceMax", {"x": np.zeros((2, 0, 4), F32)}, {"opset": 20, "consts": {"a": np.array([1], I64)}}),
    "ReduceMin-18-empty-set-int": ("ReduceMin", {"x": np.zeros((2, 0, 4), np.int32)},
                                   {"attrs": {"keepdims": 0}, "opset": 18, "consts": {"a": np.array([1], I64)}}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case: str) -> None:
    op, feeds, kwargs = CASES[case]
    check(op, feeds, **kwargs)


def test_unsupported_reduction_is_named() -> None:
    node = helper.make_node("ScatterElements", ["d", "i", "u"], ["y"], reduction="mean")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("d", 1, [2]), helper.make_tensor_value_info("i", 7, [1]),
                                            helper.make_tensor_value_info("u", 1, [1])], [helper.make_tensor_value_info("y", 1, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(Exception, match="reduction='mean'"):
        convert(model, "bad")


def _d(*shape: int) -> torch.Tensor:
    return double(*shape, seed=sum(shape))


def test_gradchecks() -> None:
    target = torch.tensor([[0, 2, -1], [1, -1, 3]])
    weight = torch.rand(4, dtype=torch.float64) + 0.5
    for reduction in ("none", "sum", "mean"):
        assert torch.autograd.gradcheck(lambda x, r=reduction: NegativeLogLikelihoodLoss(r, -1)(x, target, weight), (_d(2, 4, 3),))
        assert torch.autograd.gradcheck(lambda x, r=reduction: SoftmaxCrossEntropyLoss(r, -1, True)(x, target, weight), (_d(2, 4, 3),))
    for op in ("CumSum", "CumProd"):
        assert torch.autograd.gradcheck(Cumulative(op, True, True, 1), (_d(3, 4),))
        assert torch.autograd.gradcheck(Cumulative(op, False, False, 0), (_d(3, 4),))
    assert torch.autograd.gradcheck(Trilu(False, 1), (_d(2, 3, 4),))
    index = torch.tensor([[1, 1, -1], [0, 0, 2]])
    for reduction in ("none", "add", "mul"):
        idx = index if reduction != "none" else torch.tensor([[1, 0, 2], [0, 2, 1]])
        assert torch.autograd.gradcheck(lambda d, u, r=reduction, i=idx: ScatterElements(1, r)(d, i, u), (_d(3, 4), _d(2, 3)))
    nd_index = torch.tensor([[0], [2], [0]])
    assert torch.autograd.gradcheck(lambda d, u: ScatterND("add")(d, nd_index, u), (_d(4, 3), _d(3, 3)))
    assert torch.autograd.gradcheck(lambda d, u: ScatterND("none")(d, nd_index[:2], u), (_d(4, 3), _d(2, 3)))
    writes = torch.tensor([4, 1])
    assert torch.autograd.gradcheck(lambda c, u: TensorScatter(-2, True)(c, u, writes), (_d(2, 5, 3), _d(2, 2, 3)))


@pytest.mark.parametrize("batch_dims, indices", [
    (0, np.array([[1, -1], [0, 1]], I64)),
    (1, np.array([[[1], [0]], [[-1], [-2]]], I64)),
    (2, np.array([[[1], [0]], [[3], [-2]]], I64)),
])
def test_gather_nd_batch_dims_and_negative_indices(batch_dims, indices):
    check("GatherND", {"data": f32(2, 2, 4, 3), "i": indices}, attrs={"batch_dims": batch_dims}, opset=13)


def test_gather_elements_negative_indices():
    check("GatherElements", {"data": f32(3, 4), "i": np.array([[-1, 0, 2, -3], [1, -3, 0, 2]], I64)}, attrs={"axis": 0}, opset=13)
    check("GatherElements", {"data": f32(3, 4), "i": np.array([[-1], [2], [-4]], I64)}, attrs={"axis": 1}, opset=13)


def test_gather_nd_gradcheck():
    from onnxxai.convert.indexing import GatherND

    data = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([[[2], [0]], [[-1], [1]]])
    assert torch.autograd.gradcheck(lambda d: GatherND(1)(d, index), (data,))
