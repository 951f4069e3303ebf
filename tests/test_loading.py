"""load(): conversion of real exports and of ONNX's light model zoo, verified against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import onnxxai
from conftest import LIGHT_ZOO, TwoInputNet
from onnxxai.testing import export

LIGHT_MODELS = sorted(p.name for p in LIGHT_ZOO.glob("*.onnx"))


@pytest.mark.parametrize("variant", ["legacy17", "dynamo"])
def test_resnet18_exports_load_with_parity(resnet18_paths, variant):
    model = onnxxai.load(resnet18_paths[variant])
    assert model.parity.ok
    assert model.parity.max_rel <= 1e-4
    assert model.parity.provider in ("CPUExecutionProvider", "CUDAExecutionProvider")
    # an independent check on a fresh input, outside the probe used by load
    x = np.random.default_rng(7).standard_normal((3, 3, 224, 224)).astype(np.float32)
    ref = ort.InferenceSession(str(resnet18_paths[variant]), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    out = model(x)
    assert isinstance(out, np.ndarray) and out.shape == (3, 1000)
    assert np.abs(out - ref).max() / np.abs(ref).max() < 1e-4


def test_model_describes_inputs_and_outputs(resnet18_paths):
    model = onnxxai.load(resnet18_paths["legacy17"])
    (spec,) = model.inputs
    assert spec.name == "x" and spec.shape == ("batch", 3, 224, 224) and spec.dtype == np.float32
    assert model.outputs[0].shape == ("batch", 1000)
    assert isinstance(model.torch_module, torch.fx.GraphModule)
    assert not model.torch_module.training
    assert all(not p.requires_grad for p in model.torch_module.parameters())
    assert "x: float32[batch, 3, 224, 224]" in repr(model)


def _with_logits_output(path) -> onnx.ModelProto:
    """The zoo model with its pre-softmax logits as a second output. The zoo's weights are constant
    fills, so the softmax itself is uniform whatever the graph computes; the logits are not."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    (softmax,) = [n for n in model.graph.node if n.op_type == "Softmax" and n.output[0] == model.graph.output[0].name] or [None]
    if softmax is None:
        return model
    info = {v.name: v for v in model.graph.value_info}[softmax.input[0]]
    model.graph.output.append(info)
    return model


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_zoo_loads_with_parity(name):
    original = _with_logits_output(LIGHT_ZOO / name)
    model = onnxxai.load(original)
    assert model.parity.ok, model.parity.summary()
    assert model.parity.max_rel <= 1e-4
    # a second input, unlike load's probe: scaled images in [0, 255]
    x = np.random.default_rng(3).uniform(0, 255, size=(1, *model.inputs[0].shape[1:])).astype(np.float32)
    refs = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {model.inputs[0].name: x})
    outs = model(x)
    outs = outs if isinstance(outs, tuple) else (outs,)
    assert len(outs) == len(refs)
    for out, ref in zip(outs, refs):
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() <= 1e-4 * np.abs(ref).max() + 1e-6
    assert np.abs(refs[-1]).max() > 0


def test_torch_and_numpy_calls(smooth_cnn):
    x = np.random.default_rng(0).standard_normal((2, 1, 7, 7)).astype(np.float32)
    out_np = smooth_cnn(x)
    out_t = smooth_cnn(torch.from_numpy(x))
    assert isinstance(out_np, np.ndarray) and isinstance(out_t, torch.Tensor)
    np.testing.assert_allclose(out_np, out_t.numpy(), rtol=1e-6)
    np.testing.assert_allclose(smooth_cnn(x=x), out_np, rtol=1e-6)


def test_user_modelproto_is_not_mutated(smooth_cnn_path):
    proto = onnx.load(str(smooth_cnn_path))
    before = proto.SerializeToString()
    onnxxai.load(proto)
    assert proto.SerializeToString() == before


def test_two_input_model_specs(tmp_path):
    torch.manual_seed(0)
    path = export(TwoInputNet(), (torch.randn(1, 6), torch.randn(1, 3)), tmp_path / "two.onnx", input_names=["signal", "state"])
    model = onnxxai.load(path)
    assert [s.name for s in model.inputs] == ["signal", "state"]
    with pytest.raises(onnxxai.InputError, match="several float inputs"):
        model.input_spec()


class TokenBlock(torch.nn.Module):
    """Tokens (N, T, C) through LayerNorm and attention-like mixing: dynamic batch and length."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(8)
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(self.norm(x))
        weights = torch.softmax(h @ h.transpose(1, 2) / 8**0.5, dim=-1)
        return (weights @ h).mean(dim=1)


def test_dynamic_token_length_layer_norm(tmp_path):
    """The channel axis is declared dynamic too, so shape inference cannot give LayerNorm a static shape."""
    torch.manual_seed(0)
    path = tmp_path / "tokens.onnx"
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        torch.onnx.export(TokenBlock().eval(), (torch.randn(1, 5, 8),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n", 1: "t", 2: "c"}, "y": {0: "n"}})
    probe = {"x": np.random.default_rng(1).standard_normal((2, 7, 8)).astype(np.float32)}
    model = onnxxai.load(path, probe_inputs=probe)
    assert model.inputs[0].shape == ("n", "t", "c")
    assert model.parity.ok and model.parity.probe_shapes["x"] == (2, 7, 8)
    x = np.random.default_rng(0).standard_normal((3, 11, 8)).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(model(x), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["legacy17", "dynamo"])
def test_resnet18_gradient_flows(resnet18_paths, variant):
    """The corpus check on the fast subset: finite, non-zero, equal to finite differences."""
    from onnxxai.diagnostics import gradient_flow

    model = onnxxai.load(resnet18_paths[variant])
    report = gradient_flow(model, onnx.load(str(resnet18_paths[variant])))
    assert report.ok, report.summary()
    assert report.reference == "float64" and report.fd_rel_error < 1e-3
