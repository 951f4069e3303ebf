"""LRP on onnxruntime-optimized files: the optimizer only fuses (Conv + Relu -> FusedConv, Gemm + Relu ->
FusedGemm at EXTENDED; NCHWc-blocked Conv, pools and reorders at ALL), so the relevance of the optimized
file must equal that of the float32 file it was made from, rule for rule. Fused activations the float
path would refuse are refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import onnxxai
from onnxxai.analyzers.lrp import LRP, Composite, EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlusFlat, Flat, LRPModelError
from onnxxai.errors import AnalyzerError
from onnxxai.testing import export, make_deployment_variant

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "models" / "lenet5_mnist.onnx"
KINDS = ("onnxruntime EXTENDED", "onnxruntime ALL")


class SmallCNN(torch.nn.Module):
    """Conv-ReLU-Conv-ReLU-pool-Linear. At the ALL level the second Conv reads a blocked 16-channel input;
    with ``out`` = 12 it writes a zero-padded blocked output and the pool stays a float AveragePool, with
    16 the pool becomes an NCHWc AveragePool on the blocked tensor."""

    def __init__(self, act: type[torch.nn.Module] = torch.nn.ReLU, out: int = 12) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), act(), torch.nn.Conv2d(16, out, 3), act(), torch.nn.AvgPool2d(2))
        self.head = torch.nn.Linear(out * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@pytest.fixture(scope="module", params=[12, 16], ids=["padded", "blocked-pool"])
def cnn_path(request, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return export(SmallCNN(out=request.param), torch.zeros(1, 3, 10, 10), tmp_path_factory.mktemp("cnn") / "cnn.onnx")


def _ops(model) -> set[str]:
    return {n.op_type for n in model.onnx_model.graph.node}


def _compare(source: Path, kind: str, folder: Path, x: np.ndarray, composite) -> None:
    variant = onnxxai.load(make_deployment_variant(source, kind, folder, []))
    ops = _ops(variant)
    if kind.endswith("EXTENDED"):
        assert "FusedConv" in ops and "Relu" not in ops  # what the optimizer wrote
    else:
        assert "ReorderOutput" in ops and any(n.domain.endswith("nchwc") and n.op_type == "Conv" for n in variant.onnx_model.graph.node)
    want = np.asarray(LRP(onnxxai.load(source), composite)(x, 0).val)
    got = np.asarray(LRP(variant, composite)(x, 0).val)
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("composite", [EpsilonPlusFlat(), EpsilonAlpha2Beta1(), EpsilonGammaBox(-1.0, 1.0)],
                         ids=["EpsilonPlusFlat", "EpsilonAlpha2Beta1", "EpsilonGammaBox"])
def test_optimized_cnn_relevance_equals_float(cnn_path, tmp_path_factory, kind, composite):
    x = np.random.default_rng(1).standard_normal((3, 3, 10, 10)).astype(np.float32)
    _compare(cnn_path, kind, tmp_path_factory.mktemp("v"), x, composite)


@pytest.mark.parametrize("kind", KINDS)
def test_optimized_lenet_relevance_equals_float(tmp_path_factory, kind):
    x = np.random.default_rng(2).random((2, 1, 28, 28), dtype=np.float32)
    variant = onnxxai.load(make_deployment_variant(LENET, kind, tmp_path_factory.mktemp("lenet"), []))
    assert "FusedGemm" in _ops(variant)
    _compare(LENET, kind, tmp_path_factory.mktemp("lenet"), x, EpsilonPlusFlat())


@pytest.mark.parametrize("act", [torch.nn.Sigmoid, torch.nn.Tanh], ids=["Sigmoid", "Tanh"])
def test_fused_non_relu_activation_is_refused_by_name(tmp_path, act):
    torch.manual_seed(0)
    path = export(SmallCNN(act), torch.zeros(1, 3, 10, 10), tmp_path / "cnn.onnx")
    variant = onnxxai.load(make_deployment_variant(path, "onnxruntime EXTENDED", tmp_path, []))
    assert "FusedConv" in _ops(variant)
    with pytest.raises(LRPModelError, match=f"fused activation {act.__name__}: non-ReLU-like") as caught:
        LRP(variant)
    assert {p.op_type for p in caught.value.problems} == {"FusedConv"}
    with pytest.raises(LRPModelError, match=act.__name__):  # the float file is refused at the same place
        LRP(onnxxai.load(path))


def test_flat_on_a_blocked_nchwc_input_is_refused(cnn_path, tmp_path):
    variant = onnxxai.load(make_deployment_variant(cnn_path, "onnxruntime ALL", tmp_path, []))
    convs = [n.name for n in variant.onnx_model.graph.node if n.op_type == "Conv" and n.domain.endswith("nchwc")]
    assert [getattr(m, "blocked_input", None) for m in variant.torch_module.children() if type(m).__name__ == "NchwcConv"] == [False, True]
    lrp = LRP(variant, EpsilonPlusFlat(nodes={convs[1]: Flat()}))  # the second Conv reads a blocked tensor
    x = np.zeros((1, 3, 10, 10), np.float32)
    with pytest.raises(AnalyzerError, match="padding channels"):
        lrp(x, 0)


class Residual(torch.nn.Module):
    """relu(conv2(y) + y) after y = relu(conv1(x)): at the ALL level the Add becomes the nchwc Conv's Sum input."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.Conv2d(16, 16, 3, padding=1)
        self.head = torch.nn.Linear(16 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c1(x))
        return self.head(torch.relu(self.c2(y) + y).flatten(1))


def test_fused_residual_carrying_relevance_is_refused(tmp_path):
    torch.manual_seed(0)
    path = export(Residual(), torch.zeros(1, 3, 8, 8), tmp_path / "res.onnx")
    variant = onnxxai.load(make_deployment_variant(path, "onnxruntime ALL", tmp_path, []))
    summed = [n.name for n in variant.onnx_model.graph.node if n.op_type == "Conv" and len(n.input) == 4 and n.input[3]]
    assert summed  # the residual Add fused into the Conv
    with pytest.raises(LRPModelError, match="fused residual input") as caught:
        LRP(variant)
    assert [p.name for p in caught.value.problems] == summed
