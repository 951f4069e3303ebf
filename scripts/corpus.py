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
  jax2onnx (``pip install skl2onnx tf2onnx tensorflow-cpu jax2onnx flax``; not in the test install);
- Hugging Face transformers models from small configs (``onnxxai.testing.transformers_model``: BERT,
  DistilBERT, RoBERTa, GPT-2, T5 encoder, ViT, CLIP vision tower, Whisper encoder; 2 layers, hidden size
  32, seeded, no download), each exported by torch.onnx's dynamo exporter (opset 20 with torch 2.14) and
  with ``dynamo=False, opset_version=17``, and the token/ViT models by optimum-onnx's ``main_export`` from a
  ``save_pretrained`` folder (in its own environment, see ``OPTIMUM_VENV``); token models are attributed
  at the embedding of ``input_ids``, the attention mask and token types fixed at the probe's values;
- a PaddlePaddle ResNet-18 through paddle2onnx (in its own environment, see ``PADDLE_VENV``);
- onnxslim's and onnxsim's simplifications of five rows' files (``SIMPLIFIED``).
  A producer whose environment is missing and whose file is not cached gives an "export failed" row.

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
import os
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


# -- transformers, simplified graphs, PaddlePaddle -------------------------------------------------
#: transformers kinds (onnxxai.testing.TRANSFORMERS_KINDS) -> table label
TRANSFORMERS_LABELS = {
    "bert": "BERT sequence classifier", "distilbert": "DistilBERT sequence classifier",
    "roberta": "RoBERTa sequence classifier", "gpt2": "GPT-2 LM head (logits)", "t5-encoder": "T5 encoder",
    "vit": "ViT image classifier", "clip-vision": "CLIP vision tower (pooled)", "whisper-encoder": "Whisper encoder",
}


def export_transformers_file(kind: str, variant: str) -> Path:
    """A small seeded transformers model (``onnxxai.testing.transformers_model``) exported by torch.onnx
    (``variant`` "dynamo" or "opset17"), cached in .cache/corpus."""
    from onnxxai.testing import export_transformers

    path = CACHE / f"hf_{kind}_{variant}.onnx"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        export_transformers(kind, tmp, dynamo=variant == "dynamo")
        tmp.replace(path)
    return path


def transformers_jobs() -> list[tuple[str, object]]:
    """Hugging Face transformers models from small configs (2 layers, hidden size 32, seeded random
    weights, no download), each exported by both torch.onnx exporters; token models are attributed at
    the embedding of ``input_ids`` with the attention mask and token types fixed."""
    from onnxxai.testing import TRANSFORMERS_KINDS

    return [(f"transformers {TRANSFORMERS_LABELS[kind]} ({variant})", lambda k=kind, v=variant: export_transformers_file(k, v))
            for kind in TRANSFORMERS_KINDS for variant in ("dynamo", "opset17")]


#: the separate environment optimum-onnx runs in: it pins transformers < 4.58 (the main one has 5.x).
#: Made with: python -m venv /work/optimum-venv; its pip install --no-deps optimum-onnx==0.1.0 'optimum~=2.1.0'
#: 'transformers>=4.57,<4.58' 'huggingface_hub<1' 'tokenizers<0.23'; and a file zz_main.pth in its
#: site-packages reading ``import site; site.addsitedir('<main .venv site-packages>')``, so torch, onnx and
#: onnxxai come from the main environment, after its own transformers
OPTIMUM_VENV = Path("/work/optimum-venv")
OPTIMUM_EXPORT = """
import sys
from pathlib import Path
from onnxxai.testing import transformers_model
from optimum.exporters.onnx import main_export

module, _, _ = transformers_model(sys.argv[1])
module.model.save_pretrained(sys.argv[2] + "/pretrained")
main_export(sys.argv[2] + "/pretrained", output=sys.argv[2] + "/onnx", task=sys.argv[3], do_validation=True)
"""
#: transformers kinds optimum exports, with the task it is asked for
OPTIMUM_TASKS = {"bert": "text-classification", "distilbert": "text-classification", "roberta": "text-classification",
                 "gpt2": "text-generation", "vit": "image-classification"}


