"""Heatmaps: presets by ``Explanation.heatmap``, channel reductions, range scaling, colour maps, overlays.

A heatmap never computes gradients: it draws the raw values an analyzer returned.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from onnxxai.errors import AnalyzerError
from onnxxai.explanation import Explanation
from onnxxai.proto.layout import LAYOUTS, image_layout

__all__ = ["heatmap", "save_png", "PRESETS", "to_image_layout"]

#: preset -> (reduce, rangescale, colormap, overlay alpha or None)
PRESETS: dict[str, tuple[str, str, str, float | None]] = {
    "sensitivity": ("norm", "extrema", "gray", None),
    "attribution": ("sum", "centered", "bwr", None),
    "cam": ("sum", "extrema", "inferno", 0.5),
}
REDUCTIONS = ("norm", "sum", "maxabs")
RANGESCALES = ("centered", "extrema")


def _numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def to_image_layout(values: Any, layout: str = "auto") -> np.ndarray:
    """A batch of images as ``(B, H, W, C)``: from NCHW, NHWC, or ``(B, H, W)``.

    ``auto`` applies :func:`onnxxai.proto.layout.image_layout`: NCHW when axis 1 has 1, 3 or 4
    entries, else NHWC.
    """
    a = _numpy(values)
    if a.ndim == 3:
        return a[..., None]
    if a.ndim != 4:
        raise AnalyzerError(f"heatmaps need image batches of rank 3 or 4 (B, C, H, W), got shape {a.shape}")
    if layout not in LAYOUTS:
        raise AnalyzerError(f"layout must be auto, nchw or nhwc, not {layout!r}")
    return a.transpose(0, 2, 3, 1) if image_layout(a.shape, layout).channels_first else a


def _reduce(a: np.ndarray, how: str) -> np.ndarray:
    if how == "norm":
        return np.sqrt((a**2).sum(axis=-1))
    if how == "sum":
        return a.sum(axis=-1)
    if how == "maxabs":
        idx = np.abs(a).argmax(axis=-1)[..., None]
        return np.take_along_axis(a, idx, axis=-1)[..., 0]
    raise AnalyzerError(f"reduce must be one of {REDUCTIONS}, not {how!r}")


def _rangescale(m: np.ndarray, how: str) -> np.ndarray:
    """Per sample, map to [0, 1]: centered puts 0 at 0.5 and ±max|v| at the ends; extrema stretches min..max."""
    flat = m.reshape(m.shape[0], -1)
    if how == "centered":
        scale = np.abs(flat).max(axis=1)
        scale[scale == 0] = 1.0
        return (m / scale[:, None, None] + 1.0) / 2.0
    if how == "extrema":
        lo, hi = flat.min(axis=1), flat.max(axis=1)
        span = hi - lo
        span[span == 0] = 1.0
        return (m - lo[:, None, None]) / span[:, None, None]
    raise AnalyzerError(f"rangescale must be one of {RANGESCALES}, not {how!r}")


def _colorize(m: np.ndarray, colormap: str) -> np.ndarray:
    import matplotlib

    try:
        cmap = matplotlib.colormaps[colormap].resampled(255)  # odd: 0.5 lands exactly on the centre colour
    except KeyError as exc:
        raise AnalyzerError(f"unknown matplotlib colour map {colormap!r}") from exc
    return cmap(np.clip(m, 0.0, 1.0))[..., :3]


def _background(input: Any, layout: str, size: tuple[int, int]) -> np.ndarray:
    """The input as an RGB image in [0, 1] per sample (min-max), resized to the heatmap's size."""
    img = to_image_layout(input, layout)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    img = img[..., :3]
    lo = img.reshape(img.shape[0], -1).min(axis=1)[:, None, None, None]
    hi = img.reshape(img.shape[0], -1).max(axis=1)[:, None, None, None]
    img = (img - lo) / np.where(hi > lo, hi - lo, 1.0)
    if img.shape[1:3] != size:
        from PIL import Image

        img = np.stack([np.asarray(Image.fromarray((s * 255).astype(np.uint8)).resize(size[::-1], Image.BILINEAR)) / 255.0 for s in img])
    return img


def heatmap(
    expl_or_input: Any,
    analyzer: Any = None,
    output_selection: Any = None,
    *,
    reduce: str | None = None,
    rangescale: str | None = None,
    colormap: str | None = None,
    overlay: bool | None = None,
    alpha: float | None = None,
    layout: str = "auto",
) -> np.ndarray:
    """Draw an explanation as RGB images, one per sample: ``(B, H, W, 3)`` uint8.

    ``heatmap(expl)`` or ``heatmap(input, analyzer, output_selection)`` (which analyzes first).
    Defaults follow ``expl.heatmap``: "sensitivity" is a grayscale map of the channel norm scaled
    min..max; "attribution" is the channel sum on a red-white-blue map centred on zero (red
    positive, white zero, blue negative); "cam" is the map on a perceptual colour map (inferno)
    overlaid on the input with ``alpha`` 0.5. Any option overrides its preset value.
    """
    if isinstance(expl_or_input, Explanation):
        expl = expl_or_input
    else:
        if analyzer is None:
            raise AnalyzerError("heatmap() takes an Explanation, or an input and an analyzer")
        from onnxxai.dispatch import analyze

        expl = analyze(expl_or_input, analyzer, output_selection)
    p_reduce, p_range, p_cmap, p_alpha = PRESETS[expl.heatmap]
    reduce, rangescale, colormap = reduce or p_reduce, rangescale or p_range, colormap or p_cmap
    if overlay is None:
        overlay = p_alpha is not None
    alpha = (p_alpha if p_alpha is not None else 0.5) if alpha is None else float(alpha)
    values = to_image_layout(expl.val, layout)
    colored = _colorize(_rangescale(_reduce(values, reduce), rangescale), colormap)
    if overlay:
        colored = (1 - alpha) * _background(expl.input, layout, colored.shape[1:3]) + alpha * colored
    return (np.clip(colored, 0, 1) * 255).round().astype(np.uint8)


def save_png(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write one ``(H, W, 3)`` (or ``(H, W)``) uint8 image as PNG."""
    from PIL import Image

    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(str(path), format="PNG")


def save_bar_chart(values: Any, labels: list[str], path: str | os.PathLike, title: str = "") -> None:
    """Write a horizontal bar chart of one attribution per feature (positive red, negative blue) as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = np.asarray(_numpy(values), dtype=np.float64).reshape(-1)
    if len(values) != len(labels):
        raise AnalyzerError(f"{len(values)} attributions for {len(labels)} labels")
    fig = Figure(figsize=(6, 0.3 * len(values) + 1.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    order = np.arange(len(values))[::-1]
    ax.barh([labels[i] for i in order], values[order], color=["#c0392b" if v > 0 else "#2e5fa8" for v in values[order]])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("attribution")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(str(path), format="png", dpi=100)
