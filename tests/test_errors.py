"""Bad input gets its named error, and nothing else."""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx2torch.node_converters import registry

import onnxxai


def _relu_model(extra_nodes=(), opset=17) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"), helper.make_node("Relu", ["h"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [x], [y], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_missing_file(tmp_path):
    with pytest.raises(onnxxai.ModelFileError, match="no such file"):
        onnxxai.load(tmp_path / "nope.onnx")


def test_truncated_file(tmp_path, smooth_cnn_path):
    data = smooth_cnn_path.read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(onnxxai.ModelFileError, match="truncated.onnx"):
        onnxxai.load(bad)


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "image.onnx"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    with pytest.raises(onnxxai.ModelFileError):
        onnxxai.load(bad)


def test_unknown_op_names_op_domain_opset_and_node():
    model = _relu_model()
    model.graph.node.append(helper.make_node("FancyOp", ["y"], ["z"], name="my_fancy_node", domain="com.example"))
    model.graph.output[0].name = "z"
    model.opset_import.append(helper.make_opsetid("com.example", 3))
    with pytest.raises(onnxxai.UnsupportedOpError) as info:
        onnxxai.load(model)
    message = str(info.value)
    assert "FancyOp" in message and "com.example" in message and "opset 3" in message and "my_fancy_node" in message


def _save_with_external_data(tmp_path):
    model = _relu_model()
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save_model(model, str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    return folder / "m.onnx"


def _set_location(path, location):
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, str(path))


def test_external_data_inside_folder_loads(tmp_path):
    path = _save_with_external_data(tmp_path)
    model = onnxxai.load(path)
    assert model.parity.ok


@pytest.mark.parametrize("escape", ["../weights.bin", "sub/../../weights.bin", "ABS"])
def test_external_data_escaping_folder_is_refused(tmp_path, escape):
    path = _save_with_external_data(tmp_path)
    outside = tmp_path / "weights.bin"
    outside.write_bytes((path.parent / "weights.bin").read_bytes())  # a real file outside the folder
    location = str(outside) if escape == "ABS" else escape
    _set_location(path, location)
    with pytest.raises(onnxxai.ExternalDataError, match="absolute path|escapes the model's folder"):
        onnxxai.load(path)


def test_external_data_missing(tmp_path):
    path = _save_with_external_data(tmp_path)
    (path.parent / "weights.bin").unlink()
    with pytest.raises(onnxxai.ExternalDataError, match="missing"):
        onnxxai.load(path)


def test_corrupted_conversion_is_caught_by_parity(monkeypatch):
    """A converter that silently drops the ReLU must fail the parity check, never explain."""

    def broken_relu(node, graph):
        from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

        return OperationConverterResult(torch.nn.Identity(), OnnxMapping(node.input_values, node.output_values))

    key = registry.OperationDescription(domain="", operation_type="Relu", version=14)
    onnxxai.convert.register_all()
    monkeypatch.setitem(registry._CONVERTER_REGISTRY, key, broken_relu)
    with pytest.raises(onnxxai.ParityError, match="disagrees with onnxruntime") as info:
        onnxxai.load(_relu_model())
    assert not info.value.report.ok
    with pytest.warns(UserWarning, match="parity FAILED"):
        model = onnxxai.load(_relu_model(), strict=False)
    expl = onnxxai.analyze(np.ones((2, 4), np.float32), onnxxai.Gradient(model), 0)
    assert expl.extras["parity"] is model.parity and not expl.extras["parity"].ok
    assert "failed its parity check" in expl.extras["warning"]


def test_wrong_input_shape(smooth_cnn):
    with pytest.raises(onnxxai.InputError, match="axis 2 must be 7"):
        onnxxai.analyze(np.zeros((1, 1, 8, 7), np.float32), onnxxai.Gradient(smooth_cnn))
    with pytest.raises(onnxxai.InputError, match="rank 4"):
        onnxxai.analyze(np.zeros((1, 7, 7), np.float32), onnxxai.Gradient(smooth_cnn))


def test_nan_input(smooth_cnn):
    x = np.zeros((2, 1, 7, 7), np.float32)
    x[1, 0, 3, 3] = np.nan
    with pytest.raises(onnxxai.InputError, match="NaN"):
        onnxxai.analyze(x, onnxxai.IntegratedGradients(smooth_cnn, n=4))


def test_bad_output_selection(smooth_cnn):
    x = np.zeros((2, 1, 7, 7), np.float32)
    with pytest.raises(onnxxai.AnalyzerError, match="out of range"):
        onnxxai.analyze(x, onnxxai.Gradient(smooth_cnn), 5)
    with pytest.raises(onnxxai.AnalyzerError, match="3 indices for a batch of 2"):
        onnxxai.analyze(x, onnxxai.Gradient(smooth_cnn), [0, 1, 2])


def test_errors_share_one_base_class():
    for cls in (onnxxai.ModelFileError, onnxxai.ExternalDataError, onnxxai.UnsupportedOpError,
                onnxxai.ParityError, onnxxai.InputError, onnxxai.AnalyzerError, onnxxai.ConversionError):
        assert issubclass(cls, onnxxai.OnnxxaiError)
