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

__all__ = ["ImageSpec", "image_spec", "load_images", "read_image", "MAX_PIXELS", "IMAGE_SUFFIXES", "find_images",
           "PRESETS", "Preset", "FITS", "Geometry", "fit_image", "load_images_with_geometry", "metadata_preprocessing",
           "read_array"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageSpec:
    """How image files become the model's input: layout, channels, size, how a file of another size
    or shape is fitted (``fit``: stretch, crop, letterbox; see :data:`FITS`), channel order and
    normalization ``(x * scale - mean) / std``; ``source`` says where the normalization came from."""

    layout: str  # "nchw" or "nhwc"
    channels: int  # 1 (grayscale) or 3 (RGB)
    size: tuple[int, int] | None  # (H, W); None keeps each file's size (all files must then agree)
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    fit: str = "stretch"
    crop: float = 1.0  # fit="crop": the fraction of the largest centred box of the model's aspect kept
    resample: str = "bilinear"
    channel_order: str = "rgb"  # "bgr": channels reversed after decoding (mean/std in the model's order)
    source: str = "none"  # where scale/mean/std came from: flags, preset NAME, model metadata (keys), none

    def describe(self) -> str:
        size = "file size" if self.size is None else f"{self.size[0]}x{self.size[1]}"
        fit = f"{self.fit}" + (f" {self.crop:g}" if self.fit == "crop" and self.crop != 1 else "")
        return (f"{self.layout.upper()}, {self.channels} channel(s){' BGR' if self.channel_order == 'bgr' else ''}, "
                f"{size} ({fit}, {self.resample}), x*{self.scale:g} then (x - {list(self.mean)}) / {list(self.std)} "
                f"[{self.source}]")

    def to_dict(self) -> dict:
        """The preprocessing as JSON-ready values (what the CLI records)."""
        return {"layout": self.layout, "channels": self.channels, "size": list(self.size) if self.size else None,
                "fit": self.fit, "crop": self.crop, "resample": self.resample, "channel_order": self.channel_order,
                "scale": self.scale, "mean": list(self.mean), "std": list(self.std), "source": self.source,
                "normalized": self.normalized, "text": self.describe()}

    @property
    def normalized(self) -> bool:
        """Whether anything beyond the pixel scale is applied (a mean or a std other than 0 and 1)."""
        return any(m != 0 for m in self.mean) or any(s != 1 for s in self.std)


@dataclass(frozen=True)
class Preset:
    """A named preprocessing: normalization on pixels scaled to [0, 1] and the resize rule."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    fit: str = "crop"
    crop: float = 1.0
    resample: str = "bilinear"
    description: str = ""


#: ``--preset`` names. Mean and std apply to pixels scaled to [0, 1]. Resize rules: ``crop`` takes the
#: largest centred box of the model's aspect ratio, keeps the central ``crop`` fraction of it and
#: resizes that to the model's size -- for a square model exactly torchvision's ``Resize(S / crop)``
#: then ``CenterCrop(S)`` (imagenet: 224/256, i.e. resize the shorter side to 256 and crop 224;
#: clip: resize the shorter side to S and crop S, bicubic); inception keeps TF-slim's central 87.5%.
PRESETS: dict[str, Preset] = {
    "imagenet": Preset((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "crop", 224 / 256, "bilinear",
                       "torchvision ImageNet: shorter side to S*256/224, centre crop S, bilinear"),
    "inception": Preset((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "crop", 0.875, "bilinear",
                        "Inception / TF-slim: pixels in [-1, 1], central 87.5% crop, bilinear"),
    "clip": Preset((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711), "crop", 1.0, "bicubic",
                   "OpenAI CLIP: shorter side to S, centre crop S, bicubic"),
    "none": Preset((0.0,), (1.0,), "stretch", 1.0, "bilinear", "pixels in [0, 1], stretched to the model's size"),
}
#: how a file whose size or aspect differs from the model's is fitted
FITS = ("stretch", "crop", "letterbox")
#: letterbox padding, in pixel values [0, 255] (the grey Ultralytics' letterbox uses)
LETTERBOX_PAD = 114.0
_RESAMPLE = ("nearest", "bilinear", "bicubic")

#: ONNX's image metadata (https://onnx.ai/onnx/repo-docs/MetadataProps.html): the pixel range the model
#: expects, as (mean, std) on pixels in [0, 1]
NOMINAL_RANGES: dict[str, tuple[float, float]] = {
    "NominalRange_0_255": (0.0, 1 / 255),
    "Normalized_0_1": (0.0, 1.0),
    "Normalized_1_1": (0.5, 0.5),
    "NominalRange_16_235": (-16 / 219, 1 / 219),
}
#: our own metadata keys: comma-separated per-channel mean / std on [0, 1] pixels, a preset name, a fit
META_MEAN, META_STD, META_PRESET, META_FIT = "onnxxai.mean", "onnxxai.std", "onnxxai.preset", "onnxxai.fit"


def metadata_preprocessing(model_proto) -> dict:
    """What the model file's ``metadata_props`` say about its image input: ``{"mean", "std",
    "channel_order", "fit", "keys"}`` for the keys present (empty when none). Our keys
    (``onnxxai.mean``, ``onnxxai.std``, ``onnxxai.preset``, ``onnxxai.fit``) win over ONNX's
    ``Image.NominalPixelRange``; ``Image.BitmapPixelFormat`` Bgr8/Bgra8 reverses the channels."""
    props = {p.key: p.value for p in getattr(model_proto, "metadata_props", [])}
    found: dict = {}
    keys = []
    fmt = props.get("Image.BitmapPixelFormat")
    if fmt is not None:
        keys.append("Image.BitmapPixelFormat")
        if fmt.lower().startswith("bgr"):
            found["channel_order"] = "bgr"
    nominal = props.get("Image.NominalPixelRange")
    if nominal is not None:
        if nominal not in NOMINAL_RANGES:
            raise InputError(f"metadata Image.NominalPixelRange={nominal!r} is not one of {', '.join(NOMINAL_RANGES)}")
        keys.append("Image.NominalPixelRange")
        mean, std = NOMINAL_RANGES[nominal]
        found["mean"], found["std"] = (mean,), (std,)
    preset = props.get(META_PRESET)
    if preset is not None:
        if preset not in PRESETS:
            raise InputError(f"metadata {META_PRESET}={preset!r} is not one of {', '.join(PRESETS)}")
        keys.append(META_PRESET)
        found.update(mean=PRESETS[preset].mean, std=PRESETS[preset].std, fit=PRESETS[preset].fit,
                     crop=PRESETS[preset].crop, resample=PRESETS[preset].resample)
    for key, field in ((META_MEAN, "mean"), (META_STD, "std")):
        if key in props:
            try:
                found[field] = tuple(float(v) for v in props[key].replace(" ", ",").split(",") if v)
            except ValueError:
                raise InputError(f"metadata {key}={props[key]!r} is not a comma-separated list of numbers") from None
            keys.append(key)
    if META_FIT in props:
        if props[META_FIT] not in FITS:
            raise InputError(f"metadata {META_FIT}={props[META_FIT]!r} is not one of {', '.join(FITS)}")
        found["fit"] = props[META_FIT]
        keys.append(META_FIT)
    if keys:
        found["keys"] = keys
    return found


def image_spec(
    spec: TensorSpec,
    *,
    layout: str = "auto",
    size: tuple[int, int] | None = None,
    scale: float | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    preset: str | None = None,
    metadata: dict | None = None,
    fit: str | None = None,
) -> ImageSpec:
    """Read layout, channel count and spatial size off a rank-4 input; flags override each.

    Normalization, first match wins per value: ``scale``/``mean``/``std`` given, then ``preset`` (a
    :data:`PRESETS` name), then ``metadata`` (:func:`metadata_preprocessing` of the model file), else
    none (pixels in [0, 1]). ``fit`` overrides the preset's or metadata's resize rule (:data:`FITS`)."""
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
    base: dict = {"mean": (0.0,), "std": (1.0,), "fit": "stretch", "crop": 1.0, "resample": "bilinear", "channel_order": "rgb"}
    sources = []
    meta = {k: v for k, v in (metadata or {}).items() if k != "keys"}
    if meta:
        base.update(meta)
        sources.append(f"model metadata ({', '.join((metadata or {}).get('keys', []))})")
    if preset is not None:
        if preset not in PRESETS:
            raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        chosen = PRESETS[preset]
        base.update(mean=chosen.mean, std=chosen.std, fit=chosen.fit, crop=chosen.crop, resample=chosen.resample)
        sources = [f"preset {preset}"]
    given = [f"--{n}" for n, v in (("scale", scale), ("mean", mean), ("std", std)) if v is not None]
    if given:
        sources.append(" ".join(given))
    if fit is not None:
        if fit not in FITS:
            raise InputError(f"fit must be one of {', '.join(FITS)}, not {fit!r}")
        base.update(fit=fit, crop=base["crop"] if base["fit"] == "crop" else 1.0)
    mean = tuple(float(m) for m in (mean if mean is not None else base["mean"]))
    std = tuple(float(s) for s in (std if std is not None else base["std"]))
    origin = " + ".join(sources) or "none"
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise InputError(f"{name} ({origin}) takes 1 or {channels} values for a {channels}-channel input, "
                             f"got {len(values)}")
    if any(s == 0 for s in std):
        raise InputError(f"std values must be non-zero ({origin})")
    return ImageSpec(layout, channels, size, 1 / 255 if scale is None else float(scale), mean, std, base["fit"],
                     float(base["crop"]), base["resample"], base["channel_order"], origin)


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
        raise InputError(f"{path}: not a readable image (not a format Pillow can identify)") from exc
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


@dataclass(frozen=True)
class Geometry:
    """Where one file's pixels went: the box ``source`` (top, left, height, width, in file pixels) of
    the ``original`` (H, W) file was resized onto the box ``placed`` (top, left, height, width) of the
    model's ``size`` (H, W) input. Crops have ``source`` inside the file, letterboxes ``placed``
    inside the input; :meth:`to_original` undoes either."""

    original: tuple[int, int]
    size: tuple[int, int]
    source: tuple[float, float, float, float]
    placed: tuple[int, int, int, int]

    def to_dict(self) -> dict:
        return {"original": list(self.original), "size": list(self.size),
                "source_box": [round(v, 3) for v in self.source], "placed_box": list(self.placed)}

    def to_original(self, values: np.ndarray) -> np.ndarray:
        """A map ``(H, W)`` at the model's size as ``(H0, W0)`` over the file: the placed box resized
        (bilinear) onto the source box; NaN where the file's pixels never reached the model (cropped off)."""
        from PIL import Image

        values = np.asarray(values, dtype=np.float32)
        if values.shape != tuple(self.size):
            raise InputError(f"a map of shape {values.shape} does not match the model's input size {self.size}")
        top, left, height, width = self.source
        y0, x0 = int(round(top)), int(round(left))
        h = max(1, min(int(round(top + height)), self.original[0]) - y0)
        w = max(1, min(int(round(left + width)), self.original[1]) - x0)
        pt, pl, ph, pw = self.placed
        tile = Image.fromarray(values).resize((w, h), Image.BILINEAR, box=(pl, pt, pl + pw, pt + ph))
        out = np.full(self.original, np.nan, dtype=np.float32)
        out[y0:y0 + h, x0:x0 + w] = np.asarray(tile)
        return out


