"""RNN, GRU and LSTM converters: single-op models against onnxruntime (and ONNX's reference for
layout=1, which onnxruntime refuses), float64 gradchecks, and torch nn.LSTM / nn.GRU exports."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

import onnxxai
from onnxxai.convert.recurrent import OnnxGRU, OnnxLSTM, OnnxRNN
from onnxxai.convert.pipeline import convert
from onnxxai.parity import run_onnxruntime
from onnx_cases import gradcheck, graph_model, reference_outputs, run_converted

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
T, N, I, H = 5, 3, 4, 3


def recurrent_case(op: str, attrs: dict | None = None, *, lens=None, initial=False, peepholes=False, runtime=False,
                   layout=0, opset=22, outputs=None, seed=0):
    """A one-node model and its feeds. W/R/B/... are initializers, or graph inputs when ``runtime``."""
    attrs = dict(attrs or {})
    rng = np.random.default_rng(seed)
    d, g = (2 if attrs.get("direction") == "bidirectional" else 1), GATES[op]
    state = (N, d, H) if layout else (d, N, H)
    values = {"X": rng.standard_normal((N, T, I) if layout else (T, N, I)).astype(np.float32),
              "W": rng.standard_normal((d, g * H, I)).astype(np.float32),
              "R": rng.standard_normal((d, g * H, H)).astype(np.float32),
              "B": rng.standard_normal((d, 2 * g * H)).astype(np.float32),
              "sequence_lens": None if lens is None else np.array(lens, np.int32),
              "initial_h": rng.standard_normal(state).astype(np.float32) if initial else None}
    if op == "LSTM":
        values["initial_c"] = rng.standard_normal(state).astype(np.float32) if initial else None
        values["P"] = rng.standard_normal((d, 3 * H)).astype(np.float32) if peepholes else None
    names = [k if v is not None else "" for k, v in values.items()]
    while names[-1] == "":
        names.pop()
    outputs = outputs or (["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"])
    if layout:
        attrs["layout"] = 1
    node = helper.make_node(op, names, outputs, name=f"the_{op.lower()}", hidden_size=H, **attrs)
    feeds = {k: v for k, v in values.items() if v is not None and (runtime or k == "X")}
    inits = [numpy_helper.from_array(v, k) for k, v in values.items() if v is not None and k not in feeds]
    ins = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()]
    shapes = {"Y": (N, T, d, H) if layout else (T, d, N, H), "Y_h": state, "Y_c": state}
    outs = [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, shapes[o]) for o in outputs if o]
    model = graph_model([node], ins, outs, inits, opset=opset)
    return model, feeds


ORT_CASES = {
    "RNN-bidirectional-initial": ("RNN", {"direction": "bidirectional"}, {"initial": True}),
    "RNN-reverse-lens": ("RNN", {"direction": "reverse"}, {"lens": [5, 2, 3], "initial": True}),
    "RNN-7-runtime-weights": ("RNN", {}, {"runtime": True, "initial": True, "opset": 7}),
    "GRU-bidirectional-lens-zero": ("GRU", {"direction": "bidirectional"}, {"lens": [5, 1, 0], "initial": True}),
    "GRU-linear-before-reset-reverse-clip": ("GRU", {"linear_before_reset": 1, "direction": "reverse", "clip": 0.4}, {}),
    "GRU-7-linear-before-reset-runtime": ("GRU", {"linear_before_reset": 1}, {"runtime": True, "lens": [2, 5, 4], "opset": 7}),
    "GRU-14-Y_h-only": ("GRU", {}, {"outputs": ["", "Y_h"], "opset": 14}),
    "LSTM-peepholes-bidirectional-lens": ("LSTM", {"direction": "bidirectional"},
                                          {"peepholes": True, "lens": [5, 2, 0], "initial": True}),
    "LSTM-input-forget-clip-peepholes": ("LSTM", {"input_forget": 1, "clip": 0.3}, {"peepholes": True, "initial": True}),
    "LSTM-runtime-weights-reverse": ("LSTM", {"direction": "reverse"}, {"runtime": True, "peepholes": True, "initial": True,
                                                                         "lens": [3, 5, 1]}),
    "LSTM-activations": ("LSTM", {"activations": ["HardSigmoid", "Elu", "Softsign"], "activation_alpha": [0.3, 0.7],
                                  "activation_beta": [0.4]}, {}),
    "GRU-activations-per-direction": ("GRU", {"direction": "bidirectional", "activation_alpha": [0.3, 0.2],
                                              "activations": ["Sigmoid", "LeakyRelu", "HardSigmoid", "Tanh"]}, {}),
    "LSTM-Y_c-only": ("LSTM", {}, {"outputs": ["", "", "Y_c"], "initial": True}),
}
# every activation the spec lists, with explicit alpha/beta where it takes them (onnxruntime reads an
# omitted alpha as 0 for Affine/ThresholdedRelu, unlike the spec: see recurrent.py)
ACTIVATIONS = {"Relu": {}, "Tanh": {}, "Sigmoid": {}, "Affine": {"activation_alpha": [0.5], "activation_beta": [0.3]},
               "LeakyRelu": {}, "ThresholdedRelu": {"activation_alpha": [0.4]},
               "ScaledTanh": {"activation_alpha": [0.7], "activation_beta": [1.3]}, "HardSigmoid": {}, "Elu": {},
               "Softsign": {}, "Softplus": {}}
for _name, _extra in ACTIVATIONS.items():
    ORT_CASES[f"RNN-{_name}"] = ("RNN", {"activations": [_name], **_extra}, {})


@pytest.mark.parametrize("name", sorted(ORT_CASES))
def test_parity_with_onnxruntime(name):
    op, attrs, kwargs = ORT_CASES[name]
    model, feeds = recurrent_case(op, attrs, **kwargs)
    loaded = onnxxai.load(model, probe_inputs=feeds)
    assert loaded.parity.ok, loaded.parity.summary()
    ref = run_onnxruntime(model, feeds)
    out = loaded(*feeds.values())
    out = out if isinstance(out, tuple) else (out,)
    assert len(out) == len(ref)
    for r, o in zip(ref, out):
        np.testing.assert_allclose(o, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_layout_1_against_layout_0_onnxruntime_and_reference(op):
    """onnxruntime refuses layout=1: compare with its layout=0 twin on transposed tensors, and with
    ONNX's reference evaluator (which ignores sequence_lens, so none here)."""
    attrs = {"direction": "bidirectional", "linear_before_reset": 1} if op == "GRU" else {"direction": "bidirectional"}
    model, feeds = recurrent_case(op, attrs, initial=True, runtime=True, layout=1, peepholes=op == "LSTM")
    out = run_converted(model, feeds)
    twin, _ = recurrent_case(op, attrs, initial=True, runtime=True, peepholes=op == "LSTM")
    swapped = {k: (v.swapaxes(0, 1) if k in ("X", "initial_h", "initial_c") else v) for k, v in feeds.items()}
    ref = run_onnxruntime(twin, swapped)
    np.testing.assert_allclose(out[0], ref[0].transpose(2, 0, 1, 3), rtol=1e-5, atol=1e-5)
    for o, r in zip(out[1:], ref[1:]):
        np.testing.assert_allclose(o, r.swapaxes(0, 1), rtol=1e-5, atol=1e-5)
    reference = reference_outputs(model, feeds, "onnx")
    for o, r in zip(out, reference):
        np.testing.assert_allclose(o, r, rtol=1e-5, atol=1e-5)


