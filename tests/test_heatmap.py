"""Heatmap colours at known values, reductions, range scaling, overlays, one image per sample."""

from __future__ import annotations

import numpy as np
import pytest

import onnxxai
from onnxxai.explanation import Explanation
from onnxxai.heatmap import heatmap, save_png


def _expl(val, preset, input=None):
    val = np.asarray(val, dtype=np.float32)
    return Explanation(val, np.zeros_like(val) if input is None else input, None, None, "test", preset)


def test_attribution_zero_is_white_max_red_min_blue():
    val = np.zeros((1, 1, 1, 3), np.float32)
    val[0, 0, 0] = [0.0, 2.0, -2.0]
    img = heatmap(_expl(val, "attribution"))
    assert img.shape == (1, 1, 3, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0, 0]) == (255, 255, 255)  # zero: white
    r, g, b = img[0, 0, 1]
    assert r > 100 and g < 10 and b < 10  # max: red
    r, g, b = img[0, 0, 2]
    assert b > 100 and r < 10 and g < 10  # min: blue


def test_attribution_is_centred_on_zero_not_on_the_mean():
    val = np.array([[[[1.0, 0.5, 0.0]]]], np.float32)  # all non-negative: nothing may turn blue
    img = heatmap(_expl(val, "attribution"))[0, 0]
    assert tuple(img[2]) == (255, 255, 255)
    assert all(px[0] >= px[2] for px in img)


def test_sensitivity_is_grayscale_min_black_max_white():
    val = np.array([[[[0.0, 1.0, 3.0]]]], np.float32)
    img = heatmap(_expl(val, "sensitivity"))[0, 0]
    assert tuple(img[0]) == (0, 0, 0) and tuple(img[2]) == (255, 255, 255)
    assert img[1, 0] == img[1, 1] == img[1, 2] and 0 < img[1, 0] < 255


@pytest.mark.parametrize(
    "reduce,expected",
    [("sum", [-1.0, 1.0]), ("norm", [5.0, 1.0]), ("maxabs", [-4.0, 1.0])],
)
def test_reductions_over_channels(reduce, expected):
    val = np.zeros((1, 2, 1, 2), np.float32)  # NCHW: pixel 0 has channels (3, -4), pixel 1 has (1, 0)
    val[0, :, 0, 0] = [3.0, -4.0]
    val[0, :, 0, 1] = [1.0, 0.0]
    img = heatmap(_expl(val, "sensitivity"), reduce=reduce, rangescale="extrema", colormap="gray", layout="nchw")[0, 0, :, 0]
    lo, hi = min(expected), max(expected)
    np.testing.assert_allclose(img, [(e - lo) / (hi - lo) * 255 for e in expected], atol=1.5)


def test_batch_gives_one_image_per_sample_and_png_roundtrip(tmp_path):
    from PIL import Image

    val = np.random.default_rng(0).standard_normal((3, 1, 5, 4)).astype(np.float32)
    imgs = heatmap(_expl(val, "attribution"), colormap="coolwarm")
    assert imgs.shape == (3, 5, 4, 3)
    save_png(imgs[1], tmp_path / "h.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "h.png")), imgs[1])


def test_cam_overlays_the_input():
    val = np.zeros((1, 1, 4, 4), np.float32)
    val[0, 0, 0, 0] = 1.0
    bright = np.ones((1, 1, 4, 4), np.float32)
    bright[0, 0, 3, 3] = 0.0
    img = heatmap(_expl(val, "cam", input=bright))
    plain = heatmap(_expl(val, "cam", input=bright), overlay=False)
    assert not np.array_equal(img, plain)  # the input shows through
    assert img[0, 3, 3].sum() < img[0, 2, 2].sum()  # dark input pixel stays darker


def test_unknown_options_are_named():
    expl = _expl(np.zeros((1, 1, 2, 2)), "attribution")
    with pytest.raises(onnxxai.AnalyzerError, match="colour map"):
        heatmap(expl, colormap="no-such-map")
    with pytest.raises(onnxxai.AnalyzerError, match="reduce"):
        heatmap(expl, reduce="mean")
    with pytest.raises(onnxxai.AnalyzerError, match="rank"):
        heatmap(_expl(np.zeros((2, 5)), "attribution"))


def test_heatmap_from_input_and_analyzer(smooth_cnn):
    x = np.random.default_rng(0).standard_normal((2, 1, 7, 7)).astype(np.float32)
    imgs = onnxxai.heatmap(x, onnxxai.InputTimesGradient(smooth_cnn), 1)
    assert imgs.shape == (2, 7, 7, 3)
