"""Signal, image-layout, bitwise and tree-ensemble converters: single-op models against onnxruntime
(or ONNX's reference evaluator where onnxruntime lacks the op) and float64 gradchecks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxxai.convert.ml import TreeEnsemble
from onnxxai.convert.conv import Col2Im, DeformConv2d
from onnxxai.convert.pad import CenterCropPad
from onnxxai.convert.sampling import AffineGrid
from onnxxai.convert.signal import STFT
from onnxxai.convert.pipeline import convert
from onnx_cases import check_node, one_node, reference_outputs, run_converted

RNG = np.random.default_rng(0)


def check(op: str, inputs: dict[str, np.ndarray | None], reference: str = "onnxruntime", opset: int = 18, atol: float = 1e-5,
          **attrs) -> None:
    """One ``op`` node with ``attrs`` fed by the arrays of ``inputs`` (None = absent) against ``reference``:
    equal dtypes and shapes, values within atol and rtol 1e-5."""
    check_node(op, inputs, opset=opset, attrs=attrs, reference=reference, atol=atol, check_dtype=True)


# -------------------------------------------------------------------------------------------------- bitwise

INT_TYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


def _random_ints(dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def _python_shift(x: int, y: int, dtype: type, left: bool) -> int:
    """BitShift on Python ints, straight from the spec's wording."""
    info = np.iinfo(dtype)
    bits = info.bits
    if y < 0 or y >= bits:
        return -1 if (not left and x < 0) else 0
    if left:
        value = (x << y) & ((1 << bits) - 1)
        return value - (1 << bits) if info.min < 0 and value >= 1 << (bits - 1) else value
    return x >> y  # Python's >> is arithmetic on negative ints, logical on non-negative


@pytest.mark.parametrize("dtype", INT_TYPES)
@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bitshift_exact(dtype: type, direction: str) -> None:
    bits = np.iinfo(dtype).bits
    x = _random_ints(dtype, (3, 8))
    shifts = np.array([0, 1, bits - 1, bits, bits + 3, 2, 5, 3], dtype=np.int64)
    if np.iinfo(dtype).min < 0:
        shifts[5] = -1
    y = np.broadcast_to(shifts.astype(dtype), (3, 8)).copy()
    model = one_node("BitShift", {"x": x, "y": y}, opset=11, attrs={"direction": direction})
    got = run_converted(model, {"x": x, "y": y})[0]
    want = np.array([[_python_shift(int(a), int(b), dtype, direction == "LEFT") for a, b in zip(ra, rb)]
                     for ra, rb in zip(x.tolist(), y.astype(np.int64).tolist() if np.iinfo(dtype).min < 0 else y.tolist())],
                    dtype=object).astype(dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64])
def test_bitshift_against_onnxruntime(dtype: type) -> None:
    x = _random_ints(dtype, (2, 5))
    y = RNG.integers(0, np.iinfo(dtype).bits, size=(5,)).astype(dtype)
    check("BitShift", {"x": x, "y": y}, opset=11, direction="RIGHT")
    check("BitShift", {"x": x, "y": y}, opset=11, direction="LEFT")


@pytest.mark.parametrize("dtype", INT_TYPES)
def test_bitwise_ops(dtype: type) -> None:
    a, b = _random_ints(dtype, (2, 3, 4)), _random_ints(dtype, (3, 4))
    for op, fn in (("BitwiseAnd", np.bitwise_and), ("BitwiseOr", np.bitwise_or), ("BitwiseXor", np.bitwise_xor)):
        got = run_converted(one_node(op, {"a": a, "b": b}, opset=18), {"a": a, "b": b})[0]
        np.testing.assert_array_equal(got, fn(a, b))
        assert got.dtype == dtype
    got = run_converted(one_node("BitwiseNot", {"a": a}, opset=18), {"a": a})[0]
    np.testing.assert_array_equal(got, np.bitwise_not(a))


@pytest.mark.parametrize(("source", "target", "to"), [
    (np.float32, np.int32, TensorProto.INT32), (np.uint64, np.float64, TensorProto.DOUBLE),
    (np.uint16, np.int16, TensorProto.INT16), (np.int8, np.uint8, TensorProto.UINT8),
    (np.float16, np.uint16, TensorProto.UINT16),
])
def test_bitcast(source: type, target: type, to: int) -> None:
    x = (RNG.standard_normal((2, 3)) * 100).astype(source) if np.dtype(source).kind == "f" else _random_ints(source, (2, 3))
    got = run_converted(one_node("BitCast", {"x": x}, opset=26, attrs={"to": to}), {"x": x})[0]
    np.testing.assert_array_equal(got.view(np.uint8), x.view(np.uint8))
    assert got.dtype == target


def test_bitcast_refuses_unknown_type() -> None:
    x = np.zeros((2,), np.uint8)
    with pytest.raises(Exception, match="BitCast with to=UINT4"):
        convert(one_node("BitCast", {"x": x}, opset=26, attrs={"to": TensorProto.UINT4}), "t")


# -------------------------------------------------------------------------------------------------- signal

