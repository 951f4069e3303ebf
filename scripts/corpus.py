"""Convert and verify a corpus of real architectures; write the coverage table.

    python scripts/corpus.py [--only NAME] [--skip-producers] [--write-readme]
    python scripts/corpus.py --deployment [--subset | --all] [--only NAME] [--write-readme]

Models (seeded random weights, exported here and cached in .cache/corpus, outside git):
- torchvision classifiers, each exported twice: torch's default (dynamo) exporter and
  ``dynamo=False, opset_version=17``, with a dynamic batch dimension where the exporter allows;
- torch LSTM and GRU sequence classifiers and a token-id transformer (integer input, attributed
  at its embedding), exported the same two ways;
- ONNX's light model zoo from the onnx wheel (opset 9, Caffe2 origin);
- other producers: scikit-learn MLPClassifier via skl2onnx, a Keras CNN and a Keras LSTM via tf2onnx, a Flax CNN via
  jax2onnx (``pip install skl2onnx tf2onnx tensorflow-cpu jax2onnx flax``; not in the test install).

For every model: converted or not (with the reason), parity against onnxruntime (max relative
error, tolerance 1e-4), and whether the gradient w.r.t. the input flows: ``onnxxai.diagnostics.
gradient_flow`` (finite, non-zero, and within 2% of central finite differences of onnxruntime's
output along random directions) -- the same check ``onnxxai check`` runs.

``--deployment``: each model turned, with onnxruntime's and onnxconverter-common's own tools at their
defaults, into the files that ship -- int8 static QDQ and QOperator (``quant_pre_process``, then
``quantize_static`` calibrated on four seeded inputs), int8 dynamic (``quantize_dynamic``), float16
with and without ``keep_io_types``, onnxruntime's EXTENDED and ALL optimization levels
(``optimized_model_filepath``) and, for the transformer models, ``onnxruntime.transformers.optimizer``
(variants cached in .cache/corpus/deployment). Each is run by onnxruntime (a variant it cannot run is
listed apart, not counted), loaded with no flags (parity), gradient-checked, and its Input×Gradient
and IG (16 steps) are compared (cosine) with the float32 model's on a seeded probe, for the float32
model's top output (``onnxxai.testing.evaluate_variant``). By default on the models that fit 30 minutes
on 2 cores (``DEPLOYMENT``); ``--subset`` three small ones, ``--all`` every corpus model.
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
import torch

import onnxxai
from onnxxai.diagnostics import gradient_flow
from onnxxai.proto.specs import probe_feeds
from onnxxai.testing import (
    DEPLOYMENT_KINDS, VariantResult, deployment_reference, evaluate_variant, export, make_deployment_variant,
)

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
            export(net, x, path)
    return path


def with_logits_output(path: Path) -> Path:
    """The zoo model with its pre-softmax logits as an extra output (cached copy).

    The zoo's weights are constant fills, so the softmax is exactly uniform for every input and its
    gradient is zero; the logits are not, so parity and the gradient check look at them.
    """
    target = CACHE / f"zoo_{path.stem}_logits.onnx"
    if target.exists():
        return target
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    last = model.graph.output[0].name
    softmax = [n for n in model.graph.node if n.op_type == "Softmax" and n.output[0] == last]
    if softmax:
        model.graph.output.insert(0, {v.name: v for v in model.graph.value_info}[softmax[0].input[0]])
    CACHE.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target


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


def save_keras(net, shape: tuple[int, ...], path: Path) -> Path:
    """Export a Keras model with one float input ``x`` of ``shape`` (after a dynamic batch) by tf2onnx, opset 17."""
    import tensorflow as tf
    import tf2onnx

    signature = [tf.TensorSpec((None, *shape), tf.float32, name="x")]
    proto, _ = tf2onnx.convert.from_function(tf.function(net, input_signature=signature), input_signature=signature, opset=17)
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString())
    return path


def export_keras_cnn() -> Path:
    """A Keras CNN (NHWC, GlobalMaxPooling) exported by tf2onnx."""
    path = CACHE / "keras_cnn.onnx"
    if path.exists():
        return path
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((32, 32, 3))
    x = tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = tf.keras.layers.MaxPooling2D()(x)
    x = tf.keras.layers.Conv2D(16, 3, activation="relu")(x)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.GlobalMaxPooling2D()(x)
    out = tf.keras.layers.Dense(10)(x)
    net = tf.keras.Model(inp, out)
    return save_keras(net, (32, 32, 3), path)


def export_keras_lstm() -> Path:
    """A Keras LSTM sequence classifier exported by tf2onnx."""
    path = CACHE / "keras_lstm.onnx"
    if path.exists():
        return path
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((16, 12))
    x = tf.keras.layers.LSTM(24, return_sequences=True)(inp)
    x = tf.keras.layers.LSTM(24)(x)
    net = tf.keras.Model(inp, tf.keras.layers.Dense(5)(x))
    return save_keras(net, (16, 12), path)


def export_flax_cnn() -> Path:
    """A Flax (nnx) CNN exported by jax2onnx (SAME padding, average pooling)."""
    path = CACHE / "flax_cnn.onnx"
    if path.exists():
        return path
    from flax import nnx
    from jax2onnx import to_onnx

    class CNN(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.conv1 = nnx.Conv(1, 8, kernel_size=(3, 3), rngs=rngs)
            self.conv2 = nnx.Conv(8, 16, kernel_size=(3, 3), rngs=rngs)
            self.fc = nnx.Linear(16, 10, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.conv1(x))
            x = nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
            x = nnx.gelu(self.conv2(x))
            return self.fc(x.mean(axis=(1, 2)))

    proto = to_onnx(CNN(nnx.Rngs(0)), [("B", 28, 28, 1)], opset=21)
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString())
    return path


class SequenceClassifier(torch.nn.Module):
    """Sequences (batch, time, 12) → 2-layer bidirectional LSTM or GRU → linear on the last step."""

    def __init__(self, cell: str) -> None:
        super().__init__()
        rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
        self.rnn = rnn(12, 24, num_layers=2, batch_first=True, bidirectional=True)
        self.head = torch.nn.Linear(48, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


class TokenClassifier(torch.nn.Module):
    """Token ids → embedding → transformer encoder layer → mean pooling → linear (integer input)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(1000, 32)
        self.encoder = torch.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.head = torch.nn.Linear(32, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embedding(ids)).mean(1))


