"""Probe inputs for files whose dynamic dimensions refuse the default probe size: load tries the sizes
the graph names (Reshape targets, kernel lengths) and a ladder before failing; the error names the
dimension and how to pass probes; ``onnxxai check`` / ``run`` take ``--probe-shape NAME=DIMS``."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

import onnxxai
from onnxxai.cli import main
from onnxxai.errors import InputError, ModelFileError
from onnxxai.proto.specs import graph_input_specs, parse_probe_shape, probe_candidates
from onnxxai.testing import export


class Frames(torch.nn.Module):
    """An audio front end that frames the signal by 512 samples: the time axis must be a multiple of 512."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(512, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = torch.tanh(self.fc(x.reshape(-1, 512)))
        return frames.reshape(x.shape[0], -1, 8).mean(1)


class Strided(torch.nn.Module):
    """A Conv1d with kernel 400 and stride 160 (25 ms windows at 16 kHz): needs at least 400 samples."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 4, 400, stride=160)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)).mean(-1)


class ExactLength(torch.nn.Module):
    """Adds a learned 333-sample offset: only a signal of exactly 333 samples runs."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = torch.nn.Parameter(torch.randn(333))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x + self.offset).sum(-1, keepdim=True)


def _export(module: torch.nn.Module, example: torch.Tensor, path, time_axis: int):
    torch.manual_seed(0)
    module = module.eval()
    torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17, input_names=["audio"],
                      output_names=["y"], dynamic_axes={"audio": {0: "batch", time_axis: "time"}, "y": {0: "batch"}})
    return path


@pytest.mark.parametrize("net, example, axis", [(Frames, torch.randn(1, 1024), 1), (Strided, torch.randn(1, 1, 800), 2)],
                         ids=["frames512", "conv400"])
def test_load_finds_a_probe_size_the_graph_accepts(tmp_path, net, example, axis):
    torch.manual_seed(0)
    path = _export(net(), example, tmp_path / "audio.onnx", axis)
    model = onnxxai.load(path)
    assert model.parity.ok
    length = model.parity.probe_shapes["audio"][axis]
    assert length >= 400 and length != 64
    report = onnxxai.diagnostics.gradient_flow(model, model.original)
    assert report.ok, report.summary()


def test_unfit_probe_size_names_the_dimension_and_the_way_out(tmp_path):
    torch.manual_seed(0)
    path = _export(ExactLength(), torch.randn(1, 333), tmp_path / "exact.onnx", 1)
    with pytest.raises(ModelFileError) as info:
        onnxxai.load(path)
    message = str(info.value)
    assert "'audio' axis 1 ('time')" in message and "--probe-shape audio=" in message and "probe_shapes=" in message
    model = onnxxai.load(path, probe_shapes={"audio": (2, 333)})
    assert model.parity.ok and model.parity.probe_shapes["audio"] == (2, 333)


def test_cli_check_and_run_take_probe_shapes(tmp_path, capsys):
    torch.manual_seed(0)
    path = _export(ExactLength(), torch.randn(1, 333), tmp_path / "exact.onnx", 1)
    assert main(["check", str(path)]) != 0
    err = capsys.readouterr()
    assert "--probe-shape" in err.out + err.err
    assert main(["check", str(path), "--probe-shape", "audio=1,333", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parity"]["ok"] and report["gradient"]["ok"]
    assert report["parity"]["probe_shapes"]["audio"] == [1, 333]


def test_probe_shape_parsing():
    assert parse_probe_shape("audio=1,16000") == ("audio", (1, 16000))
    assert parse_probe_shape("x=1x3x224x224") == ("x", (1, 3, 224, 224))
    with pytest.raises(InputError, match="NAME=DIMS"):
        parse_probe_shape("1,16000")


class Patches(torch.nn.Module):
    """A patch embedding (Conv2d(3, 8, kernel 4, stride 4)), a class token, position embeddings for a
    fixed 16 patches and a Linear: with N, C, H and W all dynamic in the file, only 3x16x16 images run (as
    optimum-onnx's ViT export)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Conv2d(3, 8, kernel_size=4, stride=4)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, 8))
        self.positions = torch.nn.Parameter(torch.randn(17, 8))
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.embed(x).flatten(2).transpose(1, 2)  # (N, patches, 8)
        tokens = torch.cat([self.cls.expand(x.shape[0], 1, 8), patches], 1) + self.positions  # 1 + 16 tokens only
        return self.head(tokens.mean(1))


def test_probe_sizes_are_derived_per_dimension_from_the_graph(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "patches.onnx"
    torch.onnx.export(Patches().eval(), (torch.randn(1, 3, 16, 16),), str(path), dynamo=False, opset_version=17,
                      input_names=["pixel_values"], output_names=["logits"],
                      dynamic_axes={"pixel_values": {0: "n", 1: "c", 2: "h", 3: "w"}, "logits": {0: "n"}})
    original = onnx.load(str(path))
    specs = graph_input_specs(original)
    assert specs[0].probe == (2, 3, 64, 64)  # channels from the Conv weight, spatial sizes fit kernel 4 stride 4
    shapes = [c["pixel_values"] for c in probe_candidates(original, specs)]
    assert shapes[0] == (2, 3, 64, 64) and (2, 3, 16, 16) in shapes and all(s[1] == 3 for s in shapes)
    model = onnxxai.load(path)
    assert model.parity.ok and model.parity.probe_shapes["pixel_values"] == (2, 3, 16, 16)
    assert model.inputs[0].probe == (2, 3, 16, 16)  # later probes repeat the accepted shape
    report = onnxxai.diagnostics.gradient_flow(model, model.original)
    assert report.ok, report.summary()
