"""Checks a user reads before trusting an explanation: does a gradient flow, and is it right?"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from onnxxai.convert.qlinear import frozen_copy, straight_through_modules, surrogate_forward
from onnxxai.errors import AnalyzerError, InputError, ResourceLimitError
from onnxxai.model import Model
from onnxxai.proto.specs import probe_feeds
from onnxxai.parity import onnxruntime_session, run_onnxruntime, tensor_of
from onnxxai.proto import limits

__all__ = ["GradientReport", "gradient_flow", "gradient_targets"]

#: central-difference steps tried along each direction (onnxruntime float32 / float64); the best counts
STEPS = (1e-3, 3e-3, 1e-2, 3e-2)
STEPS64 = (1e-6, 1e-5, 1e-4)


@dataclass(frozen=True)
class GradientReport:
    """Gradient of the explained output w.r.t. the analyzed input on a seeded probe.

    ``fd_rel_error`` is the median, over ``directions`` unit directions (the gradient's own direction
    and the coordinates of its largest entries), of the relative difference between the analytic
    directional derivative and a central difference (best of several steps, fixed ones and ones
    scaled to the input and to the gradient; ``reference`` says of what: a float64 copy of the
    graph, run with every float constant and cast widened to float64, or onnxruntime, with
    ``fallback_cause`` saying why the float64 copy could not run; for a quantized graph, the float64
    copy evaluates its dequantized float surrogate, whose gradient the straight-through estimator
    is). A failing comparison is repeated against a second reference (onnxruntime on the original
    file) before it is reported: ``confirmation`` says what the second one found. ``ok`` means
    finite, non-zero and ``fd_rel_error <= tolerance``, for this check and every one in ``checks``
    (several float inputs, or an integer input with several float consumers, are each checked).
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
    #: the second reference's verdict when the first one failed (empty when it passed)
    confirmation: str = ""
    #: every check made, when there were several (this report is the first failing one, else the first)
    checks: tuple[GradientReport, ...] = ()

    @property
    def ok(self) -> bool:
        own = self.finite and self.nonzero and self.fd_rel_error <= self.tolerance
        return own and all(c.ok for c in self.checks)

    def _summary(self) -> str:
        if not self.finite:
            return f"gradient FAILED (d {self.output_name} / d {self.input_name}): non-finite values"
        if not self.nonzero:
            return f"gradient FAILED (d {self.output_name} / d {self.input_name}): identically zero"
        verdict = "ok" if self.fd_rel_error <= self.tolerance else "FAILED"
        why = f", float64 copy failed: {self.fallback_cause}" if self.fallback_cause else ""
        confirmed = f"; {self.confirmation}" if self.confirmation else ""
        return (f"gradient {verdict} (d {self.output_name} / d {self.input_name}: finite, non-zero, matches {self.reference} "
                f"finite differences to {self.fd_rel_error:.1e} relative; tolerance {self.tolerance:g}{why}{confirmed})")

    def summary(self) -> str:
        if not self.checks:
            return self._summary()
        return f"gradient {'ok' if self.ok else 'FAILED'} ({len(self.checks)} checks): " + "; ".join(c._summary() for c in self.checks)

    def to_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k != "checks"}
        data["ok"] = self.ok
        if self.checks:
            data["checks"] = [c.to_dict() for c in self.checks]
        return data


def gradient_targets(model: Model, input_name: str | None = None) -> list[tuple[str, str | None]]:
    """What the gradient check differentiates: ``(input, tensor attributed at or None)`` pairs.

    None: the input the analyzers choose (the single float input; with no float input, the single
    input or else the first integer input from which a float tensor is computed); several float
    inputs, which analyzers refuse to choose among, are each checked. ``"all"``: every float input
    and every integer input. An integer input is checked at each float tensor computed from it (the
    analyzers' tap: an embedding lookup, a Cast, ...).
    """
    from onnxxai.analyzers.tap import float_frontier

    floats = [s.name for s in model.inputs if s.is_float]
    integers = [s.name for s in model.inputs if not s.is_float and s.dtype.kind in "iub"]
    if input_name == "all":
        names = floats + integers
    elif input_name is not None:
        names = [model.input_spec(input_name).name]
    elif floats:
        names = floats
    else:
        reached = [n for n in integers if float_frontier(model, n)]
        names = reached[:1] or [model.input_spec(None).name]
    targets: list[tuple[str, str | None]] = []
    for name in names:
        if name in floats:
            targets.append((name, None))
            continue
        frontier = [tensor for tensor, _ in float_frontier(model, name)]
        if not frontier and input_name not in (None, "all"):
            raise AnalyzerError(f"{model.source}: no float tensor is computed from integer input {name!r}; nothing to check")
        targets += [(name, tensor) for tensor in frontier]
    return targets


