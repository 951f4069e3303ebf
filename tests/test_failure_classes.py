"""Failure classes seen on real files (issue 13), each against an independent reference:

1. BatchNormalization of any rank, unknown rank included (PaddlePaddle exports), vs onnxruntime.
2. Pad of every mode on every rank ONNX allows, negative pads, the axes input, vs onnxruntime.

The fixed-batch, probe-input and gradient-check classes live in tests/test_fixed_batch.py,
tests/test_probe_inputs.py and tests/test_gradient_check.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxxai.convert.pad import OnnxPad
from onnx_cases import assert_matches, check_node, graph_model, gradcheck, randn, value_info

RNG = np.random.default_rng(13)


def _bn_stats(channels: int) -> dict[str, np.ndarray]:
    return {"scale": RNG.uniform(0.5, 1.5, channels).astype(np.float32), "bias": randn(RNG, channels),
            "mean": randn(RNG, channels), "var": RNG.uniform(0.5, 2.0, channels).astype(np.float32)}


# -- 1. BatchNormalization of any rank ----------------------------------------------------------
@pytest.mark.parametrize("opset", [7, 9, 15])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 4, 5), (2, 3, 2, 3, 4), (1, 3, 2, 2, 2, 3)],
                         ids=lambda s: f"rank{len(s)}")
def test_batch_norm_any_rank(shape, opset):
    check_node("BatchNormalization", {"x": randn(RNG, *shape)}, opset=opset, initializers=_bn_stats(shape[1]),
               attrs={"epsilon": 1e-3}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4, 5), (2, 3, 2, 3, 4)], ids=lambda s: f"rank{len(s)}")
def test_batch_norm_unknown_rank_input(shape):
    """The input declares no shape at all, as PaddlePaddle's exports do: onnx2torch read its rank
    from shape inference and gave up ("spatial rank == -2")."""
    model = graph_model([helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"])],
                        [value_info("x", TensorProto.FLOAT, None)], [value_info("y", TensorProto.FLOAT, None)],
                        [numpy_helper.from_array(v, k) for k, v in _bn_stats(3).items()], opset=15)
    assert_matches(model, {"x": randn(RNG, *shape)})


def test_batch_norm_after_reshape_of_run_time_shape():
    """BN's input is a Reshape to a target given at run time: shape inference cannot tell its rank."""
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]),
             helper.make_node("BatchNormalization", ["r", "scale", "bias", "mean", "var"], ["y"])]
    model = graph_model(nodes, [value_info("x", TensorProto.FLOAT, [2, 24]), value_info("s", TensorProto.INT64, ["k"])],
                        [value_info("y", TensorProto.FLOAT, None)],
                        [numpy_helper.from_array(v, k) for k, v in _bn_stats(3).items()], opset=15)
    x = randn(RNG, 2, 24)
    for target in ([2, 3, 8], [2, 3, 2, 4], [2, 3, 2, 2, 2]):
        assert_matches(model, {"x": x, "s": np.array(target, np.int64)})


@pytest.mark.parametrize("shape", [(3, 2), (2, 2, 3), (2, 2, 2, 3)])
def test_batch_norm_gradcheck(shape):
    from onnxxai.convert.normalization import BatchNormInference

    stats = [torch.tensor(v, dtype=torch.float64) for v in _bn_stats(shape[1]).values()]
    gradcheck(BatchNormInference(1e-3), shape, constants=stats, seed=0)


# -- 2. Pad: every mode, every rank ---------------------------------------------------------------
MODES = ("constant", "reflect", "edge", "wrap")


def _pads(rank: int, rng: np.random.Generator, negative: bool) -> list[int]:
    low = -1 if negative else 0
    return [int(v) for v in rng.integers(low, 3, size=2 * rank)]


@pytest.mark.parametrize("opset", [11, 13, 18, 19])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rank", [1, 2, 3, 4, 5])
def test_pad_every_mode_every_rank(rank, mode, opset):
    if mode == "wrap" and opset < 19:
        pytest.skip("wrap mode arrived in Pad-19")
    rng = np.random.default_rng(rank * 100 + opset)
    shape = tuple(int(d) for d in rng.integers(5, 7, size=rank))  # reflect needs pad < length
    for negative in (False, True):
        pads = np.array(_pads(rank, rng, negative), np.int64)
        inputs = {"x": randn(rng, *shape)}
        consts = {"pads": pads}
        if mode == "constant":
            consts["value"] = np.array(1.5, np.float32)
        check_node("Pad", inputs, opset=opset, attrs={"mode": mode}, initializers=consts, typed=True)


@pytest.mark.parametrize("mode", MODES)
def test_pad_axes_input(mode):
    """Pad-18+ axes input (negative axes included), pads given at run time."""
    x = randn(RNG, 2, 3, 4, 5)
    pads = np.array([1, -1, 2, 0], np.int64)
    check_node("Pad", {"x": x, "pads": pads}, opset=19, attrs={"mode": mode},
               initializers={"value": np.array(0.5, np.float32), "axes": np.array([1, -1], np.int64)}, typed=True)


@pytest.mark.parametrize("mode", MODES[:3])
def test_pad_2(mode):
    """Pad-2: pads and the constant value are attributes."""
    check_node("Pad", {"x": randn(RNG, 3, 4)}, opset=2, attrs={"mode": mode, "pads": [1, 2, 2, 1], "value": 0.5}, typed=True)


@pytest.mark.parametrize("mode", MODES)
def test_pad_gradcheck_rank2(mode):
    pads = torch.tensor([1, 2, 2, 1])
    gradcheck(OnnxPad(mode), (3, 4), constants=(pads,), seed=0)
