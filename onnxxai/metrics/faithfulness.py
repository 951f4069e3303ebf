"""Faithfulness: does removing what an explanation calls relevant change the model's output?

Every model evaluation here runs the ORIGINAL file through onnxruntime (:class:`~onnxxai.runtime.RuntimeModel`),
the perturbed copies of a sample batched into as few session calls as the file allows. Features are
pixels for image inputs ``(B, C, H, W)`` (all channels of a pixel together; the relevance of a pixel
is the attribution summed over channels) and elements for any other input.

Metrics (direction; defaults):

* :func:`deletion` (↓) and :func:`insertion` (↑): Petsiuk et al. 2018 (RISE). Features most relevant
  first; deletion replaces them by ``baseline`` (0.0), insertion puts them back into a blurred copy
  (Gaussian σ=5 px, radius 5: RISE's 11×11 kernel, edges replicated). ``steps=32`` points on the curve
  from 0% to 100% of the features (31 equal increments), one batched call per curve; the value is the
  area under the curve over the fraction of features (0..1), per sample, averaged.
* :func:`road` (MoRF ↓ / LeRF ↑): Rong et al. 2022, noisy linear imputation of the removed pixels
  (the 8-neighbour system of the authors' code, noise 0.01); the curve is the accuracy (argmax equals
  the explained class) at each percentage (10..90); the value is its mean.
* :func:`faithfulness_correlation` (↑): Bhatt et al. 2020; Pearson correlation, over ``runs=100``
  random subsets of ``subset_size`` features (10% of them) replaced by ``baseline``, between the
  subset's summed attribution and the drop of the output score.
* :func:`infidelity` (↓): Yeh et al. 2019, ``E[(Iᵀa − (f(x) − f(x − I)))²]`` over ``samples=64``
  Gaussian perturbations ``I`` (std 10% of each sample's value range), normalized as Captum's
  ``normalize=True`` (the attribution scaled by the β that minimises it, so scaling attributions does
  not change it). ``perturbation="patches"`` is Quantus's scheme instead (square patches set to the
  baseline one after another).

Scores (``scores=``): ``"softmax"`` probability of the explained class, ``"raw"`` output value, or
``"auto"`` (default): raw when the file's outputs already are probabilities, else softmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from onnxxai.errors import InputError
from onnxxai.explanation import Explanation
from onnxxai.metrics._common import (
    Scorer, apply_mask, as_numpy, features_of, groups, inputs_of, random_state, rank_of, relevance, targets_of,
)
from onnxxai.metrics.result import Curve, MetricResult, mean_of

__all__ = ["deletion", "insertion", "road", "faithfulness_correlation", "infidelity", "substrate", "blur",
           "noisy_linear_imputation", "DEFAULT_STEPS", "ROAD_PERCENTAGES"]

DEFAULT_STEPS = 32
ROAD_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
#: RISE's insertion blur: Gaussian σ (pixels) and kernel radius
BLUR_SIGMA, BLUR_RADIUS = 5.0, 5


def blur(x: np.ndarray, sigma: float = BLUR_SIGMA, radius: int = BLUR_RADIUS) -> np.ndarray:
    """A Gaussian-blurred copy of images ``x`` ``(B, C, H, W)`` over the two spatial axes (edges replicated)."""
    from scipy.ndimage import gaussian_filter

    if x.ndim != 4:
        raise InputError(f"blur works on images (B, C, H, W); got inputs of shape {x.shape}")
    return gaussian_filter(x.astype(np.float64), sigma=(0, 0, sigma, sigma), truncate=radius / sigma,
                           mode="nearest").astype(x.dtype)


def substrate(spec: Any, x: np.ndarray) -> np.ndarray:
    """What removed features are replaced by, as an array of ``x``'s shape: a number (that constant),
    ``"black"`` (each sample's minimum, Quantus's name), ``"mean"`` (each sample's mean), ``"blur"``
    (:func:`blur`), or an array broadcastable to ``x``."""
    axes = tuple(range(1, x.ndim))
    if isinstance(spec, str):
        if spec == "black":
            value = x.min(axis=axes, keepdims=True)
        elif spec == "mean":
            value = x.mean(axis=axes, keepdims=True)
        elif spec == "blur":
            return blur(x)
        else:
            raise InputError(f"unknown baseline {spec!r}; use a number, an array, 'black', 'mean' or 'blur'")
        return np.broadcast_to(value, x.shape).astype(x.dtype)
    try:
        return np.broadcast_to(np.asarray(as_numpy(spec), dtype=x.dtype), x.shape)
    except ValueError as exc:
        raise InputError(f"baseline of shape {np.shape(spec)} does not broadcast to inputs of shape {x.shape}") from exc


def _describe(spec: Any) -> Any:
    return spec if isinstance(spec, (str, int, float)) else f"array{tuple(np.shape(spec))}"


def _trapezoid(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return ((y[:, 1:] + y[:, :-1]) * np.diff(x) / 2).sum(axis=1)


def _flip_curve(model: Any, expl: Explanation, *, steps: int, fill: Any, delete: bool, scores: str,
                output_name: str | None) -> MetricResult:
    if steps < 2:
        raise InputError(f"steps must be at least 2 (the curve's two ends), got {steps}")
    x, target = inputs_of(expl), targets_of(expl)
    scorer = Scorer(model, scores=scores, output_name=output_name, clean_output=expl.output)
    calls = scorer.runtime.calls
    rel = relevance(expl.val, x)
    rank = rank_of(np.argsort(-rel, axis=1))  # most relevant first (numpy's default sort, as Quantus)
    _, n_features = features_of(x.shape[1:])
    counts = np.round(np.linspace(0, n_features, steps)).astype(np.int64)
    fill_array = substrate(fill, x)
    curves = np.empty((len(x), steps))
    for g in groups(len(x), steps, scorer.runtime):
        n = g.stop - g.start
        taken = rank[g][:, None, :] < counts[None, :, None]  # (n, steps, F): the first counts[k] features
        mask = (taken if delete else ~taken).reshape(n * steps, -1)
        xs = np.repeat(x[g], steps, axis=0)
        perturbed = apply_mask(xs, mask, np.repeat(fill_array[g], steps, axis=0))
        curves[g] = scorer(perturbed, np.repeat(target[g], steps)).reshape(n, steps)
    fractions = counts / n_features
    auc = _trapezoid(curves, fractions)
    name = "deletion" if delete else "insertion"
    return MetricResult(
        name=f"{name}_auc", value=mean_of(auc), higher_is_better=not delete, per_sample=auc.tolist(),
        method=expl.analyzer,
        curve=Curve(x=fractions.tolist(), y=curves.mean(axis=0).tolist(), per_sample=curves.tolist(),
                    x_label=f"fraction of features {'deleted' if delete else 'inserted'}",
                    y_label=f"{scorer.scores} score of the explained output"),
        params={"steps": steps, ("baseline" if delete else "start"): _describe(fill), **scorer.describe()},
        details={"features": n_features, "forward_passes": int(len(x) * steps),
                 "onnxruntime_calls": scorer.runtime.calls - calls},
    )


def deletion(model: Any, explanation: Explanation, *, steps: int = DEFAULT_STEPS, baseline: Any = 0.0,
             scores: str = "auto", output_name: str | None = None) -> MetricResult:
    """Deletion curve and AUC (↓ better; Petsiuk et al. 2018): the explained output's score as the most
    relevant features are replaced by ``baseline`` (see :func:`substrate`), at ``steps`` points from none
    to all of them. ``model``: a loaded Model (its original file is evaluated) or a RuntimeModel."""
    return _flip_curve(model, explanation, steps=steps, fill=baseline, delete=True, scores=scores,
                       output_name=output_name)


def insertion(model: Any, explanation: Explanation, *, steps: int = DEFAULT_STEPS, start: Any = None,
              scores: str = "auto", output_name: str | None = None) -> MetricResult:
    """Insertion curve and AUC (↑ better; Petsiuk et al. 2018): the score as the most relevant features
    are put back into ``start`` (None: a blurred copy for images, 0.0 for other inputs)."""
    if start is None:
        start = "blur" if as_numpy(explanation.input).ndim == 4 else 0.0
    return _flip_curve(model, explanation, steps=steps, fill=start, delete=False, scores=scores,
                       output_name=output_name)


# -- ROAD ------------------------------------------------------------------------------------------
#: neighbour offsets (row, column) and weights of the linear imputation (Rong et al.'s code)
_NEIGHBOURS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
               ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


def noisy_linear_imputation(image: np.ndarray, pixels: np.ndarray, noise: float,
                            rng: np.random.RandomState) -> np.ndarray:
    """``image`` ``(C, H, W)`` with the flat pixel indices ``pixels`` replaced by the solution of the
    linear system that makes each removed pixel the weighted mean of its 8 neighbours (edges: fewer
    neighbours), plus Gaussian noise of std ``noise`` drawn from ``rng`` (shape ``(C, k)``)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    c, h, w = image.shape
    flat = image.reshape(c, -1)
    pixels = np.asarray(pixels, dtype=np.int64)
    k = len(pixels)
    out = flat.copy()
    if k == 0:
        return out.reshape(image.shape)
    known = np.ones(h * w, dtype=bool)
    known[pixels] = False
    variable = np.zeros(h * w, dtype=np.int64)
    variable[pixels] = np.arange(k)
    rhs = np.zeros((k, c))
    weight_sum = np.ones(k)
    rows, cols, vals = [], [], []
    for (dr, dc), weight in _NEIGHBOURS:
        r, col = pixels // w + dr, pixels % w + dc
        valid = (r >= 0) & (col >= 0) & (r < h) & (col < w)
        ids = np.flatnonzero(valid)
        neighbour = pixels[valid] + dr * w + dc
        is_known = known[neighbour]
        rhs[ids[is_known]] -= weight * flat[:, neighbour[is_known]].T
        rows.append(ids[~is_known])
        cols.append(variable[neighbour[~is_known]])
        vals.append(np.full(int((~is_known).sum()), weight))
        weight_sum[~valid] -= weight
    rows.append(np.arange(k))
    cols.append(np.arange(k))
    vals.append(-weight_sum)
    system = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(k, k)).tocsc()
    solution = np.asarray(spsolve(system, rhs)).reshape(k, c).T
    out[:, pixels] = solution + noise * rng.randn(c, k)
    return out.reshape(image.shape)


