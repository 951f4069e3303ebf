"""Mutation fuzzing of onnxxai.load over corpus models: every mutant must end in a verified load or a
specific named error naming the file, within its time and memory budget (see onnxxai/fuzz.py).

    nice python scripts/fuzz.py --count 2000 --json fuzz.json

Seeds (built or taken from .cache/corpus): torch exports (a CNN, an MLP with LayerNorm/GELU, the CNN
with external data, the GRU of scripts/corpus.py when cached), the onnx light zoo (SqueezeNet,
ShuffleNet, as scripts/corpus.py uses them), scikit-learn's MLPClassifier (skl2onnx), the Keras CNN
(tf2onnx) when cached, and an onnx.helper Loop of 3 trips. Each mutant is loaded in a child with an
address-space limit and a wall-clock limit enforced by the parent; the summary counts outcomes
(parity, named, unnamed, generic, foreign, crash, hang), time per file and peak memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from onnxxai import fuzz

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "corpus"
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def build_seeds(folder: Path) -> list[Path]:
    """The seed models (see the module docstring); missing optional ones are skipped, said on stderr."""
    import torch

    from onnxxai.testing import export

    folder.mkdir(parents=True, exist_ok=True)
    seeds: list[Path] = []
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5))
    seeds.append(export(cnn, torch.randn(1, 3, 16, 16), folder / "torch_cnn.onnx"))
    mlp = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.LayerNorm(16), torch.nn.GELU(), torch.nn.Linear(16, 4),
                              torch.nn.Softmax(-1))
    seeds.append(export(mlp, torch.randn(1, 12), folder / "torch_mlp.onnx"))
    external = folder / "external"
    external.mkdir(exist_ok=True)
    model = onnx.load(str(seeds[0]))
    onnx.save(model, str(external / "torch_cnn_external.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="torch_cnn_external.data", size_threshold=0)
    seeds.append(external / "torch_cnn_external.onnx")
    loop = folder / "helper_loop.onnx"
    onnx.save(fuzz.loop_model(trips=3, name="three"), str(loop))
    seeds.append(loop)
    for name in ("squeezenet", "shufflenet"):
        path = LIGHT / f"light_{name}.onnx"
        if path.exists():
            seeds.append(path)
    mlp_path = CACHE / "skl_mlp.onnx"
    if not mlp_path.exists():
        from skl2onnx import to_onnx
        from sklearn.datasets import load_digits
        from sklearn.neural_network import MLPClassifier

        x, y = load_digits(return_X_y=True)
        clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(x / 16.0, y)
        mlp_path = folder / "skl_mlp.onnx"
        mlp_path.write_bytes(to_onnx(clf, (x[:1] / 16.0).astype(np.float32), options={id(clf): {"zipmap": False}},
                                     target_opset=17).SerializeToString())
    seeds.append(mlp_path)
    for cached in ("keras_cnn.onnx", "torch_gru_opset17.onnx"):
        if (CACHE / cached).exists():
            seeds.append(CACHE / cached)
        else:
            print(f"fuzz: {cached} not cached in {CACHE} (scripts/corpus.py makes it); skipped", file=sys.stderr)
    return seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000, help="mutants (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="load(timeout=) of each mutant (default 10 s)")
    parser.add_argument("--memory", type=float, default=4.0, help="GiB of address space per child beyond its imports")
    parser.add_argument("--only", nargs="*", help="only these mutations")
    parser.add_argument("--json", help="write every record and the summary here")
    parser.add_argument("--jsonl", help="append each record here as it is made (a run stopped early keeps its records)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onnxxai-fuzz-") as tmp:
        seeds = build_seeds(Path(tmp) / "seeds")
        print(f"seeds: {', '.join(s.name for s in seeds)}", file=sys.stderr)
        start = time.perf_counter()

        def report(k: int, seed: str, mutation: str, outcome: fuzz.Outcome) -> None:
            if args.jsonl:
                with open(args.jsonl, "a") as f:
                    f.write(json.dumps({"k": k, "seed": seed, "mutation": mutation, **outcome.to_dict()}) + "\n")
            bad = outcome.outcome not in fuzz.GOOD
            if bad or not args.quiet:
                print(f"{k:5d} {seed:32s} {mutation:20s} {outcome.outcome:8s} {outcome.seconds:6.2f}s "
                      f"{outcome.peak_mb:7.0f}MB {outcome.error} {outcome.message[:160] if bad else ''}", file=sys.stderr, flush=True)

        records = fuzz.fuzz(seeds, args.count, seed=args.seed, workdir=Path(tmp) / "mutants", timeout=args.timeout,
                            memory=int(args.memory * 2**30), mutations=args.only, report=report)
        summary = fuzz.summarize(records)
        summary["wall_seconds"] = round(time.perf_counter() - start, 1)
        summary["seeds"] = [s.name for s in seeds]
    print(fuzz.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "records": records}, indent=1))


if __name__ == "__main__":
    main()
