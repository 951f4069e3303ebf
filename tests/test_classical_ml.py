"""Classical models as their exporters write them (skl2onnx, onnxmltools with LightGBM and XGBoost),
fitted on scikit-learn's shipped data: they load with parity against onnxruntime (ZipMap's maps
compared as the tensor they wrap), differentiable ones pass the gradient check and match an
independent gradient, tree ensembles refuse gradient methods with the documented error."""

from __future__ import annotations

import numpy as np
import pytest

import onnxxai
from onnxxai.diagnostics import gradient_flow
from onnxxai.testing import classical_data, export_classical

SMOOTH = ["logistic_regression", "svc_rbf", "pipeline", "mlp_regressor"]
TREES = ["random_forest_classifier", "gradient_boosting_regressor", "lgbm_classifier", "xgb_classifier"]


@pytest.fixture(scope="module")
def models() -> dict:
    return {name: export_classical(name) for name in SMOOTH + TREES}


def _load(models: dict, name: str) -> onnxxai.Model:
    x, _ = classical_data(name)
    if name == "pipeline":
        x = x.copy()
        x[:, 1] = np.round(x[:, 1])
    return onnxxai.load(models[name], probe_inputs={models[name].graph.input[0].name: x[:24]})


@pytest.mark.parametrize("name", SMOOTH)
def test_differentiable_models_pass_the_gradient_check(models: dict, name: str) -> None:
    model = _load(models, name)
    assert model.parity.ok, model.parity.summary()
    report = gradient_flow(model, models[name])
    assert report.ok, report.summary()


def test_logistic_regression_gradient_is_the_softmax_jacobian(models: dict) -> None:
    """The explained probability's gradient equals the closed form p_c (w_c - sum_k p_k w_k)."""
    import onnx

    model = _load(models, "logistic_regression")
    node = next(n for n in models["logistic_regression"].graph.node if n.op_type == "LinearClassifier")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    w = np.asarray(attrs["coefficients"], np.float64).reshape(3, -1)
    b = np.asarray(attrs["intercepts"], np.float64)
    x, _ = classical_data("logistic_regression")
    x = x[:5]
    expl = onnxxai.analyze(x, onnxxai.Gradient(model))
    c = np.asarray(expl.output_selection).reshape(-1)
    # skl2onnx's multinomial LogisticRegression: SOFTMAX post transform, then a Normalizer (a no-op on probabilities)
    z = x.astype(np.float64) @ w.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want = p[np.arange(5), c][:, None] * (w[c] - p @ w)
    np.testing.assert_allclose(np.asarray(expl.val), want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", TREES)
def test_tree_models_load_with_parity_and_refuse_gradients(models: dict, name: str) -> None:
    model = _load(models, name)
    assert model.parity.ok, model.parity.summary()
    with pytest.raises(onnxxai.NotDifferentiableError, match=r"TreeEnsemble(Classifier|Regressor) node .*piecewise constant.*KernelSHAP"):
        onnxxai.Gradient(model)
    with pytest.raises(onnxxai.NotDifferentiableError):
        gradient_flow(model, models[name])


def test_zipmap_output_is_explained_as_its_tensor(models: dict) -> None:
    """skl2onnx's default classifier output is a ZipMap: the loaded model returns the probability
    tensor it wraps, equal to onnxruntime's maps read in class order."""
    model = _load(models, "svc_rbf")
    x, _ = classical_data("svc_rbf")
    label, proba = model(x[:6])
    maps = onnxxai.load_runtime(models["svc_rbf"]).run({"X": x[:6]})[1]
    np.testing.assert_allclose(proba, [[m[k] for k in sorted(m)] for m in maps], rtol=1e-4, atol=1e-5)
    assert "output_probability" in model.parity.summary()
