"""GradCAM on ONNX exports of seven torchvision architectures against GradCAM on the native model.

For each architecture (seeded random weights; ViT's zero-initialised head re-drawn from N(0, 0.02²)),
the model is exported with ``torch.onnx.export(dynamo=False, opset_version=17)`` and a dynamic batch
axis, loaded with ``onnxxai.load`` (parity checked), and explained with ``GradCAM(model)`` at its
automatic boundary. The reference is GradCAM computed on the native torch model at the layer a
practitioner picks (forward hook, ``torch.autograd.grad``), and Captum's ``LayerGradCam`` where that
layer is a module. Errors are ``max|ours - ref| / max|ref|`` over the batch.

Timings: best of ``--repeats`` runs after a warm-up, for onnxxai's GradCAM, the native hook
reference (one forward, one ``autograd.grad``) and Captum; "setup" is ``GradCAM(model)`` (boundary
search, including onnxruntime probe runs for token models).

    python scripts/gradcam_check.py [--size 224] [--batch 2] [--repeats 3] [--models resnet18 vit_b_16 ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

import onnxxai
from onnxxai.analyzers.gradcam import GradCAM
from onnxxai.testing import export


def _hooked(layer_of, prefix=None):
    """Native forward returning (output, activation at the practitioner's layer)."""

    def forward(net, x):
        store = {}
        handle = layer_of(net).register_forward_hook(lambda m, a, out: store.__setitem__("a", out))
        try:
            out = net(x)
        finally:
            handle.remove()
        return out, store["a"]

    forward.layer_of, forward.prefix = layer_of, prefix
    return forward


def _densenet_forward(net, x):
    """DenseNet.forward spelled out: the boundary is ReLU(features(x)), a functional ReLU."""
    act = F.relu(net.features(x))
    return net.classifier(torch.flatten(F.adaptive_avg_pool2d(act, (1, 1)), 1)), act


_densenet_forward.layer_of, _densenet_forward.prefix = None, None

# name -> (native forward with activation, the practitioner's layer in words)
ARCHS = {
    "resnet18": (_hooked(lambda n: n.layer4), "layer4"),
    "densenet121": (_densenet_forward, "ReLU(features) (the functional ReLU after norm5)"),
    "mobilenet_v3_small": (_hooked(lambda n: n.features), "features (features[-1], Hardswish)"),
    "squeezenet1_1": (_hooked(lambda n: n.features), "features (last Fire module)"),
    "convnext_tiny": (_hooked(lambda n: n.features), "features (features[-1][-1], last CNBlock)"),
    "vgg11": (_hooked(lambda n: n.features), "features (avgpool(7) of 7×7 is the identity)"),
    "vit_b_16": (_hooked(lambda n: n.encoder.layers[-2], prefix=1), "encoder.layers[-2] (input of the last block)"),
}


def native_gradcam(net, forward, x, target):
    out, act = forward(net, x)
    (grad,) = torch.autograd.grad(out.gather(1, target.view(-1, 1)).sum(), act)
    act = act.detach()
    if act.dim() == 3:
        n, t, c = act.shape
        side = int(round((t - forward.prefix) ** 0.5))
        act, grad = (v[:, forward.prefix:].reshape(n, side, side, c).permute(0, 3, 1, 2) for v in (act, grad))
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * act).sum(1))
    return cam, F.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)


def rel(a, b) -> float:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).abs().max() / b.abs().max())


def best_time(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def check(name: str, size: int, batch: int, folder: Path, repeats: int) -> dict:
    forward, layer_words = ARCHS[name]
    torch.manual_seed(0)
    net = getattr(torchvision.models, name)().eval()
    if name.startswith("vit"):
        torch.nn.init.normal_(net.heads.head.weight, std=0.02)
    path = export(net, torch.randn(1, 3, size, size), folder / f"{name}.onnx")
    t0 = time.perf_counter()
    model = onnxxai.load(path)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    analyzer = GradCAM(model)
    t_init = time.perf_counter() - t0
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    expl = onnxxai.analyze(x, analyzer)
    target = expl.output_selection
    cam, up = native_gradcam(net, forward, x, target)
    t_ours = best_time(lambda: onnxxai.analyze(x, analyzer), repeats)
    t_native = best_time(lambda: native_gradcam(net, forward, x, target), repeats)
    row = {"model": name, "boundary": analyzer.boundary, "layer": layer_words,
           "shape": tuple(expl.extras["cam"].shape[1:]), "rel_cam": rel(expl.extras["cam"], cam),
           "rel_val": rel(expl.val, up), "load_s": t_load, "init_s": t_init, "ours_s": t_ours, "native_s": t_native}
    if forward.layer_of is not None and forward.prefix is None:
        from captum.attr import LayerGradCam

        captum = LayerGradCam(net, forward.layer_of(net))
        ref = captum.attribute(x, target=target, relu_attributions=True)
        row["captum_s"] = best_time(lambda: captum.attribute(x, target=target, relu_attributions=True), repeats)
        row["rel_captum"] = rel(expl.extras["cam"], ref[:, 0].detach())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (best is reported)")
    parser.add_argument("--models", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; input {args.batch}×3×{args.size}×{args.size}\n")
    print("| model | automatic boundary (ONNX tensor) | map | practitioner's layer (native reference) | "
          "max rel vs native (map / upsampled) | max rel vs Captum | onnxxai GradCAM | native hooks | Captum | "
          "GradCAM() setup |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            r = check(name, args.size, args.batch, Path(tmp), args.repeats)
            captum = f"{r['rel_captum']:.1e}" if "rel_captum" in r else "-"
            captum_s = f"{r['captum_s']:.2f} s" if "captum_s" in r else "-"
            print(f"| {name} | `{r['boundary']}` | {'×'.join(map(str, r['shape']))} | {r['layer']} | "
                  f"{r['rel_cam']:.1e} / {r['rel_val']:.1e} | {captum} | {r['ours_s']:.2f} s | {r['native_s']:.2f} s | "
                  f"{captum_s} | {r['init_s']:.2f} s |", flush=True)
            ok = r["rel_cam"] < 1e-4 and r["rel_val"] < 1e-4
            if not ok:
                print(f"FAIL {name}: {r}", file=sys.stderr)


if __name__ == "__main__":
    main()