@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
def test_windows(op: str, periodic: int) -> None:
    check(op, {"n": np.array(10, np.int64)}, opset=17, periodic=periodic, output_datatype=TensorProto.DOUBLE)


@pytest.mark.parametrize("complex_input", [False, True])
def test_stft_against_onnxruntime(complex_input: bool) -> None:
    signal = RNG.standard_normal((2, 40, 2 if complex_input else 1)).astype(np.float32)
    window = np.hanning(16).astype(np.float32)
    check("STFT", {"signal": signal, "step": np.array(6, np.int64), "window": window, "length": np.array(16, np.int64)},
          opset=17, atol=1e-4, onesided=0 if complex_input else 1)
    check("STFT", {"signal": signal, "step": np.array(8, np.int64), "window": None, "length": np.array(12, np.int64)},
          opset=17, atol=1e-4, onesided=0 if complex_input else 1)


def test_stft_gradcheck() -> None:
    signal = torch.randn(1, 20, 2, dtype=torch.float64, requires_grad=True)
    window = torch.rand(8, dtype=torch.float64, requires_grad=True)
    stft = STFT(onesided=False)
    assert torch.autograd.gradcheck(lambda s, w: stft(s, torch.tensor(4), w, torch.tensor(8)), (signal, window))


@pytest.mark.parametrize("align_corners", [0, 1])
def test_affine_grid(align_corners: int) -> None:
    theta2 = RNG.standard_normal((2, 2, 3)).astype(np.float32)
    check("AffineGrid", {"theta": theta2, "size": np.array([2, 3, 4, 5], np.int64)}, opset=20, align_corners=align_corners)
    theta3 = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    check("AffineGrid", {"theta": theta3, "size": np.array([2, 1, 3, 4, 5], np.int64)}, opset=20, align_corners=align_corners)
    theta = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)
    grid = AffineGrid(bool(align_corners))
    assert torch.autograd.gradcheck(lambda t: grid(t, torch.tensor([2, 1, 3, 4])), (theta,))


def test_center_crop_pad() -> None:
    x = RNG.standard_normal((5, 6, 3)).astype(np.float32)
    for shape, axes in (([3, 9], [0, 1]), ([8, 3], [-3, -2]), ([2, 9, 3], None)):
        attrs = {} if axes is None else {"axes": axes}
        check("CenterCropPad", {"x": x, "shape": np.array(shape, np.int64)}, reference="onnx", **attrs)
    xt = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    crop = CenterCropPad([0, 1])
    assert torch.autograd.gradcheck(lambda t: crop(t, torch.tensor([3, 9])), (xt,))


@pytest.mark.parametrize("attrs", [{}, {"strides": [2, 1], "pads": [1, 0, 1, 2], "dilations": [1, 2]}])
def test_col2im_2d(attrs: dict) -> None:
    # 2 channels, 2x3 blocks; L depends on the attributes
    image, block = np.array([5, 6], np.int64), np.array([2, 3], np.int64)
    length = 12 if attrs else 16  # blocks: 3 x 4 with the attributes (padded image 7 x 8), else 4 x 4
    x = RNG.standard_normal((2, 12, length)).astype(np.float32)
    check("Col2Im", {"x": x, "image": image, "block": block}, **attrs)


def test_col2im_3d_and_gradcheck() -> None:
    x = RNG.standard_normal((1, 2 * 8, 2 * 2 * 3)).astype(np.float32)
    check("Col2Im", {"x": x, "image": np.array([3, 3, 4], np.int64), "block": np.array([2, 2, 2], np.int64)},
          reference="onnx", strides=[1, 1, 1])
    xt = torch.randn(1, 12, 12, dtype=torch.float64, requires_grad=True)
    fold = Col2Im([2, 1], [1, 0, 1, 2], [1, 2])
    assert torch.autograd.gradcheck(lambda t: fold(t, torch.tensor([5, 6]), torch.tensor([2, 3])), (xt,))


@pytest.mark.parametrize(("batch_axis", "time_axis"), [(1, 0), (0, 1)])
def test_reverse_sequence(batch_axis: int, time_axis: int) -> None:
    x = RNG.standard_normal((4, 4, 3)).astype(np.float32)
    check("ReverseSequence", {"x": x, "lens": np.array([4, 3, 1, 2], np.int64)}, opset=10,
          batch_axis=batch_axis, time_axis=time_axis)


