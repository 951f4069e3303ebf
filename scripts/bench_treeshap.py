"""TreeSHAP from the ONNX file (onnxxai) against shap's TreeExplainer on the native model: time and agreement.

A scikit-learn random forest (--trees, --depth; None: grown out with min_samples_leaf=5) is fitted on
seeded data, exported with skl2onnx, and both explain --rows rows against --background rows with
interventional SHAP of the raw output. One run each, same machine; prints seconds, their ratio and
the largest difference. Usage: python scripts/bench_treeshap.py [--trees 100 --rows 100 --background 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import shap
from skl2onnx import to_onnx
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

import onnxxai


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--depth", type=int, default=None, help="max_depth (default: grown out, min_samples_leaf=5)")
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--background", type=int, default=100)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--task", choices=["reg", "clf"], default="reg")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.train, args.features)).astype(np.float32)
    signal = x[:, 0] * 2 + x[:, 1] * x[:, 2] - np.abs(x[:, 3]) + 0.3 * rng.normal(size=len(x))
    kw = {"n_estimators": args.trees, "max_depth": args.depth, "min_samples_leaf": 5, "random_state": 0, "n_jobs": 1}
    if args.task == "reg":
        est = RandomForestRegressor(**kw).fit(x, signal)
        options = None
    else:
        est = RandomForestClassifier(**kw).fit(x, (signal > 0).astype(int) + (signal > 1.5))
        options = {id(est): {"zipmap": False}}
    rows, background = x[:args.rows], x[-args.background:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = to_onnx(est, x[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    leaves = sum(t.tree_.n_leaves for t in est.estimators_)
    depth = max(t.tree_.max_depth for t in est.estimators_)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "forest.onnx"
        onnx.save(model, path)
        start = time.perf_counter()
        analyzer = onnxxai.TreeSHAP(onnxxai.load_runtime(path), background)
        ours = [analyzer(rows, output_selection=k).val for k in range(analyzer.ensemble.out_matrix.shape[1])]
        t_ours = time.perf_counter() - start
    start = time.perf_counter()
    explainer = shap.TreeExplainer(est, data=background.astype(np.float64), feature_perturbation="interventional",
                                   model_output="raw")
    ref = np.asarray(explainer.shap_values(rows.astype(np.float64), check_additivity=False))
    t_shap = time.perf_counter() - start
    ref = ref[..., None] if ref.ndim == 2 else ref
    error = max(float(np.abs(v - ref[:, :, k]).max()) for k, v in enumerate(ours))
    print(f"forest: {args.task}, {args.trees} trees, {leaves} leaves, depth <= {depth}, {args.features} features; "
          f"{args.rows} rows x {args.background} background, {len(ours)} output(s)")
    print(f"onnxxai TreeSHAP (ONNX file, numpy): {t_ours:.2f} s")
    print(f"shap TreeExplainer (native, C++):    {t_shap:.2f} s")
    print(f"ratio onnxxai/shap: {t_ours / t_shap:.2f}; largest |difference|: {error:.2e}")


if __name__ == "__main__":
    main()
