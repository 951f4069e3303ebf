"""Detection converters (RoiAlign both modes, NonMaxSuppression flipped corners) against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from onnxxai.convert.detection import RoiAlign
from onnx_cases import reference_outputs, run_converted


def _run_both(model: onnx.ModelProto, feeds: dict[str, np.ndarray], reference: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(onnxruntime's output, or ONNX's reference evaluator's, and our converted module's output) on the same feeds."""
    want = reference_outputs(model, feeds, "onnx" if reference else "onnxruntime")[0]
    return want, run_converted(model, feeds)[0]


def _roi_model(opset: int, attrs: dict) -> onnx.ModelProto:
    node = helper.make_node("RoiAlign", ["X", "rois", "batch_indices"], ["Y"], **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 3, 10, 12]),
         helper.make_tensor_value_info("rois", TensorProto.FLOAT, [5, 4]),
         helper.make_tensor_value_info("batch_indices", TensorProto.INT64, [5])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


ROIS = np.array([[0.0, 0.0, 9.0, 9.0],      # whole-ish image
                 [1.3, 2.1, 6.7, 4.2],      # fractional
                 [-2.0, -1.5, 3.0, 14.0],   # reaching outside the feature map
                 [5.0, 5.0, 5.2, 5.1],      # tiny: grid of 1, clamped to 1 pixel in output_half_pixel
                 [11.5, 0.0, 12.5, 9.5]],   # at the right edge
                np.float32)


# RoiAlign-10 has no coordinate_transformation_mode (None: the version's default).
_ROI_VERSIONS = [(10, None)] + [(opset, ctm) for opset in (16, 22) for ctm in ("half_pixel", "output_half_pixel", None)]


@pytest.mark.parametrize(("opset", "ctm"), _ROI_VERSIONS)
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_matches_onnxruntime(opset: int, mode: str, ctm: str | None, sampling_ratio: int) -> None:
    attrs = {"mode": mode, "output_height": 3, "output_width": 4, "sampling_ratio": sampling_ratio, "spatial_scale": 0.9}
    if ctm is not None:
        attrs["coordinate_transformation_mode"] = ctm
    rng = np.random.default_rng(0)
    feeds = {"X": rng.standard_normal((2, 3, 10, 12)).astype(np.float32), "rois": ROIS,
             "batch_indices": np.array([0, 1, 1, 0, 1], np.int64)}
    # onnxruntime 1.32 has no RoiAlign-22 kernel: ONNX's reference evaluator stands in there.
    want, got = _run_both(_roi_model(opset, attrs), feeds, reference=opset == 22)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_roi_align_gradcheck(mode: str) -> None:
    module = RoiAlign(mode, 2, 3, 0, 1.0, half_pixel=True)
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0.3, 0.7, 4.1, 3.9], [1.2, 0.1, 5.5, 4.4]], dtype=torch.float64)
    batch = torch.tensor([1, 0])
    assert torch.autograd.gradcheck(lambda t: module(t, rois, batch), (x,))


def _nms_model(center_point_box: int) -> onnx.ModelProto:
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou", "score_thr"], ["selected"],
                            center_point_box=center_point_box)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [2, 6, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [2, 2, 6]),
         helper.make_tensor_value_info("max_out", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("iou", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("score_thr", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


@pytest.mark.parametrize("center_point_box", [0, 1])
def test_nms_with_flipped_corners_matches_onnxruntime(center_point_box: int) -> None:
    rng = np.random.default_rng(1)
    corners = rng.uniform(0, 10, (2, 6, 4)).astype(np.float32)
    if center_point_box:
        corners[..., 2:] = np.abs(corners[..., 2:]) + 0.5  # widths and heights
    else:
        corners[:, ::2] = corners[:, ::2][..., [2, 3, 0, 1]]  # flip every other box's diagonal
    feeds = {"boxes": corners, "scores": rng.uniform(0, 1, (2, 2, 6)).astype(np.float32),
             "max_out": np.array([4], np.int64), "iou": np.array([0.2], np.float32),
             "score_thr": np.array([0.1], np.float32)}
    want, got = _run_both(_nms_model(center_point_box), feeds)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("corners", ["sorted", "flipped"])
def test_nms_with_omitted_iou_threshold_matches_onnxruntime(corners: str) -> None:
    # onnx2torch's own case nms_test.py::test_nms[boxes9-scores9-3-None-0.4-None]: an empty iou_threshold
    # (0: any overlap suppresses) followed by a given score_threshold, which must not be dropped
    boxes = np.array([[[0.0, 0.0, 1.0, 1.0], [0.0, 0.1, 1.0, 1.1], [0.0, -0.1, 1.0, 0.9],
                       [0.0, 10.0, 1.0, 11.0], [0.0, 10.1, 1.0, 11.1], [0.0, 100.0, 1.0, 101.0]]], np.float32)
    if corners == "flipped":
        boxes[:, ::2] = boxes[:, ::2][..., [2, 3, 0, 1]]
    feeds = {"boxes": boxes, "scores": np.array([[[0.9, 0.75, 0.6, 0.95, 0.5, 0.3]]], np.float32),
             "max_out": np.array(3, np.int64), "score_thr": np.array(0.4, np.float32)}
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "", "score_thr"], ["selected"])
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 6, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 6]),
         helper.make_tensor_value_info("max_out", TensorProto.INT64, []),
         helper.make_tensor_value_info("score_thr", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, None)])
    want, got = _run_both(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), feeds)
    assert len(want) == 2
    np.testing.assert_array_equal(got, want)