def test_layout_1_with_sequence_lens():
    model, feeds = recurrent_case("GRU", {"direction": "reverse"}, lens=[5, 2, 0], initial=True, runtime=True, layout=1)
    y, y_h = run_converted(model, feeds)
    twin, _ = recurrent_case("GRU", {"direction": "reverse"}, lens=[5, 2, 0], initial=True, runtime=True)
    swapped = {k: (v.swapaxes(0, 1) if k in ("X", "initial_h") else v) for k, v in feeds.items()}
    ref_y, ref_h = run_onnxruntime(twin, swapped)
    np.testing.assert_allclose(y, ref_y.transpose(2, 0, 1, 3), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y_h, ref_h.swapaxes(0, 1), rtol=1e-5, atol=1e-5)
    assert not y[1, 2:].any() and not y[2].any() and not y_h[2].any()  # steps past a sequence's end are zero


@pytest.mark.parametrize("op, attrs, opset", [("RNN", {"direction": "bidirectional"}, 1), ("GRU", {"linear_before_reset": 1}, 3),
                                              ("GRU", {"direction": "reverse"}, 1), ("LSTM", {"direction": "bidirectional"}, 1)])
def test_old_opsets_against_reference(op, attrs, opset):
    """Opsets 1 and 3, which onnxruntime does not implement, against ONNX's reference evaluator (or,
    for RNN-1 which it lacks too, onnxruntime's RNN-7: the same equations)."""
    model, feeds = recurrent_case(op, attrs, initial=True, runtime=True, opset=opset)
    out = run_converted(model, feeds)
    if op == "RNN":
        ref = run_onnxruntime(recurrent_case(op, attrs, initial=True, runtime=True, opset=7)[0], feeds)
    else:
        ref = reference_outputs(model, feeds, "onnx")
    for o, r in zip(out, ref):
        np.testing.assert_allclose(o, r, rtol=1e-5, atol=1e-5)


