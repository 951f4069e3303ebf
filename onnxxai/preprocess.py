"""Image files -> model input, derived from the model's input signature (overridable)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxxai.errors import InputError
from onnxxai.proto.layout import IMAGE_CHANNELS, LAYOUTS, image_layout
from onnxxai.proto.specs import TensorSpec

__all__ = ["ImageSpec", "image_spec", "load_images", "read_image", "MAX_PIXELS", "IMAGE_SUFFIXES", "find_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageSpec:
    """How image files become the model's input: layout, channels, size and normalization."""

    layout: str  # "nchw" or "nhwc"
    channels: int  # 1 (grayscale) or 3 (RGB)
    size: tuple[int, int] | None  # (H, W); None keeps each file's size (all files must then agree)
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def describe(self) -> str:
        size = "file size" if self.size is None else f"{self.size[0]}x{self.size[1]}"
        return (f"{self.layout.upper()}, {self.channels} channel(s), {size}, x*{self.scale:g} "
                f"then (x - {list(self.mean)}) / {list(self.std)}")


def image_spec(
    spec: TensorSpec,
    *,
    layout: str = "auto",
    size: tuple[int, int] | None = None,
    scale: float | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ImageSpec:
    """Read layout, channel count and spatial size off a rank-4 input; flags override each."""
    if len(spec.shape) != 4:
        raise InputError(f"input {spec} is not image-like: images need a rank-4 input (N, C, H, W) or (N, H, W, C)")
    dims = spec.shape
    if layout not in LAYOUTS:
        raise InputError(f"layout must be auto, nchw or nhwc, not {layout!r}")
    found = image_layout(dims, layout)
    if layout == "auto" and found.channels not in IMAGE_CHANNELS:
        raise InputError(
            f"input {spec} has no 1-, 3- or 4-channel axis at position 1 or 3, so it is not an image input; "
            "pass --layout nchw|nhwc if it is one"
        )
    layout, hw = found.layout, found.spatial_axes
    channels = found.channels if isinstance(found.channels, int) else 3
    if channels not in (1, 3):
        raise InputError(f"input {spec} takes {channels} channels; image files convert to 1 (grayscale) or 3 (RGB) only")
    if size is None and all(isinstance(dims[a], int) and dims[a] > 0 for a in hw):
        size = (int(dims[hw[0]]), int(dims[hw[1]]))
    mean = tuple(float(m) for m in (mean or (0.0,)))
    std = tuple(float(s) for s in (std or (1.0,)))
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise InputError(f"--{name} takes 1 or {channels} values for a {channels}-channel input, got {len(values)}")
    if any(s == 0 for s in std):
        raise InputError("--std values must be non-zero")
    return ImageSpec(layout, channels, size, 1 / 255 if scale is None else float(scale), mean, std)


#: Most pixels an image file may decode to: a 50-megapixel photo passes, a decompression bomb does not.
#: (Pillow refuses images over twice its own ``Image.MAX_IMAGE_PIXELS`` whatever this says.)
MAX_PIXELS = 100_000_000
#: Modes holding 16-bit (or wider integer) gray values: scaled by 255/65535 into the 8-bit range.
_WIDE_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def read_image(path: str | os.PathLike, channels: int, size: tuple[int, int] | None = None, *,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One image file as a float64 array (H, W) or (H, W, 3) of values in [0, 255].

    The file is not trusted: an empty, truncated or undecodable file, one over ``max_pixels`` pixels
    (decompression bombs), and modes that do not convert raise :class:`InputError` naming the file,
    before the pixels are decoded where the header tells. Conversions: palette, bilevel, CMYK and
    YCbCr images become RGB or grayscale as Pillow converts them; an alpha channel is dropped (as
    torchvision's loaders do; a warning says so when some pixels are transparent); 16-bit grayscale
    is scaled into [0, 255] with its precision kept; 32-bit float images are refused (their range is
    unknown: give the model an array instead). Only the first frame of an animation is read.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: empty file, not an image")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the image file ({exc.strerror})") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own pixel limit decides below
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise InputError(
                        f"{path}: the image is {width}x{height} = {width * height / 1e6:.1f} megapixels, over the "
                        f"limit of {max_pixels / 1e6:g} megapixels (a decompression bomb?); pass max_pixels to allow it"
                    )
                mode = img.mode
                if mode == "F":
                    raise InputError(f"{path}: 32-bit float images (mode F) are not converted, their value range is "
                                     "unknown; pass the array to the model instead")
                img.load()
                if mode in _WIDE_GRAY:
                    wide = np.asarray(img, dtype=np.float64)
                    if wide.size and (wide.min() < 0 or wide.max() > 65535):
                        raise InputError(f"{path}: {mode} image with values outside [0, 65535]; not converted")
                    return _gray_to(wide * (255 / 65535), channels, size)
                if "A" in mode or (mode == "P" and "transparency" in img.info):
                    alpha = np.asarray(img.convert("RGBA"))[..., 3]
                    if alpha.size and alpha.min() < 255:
                        warnings.warn(f"{path}: the alpha channel is dropped ({int((alpha < 255).sum())} pixels are "
                                      "not opaque)", stacklevel=2)
                img = img.convert("L" if channels == 1 else "RGB")
                if size is not None and img.size != (size[1], size[0]):
                    img = img.resize((size[1], size[0]), Image.BILINEAR)
                return np.asarray(img, dtype=np.float64)
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: refused as a decompression bomb by Pillow ({_first_line(exc)}); the limit is "
                         f"{min(max_pixels, 2 * Image.MAX_IMAGE_PIXELS) / 1e6:g} megapixels") from exc
    except UnidentifiedImageError as exc:
        raise InputError(f"{path}: not an image file Pillow can identify") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt data, a mode Pillow cannot convert
        raise InputError(f"{path}: not a readable image ({exc.__class__.__name__}: {_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _gray_to(gray: np.ndarray, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """A float gray image in [0, 255] resized to ``size`` (bilinear) and repeated to ``channels``."""
    from PIL import Image

    if size is not None and gray.shape != size:
        gray = np.asarray(Image.fromarray(gray.astype(np.float32)).resize((size[1], size[0]), Image.BILINEAR),
                          dtype=np.float64)
    return gray if channels == 1 else np.repeat(gray[..., None], 3, axis=2)


def find_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files given directly, plus the image files (by suffix, sorted) inside given directories."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.is_file():
            found.append(p)
        else:
            raise InputError(f"{p}: no such file or directory")
    if not found:
        raise InputError(f"no image files found in {', '.join(map(str, paths))}")
    return found


def load_images(paths: Sequence[Path], spec: ImageSpec, dtype: np.dtype = np.dtype("float32"),
                max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode, convert (grayscale/RGB), resize and normalize image files into one batch
    (:func:`read_image` says what each file may be)."""
    arrays = []
    for path in paths:
        a = read_image(path, spec.channels, spec.size, max_pixels=max_pixels)
        if a.ndim == 2:
            a = a[..., None]
        arrays.append(a)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise InputError(f"images have different sizes {sorted(shapes)}; pass --size HxW to resize them")
    batch = np.stack(arrays) * spec.scale
    batch = (batch - np.asarray(spec.mean)) / np.asarray(spec.std)
    if spec.layout == "nchw":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch.astype(dtype))


def read_csv_table(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """A CSV file with a header row and numeric cells: ``(column names, float64 array (rows, columns))``.
    Empty or non-numeric cells raise :class:`InputError` naming the row and column."""
    import csv

    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the CSV file ({exc.strerror})") from exc
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise InputError(f"{path}: a CSV input needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    values = np.empty((len(rows) - 1, len(header)))
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InputError(f"{path}: line {i} has {len(row)} cells, the header has {len(header)}")
        for j, cell in enumerate(row):
            try:
                values[i - 2, j] = float(cell)
            except ValueError:
                raise InputError(f"{path}: line {i}, column {header[j]!r}: {cell!r} is not a number") from None
    return header, values
