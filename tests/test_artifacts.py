"""artifact_kind names what a file is, from the graph alone, on files made by onnxruntime's and
onnxconverter-common's own tools from a small torch CNN export; `onnxxai check` prints it."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from onnxxai.proto.artifact import artifact_kind
from onnxxai.proto.cpu import integer_isa
from conftest import ReluCNN
from onnxxai.testing import calibration_reader, export

from onnxruntime import quantization
from onnxconverter_common import float16


def Reader():  # noqa: N802 - reads as the reader class it makes
    rng = np.random.default_rng(0)
    return calibration_reader([{"x": rng.standard_normal((1, 1, 8, 8)).astype(np.float32)} for _ in range(4)])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("artifacts")
    torch.manual_seed(0)
    f32 = export(ReluCNN(channels=1, width=4, classes=5, size=8), torch.randn(1, 1, 8, 8), d / "f32.onnx")
    pre = d / "pre.onnx"
    quantization.quant_pre_process(str(f32), str(pre), skip_symbolic_shape=True)
    out = {"float32": f32}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fmt in (("qdq", quantization.QuantFormat.QDQ), ("qop", quantization.QuantFormat.QOperator)):
            out[name] = d / f"{name}.onnx"
            quantization.quantize_static(str(pre), str(out[name]), Reader(), quant_format=fmt,
                                         per_channel=name == "qop")
        out["qdq16"] = d / "qdq16.onnx"
        quantization.quantize_static(str(pre), str(out["qdq16"]), Reader(), quant_format=quantization.QuantFormat.QDQ,
                                     activation_type=quantization.QuantType.QInt16, weight_type=quantization.QuantType.QInt16)
        out["dynamic"] = d / "dynamic.onnx"
        quantization.quantize_dynamic(str(pre), str(out["dynamic"]), weight_type=quantization.QuantType.QUInt8)
        for keep in (False, True):
            out[f"fp16_{keep}"] = d / f"fp16_{keep}.onnx"
            onnx.save(float16.convert_float_to_float16(onnx.load(f32), keep_io_types=keep), out[f"fp16_{keep}"])
    for name, source in (("optimized", f32), ("qdq_optimized", out["qdq"])):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(d / f"{name}.onnx")
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        out[name] = d / f"{name}.onnx"
    out["optimized_dynamic"] = d / "optimized_dynamic.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantization.quantize_dynamic(str(out["optimized"]), str(out["optimized_dynamic"]),
                                      weight_type=quantization.QuantType.QUInt8,
                                      extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return out


@pytest.mark.parametrize("name, kind", [
    ("float32", "float32"),
    ("fp16_False", "float16"),
    ("fp16_True", "float16 (float32 I/O)"),
    ("qdq", "int8 static QDQ"),
    ("qdq16", "int16 static QDQ"),
    ("qop", "int8 static QOperator"),
    ("dynamic", "int8 dynamic"),
    ("optimized", "float32, onnxruntime-optimized"),
])
def test_artifact_kind_names_each_tool_output(files, name, kind):
    assert artifact_kind(onnx.load(files[name])).name == kind


def test_combinations(files):
    # onnxruntime's optimizer fuses QDQ groups into QLinearConv/QGemm: the file now is a QOperator graph
    assert artifact_kind(onnx.load(files["qdq_optimized"])).name == "int8 static QOperator"
    kind = artifact_kind(onnx.load(files["optimized_dynamic"]))
    assert kind.name == "int8 dynamic, onnxruntime-optimized" and "com.microsoft::FusedConv" in kind.optimized


def test_optimized_names_its_contrib_ops(files):
    assert "com.microsoft::FusedConv" in artifact_kind(onnx.load(files["optimized"])).optimized


def test_model_and_check_report_the_artifact_and_tolerance_rule(files):
    import onnxxai

    model = onnxxai.load(files["fp16_True"])
    assert str(model.artifact) == "float16 (float32 I/O)" and "float16 (float32 I/O)" in repr(model)
    proc = subprocess.run([sys.executable, "-m", "onnxxai.cli", "check", str(files["fp16_False"]), "--json"],
                          capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout)
    assert report["artifact"]["name"] == "float16" and report["tolerance"].startswith("float16 compute: rtol=")
    assert report["parity"]["tolerance_rule"] == report["tolerance"] and report["parity"]["ok"], proc.stderr
    text = subprocess.run([sys.executable, "-m", "onnxxai.cli", "check", str(files["qdq"])],
                          capture_output=True, text=True, timeout=300).stdout
    assert "artifact  int8 static QDQ" in text and "tolerance quantized output: atol=2*step=" in text
    assert f"cpu       {integer_isa()}" in text and f"CPU {integer_isa()}" in text
