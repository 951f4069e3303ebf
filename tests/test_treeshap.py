"""TreeSHAP read from ONNX tree ensembles against shap's TreeExplainer on the native models.

Each model is fitted here (scikit-learn, LightGBM, XGBoost), exported with skl2onnx/onnxmltools and
explained from the ONNX file alone; the reference is ``shap.TreeExplainer(native_model, data=background,
feature_perturbation="interventional", model_output="raw")`` on the native object, and the native
model's own raw margin (decision_function, raw_score, output_margin) for additivity.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import helper

import lightgbm
import shap
import xgboost
from onnxmltools import convert_lightgbm, convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType
from skl2onnx import to_onnx
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import onnxxai
from onnxxai.blackbox.treeshap import TreeSHAP, read_tree_ensemble, tree_node, tree_shap_values
from onnxxai.errors import AnalyzerError

F = 6
RNG = np.random.default_rng(0)
X = RNG.normal(size=(400, F)).astype(np.float32)
Y = {
    "reg": X[:, 0] * 2 + X[:, 2] * X[:, 3] - np.abs(X[:, 4]),
    "bin": (X[:, 0] + X[:, 1] * X[:, 5] > 0).astype(int),
    "multi": (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.3),
}
SAMPLES, BACKGROUND = X[:12], X[200:240]
TOL = 1e-6


def _native(name: str):
    """(estimator, task) for a case name."""
    kw_lgb = {"n_estimators": 15, "num_leaves": 12, "min_child_samples": 5, "verbose": -1, "random_state": 0, "n_jobs": 1}
    kw_xgb = {"n_estimators": 15, "max_depth": 4, "random_state": 0, "n_jobs": 1}
    return {
        "sk-rf-reg": (RandomForestRegressor(n_estimators=8, max_depth=7, random_state=0), "reg"),
        "sk-rf-bin": (RandomForestClassifier(n_estimators=8, max_depth=6, random_state=0), "bin"),
        "sk-rf-multi": (RandomForestClassifier(n_estimators=8, max_depth=6, random_state=0), "multi"),
        "sk-gb-reg": (GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0), "reg"),
        "sk-gb-bin": (GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0), "bin"),
        "lgb-reg": (lightgbm.LGBMRegressor(**kw_lgb), "reg"),
        "lgb-bin": (lightgbm.LGBMClassifier(**kw_lgb), "bin"),
        "lgb-multi": (lightgbm.LGBMClassifier(**kw_lgb), "multi"),
        "xgb-reg": (xgboost.XGBRegressor(**kw_xgb), "reg"),
        "xgb-bin": (xgboost.XGBClassifier(**kw_xgb), "bin"),
        "xgb-multi": (xgboost.XGBClassifier(**kw_xgb), "multi"),
    }[name]


def _export(est, name: str) -> onnx.ModelProto:
    types = [("X", FloatTensorType([None, F]))]
    if name.startswith("lgb"):
        return convert_lightgbm(est, initial_types=types, zipmap=False, target_opset=15)
    if name.startswith("xgb"):
        return convert_xgboost(est, initial_types=types, target_opset=15)
    options = {id(est): {"zipmap": False}} if hasattr(est, "classes_") else None
    return to_onnx(est, X[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3})


def _raw_margin(est, x: np.ndarray) -> np.ndarray:
    """The native model's raw output, one column per explained output (shap's model_output='raw')."""
    if isinstance(est, lightgbm.LGBMModel):
        out = est.predict(x, raw_score=True)
    elif isinstance(est, xgboost.XGBModel):
        out = est.predict(x, output_margin=True)
    elif isinstance(est, RandomForestClassifier):
        out = est.predict_proba(x)
    elif isinstance(est, GradientBoostingClassifier):
        out = est.decision_function(x)
    else:
        out = est.predict(x)
    return np.asarray(out, dtype=np.float64).reshape(len(x), -1)


def _model_file(tmp_path, name: str):
    est, task = _native(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, Y[task])
        model = _export(est, name)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return est, path


CASES = ["sk-rf-reg", "sk-rf-bin", "sk-rf-multi", "sk-gb-reg", "sk-gb-bin",
         "lgb-reg", "lgb-bin", "lgb-multi", "xgb-reg", "xgb-bin", "xgb-multi"]


@pytest.mark.parametrize("name", CASES)
def test_treeshap_equals_shap_on_the_native_model(tmp_path, name):
    est, path = _model_file(tmp_path, name)
    analyzer = TreeSHAP(onnxxai.load_runtime(path), BACKGROUND)
    explainer = shap.TreeExplainer(est, data=BACKGROUND.astype(np.float64),
                                   feature_perturbation="interventional", model_output="raw")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = np.asarray(explainer.shap_values(SAMPLES.astype(np.float64), check_additivity=False))
    ref = ref[..., None] if ref.ndim == 2 else ref  # (N, F, outputs)
    ref_expected = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
    native = _raw_margin(est, SAMPLES)
    native_bg = _raw_margin(est, BACKGROUND).mean(axis=0)
    n_cols = analyzer.ensemble.out_matrix.shape[1]
    one_margin = ref.shape[2] == 1 and n_cols == 2  # binary: shap and the native model give class 1's margin
    for k in range(n_cols):
        expl = analyzer(SAMPLES, output_selection=k)
        assert expl.val.shape == SAMPLES.shape and expl.analyzer == "TreeSHAP"
        val = expl.val.astype(np.float64)
        sign, j = (1.0 if k == 1 else -1.0, 0) if one_margin else (1.0, k)
        assert np.abs(val - sign * ref[:, :, j]).max() < TOL, f"{name} column {k}"
        # additivity: attributions + expected value = the margin, exactly
        total = val.sum(axis=1) + expl.extras["expected_value"]
        assert np.abs(total - expl.extras["margin"]).max() < TOL
        # the margin read from the file is the native model's raw output (float32 thresholds/weights)
        assert np.abs(expl.extras["margin"] - sign * native[:, j]).max() < 1e-5, name
        # expected value: the mean native margin over the background, and shap's
        assert abs(expl.extras["expected_value"][0] - sign * native_bg[j]) < 1e-5
        if name != "xgb-multi":  # shap 0.51 offsets every class by class 0's intercept for multiclass XGBoost 3
            assert abs(expl.extras["expected_value"][0] - sign * ref_expected[j]) < TOL
    assert expl.extras["node_output_error"] < 1e-4


def test_default_selection_is_the_predicted_class_and_attributions_differ_per_class(tmp_path):
    est, path = _model_file(tmp_path, "lgb-multi")
    analyzer = TreeSHAP(onnxxai.load_runtime(path), BACKGROUND)
    expl = onnxxai.analyze(SAMPLES, analyzer)
    assert np.array_equal(expl.output_selection, est.predict(SAMPLES))
    per_class = [analyzer(SAMPLES, output_selection=k).val for k in range(3)]
    assert not np.allclose(per_class[0], per_class[1])
    # the three softmax margins' attributions of one sample differ, their sum over classes is what it is:
    # each class is its own game, so no cross-class identity is asserted beyond additivity above


def test_scaler_pipeline_attributes_to_input_columns(tmp_path):
    """StandardScaler -> trees: ONNX Scaler before the tree node; attributions per input column equal
    shap's on the scaled data (the scaler is per feature, so the games are the same)."""
    pipe = make_pipeline(StandardScaler(), GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0))
    shifted = X * np.arange(1, F + 1, dtype=np.float32) + 3
    pipe.fit(shifted, Y["reg"])
    model = to_onnx(pipe, shifted[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    assert [n.op_type for n in model.graph.node][:2] == ["Scaler", "TreeEnsembleRegressor"]
    path = tmp_path / "scaler.onnx"
    onnx.save(model, path)
    bg, xs = shifted[200:240], shifted[:12]
    expl = TreeSHAP(onnxxai.load_runtime(path), bg)(xs)
    scaler, trees = pipe[0], pipe[-1]
    explainer = shap.TreeExplainer(trees, data=scaler.transform(bg), feature_perturbation="interventional",
                                   model_output="raw")
    ref = explainer.shap_values(scaler.transform(xs), check_additivity=False)
    # the file computes the scaling in float32; shap gets the float64 scaling: thresholds may differ by
    # one ulp, so compare with a tolerance that still catches any misrouted leaf
    assert np.abs(expl.val - ref).max() < 1e-5
    assert np.abs(expl.val.sum(1) + expl.extras["expected_value"] - expl.extras["margin"]).max() < TOL
    assert np.abs(expl.extras["margin"] - pipe.predict(xs)).max() < 1e-4


def _with_column_selection(model: onnx.ModelProto, picks: list[int], width: int) -> onnx.ModelProto:
    """Prefix ``model`` (input X with len(picks) columns) with Gather(X_wide, picks, axis=1)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    old = graph.input[0].name
    graph.input[0].CopyFrom(helper.make_tensor_value_info("wide", onnx.TensorProto.FLOAT, [None, width]))
    graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(picks, dtype=np.int64), "picks"))
    graph.node.insert(0, helper.make_node("Gather", ["wide", "picks"], [old], axis=1, name="select"))
    if not any(o.domain in ("", "ai.onnx") for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid("", 15))
    return out


def test_column_selection_maps_attributions_to_the_selected_columns(tmp_path):
    est, path = _model_file(tmp_path, "xgb-reg")
    picks = [7, 2, 0, 5, 1, 3]  # tree feature j reads wide column picks[j]; columns 4 and 6 are unused
    wide_path = tmp_path / "wide.onnx"
    onnx.save(_with_column_selection(onnx.load(path), picks, 8), wide_path)
    wide = RNG.normal(size=(len(X), 8)).astype(np.float32)
    wide[:, picks] = X
    expl = TreeSHAP(onnxxai.load_runtime(wide_path), wide[200:240])(wide[:12])
    ref = shap.TreeExplainer(est, data=BACKGROUND.astype(np.float64), feature_perturbation="interventional",
                             model_output="raw").shap_values(SAMPLES.astype(np.float64), check_additivity=False)
    assert np.abs(expl.val[:, picks] - ref).max() < TOL
    assert np.all(expl.val[:, [4, 6]] == 0)


def _to_opset5(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite a one-target legacy TreeEnsembleRegressor (base value 0) as an opset-5 TreeEnsemble."""
    node = tree_node(model)
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    modes = {b"BRANCH_LEQ": 0, b"BRANCH_LT": 1, b"BRANCH_GTE": 2, b"BRANCH_GT": 3}
    key = list(zip(a["nodes_treeids"], a["nodes_nodeids"]))
    leaf_w = {(t, n): w for t, n, w in zip(a["target_treeids"], a["target_nodeids"], a["target_weights"])}
    branches = [i for i, m in enumerate(a["nodes_modes"]) if m != b"LEAF"]
    index = {key[i]: k for k, i in enumerate(branches)}
    leaves = [i for i, m in enumerate(a["nodes_modes"]) if m == b"LEAF"]
    leaf_index = {key[i]: k for k, i in enumerate(leaves)}
    true_ids, false_ids, true_leaf, false_leaf = [], [], [], []
    for i in branches:
        t = a["nodes_treeids"][i]
        for child, ids, flags in ((a["nodes_truenodeids"][i], true_ids, true_leaf),
                                  (a["nodes_falsenodeids"][i], false_ids, false_leaf)):
            is_leaf = (t, child) in leaf_index
            ids.append(leaf_index[(t, child)] if is_leaf else index[(t, child)])
            flags.append(int(is_leaf))
    roots = [index[(t, 0)] for t in sorted(set(a["nodes_treeids"]))]
    new = helper.make_node(
        "TreeEnsemble", [node.input[0]], [node.output[0]], domain="ai.onnx.ml", name="trees5",
        aggregate_function=1, post_transform=0, n_targets=1, tree_roots=roots,
        nodes_featureids=[a["nodes_featureids"][i] for i in branches],
        nodes_splits=onnx.numpy_helper.from_array(np.asarray([a["nodes_values"][i] for i in branches], np.float32)),
        nodes_modes=onnx.numpy_helper.from_array(np.asarray([modes[a["nodes_modes"][i]] for i in branches], np.uint8)),
        nodes_truenodeids=true_ids, nodes_falsenodeids=false_ids, nodes_trueleafs=true_leaf,
        nodes_falseleafs=false_leaf,
        nodes_missing_value_tracks_true=[a["nodes_missing_value_tracks_true"][i] for i in branches],
        leaf_targetids=[0] * len(leaves),
        leaf_weights=onnx.numpy_helper.from_array(np.asarray([leaf_w[key[i]] for i in leaves], np.float32)),
    )
    graph = helper.make_graph([new], "trees5", list(model.graph.input), list(model.graph.output))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)])


