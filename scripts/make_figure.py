"""The README's figures, drawn by the command line itself:

    python scripts/make_figure.py [--digit examples/digit_3.png]

docs/heatmaps.png: `onnxxai run models/lenet5_mnist.onnx DIGIT --method all`'s comparison sheet
(every method in its preset colouring, one colour bar per preset, refusing methods with their reason).
docs/text.png: `onnxxai run bert.onnx --text ... --tokenizer tokenizer.json`'s HTML page, rendered by
headless chromium when it is installed, else drawn with matplotlib from the run's JSON. The BERT is a
small seeded random-weight transformers model (onnxxai.testing.export_transformers) and the tokenizer
a WordLevel one trained here on three sentences: the figure shows the output format, not a trained
model's reading of the sentence.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from onnxxai.cli import main as onnxxai_main

ROOT = Path(__file__).resolve().parents[1]
TEXT = "the cast was great and the ending was dull"


def sheet(digit: Path, out: Path, samples: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        code = onnxxai_main(["run", str(ROOT / "models" / "lenet5_mnist.onnx"), str(digit), "--method", "all",
                             "--samples", str(samples), "--labels", str(ROOT / "models" / "mnist_labels.txt"),
                             "--out", tmp, "--quiet"])
        if code:
            raise SystemExit(f"onnxxai run failed ({code})")
        shutil.copy(Path(tmp) / f"{digit.stem}_sheet.png", out)
    print(f"wrote {out}")


def _tokenizer(path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(["the film was good and the cast was great", "a bad plot and a dull ending",
                                   "the music was not bad at all"],
                                  trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.save(str(path))
    return path


def text_page(out: Path) -> None:
    from onnxxai.testing import export_transformers

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = export_transformers("bert", tmp / "bert.onnx", dynamo=False)
        code = onnxxai_main(["run", str(model), "--text", TEXT, "--tokenizer", str(_tokenizer(tmp / "tokenizer.json")),
                             "--method", "integrated-gradients", "--out", str(tmp / "out"), "--quiet"])
        if code:
            raise SystemExit(f"onnxxai run --text failed ({code})")
        page = tmp / "out" / "text_integrated-gradients.html"
        browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        if browser:
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--screenshot={out}", "--window-size=900,190", page.as_uri()],
                           check=True, capture_output=True, timeout=120)
        else:
            _matplotlib_page(json.loads((tmp / "out" / "text_integrated-gradients.json").read_text()), out)
    print(f"wrote {out} ({'chromium' if browser else 'matplotlib'})")


def _matplotlib_page(summary: dict, out: Path) -> None:
    """The HTML page's content drawn with matplotlib (where no browser is installed)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from onnxxai.text import token_colors

    tokens = [t["token"] for t in summary["tokens"]]
    colors = token_colors(np.array([t["attribution"] for t in summary["tokens"]])) / 255
    fig = Figure(figsize=(9, 1.4))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    x = 0.01
    for token, color in zip(tokens, colors):
        text = ax.text(x, 0.5, token, family="monospace", fontsize=13, va="center",
                       bbox={"facecolor": color, "edgecolor": "none", "pad": 3})
        fig.canvas.draw()
        x += text.get_window_extent().width / fig.bbox.width + 0.012
    fig.savefig(str(out), dpi=100)


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digit", default=str(ROOT / "examples" / "digit_3.png"))
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--docs", default=str(ROOT / "docs"))
    args = parser.parse_args()
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    sheet(Path(args.digit), docs / "heatmaps.png", args.samples)
    text_page(docs / "text.png")


if __name__ == "__main__":
    run()
