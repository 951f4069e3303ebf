"""`onnxxai run` for every input kind: photos at their own resolution, presets and model metadata,
several methods on one sheet, text through a tokenizer file, .npy sequences; no third-party warnings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import onnxxai
from onnxxai.cli import main
from onnxxai.methods import METHODS
from onnxxai.preprocess import PRESETS, image_spec, load_images, load_images_with_geometry, metadata_preprocessing
from onnxxai.proto.specs import TensorSpec
from onnxxai.testing import export

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "models" / "lenet5_mnist.onnx"


def _photo(path: Path, height: int = 480, width: int = 640) -> Path:
    """A smooth colour photo (resampling differences between libraries stay small on it)."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    rgb = np.stack([0.5 + 0.4 * np.sin(3 * x + 1), 0.5 + 0.4 * np.cos(2 * y), 0.3 + 0.6 * x * y], axis=-1)
    Image.fromarray((rgb * 255).round().astype(np.uint8)).save(path)
    return path


class TinyCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 5, stride=4)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def cnn224(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return export(TinyCNN(), torch.randn(1, 3, 224, 224), tmp_path_factory.mktemp("cnn") / "cnn224.onnx")


@pytest.mark.parametrize("preset", ["none", "imagenet"])
def test_overlay_has_the_photos_size_and_values_the_models(tmp_path, cnn224, preset):
    photo = _photo(tmp_path / "photo.png")
    assert main(["run", str(cnn224), str(photo), "--preset", preset, "--method", "gradient", "--out", str(tmp_path),
                 "--quiet"]) == 0
    summary = json.loads((tmp_path / "photo_gradient.json").read_text())
    overlay = np.asarray(Image.open(summary["files"]["overlay"]))
    assert overlay.shape == (480, 640, 3) and np.asarray(Image.open(summary["files"]["heatmap"])).shape == (480, 640, 3)
    assert np.load(summary["files"]["values"]).shape == (3, 224, 224)
    geometry = summary["preprocessing"]["geometry"]
    assert geometry["original"] == [480, 640] and geometry["size"] == [224, 224]
    pixels = np.asarray(Image.open(photo))
    if preset == "imagenet":  # shorter side 480 -> 256, crop 224: the file's centre 420x420, the rest left as it was
        assert geometry["source_box"] == [30.0, 110.0, 420.0, 420.0]
        np.testing.assert_array_equal(overlay[:, :100], pixels[:, :100])
        np.testing.assert_array_equal(overlay[:20], pixels[:20])
        assert np.abs(overlay[100:400, 150:500].astype(int) - pixels[100:400, 150:500]).mean() > 5
    else:  # stretched: the whole file reached the model, so the map covers it to the corners
        assert summary["preprocessing"]["fit"] == "stretch"
        assert geometry["source_box"] == [0.0, 0.0, 480.0, 640.0] and geometry["placed_box"] == [0, 0, 224, 224]
        assert np.abs(overlay[:, :100].astype(int) - pixels[:, :100]).mean() > 5
        assert np.abs(overlay[:20].astype(int) - pixels[:20]).mean() > 5


def test_geometry_undoes_crop_and_letterbox(tmp_path):
    photo = _photo(tmp_path / "wide.png", 100, 300)
    spec = TensorSpec("x", (1, 3, 50, 50), np.dtype("float32"))
    _, (letterbox,) = load_images_with_geometry([photo], image_spec(spec, fit="letterbox"))
    assert letterbox.placed == (16, 0, 17, 50)  # 100x300 fits 50 wide: 17 rows, centred
    marker = np.zeros((50, 50))
    marker[16:33] = np.arange(50)[None, :]  # a left-to-right ramp over the placed rows
    back = letterbox.to_original(marker)
    assert back.shape == (100, 300) and not np.isnan(back).any()
    assert back[:, :6].mean() < 2 and back[:, -6:].mean() > 47  # the ramp spans the whole file's width
    _, (crop,) = load_images_with_geometry([photo], image_spec(spec, fit="crop"))
    back = crop.to_original(np.ones((50, 50)))
    assert np.isnan(back[:, :100]).all() and np.isnan(back[:, 200:]).all() and (back[:, 100:200] == 1).all()


def test_each_preset_gives_its_documented_tensor(tmp_path):
    """A flat colour makes the normalization exact whatever the resampling; a photo checks the resize
    and crop against torchvision's transforms (imagenet, clip) within resampling differences."""
    import torchvision.transforms as T

    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((60, 80, 3), (200, 100, 50), np.uint8)).save(flat)
    spec = TensorSpec("x", (1, 3, 32, 32), np.dtype("float32"))
    documented = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), "inception": ((0.5,) * 3, (0.5,) * 3),
                  "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
                  "none": ((0, 0, 0), (1, 1, 1))}
    assert set(documented) == set(PRESETS)
    for preset, (mean, std) in documented.items():
        x = load_images([flat], image_spec(spec, preset=preset))
        want = (np.array([200, 100, 50]) / 255 - np.array(mean)) / np.array(std)
        np.testing.assert_allclose(x[0, :, 5, 5], want, rtol=1e-5)
        assert x.shape == (1, 3, 32, 32)
    photo = Image.open(_photo(tmp_path / "photo.png"))
    square = TensorSpec("x", (1, 3, 224, 224), np.dtype("float32"))
    references = {
        "imagenet": T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(*documented["imagenet"])]),
        "clip": T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                           T.Normalize(*documented["clip"])]),
    }
    for preset, transform in references.items():
        ours = load_images([tmp_path / "photo.png"], image_spec(square, preset=preset))[0]
        want = transform(photo).numpy()
        assert np.abs(ours - want).mean() < 0.02, preset


