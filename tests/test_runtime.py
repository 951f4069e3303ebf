"""onnxruntime-only model: chunked runs, fixed-batch relaxation (verified), torch-free import."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch
import torchvision

import onnxxai
from onnxxai.analyzers import __all__ as ANALYZER_NAMES
from onnxxai.errors import InputError
from onnxxai.proto.batch import BATCH_PARAM, fixed_batch, relax_batch
from onnxxai.runtime import RuntimeModel, load_runtime
from onnxxai.testing import WITHOUT_TORCH, export

LENET = "models/lenet5_mnist.onnx"


class BakedBatch(torch.nn.Module):
    """Sums each sample, but through a Reshape that bakes the export's batch of 1 into the graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(1, -1).sum(1, keepdim=True)


@pytest.fixture(scope="module")
def fixed_resnet(tmp_path_factory):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    path = export(net, torch.randn(1, 3, 64, 64), tmp_path_factory.mktemp("rt") / "resnet_b1.onnx", dynamic_batch=False)
    return net, path


def test_dynamic_file_runs_in_bounded_chunks():
    model = load_runtime(LENET, max_batch=4)
    assert model.batch_mode == "dynamic" and model.fixed_batch is None
    x = np.random.default_rng(0).standard_normal((10, 1, 28, 28)).astype(np.float32)
    out = model(x)
    assert model.calls == 3  # 4 + 4 + 2
    whole = load_runtime(LENET)(x)
    np.testing.assert_allclose(out, whole, rtol=1e-5, atol=1e-6)


def test_chunks_shrink_for_large_inputs():
    model = load_runtime(LENET, max_batch=64)
    model.chunk_bytes = 3 * 28 * 28 * 4  # three digits per call
    model(np.zeros((7, 1, 28, 28), np.float32))
    assert model.calls == 3


def test_fixed_batch_export_is_relaxed_after_verification(fixed_resnet):
    net, path = fixed_resnet
    original = onnx.load(path)
    assert fixed_batch(original) == 1
    model = load_runtime(path)
    assert model.batch_mode == "relaxed", model.relax_error
    assert model.calls == 0
    x = np.random.default_rng(1).standard_normal((5, 3, 64, 64)).astype(np.float32)
    out = model(x)
    assert model.calls == 1
    with torch.no_grad():
        np.testing.assert_allclose(out, net(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-4)
    # the caller's proto is untouched; the relaxed copy is symbolic on inputs and outputs
    assert onnx.load(path) == original
    relaxed = relax_batch(original)
    assert relaxed.graph.input[0].type.tensor_type.shape.dim[0].dim_param == BATCH_PARAM
    assert relaxed.graph.output[0].type.tensor_type.shape.dim[0].dim_param == BATCH_PARAM


def test_batch_baked_into_the_graph_runs_per_sample(tmp_path):
    path = export(BakedBatch(), torch.randn(1, 3, 4), tmp_path / "baked.onnx", dynamic_batch=False)
    model = load_runtime(path)
    assert model.batch_mode == "fixed"
    assert "per-sample" in model.relax_error
    x = np.random.default_rng(2).standard_normal((3, 3, 4)).astype(np.float32)
    out = model(x)
    assert model.calls == 3
    np.testing.assert_allclose(out.ravel(), x.reshape(3, -1).sum(1), rtol=1e-5)


class PairSum(torch.nn.Module):
    """Per-sample sums, but through a Reshape that bakes the export's batch of 2 into the graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(2, -1).sum(1, keepdim=True) + 0 * x.reshape(-1)[:1]


def test_fixed_batch_of_two_pads_the_last_chunk(tmp_path):
    path = export(PairSum(), torch.randn(2, 3, 4), tmp_path / "baked2.onnx", dynamic_batch=False)
    model = load_runtime(path)
    assert model.fixed_batch == 2 and model.batch_mode == "fixed", model.relax_error
    x = np.random.default_rng(3).standard_normal((5, 3, 4)).astype(np.float32)
    out = model(x)  # 2 + 2 + (1 padded to 2, the padding dropped)
    assert model.calls == 3 and out.shape == (5, 1)
    np.testing.assert_allclose(out.ravel(), x.reshape(5, -1).sum(1), rtol=1e-5)


def test_a_first_axis_that_is_not_a_batch_is_not_relaxed(tmp_path):
    """The output of BakedBatch at batch 2 is (1, 1): its first axis is not a batch, so the file keeps
    its declared shape (no relaxation, no chunking) and other sample counts are refused."""
    path = export(BakedBatch(), torch.randn(2, 3, 4), tmp_path / "baked2.onnx", dynamic_batch=False)
    assert fixed_batch(onnx.load(path)) is None
    model = load_runtime(path)
    with pytest.raises(InputError, match="axis 0 must be 2"):
        model(np.zeros((5, 3, 4), np.float32))


def test_input_checks_name_the_input():
    model = load_runtime(LENET)
    with pytest.raises(InputError, match="rank"):
        model(np.zeros((1, 28, 28), np.float32))
    with pytest.raises(InputError, match="axis 2"):
        model(np.zeros((1, 1, 27, 28), np.float32))
    assert model.input_spec().name == model.inputs[0].name


def test_model_runtime_is_the_original_file():
    model = onnxxai.load(LENET)
    runtime = model.runtime
    assert isinstance(runtime, RuntimeModel) and runtime is model.runtime
    x = np.random.default_rng(4).standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(runtime(x), model(x), rtol=1e-4, atol=1e-5)


def test_lazy_public_names_cover_the_analyzers():
    missing = [n for n in ANALYZER_NAMES if n not in onnxxai.__all__]
    assert not missing
    for name in onnxxai.__all__:
        assert getattr(onnxxai, name) is not None


def test_onnxruntime_path_works_without_torch():
    code = textwrap.dedent(f"""
        import numpy as np
        import onnxxai
        model = onnxxai.load_runtime({LENET!r})
        out = model(np.zeros((2, 1, 28, 28), np.float32))
        assert out.shape == (2, 10)
        sel = onnxxai.MaxActivation()(out)
        assert sel.dtype == np.int64 and sel.shape == (2,)
        assert "torch" not in sys.modules
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", WITHOUT_TORCH + code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
