"""A fast subset of ONNX's node conformance cases (scripts/conformance.py runs them all).

Every float-tensor one-node case of these ops must reproduce ONNX's reference outputs after our
conversion; the list holds the ops our own converters and normalization passes serve plus the
common network ops, each measured at 100% by the script.
"""

from __future__ import annotations

import warnings

import pytest

from onnxxai.testing import is_float_case, run_case

OPS = {
    "Acosh", "Asinh", "Atanh", "Cosh", "Sinh", "Mish", "Swish", "Shrink", "ThresholdedRelu", "Hardmax",
    "Gelu", "GlobalMaxPool", "GroupNormalization", "LayerNormalization", "MeanVarianceNormalization",
    "RMSNormalization", "Flatten", "Split", "ReduceMax", "ReduceMin", "ReduceProd",
    "Gemm", "MatMul", "Add", "Relu", "Softmax", "Concat", "Transpose", "GlobalAveragePool",
    "Cast", "CastLike", "Conv", "GridSample", "Selu",
    "LSTM", "GRU", "RNN", "Scan", "ConvTranspose", "LpPool", "MaxPool", "AveragePool", "SpaceToDepth",
    "DepthToSpace", "RotaryEmbedding", "SwiGLU", "DFT", "CausalConvWithState", "Resize", "Upsample",
    "LinearAttention", "DeformConv", "Det", "FlexAttention", "TreeEnsemble",
}


def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    return [c for c in cases if len(c.model.graph.node) == 1 and c.model.graph.node[0].op_type in OPS and is_float_case(c.model)]


CASES = _cases()


def test_subset_is_not_empty():
    assert len(CASES) > 100
    assert {c.model.graph.node[0].op_type for c in CASES} == OPS


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case_reproduces_onnx_reference(case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reason, detail = run_case(case, raw=False)
    assert reason == "pass", detail
