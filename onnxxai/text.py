"""Text inputs: a Hugging Face ``tokenizer.json`` turns a string into the model's integer inputs, and
per-token attributions become an HTML page of coloured tokens (as TextHeatmaps.jl draws them), a
coloured terminal line (ANSI 24-bit background colours) and JSON."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field

import numpy as np

from onnxxai.errors import InputError

__all__ = ["Tokenized", "tokenize", "token_colors", "html_page", "ansi_text"]

#: model input names fed from the tokenizer's encoding (transformers' names)
IDS_NAMES = ("input_ids", "ids", "tokens", "token_ids")
MASK_NAMES = ("attention_mask", "mask", "input_mask")
TYPE_NAMES = ("token_type_ids", "segment_ids", "type_ids")


@dataclass
class Tokenized:
    """One encoded string: ``tokens`` (strings), ``ids``, ``attention_mask``, ``type_ids`` (int64
    arrays of one row) and each token's character ``offsets`` in the text."""

    text: str
    tokens: list[str]
    ids: np.ndarray
    attention_mask: np.ndarray
    type_ids: np.ndarray
    offsets: list[tuple[int, int]] = field(default_factory=list)


def tokenize(tokenizer_path: str | os.PathLike, text: str) -> Tokenized:
    """Encode ``text`` with the Hugging Face tokenizer file ``tokenizer_path`` (the ``tokenizers``
    package; special tokens added as the file's post-processor says)."""
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:  # pragma: no cover - a dependency of the text extra
        raise InputError("--text needs the tokenizers package: pip install tokenizers") from exc
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception for unreadable files
        raise InputError(f"{tokenizer_path}: not a readable Hugging Face tokenizer.json ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    encoding = tokenizer.encode(text)
    if not encoding.ids:
        raise InputError(f"{tokenizer_path}: the text encodes to no tokens")
    row = lambda values: np.asarray(values, dtype=np.int64)[None]  # noqa: E731
    return Tokenized(text, list(encoding.tokens), row(encoding.ids), row(encoding.attention_mask), row(encoding.type_ids),
                     [tuple(o) for o in encoding.offsets])


def token_colors(values: np.ndarray, colormap: str = "bwr") -> np.ndarray:
    """RGB uint8 colours of per-token values on a map centred on zero (±max|v| at the ends)."""
    import matplotlib

    values = np.asarray(values, dtype=np.float64).reshape(-1)
    scale = np.abs(values).max() if values.size and np.abs(values).max() > 0 else 1.0
    rgb = matplotlib.colormaps[colormap].resampled(255)((values / scale + 1) / 2)[:, :3]
    return (rgb * 255).round().astype(np.uint8)


def _ink(rgb: np.ndarray) -> str:
    return "#000" if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140 else "#fff"


def html_page(tokens: list[str], values: np.ndarray, *, title: str = "", note: str = "") -> str:
    """A standalone HTML page: each token on a background coloured by its attribution (red
    positive, blue negative, white zero), the value in its tooltip, and a colour key."""
    colors = token_colors(values)
    spans = []
    for token, value, rgb in zip(tokens, np.asarray(values).reshape(-1), colors):
        spans.append(f'<span class="tok" title="{value:+.4g}" style="background:rgb({rgb[0]},{rgb[1]},{rgb[2]});'
                     f'color:{_ink(rgb)}">{html.escape(token)}</span>')
    peak = float(np.abs(values).max()) if np.size(values) else 0.0
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title or 'token attributions')}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; max-width: 900px; }}
.tok {{ display: inline-block; padding: 3px 5px; margin: 2px 1px; border-radius: 3px; font-family: monospace; font-size: 16px; }}
.key {{ margin-top: 18px; font-size: 12px; color: #444; }}
.bar {{ display: inline-block; width: 240px; height: 12px; vertical-align: middle;
        background: linear-gradient(to right, rgb(0,0,255), rgb(255,255,255), rgb(255,0,0)); }}
</style></head><body>
<h3>{html.escape(title)}</h3>
<div>{''.join(spans)}</div>
<div class="key">{-peak:+.3g} <span class="bar"></span> {peak:+.3g} &nbsp; {html.escape(note)}</div>
</body></html>
"""


def ansi_text(tokens: list[str], values: np.ndarray) -> str:
    """The tokens on ANSI 24-bit background colours (red positive, blue negative) for a terminal."""
    parts = []
    for token, rgb in zip(tokens, token_colors(values)):
        ink = "30" if _ink(rgb) == "#000" else "97"
        parts.append(f"\x1b[{ink};48;2;{rgb[0]};{rgb[1]};{rgb[2]}m{token}\x1b[0m")
    return " ".join(parts)
