"""Checks a user reads before trusting an explanation: does a gradient flow, and is it right?"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx

from onnxxai.errors import AnalyzerError
from onnxxai.model import DEFAULT_DIM, Model
from onnxxai.parity import onnxruntime_session

__all__ = ["GradientReport", "gradient_flow"]

#: central-difference steps tried along each direction; the best agreement counts
STEPS = (3e-3, 1e-2, 3e-2)


@dataclass(frozen=True)
class GradientReport:
    """Gradient of the explained output w.r.t. the analyzed input on a seeded probe.

    ``fd_rel_error`` is the median, over ``directions`` random unit directions, of the relative
    difference between the analytic directional derivative and onnxruntime's central difference
    (best of :data:`STEPS`: small steps rarely cross a ReLU kink, large ones stay above float32
    rounding). ``ok`` means finite, non-zero and ``fd_rel_error <= tolerance``.
    """

    input_name: str
    output_name: str
    finite: bool
    nonzero: bool
    fd_rel_error: float
    tolerance: float
    directions: int

    @property
    def ok(self) -> bool:
        return self.finite and self.nonzero and self.fd_rel_error <= self.tolerance

    def summary(self) -> str:
        if not self.finite:
            return "gradient FAILED: non-finite values"
        if not self.nonzero:
            return "gradient FAILED: identically zero"
        verdict = "ok" if self.ok else "FAILED"
        return (f"gradient {verdict} (d {self.output_name} / d {self.input_name}: finite, non-zero, matches finite "
                f"differences of onnxruntime to {self.fd_rel_error:.1e} relative; tolerance {self.tolerance:g})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def gradient_flow(model: Model, original: onnx.ModelProto, *, seed: int = 0, directions: int = 3,
                  tolerance: float = 2e-2) -> GradientReport:
    """Check the gradient of ``model``'s default explained output on a seeded probe of batch 1.

    Inputs other than the analyzed one get seeded probes as in :func:`onnxxai.load`.
    """
    from onnxxai.analyzers import Gradient, analyze

    analyzer = Gradient(model)
    function = analyzer.function
    rng = np.random.default_rng(seed)
    probes = {}
    for spec in model.inputs:
        shape = tuple(d if isinstance(d, int) and d > 0 else (1 if i == 0 else DEFAULT_DIM) for i, d in enumerate(spec.shape))
        probes[spec.name] = (rng.standard_normal(shape) if spec.is_float else rng.integers(0, 10, shape)).astype(spec.dtype)
    x = probes[function.input_name]
    if len(probes) > 1:
        analyzer = Gradient(model, input_name=function.input_name,
                            fixed_inputs={k: v for k, v in probes.items() if k != function.input_name})
    try:
        expl = analyze(x, analyzer)
    except AnalyzerError:  # no gradient path at all
        return GradientReport(function.input_name, function.output_name, True, False, float("nan"), tolerance, 0)
    g = np.asarray(expl.val, dtype=np.float64)
    finite, nonzero = bool(np.all(np.isfinite(g))), bool(np.any(g))
    if not (finite and nonzero):
        return GradientReport(function.input_name, function.output_name, finite, nonzero, float("nan"), tolerance, 0)
    target = int(expl.output_selection[0])
    session = onnxruntime_session(original)

    def f(t: np.ndarray) -> float:
        (out,) = session.run([function.output_name], {**probes, function.input_name: t.astype(x.dtype)})
        return float(np.asarray(out, dtype=np.float64).reshape(out.shape[0], -1)[0, target])

    errors = []
    for _ in range(directions):
        v = rng.standard_normal(x.shape)
        v /= np.linalg.norm(v)
        analytic = float((g * v).sum())
        errors.append(min(abs((f(x + h * v) - f(x - h * v)) / (2 * h) - analytic) / max(abs(analytic), 1e-12) for h in STEPS))
    return GradientReport(function.input_name, function.output_name, finite, nonzero, float(np.median(errors)), tolerance, directions)