def road(model: Any, explanation: Explanation, *, percentages: Sequence[float] = ROAD_PERCENTAGES,
         order: str = "morf", noise: float = 0.01, seed: int = 0, scores: str = "auto",
         output_name: str | None = None) -> MetricResult:
    """ROAD (Rong et al. 2022): accuracy (argmax == explained class) after removing ``percentages`` of
    the pixels by noisy linear imputation, most relevant first (``order="morf"``, ↓ better) or least
    relevant first (``"lerf"``, ↑ better). Noise draws: ``RandomState(seed).randn``, percentage by
    percentage, sample by sample (Quantus's order). Value: mean accuracy over the percentages."""
    if order not in ("morf", "lerf"):
        raise InputError(f"order must be 'morf' or 'lerf', got {order!r}")
    x, target = inputs_of(explanation), targets_of(explanation)
    if x.ndim != 4:
        raise InputError(f"ROAD imputes pixels of images (B, C, H, W); got inputs of shape {x.shape}")
    scorer = Scorer(model, scores=scores, output_name=output_name, clean_output=explanation.output)
    calls = scorer.runtime.calls
    ranking = np.argsort(-relevance(explanation.val, x), axis=1)
    if order == "lerf":
        ranking = ranking[:, ::-1]
    _, n_features = features_of(x.shape[1:])
    rng = random_state(seed)
    accuracy = np.empty((len(x), len(percentages)))
    probability = np.empty_like(accuracy)
    for j, p in enumerate(percentages):
        k = int(n_features * p / 100)
        perturbed = np.stack([noisy_linear_imputation(x[b].astype(np.float64), ranking[b, :k], noise, rng)
                              for b in range(len(x))]).astype(x.dtype)
        out = scorer.outputs(perturbed)
        accuracy[:, j] = out.argmax(axis=1) == target
        probability[:, j] = out[np.arange(len(x)), target]
    per_sample = accuracy.mean(axis=1)
    return MetricResult(
        name=f"road_{order}", value=mean_of(per_sample), higher_is_better=order == "lerf",
        per_sample=per_sample.tolist(), method=explanation.analyzer,
        curve=Curve(x=list(percentages), y=accuracy.mean(axis=0).tolist(), per_sample=accuracy.tolist(),
                    x_label=f"% of pixels imputed ({'most' if order == 'morf' else 'least'} relevant first)",
                    y_label="accuracy"),
        params={"percentages": list(percentages), "order": order, "noise": noise, "seed": seed, **scorer.describe()},
        details={"score_curve": probability.mean(axis=0).tolist(), "features": n_features,
                 "onnxruntime_calls": scorer.runtime.calls - calls},
    )