def test_model_metadata_sets_the_preprocessing(tmp_path):
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((8, 8, 3), (255, 0, 51), np.uint8)).save(flat)
    spec = TensorSpec("x", (1, 3, 8, 8), np.dtype("float32"))
    proto = onnx.ModelProto()
    onnx.helper.set_model_props(proto, {"Image.BitmapPixelFormat": "Bgr8", "Image.NominalPixelRange": "Normalized_1_1"})
    ispec = image_spec(spec, metadata=metadata_preprocessing(proto))
    assert ispec.source.startswith("model metadata") and ispec.channel_order == "bgr"
    np.testing.assert_allclose(load_images([flat], ispec)[0, :, 0, 0], [0.2 * 2 - 1, -1, 1], rtol=1e-5)  # B, G, R
    onnx.helper.set_model_props(proto, {"onnxxai.mean": "0.1,0.2,0.3", "onnxxai.std": "0.5"})
    ispec = image_spec(spec, metadata=metadata_preprocessing(proto))
    np.testing.assert_allclose(load_images([flat], ispec)[0, :, 0, 0], (np.array([1, 0, 0.2]) - [0.1, 0.2, 0.3]) / 0.5, rtol=1e-5)
    assert image_spec(spec, metadata=metadata_preprocessing(proto), preset="none").mean == (0.0,)  # a flag wins
    onnx.helper.set_model_props(proto, {"Image.NominalPixelRange": "NominalRange_16_235"})
    x = load_images([flat], image_spec(spec, metadata=metadata_preprocessing(proto)))
    np.testing.assert_allclose(x[0, :, 0, 0], [235, 16, 16 + 219 * 0.2], rtol=1e-5)


