"""What every metric returns: :class:`MetricResult` (one number per sample, their mean, an optional curve),
JSON-ready through :meth:`MetricResult.to_dict`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MetricResult", "Curve", "jsonable"]


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: numpy scalars and arrays become floats, ints and lists; NaN and
    infinities become None (JSON has no NaN); dataclass-like objects with ``to_dict`` are expanded."""
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


@dataclass(frozen=True)
class Curve:
    """A metric's curve: ``x`` (fractions of features, percentages, or layer names), ``y`` the mean over
    samples at each ``x``, ``per_sample`` one row of ``y`` values per sample."""

    x: list[Any]
    y: list[float]
    per_sample: list[list[float]]
    x_label: str
    y_label: str

    def to_dict(self) -> dict[str, Any]:
        return jsonable({"x": self.x, "y": self.y, "per_sample": self.per_sample,
                         "x_label": self.x_label, "y_label": self.y_label})


@dataclass(frozen=True)
class MetricResult:
    """One metric of one explanation method over a batch of samples.

    ``value`` is the mean of ``per_sample`` (NaNs ignored); ``higher_is_better`` says how to read it;
    ``method`` names the explanation evaluated (the analyzer's name); ``params`` holds every setting
    that changes the number (steps, baselines, seeds), ``details`` anything else worth reporting
    (the other similarity, layer counts, output transform).
    """

    name: str
    value: float
    higher_is_better: bool
    per_sample: list[float]
    method: str = ""
    curve: Curve | None = None
    params: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def direction(self) -> str:
        """``"↑"`` when higher is better, ``"↓"`` when lower is."""
        return "↑" if self.higher_is_better else "↓"

    def summary(self) -> str:
        return f"{self.name} {self.direction} {self.value:.4g} ({self.method}, {len(self.per_sample)} samples)"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only; the same result gives the same dict (key order fixed)."""
        return jsonable({
            "name": self.name, "method": self.method, "value": self.value,
            "higher_is_better": self.higher_is_better, "per_sample": self.per_sample,
            "curve": self.curve.to_dict() if self.curve is not None else None,
            "params": self.params, "details": self.details,
        })


def mean_of(values: np.ndarray) -> float:
    """The mean of the finite values (NaN when there is none)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")