# -- faithfulness correlation --------------------------------------------------------------------
def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))


def faithfulness_correlation(model: Any, explanation: Explanation, *, runs: int = 100, subset_size: int | None = None,
                             baseline: Any = 0.0, seed: int = 0, subsets: Any = None, scores: str = "auto",
                             output_name: str | None = None) -> MetricResult:
    """Faithfulness correlation (↑ better; Bhatt et al. 2020): per sample, the Pearson correlation over
    ``runs`` random feature subsets (``subset_size`` features, default 10% of them, replaced by
    ``baseline``) between the subset's summed attribution and the drop of the explained score.
    Subsets: ``RandomState(seed).choice(F, subset_size, replace=False)``, run by run, sample by sample,
    or ``subsets`` given as feature indices ``(B, runs, subset_size)`` (then ``runs``, ``subset_size``
    and ``seed`` are read from it)."""
    x, target = inputs_of(explanation), targets_of(explanation)
    scorer = Scorer(model, scores=scores, output_name=output_name, clean_output=explanation.output)
    calls = scorer.runtime.calls
    rel = relevance(explanation.val, x)
    _, n_features = features_of(x.shape[1:])
    if subsets is not None:
        subsets = np.asarray(subsets, dtype=np.int64)
        if subsets.ndim != 3 or subsets.shape[0] != len(x) or subsets.min() < 0 or subsets.max() >= n_features:
            raise InputError(f"subsets must be feature indices of shape (samples, runs, size) below {n_features}")
        runs, size, seed = subsets.shape[1], subsets.shape[2], "given"
    else:
        size = subset_size if subset_size is not None else max(1, round(0.1 * n_features))
        if not 0 < size < n_features:
            raise InputError(f"subset_size must be between 1 and {n_features - 1} features, got {size}")
        rng = random_state(seed)
        subsets = np.stack([np.stack([rng.choice(n_features, size, replace=False) for _ in range(len(x))])
                            for _ in range(runs)], axis=1)  # (B, runs, size)
    fill = substrate(baseline, x)
    clean = scorer(x, target)
    drops = np.empty((len(x), runs))
    for g in groups(len(x), runs, scorer.runtime):
        n = g.stop - g.start
        mask = np.zeros((n * runs, n_features), dtype=bool)
        np.put_along_axis(mask, subsets[g].reshape(n * runs, size), True, axis=1)
        perturbed = apply_mask(np.repeat(x[g], runs, axis=0), mask, np.repeat(fill[g], runs, axis=0))
        drops[g] = clean[g, None] - scorer(perturbed, np.repeat(target[g], runs)).reshape(n, runs)
    sums = np.take_along_axis(rel[:, None, :], subsets, axis=2).sum(axis=2)
    corr = _pearson(sums, drops)
    return MetricResult(
        name="faithfulness_correlation", value=mean_of(corr), higher_is_better=True, per_sample=corr.tolist(),
        method=explanation.analyzer,
        params={"runs": runs, "subset_size": size, "baseline": _describe(baseline), "seed": seed,
                "correlation": "pearson", **scorer.describe()},
        details={"features": n_features, "onnxruntime_calls": scorer.runtime.calls - calls},
    )


