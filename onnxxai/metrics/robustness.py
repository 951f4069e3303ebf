"""Robustness: does the explanation stay put when the input barely moves?

* :func:`max_sensitivity` (↓ better; Yeh et al. 2019, normalised as Quantus's MaxSensitivity): the
  largest ``‖Φ(x + δ) − Φ(x)‖₂ / ‖Φ(x)‖₂`` over ``samples=10`` uniform perturbations ``δ`` in
  ``[−radius, radius]`` per feature (default radius: 5% of each sample's value range), explained for
  the same output as the clean input. The explanations are recomputed by the analyzer (all
  perturbed copies in one analyze call).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxxai.errors import InputError
from onnxxai.explanation import Explanation
from onnxxai.metrics._common import as_numpy, inputs_of, random_state, targets_of
from onnxxai.metrics.result import MetricResult, mean_of

__all__ = ["max_sensitivity"]


def max_sensitivity(analyzer: Any, explanation: Explanation, *, samples: int = 10, radius: float | None = None,
                    seed: int = 0) -> MetricResult:
    """Max-sensitivity of ``explanation`` (made by ``analyzer``), see the module docstring. Draws: for each
    of ``samples`` rounds, ``RandomState(seed).uniform(-r, r, (B, F))`` (Quantus's order)."""
    if samples < 1:
        raise InputError(f"samples must be at least 1, got {samples}")
    x, target = inputs_of(explanation), targets_of(explanation)
    base = as_numpy(explanation.val).astype(np.float64).reshape(len(x), -1)
    axes = tuple(range(1, x.ndim))
    r = (0.05 * (x.max(axis=axes) - x.min(axis=axes))).astype(np.float64) if radius is None else np.full(len(x), radius)
    rng = random_state(seed)
    flat = x.reshape(len(x), -1)
    perturbed = np.stack([(flat + rng.uniform(-r[:, None], r[:, None], flat.shape)).astype(x.dtype)
                          for _ in range(samples)])  # (samples, B, F)
    moved = as_numpy(analyzer(perturbed.reshape(samples * len(x), *x.shape[1:]), np.tile(target, samples)).val)
    moved = moved.astype(np.float64).reshape(samples, len(x), -1)
    norm = np.linalg.norm(base, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.linalg.norm(moved - base[None], axis=2) / norm[None]
    value = np.nanmax(ratio, axis=0) if np.isfinite(ratio).any() else np.full(len(x), np.nan)
    return MetricResult(
        name="max_sensitivity", value=mean_of(value), higher_is_better=False, per_sample=value.tolist(),
        method=explanation.analyzer,
        params={"samples": samples, "radius": "5% of each sample's range" if radius is None else radius, "seed": seed},
        details={"mean_sensitivity": mean_of(np.nanmean(ratio, axis=0))},
    )
