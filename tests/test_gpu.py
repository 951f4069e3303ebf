"""CUDA: the converted graph and the analyzers on the GPU (skipped where CUDA is absent)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import onnxxai

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


def test_load_on_cuda_keeps_parity_and_device(smooth_cnn_path):
    model = onnxxai.load(smooth_cnn_path, device="cuda")
    assert model.parity.ok
    assert all(p.device.type == "cuda" for p in model.torch_module.parameters())


def test_analyzers_on_cuda_match_cpu(smooth_cnn_path, smooth_cnn):
    gpu = onnxxai.load(smooth_cnn_path, device="cuda")
    x = np.random.default_rng(0).standard_normal((4, 1, 7, 7)).astype(np.float32)
    for make in (lambda m: onnxxai.Gradient(m), lambda m: onnxxai.IntegratedGradients(m, n=16)):
        on_gpu = onnxxai.analyze(torch.from_numpy(x).cuda(), make(gpu), 1)
        assert on_gpu.val.device.type == "cuda"
        on_cpu = onnxxai.analyze(x, make(smooth_cnn), 1)
        np.testing.assert_allclose(on_gpu.val.cpu().numpy(), on_cpu.val, rtol=1e-4, atol=1e-6)