def export_torch(name: str, variant: str) -> Path:
    """A torch sequence model (``lstm``, ``gru``) or token model (``tokens``), both exporters."""
    path = CACHE / f"torch_{name}_{variant}.onnx"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = (TokenClassifier() if name == "tokens" else SequenceClassifier(name)).eval()
    x = torch.randint(0, 1000, (2, 16)) if name == "tokens" else torch.randn(2, 16, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if variant == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=1024)
            torch.onnx.export(net, (x,), str(path), input_names=["x"], output_names=["y"],
                              dynamic_shapes=({0: batch},), verbose=False)
        else:
            export(net, x, path)
    return path


def export_classical_file(name: str) -> Path:
    """``onnxxai.testing.export_classical(name)`` cached in .cache/corpus (skl2onnx keeps its ZipMap)."""
    from onnxxai.testing import export_classical

    path = CACHE / f"classical_{name}.onnx"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        path.write_bytes(export_classical(name).SerializeToString())
    return path


def classical_jobs() -> list[tuple[str, object]]:
    """scikit-learn (skl2onnx) and LightGBM / XGBoost (onnxmltools) models fitted on scikit-learn's
    shipped data sets; the label names the exporter and the ai.onnx opset. Tree ensembles pass when
    they load with parity and gradient methods refuse them (NotDifferentiableError)."""
    from onnxxai.testing import CLASSICAL, CLASSICAL_OPSET

    jobs = []
    for name, (what, producer, _, _) in CLASSICAL.items():
        label = f"{what} ({producer}, opset {CLASSICAL_OPSET[producer]})"
        if any(tree in what for tree in ("Tree", "Forest", "Boosting", "LGBM", "XGB")):
            PIECEWISE.add(label)
        jobs.append((label, lambda n=name: export_classical_file(n)))
    return jobs


#: corpus labels whose models are piecewise constant (trees): their pass is a refusal of gradients
PIECEWISE: set[str] = set()


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
        report = gradient_flow(model, onnx.load(str(path)))
    except onnxxai.NotDifferentiableError as exc:  # trees: the documented refusal is the expected result
        node = str(exc).split(" through ", 1)[1].split(" (", 1)[0]
        return label, f"yes ({time.perf_counter() - t:.0f} s)", (f"ok, max rel {model.parity.max_rel:.1e}; gradients refused "
                                                                 f"(documented: piecewise constant at {node})"), label in PIECEWISE
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        return label, "yes", f"ok, max rel {model.parity.max_rel:.1e}; gradient FAIL: {exc.__class__.__name__}: {str(exc)[:80]}", False
    grad = f"gradient {'ok' if report.ok else 'FAIL'}, finite-difference rel err {report.fd_rel_error:.1e}"
    if not report.nonzero:
        grad = "gradient FAIL: zero"
    return label, f"yes ({time.perf_counter() - t:.0f} s)", f"ok, max rel {model.parity.max_rel:.1e}; {grad}", report.ok


