"""Draw the heatmaps of every built method for one held-out digit: docs/heatmaps.png.

    python scripts/make_figure.py [--digit examples/digit_3.png]

Uses the shipped LeNet-5 (models/lenet5_mnist.onnx) and the method table the CLI uses, so the picture
shows exactly what `onnxxai run --method ...` draws.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import onnxxai
from onnxxai.heatmap import heatmap
from onnxxai.methods import METHODS, MethodOptions
from onnxxai.preprocess import image_spec, load_images

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digit", default=str(ROOT / "examples" / "digit_3.png"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "heatmaps.png"))
    parser.add_argument("--scale", type=int, default=6, help="pixels per input pixel")
    args = parser.parse_args()
    model = onnxxai.load(ROOT / "models" / "lenet5_mnist.onnx")
    spec = image_spec(model.input_spec())
    x = load_images([Path(args.digit)], spec)
    options = MethodOptions(samples=50, seed=0)
    tiles = [("input", np.repeat((x[0, 0] * 255).astype(np.uint8)[..., None], 3, axis=-1))]
    for name, method in METHODS.items():
        tiles.append((name, heatmap(onnxxai.analyze(x, method.build(model, options)))[0]))
    size = 28 * args.scale
    canvas = Image.new("RGB", (len(tiles) * (size + 10) + 10, size + 40), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, tile) in enumerate(tiles):
        canvas.paste(Image.fromarray(tile).resize((size, size), Image.NEAREST), (10 + i * (size + 10), 10))
        draw.text((10 + i * (size + 10), size + 20), name, fill="black")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    print(f"wrote {args.out} ({', '.join(n for n, _ in tiles)})")


if __name__ == "__main__":
    main()