# --- float4e2m1 / float8e8m0 casts and quantization (float32 containers) vs ONNX's reference ---

_SPECIAL = np.array([0.0, -0.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 5.01, -7.0, 7.01, 100.0, 1e-9, 3.0, -1.5,
                     np.inf, -np.inf, np.nan, 2.0 ** -127, 2.0 ** -130, 1.5 * 2.0 ** 127, 3.4e38, 0.1, 1.0 + 2.0 ** -22,
                     1.0 + 2.0 ** -21, 1.5, 1.75 * 2.0 ** 5], np.float32)


def _cast_model(to: int, in_type: int = TensorProto.FLOAT, **attrs) -> onnx.ModelProto:
    node = helper.make_node("Cast", ["x"], ["y"], to=to, **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", in_type, [None])],
                              [helper.make_tensor_value_info("y", to, [None])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])


def _ours(model: onnx.ModelProto, *inputs: np.ndarray) -> np.ndarray:
    """The converted graph's one output on ``inputs`` (in graph-input order), as float32 unless float64."""
    out = run_converted(model, inputs)[0]
    return out.astype(np.float32) if out.dtype != np.float64 else out


@pytest.mark.parametrize("in_type", [TensorProto.FLOAT, TensorProto.FLOAT16])
def test_cast_to_float4e2m1_matches_reference(in_type: int) -> None:
    x = np.concatenate([_SPECIAL, np.linspace(-8, 8, 257, dtype=np.float32)])
    with np.errstate(over="ignore"):
        x = x.astype(helper.tensor_dtype_to_np_dtype(in_type))
    model = _cast_model(TensorProto.FLOAT4E2M1, in_type)
    want = ReferenceEvaluator(model).run(None, {"x": x})[0].astype(np.float32)
    got = _ours(model, x)
    np.testing.assert_array_equal(got, want)  # NaN -> -0 and saturation at ±6 included
    back = _cast_model(TensorProto.FLOAT16, TensorProto.FLOAT4E2M1)  # carried float32 -> float16
    np.testing.assert_array_equal(_ours(back, got), want.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("round_mode", ["up", "down", "nearest"])
@pytest.mark.parametrize("saturate", [0, 1])
def test_cast_to_float8e8m0_matches_reference(round_mode: str, saturate: int) -> None:
    rng = np.random.default_rng(2)
    x = np.concatenate([_SPECIAL, np.abs(rng.standard_normal(200)).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 200)])
    x = x.astype(np.float32)
    model = _cast_model(TensorProto.FLOAT8E8M0, saturate=saturate, round_mode=round_mode)
    want = ReferenceEvaluator(model).run(None, {"x": x})[0].astype(np.float32)
    np.testing.assert_array_equal(_ours(model, x), want)


def _qdq_model(op: str, x_type: int, y_type: int) -> onnx.ModelProto:
    """A Quantize/DequantizeLinear with a float4 zero point fed as a graph input (a float4
    initializer cannot be loaded by onnx2torch: see the report)."""
    scale = onnx.numpy_helper.from_array(np.array([0.5, 2.0, 0.25], np.float32), "scale")
    node = helper.make_node(op, ["x", "scale", "zp"], ["y"], axis=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", x_type, [2, 3, 4]),
                                            helper.make_tensor_value_info("zp", TensorProto.FLOAT4E2M1, [3])],
                              [helper.make_tensor_value_info("y", y_type, [2, 3, 4])], [scale])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])


def test_quantize_dequantize_float4e2m1_match_reference() -> None:
    import ml_dtypes

    zp = np.array([0.0, 0.5, -1.0], np.float32).astype(ml_dtypes.float4_e2m1fn)
    x = np.random.default_rng(3).uniform(-15, 15, (2, 3, 4)).astype(np.float32)
    quant = _qdq_model("QuantizeLinear", TensorProto.FLOAT, TensorProto.FLOAT4E2M1)
    want_q = ReferenceEvaluator(quant).run(None, {"x": x, "zp": zp})[0]
    got_q = _ours(quant, x, zp.astype(np.float32))
    np.testing.assert_array_equal(got_q, want_q.astype(np.float32))
    dequant = _qdq_model("DequantizeLinear", TensorProto.FLOAT4E2M1, TensorProto.FLOAT)
    want_d = ReferenceEvaluator(dequant).run(None, {"x": want_q, "zp": zp})[0]
    np.testing.assert_array_equal(_ours(dequant, got_q, zp.astype(np.float32)), want_d)