def test_opset5_tree_ensemble_reads_the_same_trees(tmp_path):
    est = RandomForestRegressor(n_estimators=5, max_depth=5, random_state=0).fit(X, Y["reg"])
    legacy = to_onnx(est, X[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    v5 = _to_opset5(legacy)
    onnx.checker.check_model(v5)
    path = tmp_path / "v5.onnx"
    onnx.save(v5, path)
    runtime = onnxxai.load_runtime(path)
    assert np.abs(runtime(SAMPLES).ravel() - est.predict(SAMPLES)).max() < 1e-5  # onnxruntime runs it
    expl = TreeSHAP(runtime, BACKGROUND)(SAMPLES)
    ref = shap.TreeExplainer(est, data=BACKGROUND.astype(np.float64), feature_perturbation="interventional",
                             model_output="raw").shap_values(SAMPLES.astype(np.float64), check_additivity=False)
    assert np.abs(expl.val - ref).max() < TOL
    assert read_tree_ensemble(tree_node(v5)).op_type == "TreeEnsemble"


def test_missing_values_follow_the_tracks_true_flags(tmp_path):
    """LightGBM sends NaN down the side it learned; the file's nodes_missing_value_tracks_true says so."""
    xm = X.copy()
    xm[RNG.random(xm.shape) < 0.15] = np.nan
    est = lightgbm.LGBMRegressor(n_estimators=10, num_leaves=8, min_child_samples=5, verbose=-1, n_jobs=1).fit(xm, Y["reg"])
    model = convert_lightgbm(est, initial_types=[("X", FloatTensorType([None, F]))], target_opset=15)
    ens = read_tree_ensemble(tree_node(model))
    assert ens.missing_true.any()
    out = tree_shap_values(model, xm[:12], xm[200:240])
    ref = shap.TreeExplainer(est, data=xm[200:240].astype(np.float64), feature_perturbation="interventional",
                             model_output="raw").shap_values(xm[:12].astype(np.float64), check_additivity=False)
    assert np.abs(out["phi"][:, :, 0] - ref).max() < TOL
    assert np.abs(out["margin"][:, 0] - est.predict(xm[:12], raw_score=True)).max() < 1e-5


def test_files_treeshap_cannot_explain_raise_named_errors(tmp_path):
    est, path = _model_file(tmp_path, "sk-gb-reg")
    model = onnx.load(path)
    # MIN over trees: per-tree Shapley values do not add up
    node = tree_node(model)
    node.attribute.append(helper.make_attribute("aggregate_function", "MIN"))
    with pytest.raises(AnalyzerError, match="aggregate_function MIN"):
        read_tree_ensemble(node)
    # a graph with no tree node
    plain = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["X"], ["Y"])], "g",
        [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [None, F])],
        [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, [None, F])]),
        opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(AnalyzerError, match="KernelSHAP"):
        TreeSHAP(onnxxai.load_runtime(plain), BACKGROUND)
    # a prefix that mixes columns (MatMul) cannot map tree features to input columns
    mixed = onnx.load(path)
    old = mixed.graph.input[0].name
    mixed.graph.initializer.append(onnx.numpy_helper.from_array(np.eye(F, dtype=np.float32)[::-1].copy(), "W"))
    mixed.graph.input[0].name = "raw"
    mixed.graph.node.insert(0, helper.make_node("MatMul", ["raw", "W"], [old], name="mix"))
    with pytest.raises(AnalyzerError, match="MatMul node 'mix'"):
        TreeSHAP(onnxxai.load_runtime(mixed), BACKGROUND)
    # ... but tree_shap_values explains the tree input's features there
    out = tree_shap_values(onnxxai.load_runtime(mixed), SAMPLES, BACKGROUND)
    assert np.allclose(out["tree_input"], SAMPLES[:, ::-1])
    assert np.abs(out["phi"].sum(1) + out["expected_value"] - out["margin"]).max() < TOL


