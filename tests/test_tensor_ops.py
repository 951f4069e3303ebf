"""Layout/index/signal ops (tensor_ops.py), Dropout and Clip, LpNormalization and BatchNormalization in
training mode, and ai.onnx.ml Binarizer: single-op models against onnxruntime, and float64 gradchecks."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import helper

import onnxxai
from onnxxai.convert.activation import ClipDynamic, DropoutInference
from onnxxai.convert.normalization import BatchNormTraining, LpNormalization
from onnxxai.convert.signal import DFT
from onnxxai.convert.tensor_ops import Det, DepthToSpace, OneHot, Range, SpaceToDepth
from onnxxai.convert.pipeline import convert
from onnx_cases import check_node, gradcheck, randn, typed_node

RNG = np.random.default_rng(0)
F32 = np.float32


def f32(*shape: int) -> np.ndarray:
    return randn(RNG, *shape)


def check(op: str, feeds: dict, *, opset: int = 22, consts: dict | None = None, input_order: list[str] | None = None,
          **kwargs) -> None:
    """One ``op`` node; ``feeds`` are graph inputs, ``consts`` initializers, "" an absent input; its
    outputs typed from onnxruntime's run, against that run: equal dtypes and shapes, values within
    rtol/atol (1e-5 unless given) compared in float64."""
    check_node(op, feeds, opset=opset, initializers=consts, node_inputs=input_order, typed=True, check_dtype=True,
               in_float64=True, **kwargs)


CASES = {
    "SpaceToDepth-13": ("SpaceToDepth", {"x": f32(2, 3, 4, 6)}, {"attrs": {"blocksize": 2}, "opset": 13}),
    "SpaceToDepth-28-CRD": ("SpaceToDepth", {"x": f32(1, 2, 6, 3)}, {"attrs": {"blocksize": 3, "mode": "CRD"}, "opset": 28}),
    "DepthToSpace-13-DCR": ("DepthToSpace", {"x": f32(2, 8, 2, 3)}, {"attrs": {"blocksize": 2}, "opset": 13}),
    "DepthToSpace-13-CRD": ("DepthToSpace", {"x": f32(2, 8, 2, 3)}, {"attrs": {"blocksize": 2, "mode": "CRD"}, "opset": 13}),
    "OneHot-11-axis": ("OneHot", {"i": np.array([[0, -1, 5], [2, -4, 1]], np.int64)},
                       {"attrs": {"axis": 1}, "opset": 11, "consts": {"d": np.array(4, np.int64), "v": np.array([-1.5, 2.0], F32)}}),
    "OneHot-11-float-indices": ("OneHot", {"i": np.array([0.7, 2.2, 3.9], F32), "d": np.array([4.0], F32), "v": np.array([0, 1], F32)},
                                {"opset": 11}),
    "Range-11-float": ("Range", {"s": np.array(1.5, F32), "l": np.array(7.1, F32), "d": np.array(0.7, F32)}, {"opset": 11}),
    "Range-11-int-negative": ("Range", {"s": np.array(10, np.int32), "l": np.array(-3, np.int32), "d": np.array(-4, np.int32)}, {"opset": 11}),
    "Det-22": ("Det", {"x": f32(2, 3, 4, 4)}, {"opset": 22}),
    "DFT-17-complex-axis2": ("DFT", {"x": f32(2, 5, 6, 2)}, {"attrs": {"axis": 2}, "opset": 17}),
    "DFT-17-rfft-length": ("DFT", {"x": f32(2, 7, 1)}, {"attrs": {"onesided": 1}, "opset": 17, "consts": {"n": np.array(10, np.int64)}}),
    "DFT-20-real": ("DFT", {"x": f32(2, 6, 3, 1)}, {"opset": 20, "consts": {"n": np.array(4, np.int64), "axis": np.array(1, np.int64)}}),
    "DFT-20-inverse-default-axis": ("DFT", {"x": f32(2, 6, 3, 2)}, {"attrs": {"inverse": 1}, "opset": 20}),
    "DFT-20-irfft": ("DFT", {"x": f32(3, 5, 2)}, {"attrs": {"inverse": 1, "onesided": 1}, "opset": 20,
                                                 "consts": {"": None, "axis": np.array(-2, np.int64)}, "input_order": ["x", "", "axis"]}),
    "DFT-20-run-time-axis": ("DFT", {"x": f32(2, 6, 3, 1), "n": np.array(6, np.int64), "axis": np.array(-3, np.int64)}, {"opset": 20}),
    "Dropout-22-seed-mask": ("Dropout", {"x": f32(3, 4), "r": np.array(0.3, F32)}, {"attrs": {"seed": 3}, "opset": 22, "n_outputs": 2}),
    "Dropout-13-training-zero-ratio": ("Dropout", {"x": f32(3, 4), "r": np.array(0.0, F32), "t": np.array(True)},
                                       {"opset": 13, "n_outputs": 2}),
    "Clip-13-no-bounds": ("Clip", {"x": f32(3, 4)}, {"opset": 13, "input_order": ["x", "", ""]}),
    "Clip-13-max-only-constant": ("Clip", {"x": f32(3, 4)}, {"opset": 13, "consts": {"hi": np.array(0.2, F32)}, "input_order": ["x", "", "hi"]}),
    "LpNormalization-22-axis0-zeros": ("LpNormalization", {"x": np.array([[[1, 0], [3, 0]], [[0, 0], [4, -2]]], F32)},
                                       {"attrs": {"axis": 0, "p": 2}, "opset": 22}),
    "BatchNormalization-15-training": ("BatchNormalization", {"x": f32(4, 3, 2, 5)},
                                       {"attrs": {"training_mode": 1, "epsilon": 1e-2, "momentum": 0.8}, "opset": 15, "n_outputs": 3,
                                        "consts": {"s": f32(3), "b": f32(3), "m": f32(3), "v": np.abs(f32(3))}}),
    "Binarizer-ml": ("Binarizer", {"x": f32(3, 4)}, {"attrs": {"threshold": 0.25}, "opset": 17, "domain": "ai.onnx.ml"}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_single_op_parity_with_onnxruntime(name):
    op, feeds, kwargs = CASES[name]
    check(op, feeds, **kwargs)


def test_dft_irfft_of_real_spectrum_against_reference():
    """DFT-17 irfft of a real-only (last dim 1) spectrum: onnxruntime refuses it, the ONNX reference
    treats it as complex with zero imaginary part."""
    from onnx.reference import ReferenceEvaluator

    x = f32(1, 6, 4, 1)
    node = helper.make_node("DFT", ["x"], ["y"], axis=1, inverse=1, onesided=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, x.shape)], [helper.make_tensor_value_info("y", 1, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    (want,) = ReferenceEvaluator(model).run(None, {"x": x})
    _, _, module = convert(model, "dft")
    np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), want, rtol=1e-5, atol=1e-5)


def test_range_27_against_numpy():
    """onnxruntime 1.32 runs Range-27; float16 goes through float32 (stash_type 1) as the spec says."""
    start, limit, delta = (np.array(v, np.float16) for v in (0.5, 40.0, 0.3))
    want = np.arange(np.float32(start), np.float32(limit), np.float32(delta), dtype=np.float32).astype(np.float16)
    got = Range(torch.float32)(*(torch.from_numpy(a) for a in (start, limit, delta)))
    assert got.dtype == torch.float16
    np.testing.assert_array_equal(got.numpy(), want)
    check("Range", {"s": np.array(2.0, F32), "l": np.array(-1.0, F32), "d": np.array(-0.25, F32)}, opset=27)
    empty = Range()(torch.tensor(3.0), torch.tensor(1.0), torch.tensor(0.5))
    assert empty.shape == (0,)


def test_dropout_training_with_ratio_is_refused():
    x = torch.randn(2, 3)
    with pytest.raises(NotImplementedError, match="training_mode"):
        DropoutInference()(x, torch.tensor(0.5), torch.tensor(True))
    y, mask = DropoutInference(with_mask=True)(x, torch.tensor(0.5), torch.tensor(False))
    assert torch.equal(y, x) and mask.dtype == torch.bool and bool(mask.all())
    model, _ = typed_node("Dropout", {"x": f32(2, 3)}, opset=22, initializers={"r": np.array(0.5, F32), "t": np.array(True)})
    with pytest.raises(Exception, match="training_mode=1"):
        convert(model, "dropout")


def test_clip_dynamic_without_bounds_is_identity():
    x = torch.randn(3)
    assert ClipDynamic()(x) is x


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_space_depth_gradcheck(mode):
    gradcheck(SpaceToDepth(2, mode), (1, 2, 4, 2))
    gradcheck(DepthToSpace(2, mode), (1, 8, 2, 1))
    x = torch.randn(2, 3, 4, 6)
    assert torch.equal(DepthToSpace(2, mode)(SpaceToDepth(2, mode)(x)), x)


def test_one_hot_gradcheck_in_values():
    indices = torch.tensor([[1, -1], [7, 0]])
    gradcheck(lambda v: OneHot(0)(indices, torch.tensor(3), v), (2,))


def test_range_gradcheck_in_start_and_delta():
    limit = torch.tensor(3.0, dtype=torch.float64)
    start, delta = torch.tensor(0.1, dtype=torch.float64, requires_grad=True), torch.tensor(0.45, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, d: Range()(s, limit, d), (start, delta))


def test_det_gradcheck():
    gradcheck(Det(), (2, 3, 3))


@pytest.mark.parametrize("inverse,onesided,last", [(0, 0, 1), (0, 0, 2), (1, 0, 2), (0, 1, 1), (1, 1, 2)])
def test_dft_gradcheck(inverse, onesided, last):
    module = DFT(bool(inverse), bool(onesided), axis=1)
    gradcheck(lambda x: module(x, torch.tensor(6)), (2, 5, 3, last))


def test_lp_normalization_gradcheck_and_zero_slice():
    gradcheck(LpNormalization(0, 2), (3, 4))
    x = torch.tensor([[0.0, 1.0], [0.0, -2.0]], dtype=torch.float64, requires_grad=True)
    y = LpNormalization(0, 1)(x)
    assert torch.equal(y[:, 0], torch.zeros(2, dtype=torch.float64))
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_batch_norm_training_gradcheck():
    module = BatchNormTraining(1e-3, 0.9, 3)
    gradcheck(lambda x, s, b, m, v: torch.cat([t.reshape(-1) for t in module(x, s, b, m, v)]), (4, 3, 2), (3,), (3,), (3,), (3,))


def test_optional_ops_on_a_plain_tensor_match_onnxruntime():
    from onnx import TensorProto

    nodes = [helper.make_node("OptionalGetElement", ["x"], ["g"], name="get"),
             helper.make_node("OptionalHasElement", ["x"], ["h"], name="has"),
             helper.make_node("Neg", ["g"], ["y"], name="neg")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
                               helper.make_tensor_value_info("h", TensorProto.BOOL, [])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    want = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = onnxxai.load(proto)(x)
    np.testing.assert_array_equal(got[0], want[0])
    assert bool(got[1]) is bool(want[1]) is True
