"""Comparison sheets: one input and every method's map side by side, a shared colour bar per preset.

The sheet draws what :mod:`onnxxai.heatmap` draws (each method in its preset colouring); a method
that refused the model is a tile naming its reason. ``onnxxai run --method a,b,c|all`` writes one
sheet per input; ``scripts/make_figure.py`` makes the README's figure with the same code.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass

import numpy as np

from onnxxai.heatmap import PRESETS

__all__ = ["Panel", "comparison_sheet"]

#: what the two ends and the middle of each preset's colour bar mean (maps are scaled per map)
_BAR_LABELS = {"centered": ("-max|a|", "0", "+max|a|"), "extrema": ("min", "", "max")}


@dataclass(frozen=True)
class Panel:
    """One tile: a method's drawn map (``image``, RGB uint8) and its heatmap ``preset``, or the
    ``reason`` the method refused."""

    name: str
    image: np.ndarray | None = None
    preset: str | None = None
    reason: str | None = None


def comparison_sheet(input_image: np.ndarray, panels: list[Panel], path: str | os.PathLike, *, title: str = "",
                     tile_inches: float = 2.4) -> None:
    """Write the sheet as PNG: ``input_image`` (RGB or gray uint8) first, then each panel, then one
    colour bar per preset the panels use."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    presets = list(dict.fromkeys(p.preset for p in panels if p.image is not None and p.preset))
    tiles = [Panel("input", np.asarray(input_image))] + list(panels)
    fig = Figure(figsize=(tile_inches * len(tiles), tile_inches * 1.25 + 0.6 * bool(presets) + 0.3 * bool(title)))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2 if presets else 1, len(tiles), height_ratios=[1, 0.06] if presets else [1],
                            hspace=0.35, wspace=0.08)
    for i, panel in enumerate(tiles):
        ax = fig.add_subplot(grid[0, i])
        ax.set_xticks([])
        ax.set_yticks([])
        if panel.image is not None:
            image = panel.image
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest" if max(image.shape[:2]) < 64 else "antialiased")
            ax.set_title(panel.name, fontsize=9)
        else:
            for side in ax.spines.values():
                side.set_color("#bbbbbb")
            ax.set_title(f"{panel.name} (refused)", fontsize=9, color="#a0322b")
            ax.text(0.5, 0.5, "\n".join(textwrap.wrap(panel.reason or "refused", 28)[:10]), ha="center", va="center",
                    fontsize=6.5, transform=ax.transAxes, wrap=True)
    bars = grid[1, :].subgridspec(1, len(presets), wspace=0.3) if presets else None
    for j, preset in enumerate(presets):
        _, rangescale, colormap, _ = PRESETS[preset]
        ax = fig.add_subplot(bars[0, j])
        bar = fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps[colormap]), cax=ax, orientation="horizontal")
        low, mid, high = _BAR_LABELS[rangescale]
        bar.set_ticks([0, 0.5, 1] if mid else [0, 1], labels=[low, mid, high] if mid else [low, high], fontsize=7)
        users = ", ".join(p.name for p in panels if p.preset == preset and p.image is not None)
        ax.set_title(f"{preset} ({rangescale} per map): {users}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(str(path), format="png", dpi=100, bbox_inches="tight")
