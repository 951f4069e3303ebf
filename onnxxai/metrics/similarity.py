"""Similarity of two explanations of the same samples, per sample (randomisation tests, deployment shift).

* :func:`spearman`: Spearman rank correlation of the flattened attributions (ties get their average
  rank, as ``scipy.stats.spearmanr``); 1 identical order, 0 unrelated, −1 reversed.
* :func:`ssim`: structural similarity (Wang et al. 2004) of the two heatmaps, computed here as
  scikit-image's ``structural_similarity`` computes it with its defaults (7×7 uniform window, sample
  covariance, K1=0.01, K2=0.03, the mean over the window positions away from the border), with
  ``data_range`` the spread of the two maps together (Quantus's choice). An image attribution
  ``(B, C, H, W)`` is compared as its channel sum ``(H, W)``; anything else as a flat vector. Each map
  is first scaled by its own largest absolute value (``normalize=True``), since SSIM depends on scale.
* :func:`top_k_iou`: intersection over union of the ``fraction`` (10%) most relevant features.

A constant map (e.g. the all-zero gradient of a quantized file whose rounding steps are flat at that
input) has no ranking: against a map that has one, its Spearman and top-k IoU are 0 (nothing shared,
where scipy's NaN would drop the sample from a mean and make the rest look alike); two constant maps
are identical (1). :func:`constant_maps` says which samples are constant, so reports can count them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxxai.errors import InputError
from onnxxai.metrics._common import as_numpy

__all__ = ["spearman", "ssim", "top_k_iou", "heatmaps", "constant_maps", "SIMILARITIES"]

#: names of the similarities randomisation tests and deployment shift compute
SIMILARITIES = ("spearman", "ssim", "top_k_iou")


def heatmaps(attribution: Any) -> np.ndarray:
    """The maps compared: ``(B, H, W)`` channel sums for image attributions ``(B, C, H, W)``, ``(B, F)``
    flat vectors for anything else, float64."""
    a = as_numpy(attribution).astype(np.float64)
    if a.ndim == 4:
        return a.sum(axis=1)
    return a.reshape(a.shape[0], -1)


def constant_maps(attribution: Any, *, raw: bool = False) -> np.ndarray:
    """Per sample: whether its map (:func:`heatmaps`; ``raw``: every element as given) has one value only."""
    m = as_numpy(attribution) if raw else heatmaps(attribution)
    m = m.reshape(len(m), -1)
    return (m == m[:, :1]).all(axis=1)


def _constant_rule(values: np.ndarray, a: Any, b: Any, raw: bool = False) -> np.ndarray:
    """``values`` with the module docstring's rule for constant maps: 0 when one of the two is constant, 1 when both."""
    ca, cb = constant_maps(a, raw=raw), constant_maps(b, raw=raw)
    return np.where(ca & cb, 1.0, np.where(ca | cb, 0.0, values))


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks (1..F) of each row, ties sharing their mean rank."""
    n, f = a.shape
    order = np.argsort(a, axis=1, kind="mergesort")
    sorted_a = np.take_along_axis(a, order, axis=1)
    ranks = np.empty((n, f))
    for i in range(n):
        starts = np.concatenate([[True], sorted_a[i, 1:] != sorted_a[i, :-1]])
        group = np.cumsum(starts) - 1
        first = np.flatnonzero(starts)
        last = np.append(first[1:], f) - 1
        ranks[i, order[i]] = ((first + last) / 2 + 1)[group]
    return ranks


def spearman(a: Any, b: Any) -> np.ndarray:
    """Per-sample Spearman rank correlation of ``a`` and ``b`` (same shape, batch first); a constant map
    scores 0 against a non-constant one and 1 against another constant one (see the module docstring)."""
    a, b = as_numpy(a), as_numpy(b)
    if a.shape != b.shape:
        raise InputError(f"cannot compare attributions of shapes {a.shape} and {b.shape}")
    ra = _ranks(a.reshape(a.shape[0], -1).astype(np.float64))
    rb = _ranks(b.reshape(b.shape[0], -1).astype(np.float64))
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(axis=1) / np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    return _constant_rule(rho, a, b, raw=True)


def _max_normalized(m: np.ndarray) -> np.ndarray:
    peak = np.abs(m).reshape(m.shape[0], -1).max(axis=1).reshape(-1, *([1] * (m.ndim - 1)))
    return np.divide(m, peak, out=np.zeros_like(m), where=peak > 0)


def _ssim_one(x: np.ndarray, y: np.ndarray, win: int, data_range: float) -> float:
    from scipy.ndimage import uniform_filter

    if data_range == 0:
        return 1.0  # two identical constant maps
    n = win ** x.ndim
    cov_norm = n / (n - 1)
    ux, uy = uniform_filter(x, size=win), uniform_filter(y, size=win)
    uxx, uyy, uxy = uniform_filter(x * x, size=win), uniform_filter(y * y, size=win), uniform_filter(x * y, size=win)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return float(s[tuple(slice(pad, d - pad) for d in s.shape)].mean())


def ssim(a: Any, b: Any, *, normalize: bool = True, win_size: int = 7) -> np.ndarray:
    """Per-sample SSIM of the heatmaps of ``a`` and ``b`` (see the module docstring); 1 identical."""
    ma, mb = heatmaps(a), heatmaps(b)
    if ma.shape != mb.shape:
        raise InputError(f"cannot compare attributions of shapes {as_numpy(a).shape} and {as_numpy(b).shape}")
    if normalize:
        ma, mb = _max_normalized(ma), _max_normalized(mb)
    win = min(win_size, *ma.shape[1:])
    win -= 1 - win % 2  # odd
    if win < 3:
        raise InputError(f"SSIM needs maps of at least 3 values per axis, got {ma.shape[1:]}")
    out = np.empty(len(ma))
    for i, (x, y) in enumerate(zip(ma, mb)):
        both = np.concatenate([x.ravel(), y.ravel()])
        out[i] = _ssim_one(x, y, win, float(both.max() - both.min()))
    return out


def top_k_iou(a: Any, b: Any, fraction: float = 0.1) -> np.ndarray:
    """Per-sample intersection over union of the ``fraction`` most relevant features of ``a`` and ``b``
    (features as in :func:`heatmaps`; ties broken by position; a constant map: see the module docstring)."""
    ma, mb = heatmaps(a), heatmaps(b)
    ma, mb = ma.reshape(len(ma), -1), mb.reshape(len(mb), -1)
    if ma.shape != mb.shape:
        raise InputError(f"cannot compare attributions of shapes {as_numpy(a).shape} and {as_numpy(b).shape}")
    k = max(1, int(round(fraction * ma.shape[1])))
    top_a = np.argsort(-ma, axis=1, kind="stable")[:, :k]
    top_b = np.argsort(-mb, axis=1, kind="stable")[:, :k]
    out = np.empty(len(ma))
    for i in range(len(ma)):
        inter = len(np.intersect1d(top_a[i], top_b[i]))
        out[i] = inter / (2 * k - inter)
    return _constant_rule(out, a, b)


def compare(a: Any, b: Any, names: tuple[str, ...] = SIMILARITIES) -> dict[str, np.ndarray]:
    """The per-sample similarities ``names`` (of :data:`SIMILARITIES`) of ``a`` and ``b``."""
    functions = {"spearman": spearman, "ssim": ssim, "top_k_iou": top_k_iou}
    unknown = [n for n in names if n not in functions]
    if unknown:
        raise InputError(f"unknown similarity {unknown}; choose from {SIMILARITIES}")
    return {n: functions[n](a, b) for n in names}
