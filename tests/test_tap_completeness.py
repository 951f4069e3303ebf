"""Integrated Gradients of token ids, attributed at the word embedding through the integer-input tap:
the attribution equals an independent quadrature on the native transformers model (GPT-2, zero
embedding baseline), and the reported completeness delta is ``sum(val) - (f(x) - f(baseline))`` with
f(x) and f(baseline) taken from the native model, at few steps (a clearly non-zero delta) and at many."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import onnxxai
from onnxxai.testing import export_transformers, transformers_model


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    path = export_transformers("gpt2", tmp_path_factory.mktemp("gpt2") / "gpt2.onnx", dynamo=False)
    return onnxxai.load(path)


def _native_ig(n: int, selection: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IG at the native GPT-2's word embedding (Gauss-Legendre nodes from numpy, zero baseline) and
    the native gap f(x) - f(0) of the selected logits."""
    module, example, _ = transformers_model("gpt2")
    hf, mask = module.model, example["attention_mask"]
    emb = hf.get_input_embeddings()(example["input_ids"]).detach()
    index = torch.as_tensor(selection).reshape(-1, 1)

    def f(e: torch.Tensor) -> torch.Tensor:
        return hf(inputs_embeds=e, attention_mask=mask).logits.reshape(e.shape[0], -1).gather(1, index).squeeze(1)

    nodes, weights = np.polynomial.legendre.leggauss(n)
    total = torch.zeros_like(emb)
    for node, weight in zip((nodes + 1) / 2, weights / 2):
        e = (float(node) * emb).requires_grad_(True)
        (grad,) = torch.autograd.grad(f(e).sum(), e)
        total += float(weight) * grad
    with torch.no_grad():
        gap = f(emb) - f(torch.zeros_like(emb))
    return (total * emb).numpy(), gap.numpy()


@pytest.mark.parametrize("n", [2, 32])
def test_token_ig_completeness_is_measured_against_the_native_model(gpt2, n):
    _, example, _ = transformers_model("gpt2")
    ids, mask = example["input_ids"].numpy(), example["attention_mask"].numpy()
    ig = onnxxai.IntegratedGradients(gpt2, n=n, input_name="input_ids", fixed_inputs={"attention_mask": mask})
    expl = onnxxai.analyze(ids, ig)
    selection = np.asarray(expl.output_selection).reshape(-1)
    want, gap = _native_ig(n, selection)
    tap = np.asarray(expl.extras["tap_attribution"])
    np.testing.assert_allclose(tap, want, rtol=1e-3, atol=1e-5 * np.abs(want).max())
    total = np.asarray(expl.val).reshape(len(ids), -1).sum(1)
    np.testing.assert_allclose(total, want.reshape(len(ids), -1).sum(1), rtol=1e-4, atol=1e-6)
    delta = np.asarray(expl.extras["completeness_delta"])
    np.testing.assert_allclose(delta, total - gap, atol=2e-6)  # the delta compares against the true gap
    if n == 2:
        assert np.abs(delta).min() > 1e-3  # two steps cannot integrate the path: the delta shows it
    else:
        assert np.abs(delta).max() < 1e-4 * np.abs(gap).max()
