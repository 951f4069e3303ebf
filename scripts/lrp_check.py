"""LRP on converted ONNX graphs vs Zennit on the native torch models: agreement and time.

For torchvision VGG-16 and ResNet-18 (seeded random weights, ``weights=None``), exported to ONNX
(legacy exporter, opset 17, dynamic batch) and loaded with ``onnxxai.load``, this computes LRP with
the EpsilonPlusFlat and EpsilonGammaBox composites and compares it with Zennit's result on the
native torch model (with Zennit's VGG/ResNet canonizers), starting both from the explained logit:

* ``rel L2``: ``||ours - zennit|| / ||zennit||`` over the whole batch;
* ``conservation``: mean over samples of ``|sum(R) - score| / |score|`` (ours);
* times: best of ``--repeats`` runs (ours and Zennit alternating) of one explanation of the batch,
  after one warm-up run
  (ours: ``analyzer(x)``, including building the rule-carrying graph; Zennit: registering the
  composite and ``attributor(x, start)``). Both run on CPU with parameters frozen, same threads.

    .venv/bin/python scripts/lrp_check.py [--size 224] [--batch 4] [--repeats 5] [--models vgg16 resnet18]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from zennit.attribution import Gradient as ZennitGradient
from zennit.composites import EpsilonGammaBox as ZennitEpsilonGammaBox
from zennit.composites import EpsilonPlusFlat as ZennitEpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer, VGGCanonizer

import onnxxai
from onnxxai.analyzers.lrp import LRP, EpsilonGammaBox, EpsilonPlusFlat
from onnxxai.testing import export

# bounds of ImageNet-normalized pixels in [0, 1]
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
LOW, HIGH = (0 - MEAN) / STD, (1 - MEAN) / STD


def timed_pair(ours, theirs, repeats: int) -> tuple[object, float, object, float]:
    """Both functions' results and best times; runs alternate so that load on the machine hits both alike, and
    the best of several runs is the one least disturbed by other processes."""
    a, b = ours(), theirs()  # warm-up
    times_a, times_b = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        a = ours()
        times_a.append(time.perf_counter() - start)
        start = time.perf_counter()
        b = theirs()
        times_b.append(time.perf_counter() - start)
    return a, min(times_a), b, min(times_b)


def zennit_run(net, composite, x, index):
    with torch.no_grad():
        out = net(x)
    start = torch.zeros_like(out)
    rows = torch.arange(len(x))
    start[rows, index] = out[rows, index]
    with ZennitGradient(model=net, composite=composite) as attributor:
        _, relevance = attributor(x.clone(), start)
    return relevance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet18"], choices=["vgg16", "resnet18"])
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            torch.manual_seed(0)
            net = getattr(torchvision.models, name)(weights=None).eval()
            for p in net.parameters():
                p.requires_grad_(False)
            canonizer = VGGCanonizer if name == "vgg16" else ResNetCanonizer
            t0 = time.perf_counter()
            model = onnxxai.load(export(net, torch.randn(1, 3, args.size, args.size), Path(tmp) / f"{name}.onnx"),
                                 probe_inputs={"x": torch.randn(1, 3, args.size, args.size).numpy()})
            load_s = time.perf_counter() - t0
            x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                index = net(x).argmax(1)
            presets = {
                "EpsilonPlusFlat": (EpsilonPlusFlat(), lambda: ZennitEpsilonPlusFlat(canonizers=[canonizer()])),
                "EpsilonGammaBox": (EpsilonGammaBox(LOW, HIGH),
                                    lambda: ZennitEpsilonGammaBox(low=LOW, high=HIGH, canonizers=[canonizer()])),
            }
            for preset, (ours, theirs) in presets.items():
                t0 = time.perf_counter()
                analyzer = LRP(model, ours)
                setup_s = time.perf_counter() - t0
                expl, ours_s, reference, zennit_s = timed_pair(
                    lambda: analyzer(x, index.tolist()), lambda: zennit_run(net, theirs(), x, index), args.repeats)
                rel = float((expl.val - reference).norm() / reference.norm())
                score = expl.extras["score"]
                conservation = float(((expl.extras["relevance_sum"] - score).abs() / score.abs()).mean())
                rows.append((name, preset, rel, conservation, ours_s, zennit_s, setup_s, load_s))
                print(f"{name} {preset}: rel L2 {rel:.1e}, ours {ours_s:.2f}s, zennit {zennit_s:.2f}s", flush=True)
            del model, net

    print()
    print(f"Machine: {platform.machine()}, {torch.get_num_threads()} threads; torch {torch.__version__}; "
          f"input {args.batch}x3x{args.size}x{args.size}; best of {args.repeats} alternating runs after a warm-up.")
    print()
    print("| model | composite | rel L2 vs Zennit | conservation error | onnxxai LRP | Zennit | ratio | LRP setup | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, preset, rel, cons, ours_s, zennit_s, setup_s, load_s in rows:
        print(f"| {name} | {preset} | {rel:.1e} | {cons:.1e} | {ours_s:.2f} s | {zennit_s:.2f} s | "
              f"{ours_s / zennit_s:.2f} | {setup_s:.2f} s | {load_s:.1f} s |")


if __name__ == "__main__":
    main()
