"""The README's audit figure: `onnxxai audit` of the shipped LeNet-5 on a few held-out digits, with its
int8 QDQ file (onnxruntime's quantize_static, calibrated on 32 other held-out digits) as --reference,
rendered by headless Chromium (networking disabled) to docs/audit.png.

    python scripts/make_audit_figure.py [--digits 4] [--out docs/audit.png] [--keep DIR]

The digits are written as PNG files (their exact 8-bit pixels) into a temporary folder and audited
through the command line, so the picture is what `onnxxai audit` writes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from onnxxai.audit.browser import screenshot
from onnxxai.cli import main as cli
from onnxxai.testing import balanced_held_out_digits, make_deployment_variant

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "models" / "lenet5_mnist.onnx"


def trim(png: Path, margin: int = 16) -> None:
    """Cut the blank bottom of a screenshot taken in a tall window; store it with a 256-colour palette."""
    with Image.open(png) as shot:
        gray = np.asarray(shot.convert("L"))
        rows = np.nonzero((gray < 250).any(axis=1))[0]
        bottom = min(gray.shape[0], int(rows[-1]) + margin) if rows.size else gray.shape[0]
        # 256 colours keep the page legible at a fraction of the bytes
        shot.convert("RGB").crop((0, 0, gray.shape[1], bottom)).quantize(256).save(png, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "audit.png")
    parser.add_argument("--keep", type=Path, default=None, help="write the audit folder here (default: a temporary one)")
    parser.add_argument("--methods", nargs="+", default=["integrated-gradients", "lrp", "gradcam"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        digits, labels = balanced_held_out_digits(ROOT, args.digits)
        images = (digits[:, 0] * 255).round().astype(np.uint8)  # the PNG pixels the digits came from
        (folder / "digits").mkdir()
        for i, (img, label) in enumerate(zip(images, labels)):
            Image.fromarray(img).save(folder / "digits" / f"heldout_{i:02d}_label{label}.png")
        calib, _ = balanced_held_out_digits(ROOT, 32, offset=100)
        feeds = [{"image": c[None]} for c in calib]
        int8 = make_deployment_variant(LENET, "int8 QDQ", folder / "variants", feeds)
        out = args.keep or folder / "audit"
        argv = ["audit", str(LENET), str(folder / "digits"), "--reference", str(int8), "--methods", *args.methods,
                "--out", str(out)]
        print("onnxxai " + " ".join(argv))
        if cli(argv) != 0:
            raise SystemExit("the audit failed")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        screenshot(out / "audit.html", args.out, width=1280, height=5200)
        trim(args.out)
        report = json.loads((out / "audit.json").read_text())
    for row in report["results"]:
        verdict = row["verdict"]
        mark = "" if verdict is None else f"  {'PASS' if verdict['passed'] else 'FAIL'} ({verdict['rule']})"
        print(f"{row['method']:22s} {row['name']:26s} {row['direction']} {row['value']:.4f}{mark}")
    shift = report["deployment_shift"]
    print(f"deployment shift: agreement {shift['agreement']:.1%}; "
          + "; ".join(f"{m}: " + ", ".join(f"{k} {v['value']:.3f}" for k, v in s.items())
                      for m, s in shift["similarity"].items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
