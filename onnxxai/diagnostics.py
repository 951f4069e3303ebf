"""Checks a user reads before trusting an explanation: does a gradient flow, and is it right?"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx

from onnxxai.convert.qlinear import straight_through_modules, surrogate_forward
from onnxxai.errors import AnalyzerError
from onnxxai.model import Model
from onnxxai.proto.specs import probe_feeds
from onnxxai.parity import onnxruntime_session, tensor_of

__all__ = ["GradientReport", "gradient_flow"]

#: central-difference steps tried along each direction (onnxruntime float32 / float64); the best counts
STEPS = (1e-3, 3e-3, 1e-2, 3e-2)
STEPS64 = (1e-6, 1e-5, 1e-4)


@dataclass(frozen=True)
class GradientReport:
    """Gradient of the explained output w.r.t. the analyzed input on a seeded probe.

    ``fd_rel_error`` is the median, over ``directions`` unit directions (the gradient's own direction
    and the coordinates of its largest entries), of the relative difference between the analytic
    directional derivative and a central difference (best of several steps; ``reference`` says of
    what: a float64 copy of the graph, or onnxruntime, with ``fallback_cause`` saying why the float64
    copy could not run; for a quantized graph, the float64 copy evaluates its dequantized float
    surrogate, whose gradient the straight-through estimator is). ``ok`` means finite, non-zero and
    ``fd_rel_error <= tolerance``.
    """

    input_name: str
    output_name: str
    finite: bool
    nonzero: bool
    fd_rel_error: float
    tolerance: float
    directions: int
    reference: str = ""
    #: why the float64 reference could not be used (empty when it was)
    fallback_cause: str = ""

    @property
    def ok(self) -> bool:
        return self.finite and self.nonzero and self.fd_rel_error <= self.tolerance

    def summary(self) -> str:
        if not self.finite:
            return "gradient FAILED: non-finite values"
        if not self.nonzero:
            return "gradient FAILED: identically zero"
        verdict = "ok" if self.ok else "FAILED"
        why = f", float64 copy failed: {self.fallback_cause}" if self.fallback_cause else ""
        return (f"gradient {verdict} (d {self.output_name} / d {self.input_name}: finite, non-zero, matches {self.reference} "
                f"finite differences to {self.fd_rel_error:.1e} relative; tolerance {self.tolerance:g}{why})")

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def gradient_flow(model: Model, original: onnx.ModelProto, *, seed: int = 0, directions: int = 3,
                  tolerance: float = 2e-2) -> GradientReport:
    """Check the gradient of ``model``'s default explained output on a seeded probe of batch 1.

    The reference is central differences of a float64 copy of the converted graph (whose float32
    forward matches onnxruntime, which the parity check established), free of float32 rounding;
    where the graph cannot run in float64, central differences of onnxruntime on the original file.
    A quantized graph's integer forward is piecewise constant, so its finite differences say nothing
    about the straight-through gradient: its float64 copy then computes the dequantized float
    surrogate instead (:func:`onnxxai.convert.qlinear.surrogate_forward`), and ``reference`` says so.
    Inputs other than the analyzed one get seeded probes as in :func:`onnxxai.load`.
    """
    from onnxxai.analyzers import Gradient, analyze

    analyzer = Gradient(model)
    function = analyzer.function
    probes = probe_feeds(model.inputs, seed=seed, batch=1, label=model.source)
    x = probes[function.input_name]
    if len(probes) > 1:
        analyzer = Gradient(model, input_name=function.input_name,
                            fixed_inputs={k: v for k, v in probes.items() if k != function.input_name})
    try:
        expl = analyze(x, analyzer)
    except AnalyzerError:  # no gradient path at all
        return GradientReport(function.input_name, function.output_name, True, False, float("nan"), tolerance, 0)
    name = function.input_name
    if function.tap is not None:  # an integer input: the gradient at the float tensor computed from it
        name = f"{function.input_name} at {function.tap.tensor}"
        g = np.asarray(expl.extras["tap_attribution"], dtype=np.float64)
        x = np.asarray(function.embed(model.as_tensor(function.input_name, x)).cpu().numpy())
    else:
        g = np.asarray(expl.val, dtype=np.float64)
    finite, nonzero = bool(np.all(np.isfinite(g))), bool(np.any(g))
    if not (finite and nonzero):
        return GradientReport(name, function.output_name, finite, nonzero, float("nan"), tolerance, 0)
    target = int(expl.output_selection[0])
    cause = ""
    try:
        f, quantized = _float64_function(model, function, probes, target)
        steps, reference = STEPS64, "float64 dequantized surrogate" if quantized else "float64"
    except Exception as exc:  # noqa: BLE001 - a module that cannot run in float64: fall back to onnxruntime, saying why
        if function.tap is not None:  # onnxruntime cannot substitute an inner tensor
            raise AnalyzerError(
                f"{model.source}: the gradient at {function.tap.tensor!r} cannot be checked: the float64 copy of the "
                f"graph fails ({exc.__class__.__name__}: {exc}) and onnxruntime cannot substitute an inner tensor"
            ) from exc
        cause = f"{exc.__class__.__name__}: {exc}"
        f, steps, reference = _onnxruntime_function(original, function, probes, target), STEPS, "onnxruntime float32"
    # Directions with a large derivative: the gradient's own direction (checks magnitude and
    # direction together) and the coordinates of its largest entries (checks single entries).
    units = [g / np.linalg.norm(g)]
    for i in np.argsort(-np.abs(g).ravel())[: directions - 1]:
        e = np.zeros_like(g)
        e.ravel()[i] = 1.0
        units.append(e)
    x64 = x.astype(np.float64)
    scale = abs(f(x64))
    errors = []
    for v in units:
        analytic = float((g * v).sum())
        # fixed steps, and steps that move the output by 0.1%..10% of its value (outputs of random
        # networks can be tiny, and fixed float32 steps then drown in rounding)
        hs = list(steps) + [c * scale / abs(analytic) for c in (1e-3, 1e-2, 1e-1) if scale > 0 and analytic]
        errors.append(min(abs((f(x64 + h * v) - f(x64 - h * v)) / (2 * h) - analytic) / max(abs(analytic), 1e-12) for h in hs))
    return GradientReport(name, function.output_name, finite, nonzero, float(np.median(errors)), tolerance,
                          len(units), reference, cause)


def _float64_function(model: Model, function, probes: dict, target: int):
    """The explained output of a float64 copy of the converted graph, as a function of the input, and
    whether the graph is quantized (then the copy computes its dequantized float surrogate: every
    straight-through module returns its surrogate)."""
    import copy

    import torch

    tap = function.tap
    module = copy.deepcopy(model.torch_module if tap is None else tap.substitute).double().cpu()
    quantized = bool(straight_through_modules(module))
    names = [s.name for s in model.inputs]
    index = [o.name for o in model.outputs].index(function.output_name)
    fixed = {k: torch.from_numpy(v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in probes.items()}

    def f(t: np.ndarray) -> float:
        value = torch.from_numpy(np.asarray(t, dtype=np.float64))
        if tap is None:  # t is the analyzed input
            args = [value if n == function.input_name else fixed[n] for n in names]
        else:  # t is the tapped tensor; the integer input keeps its probe
            args = [fixed[n] for n in names] + [value]
        with torch.no_grad(), surrogate_forward(module):
            out = module(*args)
        out = out[index] if isinstance(out, (tuple, list)) else out
        return float(out.reshape(out.shape[0], -1)[0, target])

    start = probes[function.input_name] if tap is None else function.embed(torch.from_numpy(probes[function.input_name])).numpy()
    f(start)  # fails here if some op cannot run in float64
    return f, quantized


def _onnxruntime_function(original: onnx.ModelProto, function, probes: dict, target: int):
    """The explained output of onnxruntime on the original file (float32 inputs)."""
    session = onnxruntime_session(original)
    dtype = probes[function.input_name].dtype

    def f(t: np.ndarray) -> float:
        (out,) = session.run([function.output_name], {**probes, function.input_name: np.asarray(t).astype(dtype)})
        out = tensor_of(out)  # a ZipMap's sequence of maps: the tensor it wraps
        return float(np.asarray(out, dtype=np.float64).reshape(out.shape[0], -1)[0, target])

    return f
