"""The deployment section of scripts/corpus.py on one small CNN: variants made with onnxruntime's and
onnxconverter-common's own tools load with no flags, match onnxruntime, pass the gradient check, and
explain like the float32 model (cosine of Input×Gradient and IG with the float32 model's)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import onnxxai
from onnxxai.proto.specs import probe_feeds
from conftest import ReluCNN
from onnxxai.testing import DEPLOYMENT_KINDS, MAP_METHODS, deployment_reference, evaluate_variant, export, make_deployment_variant

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


class TokenNet(torch.nn.Module):
    """Token ids -> embedding -> a linear layer per token -> mean over tokens -> classes."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(50, 16)
        self.mix = torch.nn.Linear(16, 16)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embedding(x)
        return self.head(torch.relu(self.mix(e) + e).mean(1))


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deployment_tokens")
    torch.manual_seed(0)
    path = export(TokenNet(), torch.randint(0, 50, (1, 7)), folder / "tokens.onnx")
    model = onnxxai.load(path)
    reference = deployment_reference(model, ig_steps=16)
    calibration = [reference.feeds] + [probe_feeds(model.inputs, seed=100 + i, batch=1) for i in range(3)]
    return path, folder, calibration, reference


@pytest.mark.parametrize("kind", ["int8 QOperator", "int8 dynamic"])
def test_int8_embedding_is_tapped_at_its_dequantized_lookup(tokens, kind):
    """onnxruntime's int8 files look token ids up in a uint8 table and dequantize the result in several
    places: the ids are attributed at the one lookup (its dequantized values), with a gradient that
    reaches every consumer and follows the float32 model's."""
    from onnxxai.analyzers.tap import choose_tensor, quantized_lookup

    path, folder, calibration, reference = tokens
    variant = make_deployment_variant(path, kind, folder, calibration)
    model = onnxxai.load(variant)
    tensor = choose_tensor(model, "x", None)
    assert quantized_lookup(model, tensor) is not None
    result = evaluate_variant(variant, reference, model="tokens", kind=kind)
    assert result.ok, (result.cause, result.gradient)
    assert f"at {tensor}" in result.gradient and result.cosine_ig >= 0.9, result
    # GradCAM and LRP take float inputs only: the float32 model's refusal is the note, the verdict stands
    for note in (result.gradcam_note, result.lrp_note):
        assert note.startswith("float32 refused: InputError: the model has no float input"), note


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    from pathlib import Path

    folder = tmp_path_factory.mktemp("deployment_lenet")
    path = Path(__file__).parent.parent / "models" / "lenet5_mnist.onnx"
    model = onnxxai.load(path)
    reference = deployment_reference(model, ig_steps=8)
    calibration = [reference.feeds] + [probe_feeds(model.inputs, seed=100 + i, batch=1) for i in range(3)]
    return path, folder, calibration, reference


def _cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_gradcam_and_lrp_of_int8_lenet_follow_float32(lenet):
    """The GradCAM (default boundary) and LRP (default composite) cosines of LeNet's int8 QDQ file with
    its float32 file are those of the two maps computed here with the public analyzers, and high."""
    from onnxxai.analyzers import LRP, GradCAM, analyze

    path, folder, calibration, reference = lenet
    assert set(reference.maps) == set(MAP_METHODS) and all(isinstance(m, np.ndarray) for m in reference.maps.values())
    variant = make_deployment_variant(path, "int8 QDQ", folder, calibration)
    result = evaluate_variant(variant, reference, model="lenet", kind="int8 QDQ")
    assert result.ok and not result.gradcam_note and not result.lrp_note, result
    x, selection = reference.feeds[reference.input_name], reference.selection
    float32, int8 = onnxxai.load(path), onnxxai.load(variant)
    for method, analyzer, value in (("gradcam", GradCAM, result.cosine_gradcam), ("lrp", LRP, result.cosine_lrp)):
        ours, theirs = (analyze(x, analyzer(m), selection).val for m in (int8, float32))
        assert value == pytest.approx(_cosine(ours, theirs), abs=1e-6), method
        assert value > 0.95, (method, value)


def test_lrp_refusal_on_dynamic_int8_is_a_note_not_a_failure(lenet):
    """LRP refuses dynamic int8 files (activation scales computed at run time): the note names the
    refusal and its ops, GradCAM still compares, and the variant's verdict is unchanged."""
    path, folder, calibration, reference = lenet
    result = evaluate_variant(make_deployment_variant(path, "int8 dynamic", folder, calibration), reference,
                              model="lenet", kind="int8 dynamic")
    assert result.ok, (result.cause, result.gradient)
    assert result.cosine_gradcam > 0.95 and not result.gradcam_note, result
    assert np.isnan(result.cosine_lrp) and result.lrp_note.startswith("refused: LRPModelError"), result.lrp_note
    assert "DynamicQuantizeLinear" in result.lrp_note and str(folder) not in result.lrp_note
