"""Convert and verify a corpus of real architectures; write the coverage table.

    python scripts/corpus.py [--only NAME] [--skip-producers] [--write-readme]

Models (seeded random weights, exported here and cached in .cache/corpus, outside git):
- torchvision classifiers, each exported twice: torch's default (dynamo) exporter and
  ``dynamo=False, opset_version=17``, with a dynamic batch dimension where the exporter allows;
- ONNX's light model zoo from the onnx wheel (opset 9, Caffe2 origin);
- other producers when their packages are installed: scikit-learn MLPClassifier via skl2onnx.

For every model: converted or not (with the reason), parity against onnxruntime (max relative
error, tolerance 1e-4), and whether the gradient w.r.t. the input flows: non-zero, finite, and
equal (2% relative, median of three random unit directions, step 1e-2) to a central finite
difference of onnxruntime's output.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

import onnxxai

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "corpus"
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"

TORCHVISION = {
    "resnet18": 224, "resnet50": 224, "mobilenet_v2": 224, "mobilenet_v3_small": 224, "efficientnet_b0": 224,
    "densenet121": 224, "googlenet": 224, "inception_v3": 299, "shufflenet_v2_x1_0": 224, "squeezenet1_1": 224,
    "regnet_y_400mf": 224, "convnext_tiny": 224, "vit_b_16": 224, "swin_t": 224,
}


def export_torchvision(name: str, size: int, variant: str) -> Path:
    import torchvision

    path = CACHE / f"tv_{name}_{variant}.onnx"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    net = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    with torch.no_grad():  # some heads start at zero (ViT): the output would be constant, the gradient zero
        gen = torch.Generator().manual_seed(1)
        for p in net.parameters():
            if p.dim() >= 2 and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    x = torch.randn(1, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if variant == "dynamo":
            try:
                torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"],
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},), verbose=False)
            except Exception:  # noqa: BLE001 - some graphs fix the batch; export them static
                torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"], verbose=False)
        else:
            torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return path


def export_sklearn_mlp() -> Path:
    path = CACHE / "skl_mlp.onnx"
    if path.exists():
        return path
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(x / 16.0, y)
    model = to_onnx(clf, (x[:1] / 16.0).astype(np.float32), options={id(clf): {"zipmap": False}}, target_opset=17)
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def gradient_check(model: onnxxai.Model, path: Path, seed: int = 0) -> str:
    """'ok (rel err ...)' when the gradient is finite, non-zero and matches a central difference."""
    spec = model.input_spec()
    shape = tuple(d if isinstance(d, int) and d > 0 else (1 if i == 0 else 64) for i, d in enumerate(spec.shape))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    analyzer = onnxxai.Gradient(model)
    expl = onnxxai.analyze(x, analyzer)
    g = expl.val.astype(np.float64)
    if not np.all(np.isfinite(g)):
        return "FAIL: non-finite gradient"
    if not np.any(g):
        return "FAIL: zero gradient"
    target = int(expl.output_selection[0])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = model.outputs[0].name

    def f(t):
        out = session.run([name], {spec.name: t.astype(np.float32)})[0]
        return float(out.reshape(out.shape[0], -1)[0, target])

    # a small step along unit directions: float32 rounding stays far below the slope, and ReLU kinks
    # are rarely crossed; the median of three directions absorbs one that crosses one
    errors = []
    for _ in range(3):
        v = rng.standard_normal(shape)
        v /= np.linalg.norm(v)
        h = 1e-2
        fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
        analytic = float((g * v).sum())
        errors.append(abs(fd - analytic) / max(abs(fd), abs(analytic), 1e-12))
    err = float(np.median(errors))
    return f"{'ok' if err <= 2e-2 else 'FAIL'} (directional derivative rel err {err:.1e}, median of 3)"


def evaluate(label: str, path_fn) -> tuple[str, str, str, bool]:
    t = time.perf_counter()
    try:
        path = path_fn()
    except Exception as exc:  # noqa: BLE001
        return label, f"export failed: {exc.__class__.__name__}: {str(exc).splitlines()[0][:90]}", "", False
    try:
        model = onnxxai.load(path)
    except onnxxai.ParityError as exc:
        return label, "converts", f"FAIL max rel {exc.report.max_rel:.1e}", False
    except onnxxai.OnnxxaiError as exc:
        return label, f"no: {exc.__class__.__name__}: {str(exc)[:120]}", "", False
    try:
        grad = gradient_check(model, path)
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        grad = f"FAIL: {exc.__class__.__name__}: {str(exc)[:80]}"
    ok = grad.startswith("ok")
    return label, f"yes ({time.perf_counter() - t:.0f} s)", f"ok, max rel {model.parity.max_rel:.1e}; {grad}", ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="only models whose label contains this")
    parser.add_argument("--skip-producers", action="store_true", help="torchvision and the light zoo only")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    jobs = []
    for name, size in TORCHVISION.items():
        for variant in ("dynamo", "opset17"):
            jobs.append((f"torchvision {name} ({variant})", lambda n=name, s=size, v=variant: export_torchvision(n, s, v)))
    for path in sorted(LIGHT.glob("*.onnx")):
        jobs.append((f"onnx light zoo {path.stem.removeprefix('light_')}", lambda p=path: p))
    if not args.skip_producers:
        jobs.append(("scikit-learn MLPClassifier (skl2onnx)", export_sklearn_mlp))
    rows, passed = [], 0
    for label, fn in jobs:
        if args.only not in label:
            continue
        row = evaluate(label, fn)
        passed += row[3]
        rows.append(row)
        print(" | ".join(row[:3]), file=sys.stderr, flush=True)
    lines = ["| model | converted | parity; gradient |", "|---|---|---|"]
    lines += [f"| {label} | {conv} | {res} |" for label, conv, res, _ in rows]
    lines.append(f"| **total** | | **{passed} of {len(rows)} convert, match onnxruntime and pass the gradient check** |")
    text = "\n".join(lines)
    print(text)
    if args.write_readme:
        sys.path.insert(0, str(Path(__file__).parent))
        from readme_tables import write_block

        write_block("corpus", text)


if __name__ == "__main__":
    main()