def _conv_bn(path: Path, zero_mean: bool) -> Path:
    """Conv -> BatchNorm -> pool -> Gemm whose BatchNorm running mean is the conv output's mean on
    zero-mean inputs (``zero_mean``) or on [0, 1] pixels with ImageNet's channel means."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.05, 8).astype(np.float32)
    dc = w.reshape(8, 3, 9).sum(axis=2) @ np.array([0.485, 0.456, 0.406])
    mean = (b if zero_mean else b + dc).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (w, "w"), (b, "b"), (np.ones(8, np.float32), "g"), (rng.normal(0, 0.05, 8).astype(np.float32), "beta"),
        (mean, "rm"), (np.ones(8, np.float32), "rv"), (rng.normal(0, 1, (8, 2)).astype(np.float32), "fc")]]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "beta", "rm", "rv"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("MatMul", ["f", "fc"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("zero_mean", [True, False])
def test_warns_when_the_first_layer_expected_a_normalization(tmp_path, capsys, zero_mean):
    model = _conv_bn(tmp_path / "net.onnx", zero_mean)
    photo = _photo(tmp_path / "p.png", 16, 16)
    assert main(["run", str(model), str(photo), "--method", "gradient", "--out", str(tmp_path), "--quiet"]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "zero-mean" in line]
    assert len(warned) == (1 if zero_mean else 0), err
    check = json.loads((tmp_path / "p_gradient.json").read_text())["normalization_check"]
    assert check["expects"] == ("zero-mean" if zero_mean else "unit")
    assert main(["run", str(model), str(photo), "--method", "gradient", "--preset", "imagenet", "--out", str(tmp_path),
                 "--quiet"]) == 0
    assert "zero-mean" not in capsys.readouterr().err  # normalized: nothing to warn about
    assert main(["run", str(LENET), str(ROOT / "examples" / "digit_3.png"), "--method", "gradient", "--out",
                 str(tmp_path), "--quiet"]) == 0
    assert "warning" not in capsys.readouterr().err  # LeNet-5 was trained on [0, 1] pixels: no BatchNorm, no verdict


def test_method_all_writes_one_sheet_with_every_method(tmp_path):
    assert main(["run", str(LENET), str(ROOT / "examples" / "digit_3.png"), "--method", "all", "--samples", "4",
                 "--out", str(tmp_path), "--quiet", "--json"]) == 0
    sheet = tmp_path / "digit_3_sheet.png"
    image = np.asarray(Image.open(sheet))
    assert image.shape[1] > 12 * 100 and image.std() > 10
    files = sorted(p.name for p in tmp_path.glob("digit_3_*_overlay.png"))
    built = [n for n in METHODS if (tmp_path / f"digit_3_{n}_overlay.png").exists()]
    assert len(files) == len(built) >= 10
    refused = {n for n in METHODS if n not in built}
    assert refused == {"treeshap"}  # an image model has no tree ensemble; its reason is on the sheet
    # each per-method file is what a single-method run writes
    one = tmp_path / "one"
    assert main(["run", str(LENET), str(ROOT / "examples" / "digit_3.png"), "--method", "lrp", "--out", str(one), "--quiet"]) == 0
    np.testing.assert_array_equal(np.load(one / "digit_3_lrp.npy"), np.load(tmp_path / "digit_3_lrp.npy"))


def _tokenizer(path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tokenizer.train_from_iterator(["the film was good and the cast was great", "a bad plot and a dull ending",
                                   "the music was not bad at all"], trainers.WordLevelTrainer(special_tokens=special))
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                             special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.save(str(path))
    return path


def test_text_end_to_end_from_a_tokenizer_file(tmp_path):
    """A transformers BERT (opset 17 export) explained from --text: tokens, mask and token types come
    from the tokenizer file; Input×Gradient per token equals the native model's at its word embedding;
    no third-party warning reaches the terminal."""
    from onnxxai.testing import export_transformers, transformers_model

    model_path = export_transformers("bert", tmp_path / "bert.onnx", dynamo=False)
    tok = _tokenizer(tmp_path / "tokenizer.json")
    text = "the cast was great and the ending was dull"
    proc = subprocess.run([sys.executable, "-m", "onnxxai.cli", "run", str(model_path), "--text", text, "--tokenizer",
                           str(tok), "--method", "input-x-gradient,integrated-gradients", "--samples", "16", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr.lower() and "Traceback" not in proc.stderr, proc.stderr
    assert "\x1b[" in proc.stdout and "great" in proc.stdout  # coloured tokens on the terminal
    summary = json.loads((tmp_path / "out" / "text_input-x-gradient.json").read_text())
    tokens = [t["token"] for t in summary["tokens"]]
    assert tokens == ["[CLS]", *text.split(), "[SEP]"]
    assert summary["fed"] == {"attention_mask": "attention mask", "token_type_ids": "token types"}
    assert "<span" in Path(summary["files"]["html"]).read_text()
    ids = torch.tensor([[t["id"] for t in summary["tokens"]]])
    module, _, _ = transformers_model("bert")
    captured = {}
    embeddings = module.model.bert.embeddings.word_embeddings
    handle = embeddings.register_forward_hook(lambda m, i, o: captured.setdefault("e", o.retain_grad() or o))
    logits = module(ids, torch.ones_like(ids), torch.zeros_like(ids))
    handle.remove()
    logits[0, summary["target"]].backward()
    e = captured["e"]
    want = (e * e.grad).sum(-1)[0].detach().numpy()
    np.testing.assert_allclose([t["attribution"] for t in summary["tokens"]], want, rtol=1e-3, atol=1e-5)
    ig = json.loads((tmp_path / "out" / "text_integrated-gradients.json").read_text())
    assert abs(ig["completeness_relative"]) < 0.05


def test_npy_sequence_on_a_recurrent_model(tmp_path):
    """A torch LSTM sequence classifier (the corpus's) explained from a .npy batch: Integrated
    Gradients equals Captum's on the native module; a line plot per row."""
    from captum.attr import IntegratedGradients

    class SequenceClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.LSTM(12, 24, num_layers=2, batch_first=True, bidirectional=True)
            self.head = torch.nn.Linear(48, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(x)[0][:, -1])

    torch.manual_seed(0)
    net = SequenceClassifier().eval()
    path = export(net, torch.randn(2, 16, 12), tmp_path / "lstm.onnx")
    x = np.random.default_rng(0).standard_normal((2, 16, 12)).astype(np.float32)
    np.save(tmp_path / "series.npy", x)
    assert main(["run", str(path), str(tmp_path / "series.npy"), "--method", "integrated-gradients,gradient",
                 "--samples", "32", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    out = tmp_path / "out"
    values = np.load(out / "series_integrated-gradients.npy")
    assert values.shape == (2, 16, 12)
    for row in (0, 1):
        plot = np.asarray(Image.open(out / f"series_integrated-gradients_row{row}_plot.png"))
        assert plot.shape[0] > 300 and plot.std() > 10
    targets = [json.loads((out / f"series_integrated-gradients_row{r}.json").read_text())["target"] for r in (0, 1)]
    want = IntegratedGradients(net).attribute(torch.from_numpy(x), target=targets, n_steps=32, method="gausslegendre")
    np.testing.assert_allclose(values, want.detach().numpy(), rtol=1e-3, atol=1e-5)