def fit_image(pixels: np.ndarray, spec: ImageSpec) -> tuple[np.ndarray, Geometry]:
    """One decoded image ``(H0, W0, C)`` in [0, 255] fitted to ``spec.size`` by ``spec.fit``:
    stretch (resized whole), crop (the largest centred box of the model's aspect, times
    ``spec.crop``, resized), letterbox (resized whole keeping the aspect, centred on a
    :data:`LETTERBOX_PAD` grey canvas). Returns the fitted pixels and their :class:`Geometry`."""
    from PIL import Image

    h0, w0 = pixels.shape[:2]
    if spec.size is None:
        return pixels, Geometry((h0, w0), (h0, w0), (0.0, 0.0, float(h0), float(w0)), (0, 0, h0, w0))
    if spec.fit not in FITS:
        raise InputError(f"fit must be one of {', '.join(FITS)}, not {spec.fit!r}")
    if spec.resample not in _RESAMPLE:
        raise InputError(f"resample must be one of {', '.join(_RESAMPLE)}, not {spec.resample!r}")
    resample = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[spec.resample]
    H, W = spec.size
    source, placed = (0.0, 0.0, float(h0), float(w0)), (0, 0, H, W)
    if spec.fit == "crop":
        if w0 * H > h0 * W:  # the file is wider than the model's aspect
            bh, bw = float(h0), h0 * W / H
        else:
            bh, bw = w0 * H / W, float(w0)
        bh, bw = bh * spec.crop, bw * spec.crop
        source = ((h0 - bh) / 2, (w0 - bw) / 2, bh, bw)
    elif spec.fit == "letterbox":
        scale = min(H / h0, W / w0)
        ph, pw = max(1, round(h0 * scale)), max(1, round(w0 * scale))
        placed = ((H - ph) // 2, (W - pw) // 2, ph, pw)
    top, left, bh, bw = source
    pt, pl, ph, pw = placed
    box = (left, top, left + bw, top + bh)
    if (h0, w0) == (ph, pw) and source == (0.0, 0.0, float(h0), float(w0)):
        fitted = pixels.astype(np.float64)
    else:
        fitted = np.stack([np.asarray(Image.fromarray(pixels[..., c].astype(np.float32)).resize((pw, ph), resample, box=box))
                           for c in range(pixels.shape[2])], axis=-1).astype(np.float64)
        if spec.resample == "bicubic":
            fitted = np.clip(fitted, 0, 255)
    if placed != (0, 0, H, W):
        canvas = np.full((H, W, pixels.shape[2]), LETTERBOX_PAD)
        canvas[pt:pt + ph, pl:pl + pw] = fitted
        fitted = canvas
    return fitted, Geometry((h0, w0), (H, W), source, placed)


def load_images_with_geometry(paths: Sequence[Path], spec: ImageSpec, dtype: np.dtype = np.dtype("float32"),
                              max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, list[Geometry]]:
    """:func:`load_images` plus each file's :class:`Geometry` (to draw maps back over the files)."""
    arrays, geometries = [], []
    for path in paths:
        a = read_image(path, spec.channels, None, max_pixels=max_pixels)
        if a.ndim == 2:
            a = a[..., None]
        a, geometry = fit_image(a, spec)
        if spec.channel_order == "bgr":
            a = a[..., ::-1]
        arrays.append(a)
        geometries.append(geometry)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise InputError(f"images have different sizes {sorted(shapes)}; pass --size HxW to resize them")
    batch = np.stack(arrays) * spec.scale
    batch = (batch - np.asarray(spec.mean)) / np.asarray(spec.std)
    if spec.layout == "nchw":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch.astype(dtype)), geometries


