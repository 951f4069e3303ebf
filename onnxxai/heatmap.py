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

__all__ = ["heatmap", "save_png", "PRESETS", "to_image_layout", "scaled_maps", "colorize", "save_bar_chart",
           "save_series_plot"]

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
    colored = _colorize(scaled_maps(expl, reduce=reduce, rangescale=rangescale, layout=layout), colormap)
    if overlay:
        colored = (1 - alpha) * _background(expl.input, layout, colored.shape[1:3]) + alpha * colored
    return (np.clip(colored, 0, 1) * 255).round().astype(np.uint8)


def scaled_maps(expl: Explanation, *, reduce: str | None = None, rangescale: str | None = None,
                layout: str = "auto") -> np.ndarray:
    """The maps :func:`heatmap` colours: ``(B, H, W)`` in [0, 1], channels reduced and each sample
    range-scaled by the preset of ``expl.heatmap`` (or the given ``reduce`` / ``rangescale``)."""
    p_reduce, p_range, _, _ = PRESETS[expl.heatmap]
    return _rangescale(_reduce(to_image_layout(expl.val, layout), reduce or p_reduce), rangescale or p_range)


def colorize(scaled: np.ndarray, colormap: str, *, background: np.ndarray | None = None, alpha: float = 0.5,
             missing: tuple[float, float, float] = (0.85, 0.85, 0.85)) -> np.ndarray:
    """One scaled map ``(H, W)`` in [0, 1] as an RGB uint8 image; blended over ``background`` (an
    ``(H, W, 3)`` uint8 image, e.g. the photo the map was resized onto) with ``alpha`` when given.
    NaN (pixels the model never saw: cropped off) shows the background alone, else ``missing`` grey."""
    scaled = np.asarray(scaled, dtype=np.float64)
    seen = ~np.isnan(scaled)
    colored = _colorize(np.where(seen, scaled, 0.0), colormap)
    if background is not None:
        base = np.asarray(background, dtype=np.float64)[..., :3] / 255.0
        if base.shape[:2] != scaled.shape:
            raise AnalyzerError(f"background of shape {base.shape} for a map of shape {scaled.shape}")
        colored = np.where(seen[..., None], (1 - alpha) * base + alpha * colored, base)
    else:
        colored = np.where(seen[..., None], colored, np.asarray(missing))
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


def save_series_plot(signal: Any, values: Any, path: str | os.PathLike, title: str = "", *, max_channels: int = 8) -> None:
    """Write a line plot of a sequence ``(T,)`` or ``(T, F)`` with its attribution (same shape)
    shaded under the signal (red positive, blue negative, one colour scale for all channels). More
    than ``max_channels`` channels: the most attributed ones (by sum of |attribution|) are drawn."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = _numpy(signal)
    a = _numpy(values)
    if x.shape != a.shape or x.ndim not in (1, 2):
        raise AnalyzerError(f"a series plot takes a signal (T,) or (T, F) and attributions of the same shape, "
                            f"got {x.shape} and {a.shape}")
    if x.ndim == 1:
        x, a = x[:, None], a[:, None]
    order = np.argsort(-np.abs(a).sum(axis=0), kind="stable")[:max_channels]
    shown = sorted(order.tolist())
    scale = float(np.abs(a).max()) or 1.0
    t = np.arange(x.shape[0])
    fig = Figure(figsize=(8, 1.2 * len(shown) + 0.9))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(shown), 1, sharex=True, squeeze=False)[:, 0]
    cmap = colormaps["bwr"]
    for ax, f in zip(axes, shown):
        lo, hi = min(0.0, float(x[:, f].min())), max(0.0, float(x[:, f].max()))
        pad = 0.05 * (hi - lo or 1.0)
        band = ax.imshow(a[None, :, f], cmap=cmap, vmin=-scale, vmax=scale, aspect="auto", interpolation="nearest",
                         extent=(-0.5, x.shape[0] - 0.5, lo - pad, hi + pad), origin="lower")
        area = ax.fill_between(t, 0, x[:, f], facecolor="none", edgecolor="none", step="mid")
        band.set_clip_path(area.get_paths()[0], transform=ax.transData)
        ax.plot(t, x[:, f], color="black", linewidth=0.9, drawstyle="steps-mid" if len(t) < 64 else "default")
        ax.axhline(0, color="#888888", linewidth=0.5)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_ylabel(f"ch {f}" if x.shape[1] > 1 else "signal", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[-1].set_xlabel("step")
    note = f" ({len(shown)} of {x.shape[1]} channels, most attributed)" if len(shown) < x.shape[1] else ""
    fig.suptitle((title + note) if title or note else "", fontsize=9)
    fig.colorbar(axes[0].images[0], ax=list(axes), fraction=0.03, pad=0.02, label="attribution")
    fig.savefig(str(path), format="png", dpi=100, bbox_inches="tight")
