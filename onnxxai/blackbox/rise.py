"""RISE (Petsiuk, Das & Saenko 2018): saliency as the output-weighted mean of random smooth masks.

Masks as in the paper's code: a random binary ``cell``×``cell`` grid (each cell kept with
probability ``p``), bilinearly upsampled to ``(cell + 1)·ceil(H / cell)`` pixels per side
(scikit-image ``resize(order=1, mode="reflect", anti_aliasing=False)``, computed here with numpy),
then cropped to H×W at a random shift in ``[0, ceil(H / cell))``. Saliency of pixel u:
``sum_i f(x ⊙ M_i) · M_i(u) / (n · p)``. The masks depend only on ``seed`` (the same for every
sample of a batch) and are built chunk by chunk, so memory stays bounded for any ``n``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxxai.blackbox.base import BlackBoxAnalyzer
from onnxxai.blackbox.masks import as_baseline
from onnxxai.errors import AnalyzerError, InputError
from onnxxai.proto.layout import image_layout

__all__ = ["RISE", "linear_upsample_matrix"]


def linear_upsample_matrix(size: int, out: int) -> np.ndarray:
    """``(out, size)`` weights of linear interpolation from ``size`` to ``out`` samples with
    half-pixel centres and mirror-reflected edges (what scikit-image's ``resize(order=1,
    mode="reflect")`` does along one axis)."""
    coords = (np.arange(out) + 0.5) * (size / out) - 0.5
    lo = np.floor(coords).astype(np.int64)
    frac = coords - lo
    weights = np.zeros((out, size))

    def mirror(i: np.ndarray) -> np.ndarray:
        if size == 1:
            return np.zeros_like(i)
        period = 2 * (size - 1)
        i = np.mod(i, period)
        return np.where(i >= size, period - i, i)

    np.add.at(weights, (np.arange(out), mirror(lo)), 1 - frac)
    np.add.at(weights, (np.arange(out), mirror(lo + 1)), frac)
    return weights


class RISE(BlackBoxAnalyzer):
    """Randomized Input Sampling for Explanation on a rank-4 image input (NCHW or NHWC).

    ``n`` masks of a ``cell``×``cell`` grid with keep probability ``p``; ``seed`` fixes them.
    Masked pixels take ``baseline`` (0: the paper's ``x ⊙ M``). ``val`` repeats the pixel saliency
    over the channels.
    """

    heatmap = "cam"

    def __init__(self, model: Any, n: int = 4000, cell: int = 7, p: float = 0.5, seed: int = 0, baseline: Any = 0,
                 *, layout: str = "auto", **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if n < 1 or cell < 1 or not 0 < p <= 1:
            raise AnalyzerError(f"RISE needs n >= 1, cell >= 1 and 0 < p <= 1; got n={n}, cell={cell}, p={p}")
        self.n, self.cell, self.p, self.seed, self.baseline, self.layout = int(n), int(cell), float(p), int(seed), baseline, layout

    def parameters(self) -> dict[str, Any]:
        return {"n": self.n, "cell": self.cell, "p": self.p, "seed": self.seed}

    def plan(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For ``seed`` and an image of ``height``×``width``: the binary grids ``(n, cell, cell)``,
        the crop shifts ``(n, 2)`` in ``[0, ceil(H / cell)) × [0, ceil(W / cell))`` and the two
        upsampling matrices."""
        rng = np.random.default_rng(self.seed)
        grids = rng.random((self.n, self.cell, self.cell)) < self.p
        ch, cw = -(-height // self.cell), -(-width // self.cell)
        shifts = rng.integers(0, [ch, cw], size=(self.n, 2))
        return (grids.astype(np.float64), shifts, linear_upsample_matrix(self.cell, (self.cell + 1) * ch),
                linear_upsample_matrix(self.cell, (self.cell + 1) * cw))

    def masks(self, height: int, width: int, index: np.ndarray | None = None, plan: tuple | None = None,
              dtype: Any = np.float64) -> np.ndarray:
        """Masks number ``index`` (default all) for an image of ``height``×``width``: ``(k, H, W)``."""
        grids, shifts, ah, aw = plan if plan is not None else self.plan(height, width)
        index = np.arange(self.n) if index is None else np.asarray(index)
        rows = ah.astype(dtype)[shifts[index, 0, None] + np.arange(height)]  # (k, H, cell)
        cols = aw.astype(dtype)[shifts[index, 1, None] + np.arange(width)]  # (k, W, cell)
        return np.matmul(np.matmul(rows, grids[index].astype(dtype)), cols.transpose(0, 2, 1))

    def attribute(self, x: np.ndarray, target: np.ndarray, output: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        found = image_layout(x.shape, self.layout)
        if found is None or found.size is None:
            raise InputError(f"RISE needs a rank-4 image input (NCHW or NHWC), got shape {x.shape}")
        if x.dtype.kind != "f":
            raise InputError(f"RISE needs a float image input, got {x.dtype}")
        h, w = found.size
        base = as_baseline(self.baseline, x)
        zero_base = not base.any()
        diff = x if zero_base else x - base
        plan = self.plan(h, w)
        expand = (lambda m: m[:, None]) if found.channels_first else (lambda m: m[..., None])
        saliency = np.zeros((len(x), h, w))
        step = self.chunk(x.shape[1:])
        for b in range(len(x)):  # rows x[b] ⊙ M_i + baseline ⊙ (1 - M_i), one chunk of masks at a time
            for start in range(0, self.n, step):
                index = np.arange(start, min(self.n, start + step))
                masks = self.masks(h, w, index, plan, dtype=x.dtype)
                rows = diff[b] * expand(masks)
                if not zero_base:
                    rows += base[b]
                sample = np.full(len(index), b)
                scores = self.outputs(rows, sample)[:, target[b]]
                saliency[b] += (scores.astype(masks.dtype) @ masks.reshape(len(index), -1)).reshape(h, w)
        saliency /= self.n * self.p
        return np.broadcast_to(expand(saliency), x.shape), {"masks": self.n}
