"""Measure the foundation's acceptance figures and print them as Markdown tables.

    python scripts/acceptance.py [--write-readme] [--n 128] [--batch 8]

1. torchvision ResNet-18 (seeded random weights; BatchNorm statistics and affine parameters also
   seeded-random so the network has biases and IG is not trivially exact), exported with torch's
   default (dynamo) exporter and with ``dynamo=False, opset_version=17``: raw ``onnx2torch.convert``
   vs ``onnxxai.load`` (parity max relative error against onnxruntime).
2. Integrated Gradients on the opset-17 export: completeness at n steps for a batch, and the batch
   result against one call per sample.
3. ONNX's light model zoo (inside the onnx wheel): raw onnx2torch vs onnxxai.load with parity.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
import torchvision

import onnxxai
from onnxxai.testing import export
from readme_tables import write_block

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def resnet18_with_biases(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torchvision.models.resnet18().eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
    return net


def export_both(net: torch.nn.Module, folder: Path) -> dict[str, Path]:
    x = torch.randn(1, 3, 224, 224)
    paths = {"default (dynamo, opset 20)": folder / "resnet18_dynamo.onnx", "dynamo=False, opset 17": folder / "resnet18_17.onnx"}
    export(net, x, paths["default (dynamo, opset 20)"], dynamo=True)
    export(net, x, paths["dynamo=False, opset 17"])
    return paths


_RAW = """
import sys, onnx, onnx2torch
try:
    onnx2torch.convert(onnx.load(sys.argv[1]))
except Exception as exc:
    print(f"fails: {exc.__class__.__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}")
else:
    print("converts")
"""


def raw_onnx2torch(path: Path) -> str:
    """Plain onnx2torch.convert, in a fresh process: onnxxai.load adds converters to onnx2torch's
    registry, which would otherwise count as raw onnx2torch's."""
    done = subprocess.run([sys.executable, "-c", _RAW, str(path)], capture_output=True, text=True, check=False)
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else f"fails: {done.stderr.strip().splitlines()[-1][:80]}"


def ours(path: Path) -> tuple[str, onnxxai.Model | None]:
    t = time.perf_counter()
    try:
        model = onnxxai.load(path)
    except onnxxai.OnnxxaiError as exc:
        return f"fails: {exc.__class__.__name__}: {str(exc)[:80]}", None
    return f"parity ok, max rel {model.parity.max_rel:.1e} ({time.perf_counter() - t:.1f} s)", model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    lines = [
        f"Machine: {platform.machine()}, {torch.get_num_threads()} threads; torch {torch.__version__}, "
        f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, onnx2torch 1.5.15.",
        "",
        "| ResNet-18 export | raw onnx2torch | onnxxai.load |",
        "|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_both(resnet18_with_biases(), Path(tmp))
        models = {}
        for label, path in paths.items():
            status, model = ours(path)
            models[label] = model
            lines.append(f"| {label} | {raw_onnx2torch(path)} | {status} |")
        model = models["dynamo=False, opset 17"]
        x = np.random.default_rng(0).standard_normal((args.batch, 3, 224, 224)).astype(np.float32)
        ig = onnxxai.IntegratedGradients(model, n=args.n)
        t = time.perf_counter()
        batched = ig(x, 5)
        t_batch = time.perf_counter() - t
        singles = np.concatenate([ig(x[i : i + 1], 5).val for i in range(args.batch)])
        rel = batched.extras["completeness_relative"]
        diff = np.abs(batched.val - singles).max() / np.abs(singles).max()
        lines += [
            "",
            f"Integrated Gradients (n={args.n}, Gauss-Legendre, zero baseline, class 5) on the opset-17 export, "
            f"batch of {args.batch}: completeness |sum(val) - (f(x) - f(0))| / |f(x) - f(0)| max "
            f"{rel.max():.2%}, mean {rel.mean():.2%}; batch vs {args.batch} single calls: max relative difference "
            f"{diff:.1e}; {t_batch:.1f} s for the batch.",
            "",
            "| light model zoo (onnx wheel) | raw onnx2torch | onnxxai.load |",
            "|---|---|---|",
        ]
    raw_ok = ok = 0
    for path in sorted(LIGHT.glob("*.onnx")):
        raw = raw_onnx2torch(path)
        status, model = ours(path)
        raw_ok += raw == "converts"
        ok += model is not None
        lines.append(f"| {path.stem.removeprefix('light_')} | {raw} | {status} |")
    lines.append(f"| **total** | **{raw_ok} of 9 convert** | **{ok} of 9 load with parity** |")
    text = "\n".join(lines)
    print(text)
    if args.write_readme:
        write_block("acceptance", text)


if __name__ == "__main__":
    main()