# -- infidelity ----------------------------------------------------------------------------------
def _full_attribution(attribution: Any, x: np.ndarray) -> np.ndarray:
    a = as_numpy(attribution).astype(np.float64)
    if x.ndim == 4 and a.ndim == 3:
        a = a[:, None]
    try:
        return np.broadcast_to(a, x.shape)
    except ValueError as exc:
        raise InputError(f"attribution of shape {a.shape} does not fit inputs of shape {x.shape}") from exc


def _patch_perturbations(x: np.ndarray, patch_size: int, fill: np.ndarray) -> np.ndarray:
    """(B, P, ...) copies of ``x``: square patches (row-major order, all channels) set to ``fill`` one
    after another, cumulatively (Quantus's Infidelity scheme)."""
    if x.ndim != 4:
        raise InputError(f"patch perturbations need images (B, C, H, W); got {x.shape}")
    h, w = x.shape[2:]
    out, current = [], x.copy()
    for top in range(0, h, patch_size):
        for left in range(0, w, patch_size):
            current[:, :, top:top + patch_size, left:left + patch_size] = fill[:, :, top:top + patch_size, left:left + patch_size]
            out.append(current.copy())
    return np.stack(out, axis=1)


def infidelity(model: Any, explanation: Explanation, *, perturbation: str = "noise", samples: int = 64,
               std: float | None = None, patch_size: int = 4, baseline: Any = "black", normalize: bool = True,
               seed: int = 0, scores: str = "auto", output_name: str | None = None) -> MetricResult:
    """Infidelity (↓ better; Yeh et al. 2019): mean over perturbations ``I`` of ``(β·Iᵀa − (f(x) − f(x − I)))²``.

    ``perturbation="noise"``: ``samples`` Gaussian ``I`` with std ``std`` (default 10% of each sample's
    value range), drawn by ``RandomState(seed).standard_normal``, sample by sample, ``(samples, *shape)`` each.
    ``"patches"``: Quantus's scheme (square ``patch_size`` patches set to ``baseline`` one after another;
    ``I = x − x̃``). ``normalize=True`` (default) is Captum's: β = Σ Iᵀa·Δf / Σ (Iᵀa)², the attribution's
    scale that minimises the error, so infidelity does not change when attributions are scaled;
    ``False``: β = 1 (Quantus's).
    """
    if perturbation not in ("noise", "patches"):
        raise InputError(f"perturbation must be 'noise' or 'patches', got {perturbation!r}")
    x, target = inputs_of(explanation), targets_of(explanation)
    scorer = Scorer(model, scores=scores, output_name=output_name, clean_output=explanation.output)
    calls = scorer.runtime.calls
    a = _full_attribution(explanation.val, x)
    clean = scorer(x, target)
    params: dict[str, Any] = {"perturbation": perturbation, "normalize": normalize}
    if perturbation == "noise":
        axes = tuple(range(1, x.ndim))
        scale = (x.max(axis=axes) - x.min(axis=axes)).astype(np.float64) * 0.1 if std is None else np.full(len(x), std)
        scale = np.where(scale > 0, scale, 1.0)
        rng = random_state(seed)
        count = samples
        params.update(samples=samples, std="10% of each sample's range" if std is None else std, seed=seed)
    else:
        fill = substrate(baseline, x)
        count = len(range(0, x.shape[2], patch_size)) * len(range(0, x.shape[3], patch_size)) if x.ndim == 4 else 0
        params.update(patch_size=patch_size, baseline=_describe(baseline))
    drops = np.empty((len(x), count))
    dots = np.empty((len(x), count))
    for g in groups(len(x), count, scorer.runtime):
        n = g.stop - g.start
        if perturbation == "noise":  # drawn sample by sample: (samples, *input shape) each
            noise = np.stack([rng.standard_normal((samples, *x.shape[1:])) * scale[b] for b in range(g.start, g.stop)])
            perturbed = (x[g, None].astype(np.float64) - noise).astype(x.dtype)
        else:
            perturbed = _patch_perturbations(x[g], patch_size, fill[g])
        flat = perturbed.reshape(n * count, *x.shape[1:])
        drops[g] = clean[g, None] - scorer(flat, np.repeat(target[g], count)).reshape(n, count)
        shift = x[g, None].astype(np.float64) - perturbed.astype(np.float64)  # I, exactly as evaluated
        dots[g] = (shift * a[g, None]).reshape(n, count, -1).sum(axis=2)
    if normalize:
        denominator = (dots * dots).sum(axis=1)
        beta = np.divide((dots * drops).sum(axis=1), denominator, out=np.zeros(len(x)), where=denominator > 0)
    else:
        beta = np.ones(len(x))
    value = ((beta[:, None] * dots - drops) ** 2).mean(axis=1)
    return MetricResult(
        name="infidelity", value=mean_of(value), higher_is_better=False, per_sample=value.tolist(),
        method=explanation.analyzer, params={**params, **scorer.describe()},
        details={"beta": beta.tolist(), "perturbations": count, "onnxruntime_calls": scorer.runtime.calls - calls},
    )
