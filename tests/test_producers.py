"""Files as other producers write them: Hugging Face transformers models exported by torch.onnx, and
graphs rewritten by onnxslim. A fast subset of scripts/corpus.py's producer rows: each loads with no
flags (parity with onnxruntime), passes the gradient check, and its attribution of the token ids at
their embedding equals Captum's on the native transformers model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

import onnxxai
from onnxxai.diagnostics import gradient_flow
from onnxxai.proto.specs import index_bounds, probe_feeds
from onnxxai.testing import export_transformers, simplified, transformers_model


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """A 2-layer BERT sequence classifier exported with ``dynamo=False, opset_version=17`` (its pooler
    flattens a rank-1 tensor; its token-type table has two rows), and the file loaded with no flags."""
    path = export_transformers("bert", tmp_path_factory.mktemp("hf") / "bert.onnx", dynamo=False)
    return path, onnxxai.load(path)


def _captum_input_times_gradient(kind: str, feeds: dict[str, np.ndarray], target: int) -> np.ndarray:
    """Captum's LayerGradientXActivation at the native model's word embedding, the other inputs fixed."""
    from captum.attr import LayerGradientXActivation

    module, example, _ = transformers_model(kind)
    others = [torch.from_numpy(feeds[n]) for n in list(example)[1:]]
    attr = LayerGradientXActivation(lambda ids: module(ids, *others), module.model.get_input_embeddings())
    return attr.attribute(torch.from_numpy(feeds["input_ids"]), target=target).detach().numpy()


def test_bert_opset17_loads_with_probes_inside_the_token_type_table(bert):
    path, model = bert
    proto = onnx.load(str(path))
    assert "Flatten" in {n.op_type for n in proto.graph.node}
    assert model.parity.ok, model.parity.summary()
    assert index_bounds(proto) == {"input_ids": 96, "token_type_ids": 2}  # the attention mask indexes nothing
    feeds = probe_feeds(model.inputs, seed=3, batch=2)
    assert set(np.unique(feeds["token_type_ids"])) <= {0, 1} and feeds["input_ids"].max() > 1


def _check_attribution_matches_captum(model: onnxxai.Model, kind: str) -> None:
    _, example, _ = transformers_model(kind)
    feeds = {k: v.numpy() for k, v in example.items()}
    fixed = {k: v for k, v in feeds.items() if k != "input_ids"}
    target = 1
    analyzer = onnxxai.InputTimesGradient(model, input_name="input_ids", fixed_inputs=fixed)
    expl = onnxxai.analyze(feeds["input_ids"], analyzer, target)
    assert "word_embeddings" in expl.extras["attributed_at"] or "Gather" in expl.extras["attributed_at"]
    got = np.asarray(expl.extras["tap_attribution"])
    want = _captum_input_times_gradient(kind, feeds, target)
    assert got.shape == want.shape == (*feeds["input_ids"].shape, 32)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    # the mask is held fixed: the classifier reads the first token, which attends to no masked token
    assert np.abs(got[0, -1]).max() > 0 and not np.any(got[1, -1])


def test_bert_token_attribution_at_the_word_embedding_matches_captum(bert):
    _check_attribution_matches_captum(bert[1], "bert")


def test_roberta_attribution_is_taken_at_the_lookup_indexed_by_the_ids_themselves(tmp_path):
    # RoBERTa computes position ids and token types from the ids' values: three lookups read them,
    # and the word embedding is the one indexed by the ids themselves
    path = export_transformers("roberta", tmp_path / "roberta.onnx", dynamo=False)
    model = onnxxai.load(path)
    gathers = [n.output[0] for n in model.onnx_model.graph.node if n.op_type == "Gather" and "embeddings" in n.name]
    assert len(gathers) >= 3
    _check_attribution_matches_captum(model, "roberta")


def test_check_passes_the_gradient_check_and_prints_no_third_party_warnings(bert):
    """The gradient check at the word embedding; and onnx2torch's Slice indexed with lists (torch's
    non-tuple indexing UserWarning on every call): onnxxai's Slice does not, so stderr stays empty."""
    code = "import sys; from onnxxai.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, "check", str(bert[0])], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == "", done.stderr
    assert "Slice-13 (replaces onnx2torch's)" in done.stdout
    assert "gradient ok (d logits / d input_ids at /model/bert/embeddings/word_embeddings/Gather_output_0" in done.stdout


def test_onnxslim_simplified_bert_loads_with_parity_and_passes_the_gradient_check(bert, tmp_path):
    path = simplified(bert[0], "onnxslim", tmp_path)
    proto = onnx.load(str(path))
    assert len(proto.graph.node) < len(onnx.load(str(bert[0])).graph.node)  # the tool did rewrite the graph
    model = onnxxai.load(path)
    assert model.parity.ok, model.parity.summary()
    report = gradient_flow(model, proto)
    assert report.ok, report.summary()