def load_images(paths: Sequence[Path], spec: ImageSpec, dtype: np.dtype = np.dtype("float32"),
                max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode, convert (grayscale/RGB), fit (:func:`fit_image`) and normalize image files into one
    batch (:func:`read_image` says what each file may be)."""
    return load_images_with_geometry(paths, spec, dtype, max_pixels)[0]


def read_csv_table(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """A CSV file with a header row and numeric cells: ``(column names, float64 array (rows, columns))``.
    Empty or non-numeric cells raise :class:`InputError` naming the row and column."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the CSV file ({exc.strerror})") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a UTF-8 CSV text file ({exc.__class__.__name__}: {exc})") from exc
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


def read_array(path: str | os.PathLike, spec: TensorSpec) -> np.ndarray:
    """A ``.npy`` file as a batch for input ``spec``: the array as the input's shape (with its batch
    axis) or one sample of it (a batch axis of 1 is added), cast to the input's dtype. Pickled object
    arrays are refused (a ``.npy`` file is not trusted)."""
    try:
        a = np.load(path, allow_pickle=False)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the .npy file ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise InputError(f"{path}: not a plain numeric .npy array ({_first_line(exc)})") from exc
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
        raise InputError(f"{path}: a .npy input must hold a numeric array, not {getattr(a, 'dtype', type(a))}")
    rank = len(spec.shape)
    if a.ndim == rank - 1:
        a = a[None]
    if a.ndim != rank:
        raise InputError(f"{path}: array of shape {a.shape} does not fit input {spec} (rank {rank}, or {rank - 1} "
                         "for one sample)")
    for axis, (have, want) in enumerate(zip(a.shape[1:], spec.shape[1:]), start=1):
        if isinstance(want, int) and want > 0 and have != want:
            raise InputError(f"{path}: array of shape {a.shape} does not fit input {spec}: axis {axis} is {have}, "
                             f"the model takes {want}")
    if a.dtype.kind == "f" and np.dtype(spec.dtype).kind in "iub":
        raise InputError(f"{path}: float array for the integer input {spec}")
    return np.ascontiguousarray(a.astype(spec.dtype, copy=False))
