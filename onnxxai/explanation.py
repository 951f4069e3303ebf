"""The Explanation dataclass returned by every analyzer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Explanation", "HEATMAP_PRESETS"]

#: How drawing code should normalise ``val``: grayscale magnitude, signed diverging map, CAM overlay.
HEATMAP_PRESETS = ("sensitivity", "attribution", "cam")


@dataclass
class Explanation:
    """What an analyzer returns (after XAIBase.jl's ``Explanation``).

    ``val`` has the input's shape and array type (numpy in, numpy out; torch in, torch out on the
    input's device). ``output`` is the model output on the clean input, ``output_selection`` the
    selected flat output index per sample, ``analyzer`` the analyzer's name, ``heatmap`` the preset
    drawing style and ``extras`` anything else (parity report, method parameters, convergence).
    """

    val: Any
    input: Any
    output: Any
    output_selection: Any
    analyzer: str
    heatmap: str
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.heatmap not in HEATMAP_PRESETS:
            raise ValueError(f"heatmap preset must be one of {HEATMAP_PRESETS}, got {self.heatmap!r}")
