"""KernelSHAP and LIME: a weighted linear model fitted to the output on random feature coalitions.

Sampling and solving are separate (as in shap's KernelExplainer), so each can be tested alone:
:func:`shapley_coalitions` / :func:`bernoulli_coalitions` draw the coalition matrix (True: the
feature keeps its value, False: it takes the baseline); :func:`constrained_shap` and
:func:`weighted_lasso` fit it. Both methods also take a ``coalitions`` matrix instead of sampling.

* KernelSHAP (Lundberg & Lee 2017) samples as Captum's ``KernelShap``: the full and the empty
  coalition first, then coalition sizes k with probability ∝ (M − 1) / (k (M − k)) and a uniform
  subset of that size, each row of weight 1 (the Shapley kernel is in the sampling). The regression
  is constrained as in shap: the intercept is f(baseline) and the attributions sum to
  f(x) − f(baseline) exactly (Captum approximates the constraint with weights of 10⁶).
* LIME (Ribeiro et al. 2016) as Captum's ``Lime`` defaults: coalitions of independent fair coin
  flips, weights exp(−d² / (2 w²)) of the cosine distance d between the input and the perturbed
  input, and a weighted Lasso (sklearn's objective, ``alpha``) with intercept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxxai.blackbox.base import BlackBoxAnalyzer
from onnxxai.blackbox.masks import as_baseline, as_mask, sample_ids
from onnxxai.errors import AnalyzerError

__all__ = ["KernelSHAP", "LIME", "shapley_coalitions", "bernoulli_coalitions", "constrained_shap", "weighted_lasso"]


def shapley_coalitions(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, m)`` booleans: the full and the empty coalition, then ``n - 2`` coalitions whose size k
    is drawn with probability ∝ (m − 1) / (k (m − k)), k = 1..m−1, and whose members are uniform."""
    if n < 2:
        raise AnalyzerError(f"KernelSHAP needs at least 2 coalitions (the full and the empty one), got n={n}")
    out = np.zeros((n, m), dtype=bool)
    out[0] = True
    if m < 2:
        return out[:2]
    sizes = np.arange(1, m)
    probs = 1.0 / (sizes * (m - sizes))
    ks = rng.choice(sizes, size=n - 2, p=probs / probs.sum())
    order = np.argsort(rng.random((n - 2, m)), axis=1)
    out[2:] = np.argsort(order, axis=1) < ks[:, None]  # the first k of a random permutation
    return out