def corpus_jobs(skip_producers: bool) -> list[tuple[str, object]]:
    """(label, function returning the cached export's path) for every corpus model, in table order."""
    jobs = []
    for name, size in TORCHVISION.items():
        for variant in ("dynamo", "opset17"):
            jobs.append((f"torchvision {name} ({variant})", lambda n=name, s=size, v=variant: export_torchvision(n, s, v)))
    for name in ("lstm", "gru", "tokens"):
        for variant in ("dynamo", "opset17"):
            what = "token-id transformer" if name == "tokens" else f"{name.upper()} sequence classifier"
            jobs.append((f"torch {what} ({variant})", lambda n=name, v=variant: export_torch(n, v)))
    for path in sorted(LIGHT.glob("*.onnx")):
        jobs.append((f"onnx light zoo {path.stem.removeprefix('light_')}", lambda p=path: with_logits_output(p)))
    if not skip_producers:
        jobs.append(("scikit-learn MLPClassifier (skl2onnx)", export_sklearn_mlp))
        jobs.append(("Keras CNN (tf2onnx)", export_keras_cnn))
        jobs.append(("Keras LSTM (tf2onnx)", export_keras_lstm))
        jobs.append(("Flax nnx CNN (jax2onnx)", export_flax_cnn))
        jobs += classical_jobs()
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="only models whose label contains this")
    parser.add_argument("--skip-producers", action="store_true", help="torchvision and the light zoo only")
    parser.add_argument("--deployment", action="store_true",
                        help="the deployment section: int8, float16 and onnxruntime-optimized variants of each model")
    parser.add_argument("--subset", action="store_true", help=f"with --deployment: only {', '.join(SUBSET)}")
    parser.add_argument("--all", action="store_true",
                        help="with --deployment: every corpus model, not only the 30-minute set (hours on 2 cores)")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    jobs = corpus_jobs(args.skip_producers)
    if args.deployment:
        deployment(jobs, args)
        return
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


# -- deployment section ---------------------------------------------------------------------------
#: --subset: three small models (a transformer, a CNN, a recurrent net)
SUBSET = ("torch token-id transformer (opset17)", "torchvision squeezenet1_1 (opset17)",
          "torch LSTM sequence classifier (opset17)")
#: --deployment without --all: the models whose variants fit the section's budget of 30 minutes on 2
#: cores, one export per torch network (opset17: the quantizers see the same network in both). Most of
#: a variant's time is the gradient check's float64 finite differences, so the cost grows with FLOPs,
#: and int8 variants of depthwise/grouped convolutions are slowest (torch has no fast float64 grouped
#: conv on CPU). Measured on 2 shared cores: token-id transformer 15 s, LSTM 66 s, squeezenet1_1 69 s,
#: resnet18 4 min, mobilenet_v3_small's QOperator variant alone 3.6 min. MobileNet-V2, EfficientNet,
#: RegNet, ShuffleNets, ViT-B/16 and the heavier networks run with --all (hours on 2 cores).
DEPLOYMENT = SUBSET + (
    "torch GRU sequence classifier (opset17)", "torchvision mobilenet_v3_small (opset17)",
    "torchvision resnet18 (opset17)", "onnx light zoo squeezenet", "scikit-learn MLPClassifier (skl2onnx)",
    "Keras CNN (tf2onnx)", "Keras LSTM (tf2onnx)", "Flax nnx CNN (jax2onnx)",
)
#: models the transformers optimizer rewrites: optimize_model's model_type, num_heads, hidden_size
TRANSFORMERS = {
    "torch token-id transformer": {"model_type": "bert", "num_heads": 4, "hidden_size": 32},
    "torchvision vit_b_16": {"model_type": "vit", "num_heads": 12, "hidden_size": 768},
}


