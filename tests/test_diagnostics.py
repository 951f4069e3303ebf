"""The gradient check of `onnxxai check` and the corpus: it passes right gradients and fails wrong ones."""

from __future__ import annotations

import onnx
import pytest
import torch
from onnx2torch.node_converters import registry
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

import onnxxai
from onnxxai.diagnostics import gradient_flow


def test_gradient_flow_ok_on_a_smooth_model(smooth_cnn, smooth_cnn_path):
    report = gradient_flow(smooth_cnn, onnx.load(str(smooth_cnn_path)))
    assert report.ok and report.finite and report.nonzero and report.fd_rel_error < 1e-2


class _DoubledTanhGradient(torch.nn.Module):
    """tanh forward, twice the true gradient backward: parity cannot see it, the gradient check must."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(x)
        return y.detach() + 2 * (y - y.detach())


class _DetachedTanh(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x).detach()


@pytest.mark.parametrize("module,verdict", [(_DoubledTanhGradient, "FAILED"), (_DetachedTanh, "identically zero")])
def test_gradient_flow_catches_wrong_gradients(monkeypatch, smooth_cnn_path, module, verdict):
    def converter(node, graph):
        return OperationConverterResult(module(), OnnxMapping(node.input_values, node.output_values))

    onnxxai.convert.register_all()
    monkeypatch.setitem(registry._CONVERTER_REGISTRY, registry.OperationDescription("", "Tanh", 13), converter)
    model = onnxxai.load(smooth_cnn_path)
    assert model.parity.ok  # the forward is right...
    report = gradient_flow(model, onnx.load(str(smooth_cnn_path)))
    assert not report.ok and verdict in report.summary()  # ...the gradient is not


class _Float32OnlyTanh(torch.nn.Module):
    """A right tanh that refuses float64 (like a kernel torch has only for float32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float64:
            raise TypeError("no float64 kernel for this op")
        return torch.tanh(x)


def test_gradient_flow_records_why_float64_was_not_used(monkeypatch, smooth_cnn_path):
    def converter(node, graph):
        return OperationConverterResult(_Float32OnlyTanh(), OnnxMapping(node.input_values, node.output_values))

    onnxxai.convert.register_all()
    monkeypatch.setitem(registry._CONVERTER_REGISTRY, registry.OperationDescription("", "Tanh", 13), converter)
    model = onnxxai.load(smooth_cnn_path)
    report = gradient_flow(model, onnx.load(str(smooth_cnn_path)))
    assert report.reference == "onnxruntime float32"
    assert report.fallback_cause == "TypeError: no float64 kernel for this op"
    assert "float64 copy failed: TypeError" in report.summary()
