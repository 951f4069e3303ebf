"""A fixed batch dimension (torch.onnx.export without dynamic_axes writes batch 1): load, Model,
analyze and ``onnxxai run`` take any number of samples. A graph that verifiably computes per sample
is loaded relaxed (symbolic batch); one that does not runs in chunks of its fixed batch. The
references are the dynamic export of the same network and per-sample runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision

import onnxxai
from onnxxai.cli import main
from onnxxai.testing import export


class BakedBatch(torch.nn.Module):
    """A differentiable net whose Reshape bakes the export's batch into the graph: a relaxed batch
    of several samples would be one flattened sample, so the file must run per sample."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(x).reshape(1, -1))


class MixesBatch(torch.nn.Module):
    """Runs at any batch once relaxed, but its output mixes samples (a mean over the whole tensor):
    only the per-sample check can tell."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x - x.mean()).flatten(1)


@pytest.fixture(scope="module")
def resnets(tmp_path_factory):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    folder = tmp_path_factory.mktemp("fixed")
    example = torch.randn(1, 3, 64, 64)
    fixed, dynamic = export(net, example, folder / "fixed.onnx", dynamic_batch=False), export(net, example, folder / "dynamic.onnx")
    return net, fixed, dynamic, onnxxai.load(fixed), onnxxai.load(dynamic)


def test_fixed_batch_resnet_loads_relaxed_and_takes_any_batch(resnets):
    net, _, _, model, dynamic = resnets
    assert model.parity.ok
    assert model.parity.batch_mode == "relaxed" and "per-sample" in model.parity.batch_note
    assert dynamic.parity.batch_mode == "dynamic"
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), want, rtol=1e-4, atol=1e-4)


def test_integrated_gradients_on_fixed_batch_equals_dynamic_export(resnets):
    _, _, _, fixed, dynamic = resnets
    x = np.random.default_rng(1).standard_normal((3, 3, 64, 64)).astype(np.float32)
    a = onnxxai.analyze(x[:2], onnxxai.IntegratedGradients(fixed, n=4))
    b = onnxxai.analyze(x[:2], onnxxai.IntegratedGradients(dynamic, n=4))
    assert a.val.shape == (2, 3, 64, 64)
    np.testing.assert_array_equal(a.output_selection, b.output_selection)
    np.testing.assert_allclose(a.val, b.val, rtol=1e-3, atol=1e-5 * np.abs(b.val).max())


def test_batch_baked_into_the_graph_runs_in_chunks_of_the_fixed_batch(tmp_path):
    torch.manual_seed(0)
    net = BakedBatch().eval()
    path = export(net, torch.randn(1, 3, 4, 4), tmp_path / "baked.onnx", dynamic_batch=False)
    model = onnxxai.load(path)
    assert model.parity.ok and model.parity.batch_mode == "fixed", model.parity
    assert model.parity.batch_note
    x = np.random.default_rng(2).standard_normal((3, 3, 4, 4)).astype(np.float32)
    with torch.no_grad():
        want = np.concatenate([net(torch.from_numpy(x[i:i + 1])).numpy() for i in range(3)])
    np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-6)
    # gradients per sample equal torch's own on each sample
    expl = onnxxai.analyze(x, onnxxai.Gradient(model))
    for i in range(3):
        xi = torch.from_numpy(x[i:i + 1]).requires_grad_(True)
        out = net(xi)
        out[0, int(expl.output_selection[i])].backward()
        np.testing.assert_allclose(expl.val[i], xi.grad[0].numpy(), rtol=1e-4, atol=1e-6)


def test_batch_mixing_graph_is_not_relaxed(tmp_path):
    path = export(MixesBatch(), torch.randn(1, 2, 3), tmp_path / "mixes.onnx", dynamic_batch=False)
    model = onnxxai.load(path)
    assert model.parity.batch_mode == "fixed" and "per-sample" in model.parity.batch_note
    x = np.random.default_rng(3).standard_normal((2, 2, 3)).astype(np.float32)
    want = np.stack([np.tanh(s - s.mean()).ravel() for s in x])
    np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-6)


def test_cli_run_on_a_folder_with_a_fixed_batch_export(resnets, tmp_path, capsys):
    from PIL import Image

    fixed_path = resnets[1]
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    out = tmp_path / "out"
    status = main(["run", str(fixed_path), str(folder), "--out", str(out), "--json", "--quiet", "--samples", "4"])
    assert status == 0
    summaries = json.loads(capsys.readouterr().out)
    assert len(summaries) == 5
    assert all(s["parity"]["batch_mode"] == "relaxed" for s in summaries)
    for s in summaries:
        assert np.load(s["files"]["values"]).shape == (3, 64, 64)


def test_a_declared_batch_of_zero_is_no_fixed_batch_and_ends_in_a_named_error(tmp_path) -> None:
    """A first dimension of 0 holds no samples: chunking by it divided by zero (a ValueError from range())."""
    from onnx import TensorProto, helper

    from onnxxai.proto.batch import fixed_batch

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="act")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [0, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [0, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert fixed_batch(model) is None
    path = tmp_path / "empty_batch.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(onnxxai.OnnxxaiError) as info:
        onnxxai.load(path)
    assert str(path) in str(info.value)