def gradient_flow(model: Model, original: onnx.ModelProto | None = None, *, seed: int = 0, directions: int = 3,
                  tolerance: float = 2e-2, input_name: str | None = None) -> GradientReport:
    """Check the gradient of ``model``'s default explained output on a seeded probe of batch 1, for
    each of :func:`gradient_targets` (``input_name``: None, a name, or "all").

    The reference is central differences of a float64 copy of the converted graph (whose float32
    forward matches onnxruntime, which the parity check established), free of float32 rounding:
    constants the graph makes in float32 and casts to float32 are widened to float64 as it runs.
    Where the graph still cannot run in float64, central differences of onnxruntime on the
    original file, with steps scaled to the input and to the gradient. A comparison that fails is
    repeated against onnxruntime before it is reported (a second reference: a failing verdict is
    confirmed, not taken from one rounding-prone computation). A quantized graph's integer forward
    is piecewise constant, so its float64 copy computes the dequantized float surrogate instead,
    with each op's rounding residual frozen at the probe (:func:`onnxxai.convert.qlinear.surrogate_forward`),
    and ``reference`` says so. Inputs other than the analyzed one get the probes of
    :func:`onnxxai.load` (the shapes parity used, batch 1). The check has ``model.timeout`` seconds.
    """
    original = model.original if original is None else original
    if original is None:
        raise InputError(f"{model.source}: the gradient check needs the original file (onnxxai.load keeps it)")
    with limits.budget(timeout=model.timeout, memory=model.memory_limit, stage="gradient check", label=model.source):
        reports = [_check(model, original, name, tensor, seed, directions, tolerance)
                   for name, tensor in gradient_targets(model, input_name)]
    if len(reports) == 1:
        return reports[0]
    first = next((r for r in reports if not r.ok), reports[0])
    return dataclasses.replace(first, checks=tuple(reports))


def _probes(model: Model, seed: int) -> dict[str, np.ndarray]:
    """The parity check's probe shapes with batch 1 (so sizes that onnxruntime accepted are reused)."""
    shapes = {}
    for spec in model.inputs:
        shape = model.parity.probe_shapes.get(spec.name) if model.parity is not None else None
        if shape:
            batch_axis = bool(spec.shape) and (not isinstance(spec.shape[0], int) or spec.shape[0] <= 0 or model.fixed_batch)
            shapes[spec.name] = (1, *shape[1:]) if batch_axis else tuple(shape)
    return probe_feeds(model.inputs, seed=seed, batch=1, shapes=shapes, label=model.source)


def _check(model: Model, original: onnx.ModelProto, input_name: str, tensor: str | None, seed: int, directions: int,
           tolerance: float) -> GradientReport:
    from onnxxai.analyzers import Gradient, analyze

    probes = _probes(model, seed)
    others = {k: v for k, v in probes.items() if k != input_name}
    analyzer = Gradient(model, input_name=input_name, attribute_at=tensor, fixed_inputs=others or None)
    function = analyzer.function
    x = probes[input_name]
    try:
        expl = analyze(x, analyzer)
    except AnalyzerError:  # no gradient path at all
        return GradientReport(input_name, function.output_name, True, False, float("nan"), tolerance, 0)
    name = input_name
    if function.tap is not None:  # the gradient at the float tensor computed from the input
        name = f"{input_name} at {function.tap.tensor}"
        g = np.asarray(expl.extras["tap_attribution"], dtype=np.float64)
        x = np.asarray(function.embed(model.as_tensor(input_name, x)).cpu().numpy())
    else:
        g = np.asarray(expl.val, dtype=np.float64)
    finite, nonzero = bool(np.all(np.isfinite(g))), bool(np.any(g))
    if not (finite and nonzero):
        return GradientReport(name, function.output_name, finite, nonzero, float("nan"), tolerance, 0)
    target = int(expl.output_selection[0])
    units = _directions(g, directions)
    cause = ""
    try:
        f, quantized = _float64_function(model, function, probes, target)
        steps, reference = STEPS64, "float64 dequantized surrogate" if quantized else "float64"
    except ResourceLimitError:
        raise
    except Exception as exc:  # noqa: BLE001 - a module that cannot run in float64: onnxruntime instead, saying why
        if function.tap is not None:  # onnxruntime cannot substitute an inner tensor
            raise AnalyzerError(
                f"{model.source}: the gradient at {function.tap.tensor!r} cannot be checked: the float64 copy of the "
                f"graph fails ({exc.__class__.__name__}: {exc}) and onnxruntime cannot substitute an inner tensor"
            ) from exc
        cause = f"{exc.__class__.__name__}: {exc}".splitlines()[0]
        f, steps, reference = _onnxruntime_function(original, function, probes, target), STEPS, "onnxruntime float32"
    error = _fd_error(f, x, g, units, steps)
    confirmation = ""
    if error > tolerance and function.tap is None and reference != "onnxruntime float32":
        second = _fd_error(_onnxruntime_function(original, function, probes, target), x, g, units, STEPS)
        if second <= tolerance:  # one reference disagrees, the other agrees: not a failure of the gradient
            confirmation = f"not confirmed: onnxruntime float32 finite differences match to {second:.1e}"
            error, reference = second, f"onnxruntime float32 ({reference} disagreed: {error:.1e})"
        else:
            confirmation = f"confirmed by onnxruntime float32 finite differences ({second:.1e})"
    return GradientReport(name, function.output_name, finite, nonzero, float(error), tolerance, len(units),
                          reference, cause, confirmation)


