"""ai.onnx.ml ops one node at a time against onnxruntime: linear models, SVMs (every kernel, with
and without probabilities), the classic tree ensembles (every branch mode, missing-value tracks,
base values, post transforms, binary cases), Scaler, Normalizer, Imputer, OneHotEncoder,
FeatureVectorizer, LabelEncoder; float64 gradchecks of the differentiable ones; and the refusal of
gradient analyzers on piecewise-constant graphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto

import onnxxai
from onnxxai.convert.ml import LinearClassifier, LinearRegressor, Normalizer, Scaler, SVMClassifier, SVMRegressor
from tests.onnx_cases import assert_matches, gradcheck, graph_model, one_node, typed_outputs, value_info

RNG = np.random.default_rng(0)
ML = "ai.onnx.ml"


def ml_node(op: str, x: np.ndarray, attrs: dict, outputs: int = 1, output_types=None) -> "onnx.ModelProto":  # noqa: F821
    return one_node(op, {"X": x}, outputs, opset=17, attrs=attrs, domain=ML, domain_opset=3 if "TreeEnsemble" in op else 1,
                    output_type=output_types)


X = RNG.standard_normal((16, 4)).astype(np.float32)
TRANSFORMS = ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO", "PROBIT"]


# -------------------------------------------------------------------------------------------------- linear
@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("classes", [2, 3])
def test_linear_classifier(transform: str, classes: int) -> None:
    rows = 1 if classes <= 2 else classes
    if transform == "PROBIT" and classes == 2:
        pytest.skip("onnxruntime leaves half the scores unset (the converter refuses it)")
    labels = [0, 1] if classes == 2 else list(range(10, 10 + max(classes, 1))) if classes > 2 else [7]
    attrs = {"coefficients": (RNG.standard_normal(rows * 4) * 0.3).tolist(), "intercepts": (RNG.standard_normal(rows) * 0.1).tolist(),
             "classlabels_ints": labels, "post_transform": transform}
    x = X if transform != "PROBIT" else np.abs(X) * 0.02 + 0.3  # probit needs scores in (0, 1)
    assert_matches(ml_node("LinearClassifier", x, attrs, 2, [TensorProto.INT64, TensorProto.FLOAT]), {"X": x}, rtol=1e-4, atol=1e-5)


def test_linear_classifier_string_labels_come_out_as_indices() -> None:
    attrs = {"coefficients": RNG.standard_normal(12).tolist(), "intercepts": [0.0, 0.1, -0.1], "classlabels_strings": ["a", "b", "c"]}
    model = typed_outputs(ml_node("LinearClassifier", X, attrs, 2), [np.zeros(16, object), np.zeros((16, 3), np.float32)])
    loaded = onnxxai.load(model, probe_inputs={"X": X})
    assert loaded.parity.ok and "string tensor" in loaded.parity.summary()
    label, scores = loaded(X)
    assert np.array_equal(np.array(["a", "b", "c"])[label], onnxxai.load_runtime(model).run({"X": X})[0])


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("targets", [1, 3])
def test_linear_regressor(transform: str, targets: int) -> None:
    attrs = {"coefficients": (RNG.standard_normal(targets * 4) * 0.1).tolist(), "intercepts": [0.5] * targets, "targets": targets,
             "post_transform": transform}
    assert_matches(ml_node("LinearRegressor", X, attrs), {"X": X}, rtol=1e-4, atol=1e-5)


def test_linear_gradcheck() -> None:
    w, b = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    gradcheck(lambda x: LinearClassifier(w, b, torch.arange(3), "SOFTMAX")(x)[1], (5, 4), seed=0)
    gradcheck(lambda x: LinearRegressor(w, b, "LOGISTIC")(x), (5, 4), seed=1)


# -------------------------------------------------------------------------------------------------- SVM
KERNELS = {"LINEAR": [0.0, 0.0, 0.0], "POLY": [0.3, 0.5, 2.0], "RBF": [0.4, 0.0, 0.0], "SIGMOID": [0.2, 0.1, 0.0]}


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_svm_regressor(kernel: str) -> None:
    attrs = {"kernel_type": kernel, "kernel_params": KERNELS[kernel], "n_supports": 5,
             "support_vectors": RNG.standard_normal(20).tolist(), "coefficients": RNG.standard_normal(5).tolist(), "rho": [0.3]}
    assert_matches(ml_node("SVMRegressor", X, attrs), {"X": X}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("probabilities", [False, True])
@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("classes", [2, 3])
def test_svm_classifier(kernel: str, classes: int, probabilities: bool) -> None:
    per_class = [2, 3, 2][:classes]
    n = sum(per_class)
    attrs = {"kernel_type": kernel, "kernel_params": KERNELS[kernel], "vectors_per_class": per_class,
             "support_vectors": RNG.standard_normal(n * 4).tolist(), "coefficients": RNG.standard_normal((classes - 1) * n).tolist(),
             "rho": (RNG.standard_normal(classes * (classes - 1) // 2) * 0.1).tolist(), "classlabels_ints": list(range(classes))}
    if probabilities:
        pairs = classes * (classes - 1) // 2
        attrs.update(prob_a=(-RNG.uniform(0.5, 2, pairs)).tolist(), prob_b=(RNG.standard_normal(pairs) * 0.1).tolist())
    assert_matches(ml_node("SVMClassifier", X, attrs, 2, [TensorProto.INT64, TensorProto.FLOAT]), {"X": X}, rtol=1e-4, atol=2e-5)


def test_svm_gradcheck() -> None:
    vectors = torch.randn(6, 4, dtype=torch.float64)
    for kernel in (("RBF", 0.4, 0.0, 0.0), ("POLY", 0.3, 0.5, 2.0), ("SIGMOID", 0.2, 0.1, 0.0)):
        regressor = SVMRegressor(vectors, torch.randn(6, dtype=torch.float64), 0.1, kernel, False, "NONE")
        gradcheck(regressor, (3, 4), seed=0)
    decision = SVMClassifier(vectors, [2, 2, 2], torch.randn(2, 6, dtype=torch.float64), torch.randn(3, dtype=torch.float64) * 0.1,
                             torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64), torch.arange(3),
                             ("RBF", 0.4, 0.0, 0.0), "NONE")
    gradcheck(lambda x: decision(x)[1], (3, 4), seed=1)


def test_svm_probability_gradient_matches_finite_differences() -> None:
    """Pairwise coupling stops per sample when converged: the gradient is that of the iterations run,
    which matches central differences wherever the iteration count does not change."""
    gen = torch.Generator().manual_seed(2)
    vectors = torch.randn(6, 4, dtype=torch.float64, generator=gen)
    module = SVMClassifier(vectors, [2, 2, 2], torch.randn(2, 6, dtype=torch.float64, generator=gen), torch.zeros(3, dtype=torch.float64),
                           -torch.ones(3, dtype=torch.float64) * 2, torch.zeros(3, dtype=torch.float64), torch.arange(3),
                           ("RBF", 0.4, 0.0, 0.0), "NONE")
    x = torch.randn(1, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    module(x)[1][0, 0].backward()
    h, e = 1e-6, torch.eye(4, dtype=torch.float64)
    with torch.no_grad():
        numeric = torch.stack([(module(x + h * e[i])[1][0, 0] - module(x - h * e[i])[1][0, 0]) / (2 * h) for i in range(4)])
    torch.testing.assert_close(x.grad[0], numeric, rtol=1e-3, atol=1e-6)


# -------------------------------------------------------------------------------------------------- trees
def _forest(prefix: str, targets: int, modes: list[str], missing: list[int] | None, one_class: int | None = None) -> dict:
    """Two trees on 4 features: tree 0 has two splits (modes[0], modes[1]), tree 1 one (modes[2])."""
    attrs = {
        "nodes_treeids": [0, 0, 0, 0, 0, 1, 1, 1], "nodes_nodeids": [0, 1, 2, 3, 4, 0, 1, 2],
        "nodes_featureids": [0, 1, 0, 0, 0, 2, 0, 0], "nodes_values": [0.1, -0.3, 0, 0, 0, 0.5, 0, 0],
        "nodes_modes": [modes[0], modes[1], "LEAF", "LEAF", "LEAF", modes[2], "LEAF", "LEAF"],
        "nodes_truenodeids": [1, 3, 0, 0, 0, 1, 0, 0], "nodes_falsenodeids": [2, 4, 0, 0, 0, 2, 0, 0],
    }
    if missing is not None:
        attrs["nodes_missing_value_tracks_true"] = missing
    leaves = [(0, 2), (0, 3), (0, 4), (1, 1), (1, 2)]
    rows = []
    for t, n in leaves:
        for target in ([one_class] if one_class is not None else range(targets)):
            rows.append((t, n, target, float(RNG.uniform(-1, 1))))
    attrs.update({f"{prefix}_treeids": [r[0] for r in rows], f"{prefix}_nodeids": [r[1] for r in rows],
                  f"{prefix}_ids": [r[2] for r in rows], f"{prefix}_weights": [r[3] for r in rows]})
    return attrs


XT = X.copy()
XT[:3, 0] = np.nan
XT[3:5, 2] = 0.5  # on the split value: LEQ/LT and GTE/GT differ, EQ/NEQ fire
XT[5, 0] = 0.1
MODE_SETS = [["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE"], ["BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"], ["BRANCH_GTE", "BRANCH_LEQ", "BRANCH_EQ"]]


@pytest.mark.parametrize("aggregate", ["SUM", "AVERAGE", "MIN", "MAX"])
@pytest.mark.parametrize("modes", MODE_SETS)
@pytest.mark.parametrize("targets", [1, 2])
def test_tree_ensemble_regressor(aggregate: str, modes: list[str], targets: int) -> None:
    attrs = {**_forest("target", targets, modes, [1, 0, 0, 0, 0, 1, 0, 0]), "n_targets": targets, "aggregate_function": aggregate,
             "base_values": [0.25] * targets}
    assert_matches(ml_node("TreeEnsembleRegressor", XT, attrs), {"X": XT}, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("transform", TRANSFORMS[:4])
@pytest.mark.parametrize("targets", [1, 3])
def test_tree_ensemble_regressor_post_transform(transform: str, targets: int) -> None:
    attrs = {**_forest("target", targets, MODE_SETS[0], None), "n_targets": targets, "post_transform": transform}
    assert_matches(ml_node("TreeEnsembleRegressor", XT, attrs), {"X": XT}, rtol=1e-5, atol=1e-6)


CLASSIFIER_CASES = [  # classes, one_class (leaves write one class only), base_values, post_transform
    (3, None, None, "NONE"), (3, None, [0.1, -0.2, 0.3], "SOFTMAX"), (3, None, None, "LOGISTIC"), (3, None, None, "SOFTMAX_ZERO"),
    (2, None, None, "NONE"), (2, None, [0.2, 0.2], "LOGISTIC"), (2, 1, None, "NONE"), (2, 1, None, "LOGISTIC"),
    (2, 1, [0.3], "LOGISTIC"), (2, 1, [0.3, 0.3], "NONE"), (2, 0, [0.1], "NONE"),
]


@pytest.mark.parametrize(("classes", "one_class", "base", "transform"), CLASSIFIER_CASES)
def test_tree_ensemble_classifier(classes: int, one_class: int | None, base: list | None, transform: str) -> None:
    attrs = {**_forest("class", classes, MODE_SETS[1], [0, 0, 0, 0, 0, 1, 0, 0], one_class), "post_transform": transform,
             "classlabels_int64s": list(range(5, 5 + classes))}
    if base is not None:
        attrs["base_values"] = base
    model = ml_node("TreeEnsembleClassifier", XT, attrs, 2, [TensorProto.INT64, TensorProto.FLOAT])
    assert_matches(model, {"X": XT}, rtol=1e-5, atol=1e-6)


def test_tree_ensemble_gradient_refused() -> None:
    attrs = {**_forest("class", 3, MODE_SETS[0], None), "classlabels_int64s": [0, 1, 2]}
    model = typed_outputs(ml_node("TreeEnsembleClassifier", X, attrs, 2), [np.zeros(16, np.int64), np.zeros((16, 3), np.float32)])
    loaded = onnxxai.load(model)
    for make in (onnxxai.Gradient, onnxxai.IntegratedGradients, onnxxai.GradCAM, onnxxai.LRP):
        with pytest.raises(onnxxai.NotDifferentiableError, match="TreeEnsembleClassifier node 'the_treeensembleclassifier'.*KernelSHAP"):
            make(loaded)


# -------------------------------------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("scale", [[2.0], [0.5, 1.0, 2.0, -1.0]])
def test_scaler(scale: list) -> None:
    assert_matches(ml_node("Scaler", X, {"offset": [0.1] * len(scale), "scale": scale}), {"X": X})


@pytest.mark.parametrize("norm", ["MAX", "L1", "L2"])
def test_normalizer(norm: str) -> None:
    x = X.copy()
    x[0] = 0  # a zero row stays zero
    assert_matches(ml_node("Normalizer", x, {"norm": norm}), {"X": x})


def test_scaler_normalizer_gradcheck() -> None:
    gradcheck(lambda x: Scaler(torch.tensor([0.1], dtype=torch.float64), torch.tensor([2.0, 1, 3, 4], dtype=torch.float64))(x), (3, 4), seed=0)
    for norm in ("MAX", "L1", "L2"):
        gradcheck(lambda x, n=norm: Normalizer(n)(x), (3, 4), seed=1)


@pytest.mark.parametrize("replaced", [float("nan"), 0.0])
def test_imputer(replaced: float) -> None:
    x = X.copy()
    x[::3, 1] = replaced
    assert_matches(ml_node("Imputer", x, {"imputed_value_floats": [1.0, 2.0, 3.0, 4.0], "replaced_value_float": replaced}), {"X": x})


def test_one_hot_encoder() -> None:
    x = RNG.integers(0, 5, (6, 3)).astype(np.int64)
    assert_matches(ml_node("OneHotEncoder", x, {"cats_int64s": [0, 2, 4, 7], "zeros": 1}), {"X": x})


def test_feature_vectorizer() -> None:
    a, b = X[:, :3], X[:, 1:]
    model = graph_model([__import__("onnx").helper.make_node("FeatureVectorizer", ["A", "B"], ["Y"], domain=ML, inputdimensions=[2, 4])],
                        [value_info("A", TensorProto.FLOAT, a.shape), value_info("B", TensorProto.FLOAT, b.shape)], [value_info("Y")],
                        opset=17, domains={ML: 1})
    assert_matches(model, {"A": a, "B": b})


@pytest.mark.parametrize(("keys", "values", "x"), [
    ({"keys_int64s": [1, 3, 5]}, {"values_floats": [0.5, 1.5, 2.5]}, np.array([[1, 2], [5, 3]], np.int64)),
    ({"keys_floats": [0.5, 1.5]}, {"values_int64s": [7, 9]}, np.array([0.5, 2.0, 1.5], np.float32)),
])
def test_label_encoder(keys: dict, values: dict, x: np.ndarray) -> None:
    model = one_node("LabelEncoder", {"X": x}, opset=17, attrs={**keys, **values}, domain=ML, domain_opset=2)
    assert_matches(model, {"X": x})
