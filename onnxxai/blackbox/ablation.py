"""Feature ablation and occlusion: the drop of the selected output when features are set to a baseline.

Both compute what Captum's ``FeatureAblation`` and ``Occlusion`` compute (same window placement,
same averaging of overlapping windows), on the original file through onnxruntime, all perturbed
rows of a batch in shared bounded chunks.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from onnxxai.blackbox.base import BlackBoxAnalyzer
from onnxxai.blackbox.masks import as_baseline, as_mask, sample_ids
from onnxxai.errors import AnalyzerError
from onnxxai.proto.layout import image_layout

__all__ = ["FeatureAblation", "Occlusion"]


class FeatureAblation(BlackBoxAnalyzer):
    """Each feature of ``feature_mask`` (see :mod:`onnxxai.blackbox.masks`; default: image grid,
    table columns, tokens) set to ``baseline`` in turn; every element gets f(x) − f(x with its
    feature ablated). One perturbed row per feature."""

    def __init__(self, model: Any, feature_mask: Any = None, baseline: Any = 0, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.feature_mask, self.baseline = feature_mask, baseline

    def parameters(self) -> dict[str, Any]:
        return {"baseline": _describe(self.baseline), "feature_mask": "default" if self.feature_mask is None else "given"}

    def attribute(self, x: np.ndarray, target: np.ndarray, output: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        mask = as_mask(self.feature_mask, x.shape, x.dtype)
        base = as_baseline(self.baseline, x)
        per_sample = [sample_ids(mask, b) for b in range(len(x))]
        ids = [i for i, _ in per_sample]
        keep = [~np.eye(m, dtype=bool) for _, m in per_sample]
        scores = self.coalition_scores(x, base, ids, keep, target)
        clean = output.reshape(len(x), -1)[np.arange(len(x)), target].astype(np.float64)
        val = np.empty(x.shape, dtype=np.float64)
        for b in range(len(x)):
            val[b] = np.broadcast_to((clean[b] - scores[b])[ids[b]], x.shape[1:])
        return val, {"n_features": [m for _, m in per_sample]}


class Occlusion(BlackBoxAnalyzer):
    """A ``window`` slid over each sample in ``strides`` steps, set to ``baseline``; every element gets
    the mean output drop of the windows covering it (Zeiler & Fergus 2014; Captum's placement: per
    axis ``ceil((size - window) / stride) + 1`` offsets, the last window clipped at the edge).

    ``window`` and ``strides``: one int per axis of a sample (as Captum's ``sliding_window_shapes``),
    or for a rank-4 image two ints (height, width) or one int, spanning all channels.
    """

    def __init__(self, model: Any, window: int | Sequence[int], strides: int | Sequence[int] | None = None,
                 baseline: Any = 0, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.window, self.strides, self.baseline = window, strides if strides is not None else window, baseline

    def parameters(self) -> dict[str, Any]:
        return {"window": _describe(self.window), "strides": _describe(self.strides), "baseline": _describe(self.baseline)}

    def _axes(self, value: int | Sequence[int], sample: tuple[int, ...], what: str) -> tuple[int, ...]:
        values = (value,) if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
        if len(values) == len(sample):
            return values
        layout = image_layout((1, *sample)) if len(sample) == 3 else None
        if layout is not None and len(values) in (1, 2):
            h, w = (values * 2)[:2]
            return (sample[0], h, w) if layout.channels_first else (h, w, sample[2])
        raise AnalyzerError(f"Occlusion {what} {value!r} does not fit a sample of shape {sample}: give one int per axis")

    def windows(self, sample: tuple[int, ...]) -> list[tuple[slice, ...]]:
        """The window positions over a sample of shape ``sample``, in row-major order of offsets."""
        window = self._axes(self.window, sample, "window")
        strides = self._axes(self.strides, sample, "strides")
        for w, s, n in zip(window, strides, sample):
            if not 1 <= w <= n or s < 1:
                raise AnalyzerError(f"Occlusion window {window} / strides {strides} do not fit a sample of shape {sample}")
            if s > w:
                raise AnalyzerError(f"Occlusion strides {strides} must not exceed the window {window} (uncovered elements)")
        offsets = [[k * s for k in range(-(-(n - w) // s) + 1)] for w, s, n in zip(window, strides, sample)]
        return [tuple(slice(o, min(o + w, n)) for o, w, n in zip(pos, window, sample)) for pos in itertools.product(*offsets)]

    def attribute(self, x: np.ndarray, target: np.ndarray, output: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        sample = tuple(x.shape[1:])
        windows = self.windows(sample)
        base = as_baseline(self.baseline, x)
        n = len(windows)

        def make(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
            idx = np.arange(start, stop)
            b_of, w_of = idx // n, idx % n
            rows = x[b_of].copy()
            for r, (b, w) in enumerate(zip(b_of, w_of)):
                sl = windows[w]
                rows[(r, *sl)] = base[(b, *sl)]
            return rows, b_of

        scores = self.evaluate(len(x) * n, make, target, sample).reshape(len(x), n)
        clean = output.reshape(len(x), -1)[np.arange(len(x)), target].astype(np.float64)
        drop = clean[:, None] - scores
        total = np.zeros(x.shape, dtype=np.float64)
        count = np.zeros(sample, dtype=np.float64)
        for w, sl in enumerate(windows):
            total[(slice(None), *sl)] += drop[:, w].reshape((-1,) + (1,) * len(sample))
            count[sl] += 1
        return total / count, {"n_windows": n}


def _describe(value: Any) -> Any:
    """A JSON-friendly description of a parameter (arrays by shape)."""
    if isinstance(value, (int, float, str, type(None))):
        return value
    if isinstance(value, (tuple, list)) and all(isinstance(v, (int, float)) for v in value):
        return list(value)
    return f"array{tuple(np.shape(value))}"
