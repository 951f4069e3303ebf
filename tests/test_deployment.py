"""The deployment section of scripts/corpus.py on one small CNN: variants made with onnxruntime's and
onnxconverter-common's own tools load with no flags, match onnxruntime, pass the gradient check, and
explain like the float32 model (cosine of Input×Gradient and IG with the float32 model's)."""

from __future__ import annotations

import pytest
import torch

import onnxxai
from onnxxai.proto.specs import probe_feeds
from conftest import ReluCNN
from onnxxai.testing import DEPLOYMENT_KINDS, deployment_reference, evaluate_variant, export, make_deployment_variant

import onnxruntime.quantization  # noqa: F401 - the variants are made with its tools
import onnxconverter_common.float16  # noqa: F401


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deployment")
    torch.manual_seed(0)
    path = export(ReluCNN(), torch.randn(1, 3, 16, 16), folder / "cnn.onnx")
    model = onnxxai.load(path)
    calibration = [probe_feeds(model.inputs, seed=100 + i, batch=1) for i in range(4)]
    return path, folder, calibration, deployment_reference(model, ig_steps=16)


@pytest.mark.parametrize("kind", [
    "float16", "float16 (float32 I/O)", "onnxruntime ALL",
    "int8 QDQ",
])
def test_variant_loads_matches_and_explains_like_float32(cnn, kind):
    assert kind in DEPLOYMENT_KINDS
    path, folder, calibration, reference = cnn
    result = evaluate_variant(make_deployment_variant(path, kind, folder, calibration), reference, model="cnn", kind=kind)
    assert result.runs and result.loads and result.parity_ok, result.cause
    assert result.cosine_ixg >= 0.9 and result.cosine_ig >= 0.9, result
    assert result.artifact.startswith(kind.split()[0]) or kind.startswith("onnxruntime"), result.artifact
    assert result.gradient_ok, result.gradient
    assert result.ok