def test_max_unpool_after_max_pool() -> None:
    x = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
    pool = helper.make_node("MaxPool", ["x"], ["p", "i"], kernel_shape=[2, 2], strides=[2, 2])
    unpool = helper.make_node("MaxUnpool", ["p", "i", "shape"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    graph = helper.make_graph([pool, unpool], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array([2, 3, 7, 7], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    want = np.zeros((2, 3, 7, 7), np.float32)
    want[:, :, :6, :6] = np.where(x == x.reshape(2, 3, 3, 2, 3, 2).max((3, 5)).repeat(2, 2).repeat(2, 3), x, 0)
    np.testing.assert_array_equal(run_converted(model, {"x": x})[0], want)


def _deform_inputs(mask: bool, bias: bool) -> dict[str, np.ndarray | None]:
    x = RNG.standard_normal((2, 4, 5, 6)).astype(np.float32)
    w = RNG.standard_normal((6, 2, 2, 3)).astype(np.float32)  # group 2
    offset = (RNG.standard_normal((2, 2 * 6 * 2, 3, 2)) * 1.5).astype(np.float32)  # offset_group 2, stride 2, pads 1
    return {"x": x, "w": w, "offset": offset, "b": RNG.standard_normal(6).astype(np.float32) if bias else None,
            "mask": RNG.random((2, 2 * 6, 3, 2)).astype(np.float32) if mask else None}


@pytest.mark.parametrize(("mask", "bias"), [(False, False), (True, True)])
def test_deform_conv(mask: bool, bias: bool) -> None:
    check("DeformConv", _deform_inputs(mask, bias), reference="onnx", opset=19, atol=1e-4, kernel_shape=[2, 3],
          group=2, offset_group=2, strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 2])


def test_deform_conv_gradcheck() -> None:
    module = DeformConv2d([1, 1], [1, 0, 1, 0], [1, 1], group=1, offset_group=2)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    # offsets away from integers, where bilinear sampling is differentiable
    offset = (torch.randint(-2, 3, (1, 2 * 4 * 2, 5, 3)) + 0.25 + 0.5 * torch.rand(1, 16, 5, 3)).double().requires_grad_()
    mask = torch.rand(1, 8, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: module(a[0], a[1], a[2], None, a[3]), (x, w, offset, mask))


def test_unsqueeze_scalar_axes() -> None:
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    for axis in (0, -1, 2):
        model = one_node("Unsqueeze", {"x": x}, opset=13, initializers={"axes": np.array(axis, np.int64)})
        np.testing.assert_array_equal(run_converted(model, {"x": x})[0], np.expand_dims(x, axis))
    model = one_node("Unsqueeze", {"x": x, "axes": np.array(-2, np.int64)}, opset=13)
    np.testing.assert_array_equal(run_converted(model, {"x": x, "axes": np.array(-2, np.int64)})[0], np.expand_dims(x, -2))


# -------------------------------------------------------------------------------------------------- TreeEnsemble

def _tree_model(aggregate: int, post: int, missing: list[int] | None = None) -> onnx.ModelProto:
    """Two trees on 3 features: tree 0 (LEQ, MEMBER, GT), tree 1 a single LT split; 3 targets."""
    attrs = {
        "nodes_featureids": [0, 1, 2, 1], "nodes_splits": numpy_helper.from_array(np.array([0.5, np.nan, -0.2, 0.0], np.float32)),
        "nodes_modes": numpy_helper.from_array(np.array([0, 6, 3, 1], np.uint8)),
        "nodes_truenodeids": [1, 0, 2, 4], "nodes_trueleafs": [0, 1, 1, 1],
        "nodes_falsenodeids": [2, 1, 3, 5], "nodes_falseleafs": [0, 1, 1, 1],
        "membership_values": numpy_helper.from_array(np.array([1.0, 2.0, np.nan], np.float32)),
        "leaf_targetids": [0, 1, 2, 0, 1, 2], "leaf_weights": numpy_helper.from_array(np.array([1.5, -2.0, 3.0, 0.5, 4.0, -1.0], np.float32)),
        "tree_roots": [0, 3], "n_targets": 3, "aggregate_function": aggregate, "post_transform": post,
    }
    if missing is not None:
        attrs["nodes_missing_value_tracks_true"] = missing
    node = helper.make_node("TreeEnsemble", ["X"], ["Y"], domain="ai.onnx.ml", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)])


@pytest.mark.parametrize(("aggregate", "post", "missing"), [(1, 0, None), (0, 0, [1, 0, 1, 1]), (2, 0, None), (3, 0, None),
                                                             (3, 0, [0, 1, 0, 1])])
def test_tree_ensemble(aggregate: int, post: int, missing: list[int] | None) -> None:
    x = RNG.standard_normal((32, 3)).astype(np.float32)
    x[:8, 1] = [1.0, 2.0, 3.0, 1.0, 2.0, 0.0, -1.0, 2.0]
    x[8:12] = np.nan
    model = _tree_model(aggregate, post, missing)
    got, want = run_converted(model, {"X": x})[0], reference_outputs(model, {"X": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_tree_ensemble_gradient_is_zero() -> None:
    _, _, module = convert(_tree_model(1, 0), "t")
    x = torch.randn(4, 3, requires_grad=True)
    module(x).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert any(isinstance(m, TreeEnsemble) for m in module.modules())


@pytest.mark.parametrize(("post", "name"), [(1, "SOFTMAX"), (2, "LOGISTIC"), (4, "PROBIT")])
def test_tree_ensemble_refuses_post_transforms(post: int, name: str) -> None:
    with pytest.raises(Exception, match=f"post_transform={name}"):
        convert(_tree_model(1, post), "t")