def test_treeshap_module_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys; import onnxxai.blackbox.treeshap; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bitmask_and_matrix_paths_agree(tmp_path, monkeypatch):
    """Paths of at most 62 features use integer bit masks (numpy >= 2); the float matrix path is the
    fallback for deeper paths and older numpy: both give the same values."""
    from onnxxai.blackbox.treeshap import interventional_shap, prepare_background

    est, path = _model_file(tmp_path, "sk-rf-multi")
    ens = read_tree_ensemble(tree_node(onnx.load(path)))
    background = prepare_background(ens, BACKGROUND)
    fast = interventional_shap(ens, SAMPLES, background)[0]
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    slow = interventional_shap(ens, SAMPLES, background)[0]
    assert np.abs(fast - slow).max() < 1e-12 and np.abs(fast).max() > 1e-3


def test_method_table_builds_treeshap_from_background_rows(tmp_path):
    from onnxxai.errors import InputError
    from onnxxai.methods import MethodOptions, method

    est, path = _model_file(tmp_path, "xgb-bin")
    runtime = onnxxai.load_runtime(path)
    built = method("treeshap").build(runtime, MethodOptions(background=BACKGROUND))
    assert np.array_equal(built(SAMPLES, 1).val, TreeSHAP(runtime, BACKGROUND)(SAMPLES, 1).val)
    with pytest.raises(InputError, match="background"):
        method("treeshap").build(runtime, MethodOptions())