def _directions(g: np.ndarray, directions: int) -> list[np.ndarray]:
    """Directions with a large derivative: the gradient's own direction (checks magnitude and
    direction together) and the coordinates of its largest entries (checks single entries)."""
    units = [g / np.linalg.norm(g)]
    for i in np.argsort(-np.abs(g).ravel())[: directions - 1]:
        e = np.zeros_like(g)
        e.ravel()[i] = 1.0
        units.append(e)
    return units


def _fd_error(f, x: np.ndarray, g: np.ndarray, units: list[np.ndarray], steps: tuple[float, ...]) -> float:
    """Median over ``units`` of the best relative error of central differences of ``f`` against the
    analytic directional derivative; steps: the fixed ones, ones scaled to the input's magnitude,
    and ones that move the output by 0.1%..10% of its value (outputs of random networks can be tiny)."""
    x64 = x.astype(np.float64)
    scale = abs(f(x64))
    size = float(np.abs(x64).max()) if x64.size else 0.0
    errors = []
    for v in units:
        analytic = float((g * v).sum())
        hs = list(steps) + [s * size for s in steps if size > 1] + [
            c * scale / abs(analytic) for c in (1e-3, 1e-2, 1e-1) if scale > 0 and analytic]
        errors.append(min(abs((f(x64 + h * v) - f(x64 - h * v)) / (2 * h) - analytic) / max(abs(analytic), 1e-12) for h in hs))
    return float(np.median(errors))


def _float64_mode():
    """A torch function mode that widens to float64 every float tensor and float dtype an op is
    given: constants a converter makes in float32 at run time and Cast-to-float32 nodes would
    otherwise stop (or round) the float64 copy of the graph."""
    import torch
    from torch.overrides import TorchFunctionMode

    narrow = (torch.float32, torch.float16, torch.bfloat16)

    def widen(value):
        if isinstance(value, torch.Tensor) and value.dtype in narrow:
            return value.double()
        if isinstance(value, torch.dtype) and value in narrow:
            return torch.float64
        if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
            return type(value)(widen(v) for v in value)
        return value

    class Float64(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*widen(tuple(args)), **{k: widen(v) for k, v in (kwargs or {}).items()})

    return Float64()


def _float64_function(model: Model, function, probes: dict, target: int):
    """The explained output of a float64 copy of the converted graph, as a function of the input, and
    whether the graph is quantized (then the copy computes its dequantized float surrogate: every
    straight-through module returns its surrogate)."""
    import copy

    import torch

    tap = function.tap
    source = model.torch_module if tap is None else tap.substitute
    names = [s.name for s in model.inputs]
    start = probes[function.input_name] if tap is None else function.embed(torch.from_numpy(probes[function.input_name])).numpy()
    if straight_through_modules(source):  # frozen at the exact results the model itself computes at the probe
        native = {k: torch.from_numpy(v).to(model.device) for k, v in probes.items()}
        value = torch.from_numpy(np.asarray(start)).to(model.device)
        args = [value if n == function.input_name else native[n] for n in names] if tap is None else [native[n] for n in names] + [value]
        module = frozen_copy(source, *args).cpu()
    else:
        module = copy.deepcopy(source).double().cpu()
    quantized = bool(straight_through_modules(module))
    index = [o.name for o in model.outputs].index(function.output_name)
    fixed = {k: torch.from_numpy(v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in probes.items()}

    def f(t: np.ndarray) -> float:
        value = torch.from_numpy(np.asarray(t, dtype=np.float64))
        if tap is None:  # t is the analyzed input
            args = [value if n == function.input_name else fixed[n] for n in names]
        else:  # t is the tapped tensor; the integer input keeps its probe
            args = [fixed[n] for n in names] + [value]
        with torch.no_grad(), surrogate_forward(module, frozen=True), _float64_mode():
            out = module(*args)
        out = out[index] if isinstance(out, (tuple, list)) else out
        return float(out.reshape(out.shape[0], -1)[0, target])

    f(start)  # fails here if some op cannot run in float64
    return f, quantized


def _onnxruntime_function(original: onnx.ModelProto, function, probes: dict, target: int):
    """The explained output of onnxruntime on the original file (float32 inputs)."""
    session = onnxruntime_session(original)
    dtype = probes[function.input_name].dtype

    def f(t: np.ndarray) -> float:
        (out,) = run_onnxruntime(session, {**probes, function.input_name: np.asarray(t).astype(dtype)},
                                 outputs=[function.output_name])
        out = tensor_of(out)  # a ZipMap's sequence of maps: the tensor it wraps
        return float(np.asarray(out, dtype=np.float64).reshape(out.shape[0], -1)[0, target])

    return f
