"""The one rule for reading a rank-4 tensor as an image batch: NCHW or NHWC, channels, height, width.

Rule (``layout="auto"``): a rank-4 shape is channels-first (NCHW) when axis 1 has 1, 3 or 4 entries
(grayscale, RGB, RGBA), otherwise channels-last (NHWC). Preprocessing, GradCAM, the boundary search
and heatmaps all ask :func:`image_layout`; only preprocessing, which must fill the channels from
image files, additionally requires the channel count to be one of :data:`IMAGE_CHANNELS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ImageLayout", "image_layout", "LAYOUTS", "IMAGE_CHANNELS"]

#: layouts a caller may name; "auto" applies the rule of this module
LAYOUTS = ("auto", "nchw", "nhwc")
#: channel counts an image has: grayscale, RGB, RGBA
IMAGE_CHANNELS = (1, 3, 4)


@dataclass(frozen=True)
class ImageLayout:
    """How a rank-4 shape reads as an image batch; dimensions are ints, or strings where dynamic."""

    layout: str  # "nchw" or "nhwc"
    channels: int | str
    height: int | str
    width: int | str

    @property
    def channels_first(self) -> bool:
        return self.layout == "nchw"

    @property
    def channel_axis(self) -> int:
        return 1 if self.channels_first else 3

    @property
    def spatial_axes(self) -> tuple[int, int]:
        return (2, 3) if self.channels_first else (1, 2)

    @property
    def size(self) -> tuple[int, int] | None:
        """``(height, width)`` when both are static and positive, else None."""
        h, w = self.height, self.width
        return (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None


def image_layout(shape: Sequence[int | str], layout: str = "auto") -> ImageLayout | None:
    """Read ``shape`` as an image batch (see the module docstring); None unless it has rank 4.

    ``layout`` "nchw" or "nhwc" forces the reading; "auto" applies the rule. Any other value is a
    ``ValueError`` (callers check it first and raise their own error).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    if len(shape) != 4:
        return None
    dims = tuple(int(d) if not isinstance(d, str) else d for d in shape)
    if layout == "auto":
        layout = "nchw" if dims[1] in IMAGE_CHANNELS else "nhwc"
    if layout == "nchw":
        return ImageLayout("nchw", dims[1], dims[2], dims[3])
    return ImageLayout("nhwc", dims[3], dims[1], dims[2])
