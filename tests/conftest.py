"""Shared fixtures: small real models exported to ONNX inside the test session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import onnxxai
from onnxxai.testing import export

LIGHT_ZOO = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


class SmoothCNN(torch.nn.Module):
    """A small conv net with biases and smooth activations (tanh, softplus): IG converges on it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 6, 3, stride=2)
        self.fc = torch.nn.Linear(6 * 3 * 3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv1(x))
        h = torch.nn.functional.softplus(self.conv2(h))
        return self.fc(h.flatten(1))


class BiasFreeNet(torch.nn.Module):
    """ReLU CNN without biases, with a residual Add, a Concat, max and average pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.conv2 = torch.nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.conv3 = torch.nn.Conv2d(6, 4, 1, bias=False)
        self.fc = torch.nn.Linear(10 * 2 * 2, 5, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h) + h)
        h = torch.nn.functional.max_pool2d(h, 2)
        h = torch.cat([h, torch.relu(self.conv3(h))], 1)
        h = torch.nn.functional.avg_pool2d(h, 2)
        return self.fc(h.flatten(1))


class ReluCNN(torch.nn.Module):
    """Two ReLU convolutions (the second with stride 2) and a linear head: the small CNN the
    deployment tests quantize, cast to float16 and optimize with onnxruntime's own tools."""

    def __init__(self, channels: int = 3, width: int = 8, classes: int = 10, size: int = 16) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(channels, width, 3, padding=1)
        self.c2 = torch.nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(2 * width * (size // 2) ** 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(x)))).flatten(1))


class TwoInputNet(torch.nn.Module):
    """An audio-like model: a float signal and a float state, one output."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(6, 4)
        self.b = torch.nn.Linear(3, 4)

    def forward(self, signal: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.a(signal) + self.b(state))


@pytest.fixture(scope="session")
def smooth_cnn_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return export(SmoothCNN(), torch.randn(1, 1, 7, 7), tmp_path_factory.mktemp("smooth") / "smooth.onnx")


@pytest.fixture(scope="session")
def smooth_cnn(smooth_cnn_path) -> onnxxai.Model:
    return onnxxai.load(smooth_cnn_path)


@pytest.fixture(scope="session")
def resnet18_paths(tmp_path_factory) -> dict[str, Path]:
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    folder = tmp_path_factory.mktemp("resnet18")
    x = torch.randn(1, 3, 224, 224)
    return {
        "legacy17": export(net, x, folder / "resnet18_opset17.onnx"),
        "dynamo": export(net, x, folder / "resnet18_dynamo.onnx", dynamo=True),
    }


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
