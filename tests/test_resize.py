"""Resize (opsets 10-19) and Upsample (7, 9): single-op models against onnxruntime, float64 gradchecks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxxai.convert import register_all
from onnxxai.convert.sampling import Resize
from onnx_cases import graph_model, reference_outputs, run_converted
from onnxxai.convert.pipeline import convert

F32 = np.float32


def resize_model(shape, opset, attrs, roi=None, scales=None, sizes=None, runtime=False, op="Resize", dtype=TensorProto.FLOAT):
    """A one-node Resize/Upsample model; roi/scales/sizes are initializers, or graph inputs if ``runtime``."""
    inputs = [helper.make_tensor_value_info("x", dtype, shape)]
    inits, names, feeds = [], ["x"], {}
    if opset == 11 and roi is None:
        roi = np.zeros(0, F32)  # required (possibly empty) at opset 11
    given = [("roi", roi), ("scales", scales), ("sizes", sizes)] if opset >= 11 and op == "Resize" else [("scales", scales)]
    for name, value in given:
        if value is None:
            names.append("")
            continue
        value = np.asarray(value, np.int64 if name == "sizes" else F32)
        names.append(name)
        if runtime:
            inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape))
            feeds[name] = value
        else:
            inits.append(numpy_helper.from_array(value, name))
    while names and names[-1] == "":
        names.pop()
    node = helper.make_node(op, names, ["y"], name="the_resize", **attrs)
    out = helper.make_tensor_value_info("y", dtype, None)
    model = graph_model([node], inputs, [out], inits, opset=opset)
    model.ir_version = 8
    return model, feeds


def run_both(model, feeds, x):
    """(onnxruntime's output, the converted module's output) for input ``x`` plus ``feeds``."""
    feeds = {"x": x, **feeds}
    return reference_outputs(model, feeds)[0], run_converted(model, feeds)[0]


X44 = np.random.default_rng(0).normal(size=(2, 3, 5, 6)).astype(F32)

CASES = {
    "nearest-half_pixel-up": (19, {"mode": "nearest"}, None, [1, 1, 2.5, 1.5], None),
    "nearest-round_prefer_ceil-asym": (19, {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                                            "nearest_mode": "round_prefer_ceil"}, None, None, [2, 3, 9, 13]),
    "nearest-floor-align": (13, {"mode": "nearest", "coordinate_transformation_mode": "align_corners", "nearest_mode": "floor"},
                            None, None, [2, 3, 8, 4]),
    "nearest-ceil-down": (19, {"mode": "nearest", "nearest_mode": "ceil"}, None, [1, 1, 0.5, 0.7], None),
    "nearest-tf_half_pixel_for_nn": (11, {"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn"},
                                     None, [1, 1, 1.7, 2.0], None),
    "linear-half_pixel-down": (19, {"mode": "linear"}, None, None, [2, 3, 3, 4]),
    "linear-half_pixel-up-scales": (19, {"mode": "linear"}, None, [1, 1, 1.5, 2.2], None),
    "cubic-half_pixel": (19, {"mode": "cubic"}, None, None, [2, 3, 9, 4]),
    "cubic-align_corners": (13, {"mode": "cubic", "coordinate_transformation_mode": "align_corners"}, None, [1, 1, 2, 1.5], None),
    "linear-axis-3-sizes": (19, {"mode": "linear", "axes": [3]}, None, None, [11]),
    "nearest-2x3x": (19, {"mode": "nearest"}, None, [1, 1, 2, 3], None),
    "linear-pytorch_half_pixel": (13, {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}, None, None, [2, 3, 1, 9]),
    "linear-align_corners-sizes": (19, {"mode": "linear", "coordinate_transformation_mode": "align_corners"}, None, None, [2, 3, 7, 3]),
    "linear-half_pixel_symmetric": (19, {"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"},
                                    None, [1, 1, 1.7, 0.6], None),
    "cubic-pytorch_half_pixel-length-1": (19, {"mode": "cubic", "coordinate_transformation_mode": "pytorch_half_pixel"},
                                          None, None, [2, 3, 1, 9]),
    "linear-antialias": (19, {"mode": "linear", "antialias": 1}, None, [1, 1, 0.45, 0.7], None),
    "cubic-antialias": (19, {"mode": "cubic", "antialias": 1}, None, None, [2, 3, 2, 4]),
    "cubic-A-0.5-exclude": (19, {"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1}, None, [1, 1, 1.6, 0.75], None),
    "cubic-asymmetric": (13, {"mode": "cubic", "coordinate_transformation_mode": "asymmetric"}, None, None, [2, 3, 9, 11]),
    "tf_crop_and_resize": (19, {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": 7.0},
                           [0, 0, 0.2, -0.1, 1, 1, 1.3, 0.8], None, [2, 3, 4, 5]),
    "tf_crop_and_resize-cubic-axes": (19, {"mode": "cubic", "coordinate_transformation_mode": "tf_crop_and_resize", "axes": [-1, 2]},
                                      [0.1, 0.3, 0.9, 0.8], None, [7, 3]),
    "axes-3-scales": (19, {"mode": "linear", "axes": [3]}, None, [1.5], None),
    "not_larger": (19, {"mode": "nearest", "axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"}, None, None, [9, 9]),
    "not_smaller": (19, {"mode": "linear", "axes": [3, 2], "keep_aspect_ratio_policy": "not_smaller"}, None, None, [9, 7]),
    "resize10-nearest-up": (10, {"mode": "nearest"}, None, [1, 1, 2.3, 1.5], None),
    "resize10-nearest-down": (10, {"mode": "nearest"}, None, [1, 1, 0.6, 0.5], None),
    "resize10-linear": (10, {"mode": "linear"}, None, [1, 1, 1.5, 0.7], None),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("runtime,gather_only", [(False, False), (True, False), (False, True)],
                         ids=["constant", "runtime", "gather-only"])
def test_resize_matches_onnxruntime(name: str, runtime: bool, gather_only: bool, monkeypatch) -> None:
    if gather_only:  # check the gather path also where torch's fused kernel would take over
        monkeypatch.setattr(Resize, "_torch_upsample", lambda self, x, plans: None)
    opset, attrs, roi, scales, sizes = CASES[name]
    model, feeds = resize_model(list(X44.shape), opset, attrs, roi, scales, sizes, runtime=runtime)
    expected, got = run_both(model, feeds, X44)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset,attrs,scales", [
    (7, {"mode": "nearest", "scales": [1.0, 1.0, 2.0, 3.0]}, None),
    (7, {"mode": "linear", "scales": [1.0, 1.0, 1.5, 2.0]}, None),
    (9, {"mode": "nearest"}, [1, 1, 3, 2]),
    (9, {"mode": "linear"}, [1, 1, 2.5, 1.0]),
])
def test_upsample_matches_onnxruntime(opset: int, attrs: dict, scales) -> None:
    model, feeds = resize_model(list(X44.shape), opset, attrs, scales=scales, op="Upsample")
    expected, got = run_both(model, feeds, X44)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_uint8_nearest_and_linear_match_onnxruntime() -> None:
    x = np.random.default_rng(1).integers(0, 256, size=(1, 2, 4, 5)).astype(np.uint8)
    for attrs in ({"mode": "nearest"}, {"mode": "linear", "coordinate_transformation_mode": "align_corners"}):
        model, feeds = resize_model(list(x.shape), 19, attrs, sizes=[1, 2, 7, 9], dtype=TensorProto.UINT8)
        expected, got = run_both(model, feeds, x)
        assert got.dtype == np.uint8
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize("attrs,scales,sizes", [
    # onnxruntime divides by the integer output length here, ONNX's reference (and its conformance
    # outputs) by ``scale * length``: we follow the reference
    ({"mode": "cubic", "coordinate_transformation_mode": "align_corners"}, [1, 1, 0.8, 0.7], None),
    # onnxruntime's linear/cubic refuse to resize the batch and channel axes
    ({"mode": "linear"}, None, [3, 2, 5, 6]),
])
def test_resize_matches_the_reference(attrs: dict, scales, sizes) -> None:
    model, _ = resize_model(list(X44.shape), 19, attrs, scales=scales, sizes=sizes)
    expected = reference_outputs(model, {"x": X44}, "onnx")[0]
    np.testing.assert_allclose(run_converted(model, {"x": X44})[0], expected, rtol=1e-5, atol=1e-5)


def test_unsupported_mode_is_named() -> None:
    model, _ = resize_model([1, 1, 2, 2], 19, {"mode": "area"}, sizes=[1, 1, 4, 4])
    register_all()
    with pytest.raises(Exception, match="mode='area'"):
        convert(onnx.ModelProto.FromString(model.SerializeToString()), "resize")


@pytest.mark.parametrize("kwargs,scales,sizes,roi", [
    ({"mode": "linear", "antialias": True}, [1, 1, 0.45, 1.3], None, None),
    ({"mode": "cubic", "exclude_outside": True, "cubic_coeff_a": -0.5}, None, [2, 2, 7, 3], None),
    ({"mode": "cubic", "coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": 2.0}, None, [2, 2, 4, 6],
     [0, 0, -0.2, 0.1, 1, 1, 0.9, 1.2]),
    ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "axes": [3]}, [2.5], None, None),
    ({"mode": "nearest"}, [1, 1, 2, 3], None, None),
])
def test_resize_gradcheck(kwargs: dict, scales, sizes, roi) -> None:
    module = Resize(**kwargs)
    x = torch.randn(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    t = {"roi": None if roi is None else torch.tensor(roi, dtype=torch.float64),
         "scales": None if scales is None else torch.tensor(scales, dtype=torch.float32),
         "sizes": None if sizes is None else torch.tensor(sizes)}
    assert torch.autograd.gradcheck(lambda v: module(v, **t), (x,))
