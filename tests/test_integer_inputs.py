"""Integer inputs (token ids) are attributed at the embedding the graph computes from them.

References: Captum's LayerIntegratedGradients / LayerGradientXActivation on the native model's
embedding layer, IG completeness, and batch == per-sample.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
import torch

import onnxxai
from onnxxai.analyzers.tap import float_frontier

VOCAB, WIDTH, CLASSES = 50, 16, 3


class TokenClassifier(torch.nn.Module):
    """Embedding → token mixing (a 1-D convolution over positions, GELU, residual) → masked mean
    pooling (padding id 0) → linear. Exports with dynamic batch and sequence length."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(VOCAB, WIDTH)
        self.mix = torch.nn.Conv1d(WIDTH, WIDTH, 3, padding=1)
        self.head = torch.nn.Linear(WIDTH, CLASSES)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != 0).to(torch.float32).unsqueeze(-1)  # a second float tensor computed from the ids
        embedded = self.embedding(ids)
        hidden = embedded + torch.nn.functional.gelu(self.mix(embedded.transpose(1, 2)).transpose(1, 2))
        return self.head((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0))


@pytest.fixture(scope="module")
def token_model():
    torch.manual_seed(0)
    native = TokenClassifier().eval()
    ids = torch.randint(1, VOCAB, (4, 9), generator=torch.Generator().manual_seed(1))
    ids[1, 6:] = 0  # padding
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(native, (ids,), buffer, dynamo=False, opset_version=17, input_names=["ids"],
                          output_names=["logits"], dynamic_axes={"ids": {0: "batch", 1: "tokens"}})
    model = onnxxai.load(onnx.load_from_string(buffer.getvalue()), probe_inputs={"ids": ids.numpy()})
    model.exported = buffer.getvalue()  # the original file's bytes, for the checks below
    return native, model, ids


def test_embedding_lookup_is_chosen_among_float_tensors_computed_from_ids(token_model):
    _, model, _ = token_model
    frontier = float_frontier(model, "ids")
    assert len(frontier) >= 2 and "Gather" in [op for _, op in frontier]
    expl = onnxxai.analyze(token_model[2].numpy(), onnxxai.Gradient(model), 0)
    assert dict(frontier)[expl.extras["attributed_at"]] == "Gather"


def test_integrated_gradients_on_tokens_matches_captum_layer_ig_and_is_complete(token_model):
    from captum.attr import LayerIntegratedGradients

    native, model, ids = token_model
    n = 64
    expl = onnxxai.analyze(ids.numpy(), onnxxai.IntegratedGradients(model, n=n, baseline=0), 2)
    assert isinstance(expl.val, np.ndarray) and expl.val.shape == tuple(ids.shape)  # one value per token
    tap = expl.extras["tap_attribution"]
    assert tap.shape == (*ids.shape, WIDTH)
    np.testing.assert_allclose(expl.val, tap.sum(-1), rtol=1e-5, atol=1e-6)

    captum = LayerIntegratedGradients(native, native.embedding)
    want = captum.attribute(ids, baselines=torch.zeros_like(ids), target=2, n_steps=n, method="gausslegendre").detach().numpy()
    rel = np.linalg.norm(tap - want) / np.linalg.norm(want)
    assert rel < 1e-3, rel

    # completeness: the other paths from the ids (the padding mask) keep the input's ids, so the
    # baseline output is the native model with only the embedding output replaced
    with torch.no_grad():
        baseline_embedding = native.embedding(torch.zeros_like(ids))
    handle = native.embedding.register_forward_hook(lambda _m, _i, _out: baseline_embedding)
    try:
        with torch.no_grad():
            baseline_out = native(ids)[:, 2]
    finally:
        handle.remove()
    with torch.no_grad():
        gap = native(ids)[:, 2] - baseline_out
    np.testing.assert_allclose(expl.val.sum(1), gap.numpy(), rtol=0.01, atol=0.01 * float(gap.abs().max()))


def test_input_times_gradient_matches_captum_and_batch_equals_single_calls(token_model):
    from captum.attr import LayerGradientXActivation

    native, model, ids = token_model
    analyzer = onnxxai.InputTimesGradient(model)
    expl = analyzer(ids, [0, 1, 2, 0])  # torch in, torch out
    assert isinstance(expl.val, torch.Tensor) and expl.val.shape == ids.shape
    want = LayerGradientXActivation(native, native.embedding).attribute(ids, target=[0, 1, 2, 0]).detach()
    torch.testing.assert_close(expl.extras["tap_attribution"], want, rtol=1e-4, atol=1e-6)
    singles = torch.cat([analyzer(ids[i : i + 1], [k]).val for i, k in enumerate([0, 1, 2, 0])])
    torch.testing.assert_close(singles, expl.val, rtol=1e-5, atol=1e-7)


def test_methods_that_need_the_input_itself_refuse_integer_inputs(token_model):
    _, model, _ = token_model
    with pytest.raises(onnxxai.InputError, match="no float input"):
        onnxxai.GradCAM(model)
    with pytest.raises(onnxxai.AnalyzerError, match="not a tensor computed by the graph"):
        onnxxai.Gradient(model, attribute_at="no_such_tensor")


def test_gradient_check_runs_at_the_embedding_and_check_command_reports_it(token_model, tmp_path, capsys):
    from onnxxai.cli import main
    from onnxxai.diagnostics import gradient_flow

    _, model, _ = token_model
    report = gradient_flow(model, onnx.load_from_string(model.exported))
    assert report.ok and report.reference == "float64", report.summary()
    assert report.input_name.startswith("ids at ")
    path = tmp_path / "tokens.onnx"
    path.write_bytes(model.exported)
    assert main(["check", str(path)]) == 0
    assert "d logits / d ids at" in capsys.readouterr().out