def bernoulli_coalitions(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, m)`` independent fair coin flips (LIME's sampling)."""
    return rng.random((n, m)) < 0.5


def constrained_shap(z: np.ndarray, y: np.ndarray, fx: float, f0: float) -> np.ndarray:
    """Shapley values from coalitions ``z`` (n, M) and outputs ``y``: least squares with unit weights
    on the coalitions that are neither full nor empty, intercept ``f0`` and sum ``fx - f0`` exact."""
    z = z.astype(np.float64)
    m = z.shape[1]
    total = fx - f0
    inner = (z.sum(1) > 0) & (z.sum(1) < m)
    if m == 1:
        return np.array([total])
    zi, yi = z[inner], y[inner] - f0
    if not len(zi):
        return np.full(m, total / m)
    design = zi[:, :-1] - zi[:, -1:]
    rhs = yi - zi[:, -1] * total
    phi, *_ = np.linalg.lstsq(design, rhs, rcond=None)
    return np.append(phi, total - phi.sum())


def weighted_lasso(z: np.ndarray, y: np.ndarray, weights: np.ndarray, alpha: float, *, tol: float = 1e-12,
                   max_sweeps: int = 100_000) -> tuple[np.ndarray, float]:
    """``(coef, intercept)`` minimising ½ Σ w̃ᵢ (yᵢ − b − zᵢ·β)² + α‖β‖₁ with w̃ the weights scaled to
    sum 1 (scikit-learn's ``Lasso`` with ``sample_weight``), by coordinate descent to ``tol``;
    ``alpha`` 0 is weighted least squares."""
    z = z.astype(np.float64)
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    zbar, ybar = w @ z, w @ y
    zc, yc = z - zbar, y - ybar
    gram = zc.T @ (w[:, None] * zc)
    corr = zc.T @ (w * yc)
    m = z.shape[1]
    if alpha == 0:
        sw = np.sqrt(w)[:, None]
        beta = np.linalg.lstsq(sw * zc, sw[:, 0] * yc, rcond=None)[0]
        return beta, float(ybar - zbar @ beta)
    beta = np.zeros(m)
    diag = np.diag(gram).copy()
    for _ in range(max_sweeps):
        largest = 0.0
        for j in range(m):
            if diag[j] <= 0:
                continue
            rho = corr[j] - gram[j] @ beta + diag[j] * beta[j]
            new = np.sign(rho) * max(abs(rho) - alpha, 0.0) / diag[j]
            largest = max(largest, abs(new - beta[j]))
            beta[j] = new
        if largest <= tol * max(1.0, float(np.abs(beta).max())):
            break
    return beta, float(ybar - zbar @ beta)


class _Surrogate(BlackBoxAnalyzer):
    def __init__(self, model: Any, n: int | None, feature_mask: Any, baseline: Any, seed: int,
                 coalitions: Any, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if n is not None and n < 1:
            raise AnalyzerError(f"{self.name} needs n >= 1 samples, got {n}")
        self.n, self.feature_mask, self.baseline, self.seed = n, feature_mask, baseline, int(seed)
        self.coalitions = None if coalitions is None else np.asarray(coalitions).astype(bool)

    def _coalitions(self, m: int, rng: np.random.Generator) -> np.ndarray:
        if self.coalitions is not None:
            if self.coalitions.ndim != 2 or self.coalitions.shape[1] != m:
                raise AnalyzerError(f"coalitions of shape {self.coalitions.shape} do not fit {m} features")
            return self.coalitions
        return self.sample(m, rng)

    def sample(self, m: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


class KernelSHAP(_Surrogate):
    """Kernel SHAP (see the module docstring) over the features of ``feature_mask`` (default: image
    grid, table columns, tokens), switched off to ``baseline``. ``n`` coalitions per sample, the full
    and the empty one included (default 2·M + 2048, as shap's); ``seed`` fixes them (each sample of a
    batch draws from its own stream ``(seed, b)``). Attributions sum to f(x) − f(baseline)."""

    def __init__(self, model: Any, n: int | None = None, feature_mask: Any = None, baseline: Any = 0, seed: int = 0,
                 *, coalitions: Any = None, **kwargs: Any) -> None:
        super().__init__(model, n, feature_mask, baseline, seed, coalitions, **kwargs)

    def parameters(self) -> dict[str, Any]:
        return {"n": self.n, "seed": self.seed, "baseline": self.baseline if np.ndim(self.baseline) == 0 else "array",
                "feature_mask": "default" if self.feature_mask is None else "given"}

    def sample(self, m: int, rng: np.random.Generator) -> np.ndarray:
        return shapley_coalitions(self.n or 2 * m + 2048, m, rng)

    def attribute(self, x: np.ndarray, target: np.ndarray, output: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        mask = as_mask(self.feature_mask, x.shape, x.dtype)
        base = as_baseline(self.baseline, x)
        ids, keep = [], []
        for b in range(len(x)):
            i, m = sample_ids(mask, b)
            z = self._coalitions(m, np.random.default_rng([self.seed, b]))
            if not (~z).all(axis=1).any():  # the empty coalition gives f(baseline)
                z = np.vstack([z, np.zeros((1, m), dtype=bool)])
            ids.append(i)
            keep.append(z)
        scores = self.coalition_scores(x, base, ids, keep, target)
        clean = output.reshape(len(x), -1)[np.arange(len(x)), target].astype(np.float64)
        val = np.empty(x.shape, dtype=np.float64)
        expected, gaps = [], []
        for b in range(len(x)):
            f0 = float(scores[b][np.flatnonzero((~keep[b]).all(axis=1))[0]])
            phi = constrained_shap(keep[b], scores[b], float(clean[b]), f0)
            val[b] = np.broadcast_to(phi[ids[b]], x.shape[1:])
            expected.append(f0)
            gaps.append(float(phi.sum() - (clean[b] - f0)))
        return val, {"expected_value": np.asarray(expected), "efficiency_gap": np.asarray(gaps),
                     "n_features": [int(k.shape[1]) for k in keep]}


class LIME(_Surrogate):
    """LIME (see the module docstring) over the features of ``feature_mask``, switched off to
    ``baseline``: ``n`` coalitions per sample (default 1000), weights exp(−d² / (2·kernel_width²))
    of the cosine distance between input and perturbed input, weighted Lasso of strength ``alpha``
    (0: least squares). ``val`` holds each feature's coefficient; ``extras["intercept"]`` the
    intercepts."""

    def __init__(self, model: Any, n: int | None = None, kernel_width: float = 1.0, feature_mask: Any = None,
                 baseline: Any = 0, seed: int = 0, *, alpha: float = 0.01, coalitions: Any = None, **kwargs: Any) -> None:
        super().__init__(model, n, feature_mask, baseline, seed, coalitions, **kwargs)
        if kernel_width <= 0 or alpha < 0:
            raise AnalyzerError(f"LIME needs kernel_width > 0 and alpha >= 0, got {kernel_width}, {alpha}")
        self.kernel_width, self.alpha = float(kernel_width), float(alpha)

    def parameters(self) -> dict[str, Any]:
        return {"n": self.n, "seed": self.seed, "kernel_width": self.kernel_width, "alpha": self.alpha,
                "feature_mask": "default" if self.feature_mask is None else "given"}

    def sample(self, m: int, rng: np.random.Generator) -> np.ndarray:
        return bernoulli_coalitions(self.n or 1000, m, rng)

    def attribute(self, x: np.ndarray, target: np.ndarray, output: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        mask = as_mask(self.feature_mask, x.shape, x.dtype)
        base = as_baseline(self.baseline, x)
        ids, keep = [], []
        for b in range(len(x)):
            i, m = sample_ids(mask, b)
            ids.append(i)
            keep.append(self._coalitions(m, np.random.default_rng([self.seed, b])))
        flat = x.reshape(len(x), -1).astype(np.float64)
        norms = np.maximum(np.linalg.norm(flat, axis=1), 1e-8)
        similarity = [np.empty(len(k)) for k in keep]

        def on_rows(rows: np.ndarray, sample: np.ndarray, index: np.ndarray) -> None:
            r = rows.reshape(len(rows), -1).astype(np.float64)
            cos = np.einsum("ij,ij->i", r, flat[sample]) / (np.maximum(np.linalg.norm(r, axis=1), 1e-8) * norms[sample])
            for b in np.unique(sample):
                sel = sample == b
                similarity[b][index[sel]] = np.exp(-((1 - cos[sel]) ** 2) / (2 * self.kernel_width ** 2))

        scores = self.coalition_scores(x, base, ids, keep, target, on_rows)
        val = np.empty(x.shape, dtype=np.float64)
        intercepts = []
        for b in range(len(x)):
            coef, intercept = weighted_lasso(keep[b], scores[b], similarity[b], self.alpha)
            val[b] = np.broadcast_to(coef[ids[b]], x.shape[1:])
            intercepts.append(intercept)
        return val, {"intercept": np.asarray(intercepts), "n_features": [int(k.shape[1]) for k in keep]}
