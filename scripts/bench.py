"""onnxxai on an ONNX export vs the peers on the native torch model: time, memory, agreement.

    python scripts/bench.py [--arch resnet18] [--batch 8] [--device cpu] [--repeats 3] [--methods ...]

Same model (torchvision, seeded random weights), same inputs, one process. Each method runs once
to warm up, then ``--repeats`` times alternating onnxxai and the peer; the median time counts.
Peak memory: on CUDA, torch's peak allocated bytes; on CPU, the peak rise of the process's resident
set size sampled every millisecond, after glibc's malloc_trim hands freed pages back (an estimate). Agreement: relative L2 distance and cosine similarity of the
attributions. Ratio = onnxxai time / peer time (below 1: onnxxai is faster).

Pairs: Gradient / Captum Saliency (abs=False); Input×Gradient / Captum InputXGradient;
IntegratedGradients n=50 / Captum IntegratedGradients (same steps, Gauss-Legendre, same chunking);
SmoothGrad n=50 / Captum NoiseTunnel(Saliency) (noise differs, so agreement is statistical);
GradCAM / Captum LayerGradCam and pytorch-grad-cam;
LRP EpsilonPlusFlat / Zennit EpsilonPlusFlat with its ResNet/VGG canonizer.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import psutil
import torch
import torchvision

import onnxxai


class PeakMemory:
    """Peak memory above the starting level during a ``with`` block (CUDA allocator or CPU RSS)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            _malloc_trim()  # hand freed heap pages back, so the resident set rises with new allocations
            self.process = psutil.Process()
            self.base = self.top = self.process.memory_info().rss
            self.running = True
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.top = max(self.top, self.process.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.running = False
            self.thread.join()
            self.peak = self.top - self.base


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    with PeakMemory(device) as mem:
        t = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t
    return out, elapsed, mem.peak


def agreement(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    rel = float((a - b).norm() / b.norm().clamp_min(1e-30))
    cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    return rel, cos


def _min_max(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.reshape(maps.shape[0], -1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(1e-12)).reshape(maps.shape)


def build(arch: str, folder: Path, device: torch.device):
    torch.manual_seed(0)
    net = torchvision.models.get_model(arch, weights=None).eval()
    path = folder / f"{arch}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(1, 3, 224, 224),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    for p in net.parameters():
        p.requires_grad_(False)
    return net.to(device), onnxxai.load(path, device=device), path


def pairs(net, model, x, target, chunk, arch):
    from captum.attr import InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

    n = 50
    std = 0.15 * float(x.max() - x.min())
    yield ("Gradient", "Captum Saliency",
           lambda: onnxxai.analyze(x, onnxxai.Gradient(model), target).val,
           lambda: Saliency(net).attribute(x.clone().requires_grad_(), target=target, abs=False), True)
    yield ("Input×Gradient", "Captum InputXGradient",
           lambda: onnxxai.analyze(x, onnxxai.InputTimesGradient(model), target).val,
           lambda: InputXGradient(net).attribute(x.clone().requires_grad_(), target=target), True)
    yield (f"IntegratedGradients n={n}", "Captum IntegratedGradients",
           lambda: onnxxai.analyze(x, onnxxai.IntegratedGradients(model, n=n, batch_size=chunk), target).val,
           lambda: IntegratedGradients(net).attribute(x, target=target, n_steps=n, method="gausslegendre",
                                                      internal_batch_size=chunk), True)
    yield (f"SmoothGrad n={n}", "Captum NoiseTunnel(Saliency)",
           lambda: onnxxai.analyze(x, onnxxai.SmoothGrad(model, n=n, std=std, batch_size=chunk), target).val,
           lambda: NoiseTunnel(Saliency(net)).attribute(x.clone().requires_grad_(), target=target, nt_type="smoothgrad",
                                                        nt_samples=n, nt_samples_batch_size=max(chunk // x.shape[0], 1),
                                                        stdevs=std, abs=False), False)
    from captum.attr import LayerGradCam

    layer = {"resnet18": net.layer4, "resnet50": net.layer4}.get(arch)
    if layer is not None:
        upsample = lambda m: torch.nn.functional.interpolate(m, size=x.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
        yield ("GradCAM", "Captum LayerGradCam",
               lambda: onnxxai.analyze(x, onnxxai.GradCAM(model), target).val,
               lambda: upsample(LayerGradCam(net, layer).attribute(x, target=target, relu_attributions=True)), True)
        from pytorch_grad_cam import GradCAM as PytorchGradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        def pytorch_grad_cam():
            with PytorchGradCAM(model=net, target_layers=[layer]) as cam:
                maps = cam(input_tensor=x.clone().requires_grad_(), targets=[ClassifierOutputTarget(int(t)) for t in target])
            return torch.from_numpy(maps).unsqueeze(1)

        # pytorch-grad-cam returns each map min-max scaled to [0, 1] (resized with OpenCV): compare scaled maps
        yield ("GradCAM (min-max scaled)", "pytorch-grad-cam GradCAM",
               lambda: _min_max(onnxxai.analyze(x, onnxxai.GradCAM(model), target).val), pytorch_grad_cam, True)
    from zennit.attribution import Gradient as ZennitGradient
    from zennit.composites import EpsilonPlusFlat
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer

    canonizer = ResNetCanonizer() if arch.startswith("resnet") else VGGCanonizer()

    def zennit_lrp():
        with ZennitGradient(model=net, composite=EpsilonPlusFlat(canonizers=[canonizer])) as attributor:
            out = net(x)
            # relevance starts from the selected score, as onnxxai's LRP does
            start = torch.nn.functional.one_hot(target, out.shape[1]).to(x.dtype) * out
            _, relevance = attributor(x.clone().requires_grad_(), start)
        return relevance

    yield ("LRP EpsilonPlusFlat", "Zennit EpsilonPlusFlat",
           lambda: onnxxai.analyze(x, onnxxai.LRP(model), target).val, zennit_lrp, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=64, help="rows per forward/backward for IG/SmoothGrad (both sides)")
    parser.add_argument("--methods", nargs="*", default=None, help="only methods whose name starts with these")
    parser.add_argument("--write-readme", action="store_true", help="put the table in README.md's bench block for this device")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        net, model, _ = build(args.arch, Path(tmp), device)
        x = torch.from_numpy(np.random.default_rng(0).standard_normal((args.batch, 3, 224, 224)).astype(np.float32)).to(device)
        with torch.no_grad():
            target = net(x).argmax(1)
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
        from importlib.metadata import version

        lines = [
            f"{args.arch}, batch {args.batch}, {device.type} ({gpu}, {torch.get_num_threads()} threads); torch {torch.__version__}, "
            f"captum {version('captum')}, zennit {version('zennit')}, grad-cam {version('grad-cam')}; median of {args.repeats} after a warm-up",
            "",
            "| onnxxai | time | peak mem | peer | time | peak mem | ratio | rel L2 | cosine |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        print("\n".join(lines), flush=True)
        for ours_name, peer_name, ours, peer, deterministic in pairs(net, model, x, target, args.chunk, args.arch):
            if args.methods and not any(ours_name.startswith(m) for m in args.methods):
                continue
            ours(), peer()
            t_ours, t_peer, m_ours, m_peer = [], [], 0, 0
            for _ in range(args.repeats):
                a, t, m = timed(ours, device)
                t_ours.append(t)
                m_ours = max(m_ours, m)
                b, t, m = timed(peer, device)
                t_peer.append(t)
                m_peer = max(m_peer, m)
            rel, cos = agreement(a, b)
            to, tp = statistics.median(t_ours), statistics.median(t_peer)
            note = "" if deterministic else " (different noise)"
            lines.append(f"| {ours_name} | {to * 1e3:.0f} ms | {m_ours / 2**20:.0f} MiB | {peer_name} | {tp * 1e3:.0f} ms | "
                         f"{m_peer / 2**20:.0f} MiB | {to / tp:.2f} | {rel:.1e}{note} | {cos:.4f} |")
            print(lines[-1], flush=True)
    if args.write_readme:
        from readme_tables import write_block

        command = f"python scripts/bench.py --arch {args.arch} --batch {args.batch} --device {args.device} --repeats {args.repeats}"
        write_block(f"bench-{device.type}", f"`{command}`\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