def export_optimum(kind: str) -> Path:
    """The small seeded transformers model ``kind`` saved with ``save_pretrained`` and exported by
    optimum-onnx's ``main_export`` (its default opset, its own validation against the torch model) in
    :data:`OPTIMUM_VENV`; cached in .cache/corpus."""
    import shutil
    import subprocess
    import tempfile

    path = CACHE / f"optimum_{kind}.onnx"
    if path.exists():
        return path
    python = OPTIMUM_VENV / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"{python}: optimum-onnx's environment is missing (see OPTIMUM_VENV in scripts/corpus.py)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run([str(python), "-c", OPTIMUM_EXPORT, kind, folder, OPTIMUM_TASKS[kind]],
                              capture_output=True, text=True, timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if done.returncode != 0:
            raise RuntimeError(f"optimum export failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
        tmp = path.with_name(f".tmp-{path.name}")
        shutil.copyfile(Path(folder) / "onnx" / "model.onnx", tmp)
        tmp.replace(path)
    return path


def optimum_jobs() -> list[tuple[str, object]]:
    """optimum-onnx's exports of the small transformers models (see :func:`export_optimum`)."""
    return [(f"transformers {TRANSFORMERS_LABELS[kind]} (optimum-onnx, opset 18)", lambda k=kind: export_optimum(k))
            for kind in OPTIMUM_TASKS]


#: corpus rows whose files are also simplified by onnxslim and onnxsim (one per kind of network)
SIMPLIFIED = ("torchvision resnet18 (opset17)", "torchvision mobilenet_v3_small (opset17)",
              "torch token-id transformer (opset17)", "torch LSTM sequence classifier (opset17)",
              "transformers BERT sequence classifier (opset17)")


def simplified_jobs(jobs: list[tuple[str, object]]) -> list[tuple[str, object]]:
    """onnxslim's and onnxsim's simplifications (at their defaults) of the :data:`SIMPLIFIED` rows' files,
    cached in .cache/corpus/simplified."""
    from onnxxai.testing import SIMPLIFIERS, simplified

    sources = dict(jobs)
    return [(f"{tool} of {label}", lambda fn=sources[label], t=tool: simplified(fn(), t, CACHE / "simplified"))
            for label in SIMPLIFIED if label in sources for tool in SIMPLIFIERS]


#: the separate environment PaddlePaddle and paddle2onnx are installed in (they pin their own numpy/protobuf)
PADDLE_VENV = Path("/work/paddle-venv")
PADDLE_EXPORT = """
import sys
import numpy as np
import paddle
import paddle2onnx

paddle.seed(0)
net = paddle.vision.models.{arch}(num_classes=10)
net.eval()
spec = [paddle.static.InputSpec([None, 3, 64, 64], "float32", "x")]
paddle.jit.save(net, sys.argv[1] + "/model", input_spec=spec)
paddle2onnx.export(sys.argv[1] + "/model.json" if __import__("os").path.exists(sys.argv[1] + "/model.json")
                   else sys.argv[1] + "/model.pdmodel", sys.argv[1] + "/model.pdiparams", sys.argv[2], opset_version=17)
"""


def export_paddle(arch: str) -> Path:
    """A PaddlePaddle vision model (``paddle.vision.models.<arch>``, seeded random init, BatchNorm in
    inference mode) saved with ``paddle.jit.save`` and exported by paddle2onnx at opset 17, in the
    separate environment :data:`PADDLE_VENV` (python -m venv; pip install paddlepaddle paddle2onnx);
    cached in .cache/corpus, so the row runs from the cache where that environment is missing."""
    import subprocess
    import tempfile

    path = CACHE / f"paddle_{arch}.onnx"
    if path.exists():
        return path
    python = PADDLE_VENV / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"{python}: PaddlePaddle's environment is missing (python -m venv {PADDLE_VENV}; "
                                f"{PADDLE_VENV}/bin/pip install paddlepaddle paddle2onnx)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        tmp = path.with_name(f".tmp-{path.name}")
        done = subprocess.run([str(python), "-c", PADDLE_EXPORT.format(arch=arch), folder, str(tmp)],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"paddle2onnx export failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
        tmp.replace(path)
    return path


def paddle_jobs() -> list[tuple[str, object]]:
    """A PaddlePaddle ResNet-18 through paddle2onnx (see :func:`export_paddle`). MobileNet-V2 also exports and
    loads, but its gradient check (float64 depthwise convolutions) takes minutes on 2 cores."""
    return [("PaddlePaddle ResNet-18 (paddle2onnx, opset 17)", lambda: export_paddle("resnet18"))]


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
        jobs += transformers_jobs()
        jobs += optimum_jobs()
        jobs += paddle_jobs()
        jobs += simplified_jobs(jobs)
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[],
                        help="only models whose label contains this (repeatable: any of them)")
    parser.add_argument("--merge", action="store_true",
                        help="with --write-readme: replace (or add) only the rows evaluated now in the README's table, "
                             "keep the others as they were measured, and recount the total")
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
    rows = []
    for label, fn in jobs:
        if not selected(label, args.only):
            continue
        row = evaluate(label, fn)
        rows.append(row)
        print(" | ".join(row[:3]), file=sys.stderr, flush=True)
    sys.path.insert(0, str(Path(__file__).parent))
    from readme_tables import read_block, write_block

    if args.merge:  # the README's other rows as they were measured, in table order
        fresh = {r[0]: r for r in rows}
        kept = {label: (label, conv, res, row_passed(res)) for label, conv, res in table_rows(read_block("corpus"))}
        order = [label for label, _ in jobs if label in fresh or label in kept]
        order += [label for label in kept if label not in order]  # rows of models no longer built stay visible
        rows = [fresh.get(label) or kept[label] for label in order]
    passed = sum(r[3] for r in rows)
    lines = ["| model | converted | parity; gradient |", "|---|---|---|"]
    lines += [f"| {label} | {conv} | {res} |" for label, conv, res, _ in rows]
    lines.append(f"| **total** | | **{passed} of {len(rows)} convert, match onnxruntime and pass the gradient check** |")
    text = "\n".join(lines)
    print(text)
    if args.write_readme:
        write_block("corpus", text)


def selected(label: str, only: list[str]) -> bool:
    """Whether ``--only`` (any of its substrings; none given: everything) selects ``label``."""
    return not only or any(o in label for o in only)


def row_passed(result: str) -> bool:
    """Whether a table row's result cell reads as a pass (parity ok and the gradient check ok, or a
    piecewise-constant model's documented refusal)."""
    return result.startswith("ok") and "FAIL" not in result and ("gradient ok" in result or "gradients refused (documented" in result)


def table_rows(block: str) -> list[tuple[str, str, str]]:
    """(label, converted, result) of each model row of a corpus table (header and total skipped)."""
    rows = []
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("model", "---") or cells[0].startswith("**"):
            continue
        rows.append((cells[0], cells[1], cells[2]))
    return rows


# -- deployment section ---------------------------------------------------------------------------
#: --subset: three small models (a transformer, a CNN, a recurrent net)
SUBSET = ("torch token-id transformer (opset17)", "torchvision squeezenet1_1 (opset17)",
          "torch LSTM sequence classifier (opset17)")
#: --deployment without --all: the models whose variants fit the section's budget of 30 minutes on 2
#: cores, one export per torch network (opset17: the quantizers see the same network in both). Most of
#: a variant's time is the gradient check's float64 finite differences, so the cost grows with FLOPs,
#: and int8 variants of depthwise/grouped convolutions are slowest (torch has no fast float64 grouped
#: conv on CPU). Measured on 2 shared cores: token-id transformer 15 s, LSTM 66 s, squeezenet1_1 69 s,
#: resnet18 4 min, mobilenet_v3_small's QOperator variant alone 3.6 min; with other work on the same
#: cores, resnet18's variants took 724 s and squeezenet1_1's static int8 ones 3-3.5 min each, so
#: resnet18 and mobilenet_v3_small (the two slowest) run with --all, like MobileNet-V2, EfficientNet,
#: RegNet, ShuffleNets, ViT-B/16 and the heavier networks (hours on 2 cores).
DEPLOYMENT = SUBSET + (
    "torch GRU sequence classifier (opset17)", "onnx light zoo squeezenet", "scikit-learn MLPClassifier (skl2onnx)",
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
    # MinMax calibration on seven seeded probes, the evaluated probe, and the evaluated probe with its
    # float inputs scaled by 1.25: the explained input lies inside the calibrated ranges, not on their
    # edge. On the edge, the quantization noise of the int8 layers before an output can push it past the
    # range's end (squeezenet1_1's top logit: 255.6 steps, 0.1 past what rounds to 255), where the int8
    # model saturates -- its output is constant there and its gradient truly zero -- so no gradient
    # method could explain it
    headroom = {k: v * np.asarray(1.25, v.dtype) if np.issubdtype(v.dtype, np.floating) else v for k, v in reference.feeds.items()}
    calibration = [reference.feeds, headroom] + [probe_feeds(model.inputs, seed=100 + i, batch=1) for i in range(7)]
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
        print(f"{label} | {kind} | {'ok' if row.ok else 'FAIL' if row.runs else 'apart'} | {row.seconds:.1f} s | {row.cause} | "
              f"GradCAM {_map_cell(row.cosine_gradcam, row.gradcam_note)} | LRP {_map_cell(row.cosine_lrp, row.lrp_note)}",
              file=sys.stderr, flush=True)
    return rows


def _number(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"


def _map_cell(value: float, note: str) -> str:
    """A GradCAM / LRP cosine, or why there is none (a refusal, a zero map)."""
    return _number(value) if value == value else f"- ({note[:150]})" if note else "-"


def deployment_table(rows: list[VariantResult]) -> str:
    """The markdown table of the variants onnxruntime runs, totals, then the variants listed apart.
    The GradCAM and LRP columns are information: the totals' verdict is parity + gradient check."""
    counted = [r for r in rows if r.runs]
    lines = ["| variant | model | converts | parity max rel (tolerance rule) | gradient check | cos I×G | cos IG "
             "| cos GradCAM | cos LRP | artifact |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in counted:
        loads = "yes" if r.loads else f"no: {r.cause.removeprefix('load: ')[:160]}"
        parity = "-" if not r.loads else (f"{'ok' if r.parity_ok else 'FAIL'} {r.max_rel:.1e} "
                                          f"(rtol {r.rtol:.1e}, {r.tolerance_rule.split(':')[0]})")
        if not r.parity_ok:
            gradient = "-"
        elif r.cause.startswith("gradient/attribution"):
            gradient = f"FAIL: {r.cause.removeprefix('gradient/attribution: ')[:160]}"
        elif not r.gradient_ok:  # the check's account, and where the gradient stops (GradientStopWarning) if it does
            gradient = "FAIL: " + r.cause.removeprefix("gradient check: ").removeprefix("gradient FAILED ")[:300]
        else:
            gradient = f"ok (finite-difference rel err {r.fd_rel_error:.1e})"
        cells = (r.kind, r.model, loads, parity, gradient, _number(r.cosine_ixg), _number(r.cosine_ig),
                 _map_cell(r.cosine_gradcam, r.gradcam_note), _map_cell(r.cosine_lrp, r.lrp_note), r.artifact)
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    n = len(counted)
    converts, parity, ok = sum(r.loads for r in counted), sum(r.parity_ok for r in counted), sum(r.ok for r in counted)
    lines.append(f"| **total** | | **{converts} of {n} convert** | **{parity} of {n} load with no flags (parity passes)** | "
                 f"**{ok} of {n} also pass the gradient check** | | | "
                 f"**{sum(r.cosine_gradcam == r.cosine_gradcam for r in counted)} of {parity} compared** | "
                 f"**{sum(r.cosine_lrp == r.cosine_lrp for r in counted)} of {parity} compared** | |")
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
        if not selected(label, args.only) or (chosen is not None and label not in chosen):
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
