"""Errors name the node: checker refusals, shape-inference failures behind a converter's KeyError,
onnxruntime refusing a kernel at session creation, a torch forward that raises, and a parity failure
(the first node whose output differs between onnxruntime and the converted graph)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx2torch.node_converters import registry

import onnxxai
from onnxxai.errors import ConversionError, ModelFileError, ParityError


def _model(nodes, inits=(), shape=("batch", 4), out=("batch", 4), ir: int | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out))], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if ir is not None:
        model.ir_version = ir
    return model


def test_a_cycle_names_the_node_and_the_node_it_reads_from() -> None:
    model = _model([helper.make_node("Relu", ["b"], ["a"], name="first"), helper.make_node("Neg", ["a"], ["b"], name="second"),
                    helper.make_node("Relu", ["b"], ["y"], name="third")])
    with pytest.raises(ModelFileError) as info:
        onnxxai.load(model)
    message = str(info.value)
    assert message.index("Relu node 'first'") < message.index("Nodes in a graph must be topologically sorted")
    assert "Neg node 'second'" in message and "cycle" in message and "\n" not in message


def test_a_node_read_before_it_is_made_is_out_of_order_not_a_cycle() -> None:
    model = _model([helper.make_node("Relu", ["a"], ["y"], name="late_reader"), helper.make_node("Neg", ["x"], ["a"], name="maker")])
    with pytest.raises(ModelFileError, match=r"Relu node 'late_reader', which reads 'a' before Neg node 'maker' makes it"):
        onnxxai.load(model)


@pytest.mark.parametrize("name", ["blank", ""])
def test_an_empty_op_type_names_the_node_and_its_index(name: str) -> None:
    model = _model([helper.make_node("Relu", ["x"], ["a"], name="ok"), helper.make_node("", ["a"], ["y"], name=name)])
    with pytest.raises(ModelFileError, match=r"op_type") as info:
        onnxxai.load(model)
    assert "#1 of its graph" in str(info.value) and (f"'{name}'" in str(info.value) if name else "unnamed" in str(info.value))


def test_an_initializer_missing_from_old_ir_inputs_names_its_readers() -> None:
    w = numpy_helper.from_array(np.ones(4, np.float32), "w")
    model = _model([helper.make_node("Add", ["x", "w"], ["y"], name="adder")], [w], ir=3)
    with pytest.raises(ModelFileError, match=r"initializer 'w' read by Add node 'adder'"):
        onnxxai.load(model)


def test_a_shape_inference_failure_names_its_node_not_the_converter_that_tripped_on_it() -> None:
    """onnx2torch's MaxPool converter looks its input's shape up in the shape-inferred value_info; a
    MaxPool upstream with a wrong-sized strides attribute stops shape inference, and the KeyError came
    out as 'unsupported operator MaxPool at the second node'."""
    model = _model([helper.make_node("MaxPool", ["x"], ["a"], name="damaged", kernel_shape=[2, 2], strides=[2, 2, 2]),
                    helper.make_node("Relu", ["a"], ["b"], name="act"),
                    helper.make_node("MaxPool", ["b"], ["y"], name="second", kernel_shape=[2, 2])],
                   shape=(1, 1, 8, 8), out=(1, 1, "h", "w"))
    with pytest.raises(ConversionError) as info:
        onnxxai.load(model)
    message = str(info.value)
    assert message.startswith("<ModelProto g>: MaxPool node 'damaged': ONNX shape inference fails there")
    assert "strides" in message and "MaxPool node 'second' needs the shape of 'b'" in message


def test_onnxruntime_refusing_a_kernel_at_session_creation_names_the_node_first(tmp_path) -> None:
    """onnxruntime's text names only the source line of the pool kernel; the node comes from trying nodes alone."""
    model = _model([helper.make_node("MaxPool", ["x"], ["a"], name="fine", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                    helper.make_node("MaxPool", ["a"], ["y"], name="padded_past_kernel", kernel_shape=[3, 3], pads=[0, 0, 0, 3])],
                   shape=(1, 1, 12, 12), out=(1, 1, "h", "w"))
    path = tmp_path / "pool.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFileError) as info:
        onnxxai.load(path)
    assert str(info.value).startswith(f"{path}: MaxPool node 'padded_past_kernel': onnxruntime cannot run the original model")
    with pytest.raises(ModelFileError) as info:
        onnxxai.load_runtime(path)
    assert str(info.value).startswith(f"{path}: MaxPool node 'padded_past_kernel': onnxruntime cannot create a session")


def test_a_converted_graph_that_raises_on_the_probes_names_the_node() -> None:
    model = _model([helper.make_node("Relu", ["x"], ["a"], name="act"),
                    helper.make_node("Softmax", ["a"], ["y"], name="far_axis", axis=-(2**62))])
    try:
        onnxxai.load(model)
    except ConversionError as exc:
        assert str(exc).startswith("<ModelProto g>: Softmax node 'far_axis': the converted graph fails on probe inputs")
    except ModelFileError:  # an onnxruntime that refuses the axis itself names no converter problem
        pytest.skip("this onnxruntime refuses the axis before the converted graph runs")
    else:
        pytest.fail("a Softmax over axis -2**62 loaded")


def _huge_then_norm() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(np.ones(8, np.float32), "g"), numpy_helper.from_array(np.zeros(8, np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], name="scale", alpha=1e30),
             helper.make_node("LayerNormalization", ["h", "g", "b"], ["n"], name="norm", axis=-1),
             helper.make_node("MatMul", ["n", "w2"], ["y"], name="head")]
    return _model(nodes, inits, shape=("batch", 6), out=("batch", 3))


