"""Feature masks and baselines: which input elements are switched off together, and to what.

A feature mask is an integer array whose equal values form one feature (an image cell, a superpixel,
a group of table columns, a token). It has the input's rank (batch axis of 1 or the batch size),
or the rank of one sample (no batch axis), or, for a rank-4 image input, the rank 2 of the image
grid ``(H, W)`` (every channel of a pixel together); each axis either matches the input or is 1.
Builders: :func:`grid_mask` and :func:`slic_mask` (images), :func:`column_mask` (tables: columns and
groups of columns), and :func:`default_mask` (what a method uses when given none: a grid of about
8×8 cells for an image, else one feature per element: every column of a table, every token).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from onnxxai.errors import AnalyzerError, InputError
from onnxxai.proto.layout import image_layout

__all__ = ["grid_mask", "slic_mask", "column_mask", "default_mask", "as_mask", "sample_ids", "as_baseline"]

#: cells per side of the default image grid
DEFAULT_GRID = 8


def _image(shape: Sequence[int], layout: str = "auto"):
    found = image_layout(tuple(shape), layout) if len(shape) == 4 else None
    if found is None or found.size is None:
        return None
    return found


def _spatial(mask_hw: np.ndarray, shape: Sequence[int], layout: str = "auto") -> np.ndarray:
    """An ``(H, W)`` or ``(B, H, W)`` grid mask placed in the axes of a rank-4 image batch of ``shape``."""
    found = _image(shape, layout)
    if found is None:
        raise InputError(f"an (H, W) mask needs a rank-4 image input, got shape {tuple(shape)}")
    m = mask_hw if mask_hw.ndim == 3 else mask_hw[None]
    return m[:, None] if found.channels_first else m[..., None]


def grid_mask(shape: Sequence[int], cell: int | tuple[int, int] | None = None, *, layout: str = "auto") -> np.ndarray:
    """A grid of ``cell``-pixel squares (default: about 8×8 cells) for a rank-4 image batch of
    ``shape``: shape ``(1, 1, H, W)`` (NCHW) or ``(1, H, W, 1)`` (NHWC), ids row by row."""
    found = _image(shape, layout)
    if found is None:
        raise InputError(f"grid_mask needs a rank-4 image input with static height and width, got {tuple(shape)}")
    h, w = found.size  # type: ignore[misc]
    if cell is None:
        cell = (max(1, -(-h // DEFAULT_GRID)), max(1, -(-w // DEFAULT_GRID)))
    ch, cw = (cell, cell) if isinstance(cell, int) else cell
    if ch < 1 or cw < 1:
        raise AnalyzerError(f"grid cells must be at least 1 pixel, got {cell}")
    rows, cols = np.arange(h) // ch, np.arange(w) // cw
    ids = rows[:, None] * (cols.max() + 1) + cols[None, :]
    return _spatial(ids.astype(np.int64), shape, found.layout)


def slic_mask(x: Any, n_segments: int = 50, *, compactness: float = 10.0, sigma: float = 1.0, layout: str = "auto",
              seed: int = 0) -> np.ndarray:
    """SLIC superpixels (scikit-image) of each image of a rank-4 batch ``x``: shape ``(B, 1, H, W)``
    (NCHW) or ``(B, H, W, 1)`` (NHWC). Each image is scaled to [0, 1] per channel before segmenting."""
    try:
        from skimage.segmentation import slic
    except ImportError as exc:  # pragma: no cover - scikit-image is in the test extra
        raise AnalyzerError("slic_mask needs scikit-image: pip install scikit-image") from exc
    x = np.asarray(x)
    found = _image(x.shape, layout)
    if found is None:
        raise InputError(f"slic_mask needs a rank-4 image batch with static height and width, got {x.shape}")
    images = np.moveaxis(x, 1, -1) if found.channels_first else x
    out = []
    for image in images.astype(np.float64):
        lo, hi = image.min(axis=(0, 1)), image.max(axis=(0, 1))
        scaled = (image - lo) / np.where(hi > lo, hi - lo, 1.0)
        seg = slic(scaled, n_segments=n_segments, compactness=compactness, sigma=sigma, start_label=0,
                   channel_axis=-1, convert2lab=scaled.shape[-1] == 3)
        out.append(np.unique(seg, return_inverse=True)[1].reshape(seg.shape))
    return _spatial(np.stack(out).astype(np.int64), x.shape, found.layout)


def column_mask(n_columns: int, groups: Sequence[Sequence[int | str]] = (), columns: Sequence[str] | None = None) -> np.ndarray:
    """A ``(n_columns,)`` mask for a table: each group (column indices, or names from ``columns``)
    is one feature, every other column its own; ids follow the first column of each feature."""
    owner = np.full(n_columns, -1, dtype=np.int64)
    for g, group in enumerate(groups):
        for col in group:
            if isinstance(col, str):
                if columns is None or col not in columns:
                    raise InputError(f"column_mask: unknown column {col!r}; columns are {list(columns or [])}")
                col = list(columns).index(col)
            if not 0 <= int(col) < n_columns:
                raise InputError(f"column_mask: column {col} is out of range for {n_columns} columns")
            if owner[int(col)] >= 0:
                raise InputError(f"column_mask: column {col} is in two groups")
            owner[int(col)] = n_columns + g
    free = owner < 0
    owner[free] = np.flatnonzero(free)
    first: dict[int, int] = {}
    return np.array([first.setdefault(int(o), len(first)) for o in owner], dtype=np.int64)


def default_mask(shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
    """The mask a method uses when none is given: :func:`grid_mask` for a float rank-4 image batch,
    else one feature per element of a sample (table columns, tokens)."""
    if np.dtype(dtype).kind == "f" and _image(shape) is not None and min(_image(shape).size) >= 2 * DEFAULT_GRID:  # type: ignore[union-attr]
        return grid_mask(shape)
    return np.arange(int(np.prod(shape[1:])), dtype=np.int64).reshape((1, *shape[1:]))


def as_mask(mask: Any, shape: Sequence[int], dtype: np.dtype) -> np.ndarray:
    """``mask`` (None: :func:`default_mask`) as an int64 array of the input's rank whose axes match
    ``shape`` or are 1, batch axis 1 or the batch size (see the module docstring)."""
    shape = tuple(shape)
    if mask is None:
        return default_mask(shape, dtype)
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    m = np.asarray(mask)
    if m.dtype.kind not in "iub":
        raise AnalyzerError(f"a feature mask must hold integer feature ids, got {m.dtype}")
    m = m.astype(np.int64)
    if m.ndim == 2 and len(shape) == 4 and _image(shape) is not None:
        m = _spatial(m, shape)
    elif m.ndim == len(shape) - 1:
        m = m[None]
    if m.ndim != len(shape) or any(a not in (1, b) for a, b in zip(m.shape, shape)):
        raise AnalyzerError(f"feature mask of shape {np.shape(mask)} does not fit an input of shape {shape}: "
                            "give the input's shape (batch axis 1 or the batch), one sample's shape, or (H, W) for an image")
    if m.size and m.min() < 0:
        raise AnalyzerError("feature mask ids must be non-negative")
    return m


def sample_ids(mask: np.ndarray, b: int) -> tuple[np.ndarray, int]:
    """Sample ``b``'s mask (one sample's rank, axes of 1 kept) with ids made 0..M-1 in order, and M."""
    m = mask[b if mask.shape[0] > 1 else 0]
    uniq, inverse = np.unique(m, return_inverse=True)
    return inverse.reshape(m.shape), len(uniq)


def as_baseline(baseline: Any, x: np.ndarray) -> np.ndarray:
    """``baseline`` (a scalar, or an array of the input's shape, batch axis 1 allowed, or of one
    sample's shape) broadcast to ``x``'s shape and dtype (a read-only view where possible)."""
    if hasattr(baseline, "detach"):
        baseline = baseline.detach().cpu().numpy()
    b = np.asarray(baseline)
    if x.dtype.kind != "f" and b.dtype.kind == "f" and not np.all(b == np.round(b)):
        raise AnalyzerError(f"the baseline of an integer input must be integers (a pad or mask id), got {baseline!r}")
    if b.ndim == x.ndim - 1 and b.ndim:
        b = b[None]
    try:
        return np.broadcast_to(b.astype(x.dtype, copy=False), x.shape)
    except ValueError as exc:
        raise AnalyzerError(f"baseline of shape {b.shape} does not broadcast to the input's shape {x.shape}") from exc