def deployment_rows(label: str, path: Path, kinds: tuple[str, ...] = DEPLOYMENT_KINDS) -> list[VariantResult]:
    """Every deployment variant of one corpus model, checked against its float32 file."""
    model = onnxxai.load(path)
    reference = deployment_reference(model, ig_steps=16)
    # MinMax calibration on the evaluated probe and seven other seeded probes: the probe's own range is
    # covered, so the explained output is not clipped at the top of its quantized range (where the
    # straight-through gradient is zero, and analyze warns about it)
    calibration = [reference.feeds] + [probe_feeds(model.inputs, seed=100 + i, batch=1) for i in range(7)]
    transformer = next((v for k, v in TRANSFORMERS.items() if label.startswith(k)), None)
    rows = []
    for kind in kinds:
        if kind == "transformers optimizer" and transformer is None:
            continue
        t = time.perf_counter()
        try:
            variant = make_deployment_variant(path, kind, CACHE / "deployment", calibration, transformer=transformer)
        except Exception as exc:  # noqa: BLE001 - the tool itself failed: listed apart with its error
            rows.append(VariantResult(label, kind, cause=f"tool: {exc.__class__.__name__}: {' '.join(str(exc).split())[:160]}",
                                      seconds=time.perf_counter() - t))
        else:
            result = evaluate_variant(variant, reference, model=label, kind=kind)
            result.seconds = time.perf_counter() - t  # making the variant included
            rows.append(result)
        row = rows[-1]
        print(f"{label} | {kind} | {'ok' if row.ok else 'FAIL' if row.runs else 'apart'} | {row.seconds:.1f} s | {row.cause}",
              file=sys.stderr, flush=True)
    return rows


def _number(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"


def deployment_table(rows: list[VariantResult]) -> str:
    """The markdown table of the variants onnxruntime runs, totals, then the variants listed apart."""
    counted = [r for r in rows if r.runs]
    lines = ["| variant | model | converts | parity max rel (tolerance rule) | gradient check | cos I×G | cos IG | artifact |",
             "|---|---|---|---|---|---|---|---|"]
    for r in counted:
        loads = "yes" if r.loads else f"no: {r.cause.removeprefix('load: ')[:160]}"
        parity = "-" if not r.loads else (f"{'ok' if r.parity_ok else 'FAIL'} {r.max_rel:.1e} "
                                          f"(rtol {r.rtol:.1e}, {r.tolerance_rule.split(':')[0]})")
        if not r.parity_ok:
            gradient = "-"
        elif r.cause.startswith("gradient/attribution"):
            gradient = f"FAIL: {r.cause.removeprefix('gradient/attribution: ')[:160]}"
        elif "identically zero" in r.gradient or "non-finite" in r.gradient:
            gradient = "FAIL: " + r.gradient.split(":", 1)[1].strip()
            if r.cause.startswith("warning: "):  # where the gradient stops (GradientStopWarning)
                gradient += f"; {r.cause.removeprefix('warning: ')[:160]}"
        else:
            gradient = f"{'ok' if r.gradient_ok else 'FAIL'} (finite-difference rel err {r.fd_rel_error:.1e})"
        cells = (r.kind, r.model, loads, parity, gradient, _number(r.cosine_ixg), _number(r.cosine_ig), r.artifact)
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    n = len(counted)
    converts, parity, ok = sum(r.loads for r in counted), sum(r.parity_ok for r in counted), sum(r.ok for r in counted)
    lines.append(f"| **total** | | **{converts} of {n} convert** | **{parity} of {n} load with no flags (parity passes)** | "
                 f"**{ok} of {n} also pass the gradient check** | | | |")
    apart = [r for r in rows if not r.runs]
    if apart:
        lines += ["", "Listed apart, not counted (the tool or onnxruntime itself fails):", "",
                  "| variant | model | cause |", "|---|---|---|"]
        lines += [f"| {r.kind} | {r.model} | {r.cause.replace('|', '/')[:200]} |" for r in apart]
    return "\n".join(lines)


def deployment(jobs: list[tuple[str, object]], args: argparse.Namespace) -> None:
    """The deployment section: every selected corpus model's variants; print (and write) the table."""
    start, rows = time.perf_counter(), []
    chosen = SUBSET if args.subset else None if args.all else DEPLOYMENT
    for label, fn in jobs:
        if args.only not in label or (chosen is not None and label not in chosen):
            continue
        t = time.perf_counter()
        try:
            path = fn()
        except Exception as exc:  # noqa: BLE001 - a producer that is not installed: say so and go on
            print(f"{label}: export failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
            continue
        rows += deployment_rows(label, path)
        print(f"{label}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    text = deployment_table(rows)
    print(text)
    print(f"deployment section: {len(rows)} variants in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if args.write_readme:
        sys.path.insert(0, str(Path(__file__).parent))
        from readme_tables import write_block

        write_block("deployment", text)


if __name__ == "__main__":
    main()