def test_a_parity_failure_names_the_first_diverging_node() -> None:
    """Activations of ~1e30: both runtimes agree on the Gemm's output, but onnxruntime's LayerNormalization
    overflows in float32 where torch's does not; the head after it differs too, and is not the first."""
    with pytest.raises(ParityError) as info:
        onnxxai.load(_huge_then_norm())
    report = info.value.report
    assert report.diverging == "LayerNormalization node 'norm'"
    assert "output 'n'" in report.diverging_note and "1 earlier node(s) agree" in report.diverging_note
    assert str(info.value).startswith("<ModelProto g>: LayerNormalization node 'norm': converted graph disagrees")
    assert "first diverging node: LayerNormalization node 'norm'" in report.summary()


def test_a_dropped_relu_is_the_first_diverging_node(monkeypatch) -> None:
    def broken_relu(node, graph):
        from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

        return OperationConverterResult(torch.nn.Identity(), OnnxMapping(node.input_values, node.output_values))

    onnxxai.convert.register_all()
    monkeypatch.setitem(registry._CONVERTER_REGISTRY,
                        registry.OperationDescription(domain="", operation_type="Relu", version=14), broken_relu)
    w = numpy_helper.from_array(np.random.default_rng(1).standard_normal((4, 4)).astype(np.float32), "w")
    model = _model([helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
                    helper.make_node("Neg", ["r"], ["y"], name="neg")], [w])
    with pytest.warns(UserWarning, match="first diverging node: Relu node 'relu'"):
        loaded = onnxxai.load(model, strict=False)
    assert loaded.parity.diverging == "Relu node 'relu'" and not loaded.parity.ok


def test_a_run_failure_names_the_file_s_node_and_where_its_input_comes_from(tmp_path) -> None:
    """A strided first convolution leaves 2x2 for the second's 3x3 kernel. onnxruntime fails running the
    second, under the name of the fused Conv+Relu it made on x86 ('y_nchwc', the tensor plus a suffix) or
    under the file's own name: either way the error starts with the file's Conv node and what feeds it."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), "w2")]
    model = _model([helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", strides=[8, 8]),
                    helper.make_node("Relu", ["c1"], ["r1"], name="act1"),
                    helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
                    helper.make_node("Relu", ["c2"], ["y"], name="act2")], inits, shape=(1, 3, 16, 16), out=(1, 16, "h", "w"))
    path = tmp_path / "strided.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFileError) as info:
        onnxxai.load(path)
    assert str(info.value).startswith(f"{path}: Conv node 'conv2' (inputs from Relu node 'act1'): onnxruntime cannot run")