def test_spec_defaults_and_refusals():
    """Affine/ThresholdedRelu without alpha use the spec defaults (alpha 1); ScaledTanh has none."""
    model, feeds = recurrent_case("RNN", {"activations": ["Affine"]})
    y = convert(model)[2](torch.from_numpy(feeds["X"]))[0]
    explicit, _ = recurrent_case("RNN", {"activations": ["Affine"], "activation_alpha": [1.0], "activation_beta": [0.0]})
    np.testing.assert_allclose(y.numpy(), run_onnxruntime(explicit, feeds)[0], rtol=1e-5, atol=1e-5)
    for attrs, message in [({"activations": ["ScaledTanh"]}, "ScaledTanh no default"),
                           ({"activations": ["Gelu"]}, "not an ONNX recurrent activation"),
                           ({"direction": "bidirectional", "activations": ["Tanh"]}, "expected 1 per direction")]:
        model, _ = recurrent_case("RNN", attrs)
        with pytest.raises(onnxxai.UnsupportedOpError, match=message):
            convert(model)


def _gradcheck(module: torch.nn.Module, shapes: dict, lens=None) -> None:
    """Gradcheck ``module`` w.r.t. the inputs named in ``shapes`` (seeded draws), with ``sequence_lens``."""
    names = list(shapes)
    gradcheck(lambda *tensors: module(**dict(zip(names, tensors)), sequence_lens=lens), *shapes.values(), seed=0)


def _default_activations(op: str, dirs: int) -> list:
    names = {"GRU": ["sigmoid", "tanh"], "LSTM": ["sigmoid", "tanh", "tanh"]}[op]
    return [[(n, 0.0, 0.0)] * dirs for n in names]


def test_gradcheck_rnn():
    module = OnnxRNN("bidirectional", 0, [[("tanh", 0.0, 0.0), ("softplus", 0.0, 0.0)]], None, 2)
    _gradcheck(module, {"X": (4, 2, 3), "W": (2, 2, 3), "R": (2, 2, 2), "B": (2, 4), "initial_h": (2, 2, 2)},
               lens=torch.tensor([4, 2]))


@pytest.mark.parametrize("linear_before_reset", [False, True])
def test_gradcheck_gru(linear_before_reset):
    module = OnnxGRU("reverse", 1, _default_activations("GRU", 1), None, 2, linear_before_reset)
    _gradcheck(module, {"X": (2, 4, 3), "W": (1, 6, 3), "R": (1, 6, 2), "B": (1, 12), "initial_h": (2, 1, 2)},
               lens=torch.tensor([3, 4]))


def test_gradcheck_lstm_peepholes():
    module = OnnxLSTM("bidirectional", 0, _default_activations("LSTM", 2), None, 3, False)
    _gradcheck(module, {"X": (3, 2, 3), "W": (2, 8, 3), "R": (2, 8, 2), "B": (2, 16), "initial_h": (2, 2, 2),
                        "initial_c": (2, 2, 2), "P": (2, 6)}, lens=torch.tensor([3, 1]))


class _Sequence(torch.nn.Module):
    """(batch, time, features) -> recurrent layer -> Linear on every step."""

    def __init__(self, cell: type[torch.nn.Module]) -> None:
        super().__init__()
        self.rnn = cell(input_size=4, hidden_size=5, num_layers=2, batch_first=True, bidirectional=True)
        self.head = torch.nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0])


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("cell", [torch.nn.LSTM, torch.nn.GRU])
def test_torch_export_matches_native_model(cell):
    torch.manual_seed(0)
    native = _Sequence(cell).eval()
    x = torch.randn(2, 6, 4)
    buffer = io.BytesIO()
    torch.onnx.export(native, (x,), buffer, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"])
    proto = onnx.load_from_string(buffer.getvalue())
    assert {n.op_type for n in proto.graph.node} >= {cell.__name__}
    model = onnxxai.load(proto, probe_inputs={"x": x.numpy()})
    assert model.parity.ok, model.parity.summary()
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, theirs = model.forward({"x": xa})[0], native(xb)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(theirs)
    (ours * weights).sum().backward()
    (theirs * weights).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
