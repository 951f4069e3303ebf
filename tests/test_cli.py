"""`onnxxai check` through a subprocess, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys


def _run(*args):
    return subprocess.run([sys.executable, "-m", "onnxxai.cli", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_check_reports_parity_and_ops(smooth_cnn_path):
    proc = _run("check", smooth_cnn_path, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["converted"] and report["parity"]["ok"]
    assert report["ops"]["Conv"] == 2 and report["opsets"]["ai.onnx"] == 17
    assert report["inputs"] == ["x: float32[batch, 1, 7, 7]"]
    # the smooth CNN's Conv-11 goes through our converter, which extends onnx2torch's (run-time weights)
    conv = [c for c in report["overriding_converters"] if c["op"] == "Conv-11"]
    assert conv and conv[0]["mode"] == "extends" and conv[0]["upstream"].startswith("onnx2torch.")


def test_check_missing_file_is_one_line_and_nonzero(tmp_path):
    proc = _run("check", tmp_path / "missing.onnx")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no such file" in proc.stderr
    assert "Traceback" not in proc.stderr


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
LENET = ROOT / "models" / "lenet5_mnist.onnx"
DIGITS = ROOT / "examples"


def _one_line_error(proc, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_run_end_to_end_on_the_shipped_model(tmp_path):
    import numpy as np
    from PIL import Image

    import onnxxai

    out = tmp_path / "out"
    proc = _run("run", LENET, DIGITS / "digit_3.png", DIGITS / "digit_7.png", "--labels", ROOT / "models" / "mnist_labels.txt",
                "--out", out, "--json", "--quiet", "--samples", "16")
    assert proc.returncode == 0, proc.stderr
    summaries = json.loads(proc.stdout)
    model = onnxxai.load(LENET)
    for summary, digit in zip(summaries, ("digit_3", "digit_7")):
        for kind in ("heatmap", "overlay"):
            image = np.asarray(Image.open(summary["files"][kind]))
            assert image.shape == (28, 28, 3) and image.dtype == np.uint8 and image.std() > 0
        values = np.load(summary["files"]["values"])
        assert values.shape == (1, 28, 28)
        pixels = np.asarray(Image.open(DIGITS / f"{digit}.png"), dtype=np.float32)[None, None] / 255
        prediction = int(model(pixels).argmax())
        assert summary["top5"][0]["index"] == prediction == summary["target"]
        assert summary["top5"][0]["label"] == str(prediction)
        assert abs(sum(t["probability"] for t in summary["top5"]) - 1) < 0.05
        assert summary["parity"]["ok"] and summary["parameters"]["n"] == 16
        assert json.loads((out / f"{digit}_integrated-gradients.json").read_text()) == summary
        # the saved values are IG computed by the library on the same pixels
        direct = onnxxai.analyze(pixels, onnxxai.IntegratedGradients(model, n=16), prediction).val[0]
        np.testing.assert_allclose(values, direct, rtol=1e-4, atol=1e-6)


def test_run_directory_with_target_and_method(tmp_path):
    proc = _run("run", LENET, DIGITS, "--method", "smoothgrad", "--samples", "4", "--target", "2",
                "--batch-size", "4", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(list(tmp_path.glob("*_smoothgrad_overlay.png"))) == 10
    assert "40/40 samples" in proc.stderr  # the progress bar counts noisy samples
    report = json.loads((tmp_path / "digit_5_smoothgrad.json").read_text())
    assert report["target"] == 2 and report["method"] == "smoothgrad"


def test_run_bad_inputs_give_one_line_and_nonzero_exit(tmp_path):
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    _one_line_error(_run("run", LENET, tmp_path / "missing.png", "--out", tmp_path), "missing.png", "no such file")
    _one_line_error(_run("run", LENET, not_image, "--out", tmp_path), "notes.png", "not a readable image")
    _one_line_error(_run("run", LENET, DIGITS / "digit_1.png", "--method", "magic", "--out", tmp_path), "unknown method", "magic")
    _one_line_error(_run("run", tmp_path / "nomodel.onnx", DIGITS / "digit_1.png", "--out", tmp_path), "no such file")


def test_run_refuses_models_without_image_input(tmp_path, smooth_cnn_path):
    import torch

    from conftest import TwoInputNet

    from onnxxai.testing import export

    mlp = export(torch.nn.Sequential(torch.nn.Linear(6, 3)), torch.randn(1, 6), tmp_path / "mlp.onnx")
    _one_line_error(_run("run", mlp, DIGITS / "digit_1.png", "--out", tmp_path), "not image-like")
    wide = export(torch.nn.Conv2d(2, 3, 3), torch.randn(1, 2, 8, 8), tmp_path / "two_channels.onnx")
    _one_line_error(_run("run", wide, DIGITS / "digit_1.png", "--out", tmp_path, "--layout", "nchw"), "2 channels")
    two = export(TwoInputNet(), (torch.randn(1, 6), torch.randn(1, 3)), tmp_path / "two.onnx", input_names=["signal", "state"])
    _one_line_error(_run("run", two, DIGITS / "digit_1.png", "--out", tmp_path), "several float inputs")


def test_run_help_lists_methods_not_built_yet():
    proc = _run("run", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for method in ("gradient", "input-x-gradient", "smoothgrad", "integrated-gradients", "gradcam", "lrp"):
        assert method in text


def test_check_reports_gradient_flow(smooth_cnn_path):
    report = json.loads(_run("check", smooth_cnn_path, "--json").stdout)
    assert report["gradient"]["ok"] and report["gradient"]["fd_rel_error"] < 2e-2
    assert report["gradient"]["input_name"] == "x"


def test_check_lists_every_unsupported_node(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="ok_relu"),
             helper.make_node("Wobble", ["a"], ["b"], name="first_wobble", domain="com.example"),
             helper.make_node("Wobble", ["b"], ["y"], name="second_wobble", domain="com.example")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    path = tmp_path / "wobble.onnx"
    onnx.save(model, str(path))
    proc = _run("check", path, "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert [u["node"] for u in report["unsupported"]] == ["first_wobble", "second_wobble"]
    assert report["unsupported"][0] == {"op": "Wobble", "domain": "com.example", "opset": 1, "node": "first_wobble"}
