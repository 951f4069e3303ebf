"""Input augmentations around gradient analyzers: noise (SmoothGrad) and interpolation (IG).

Both pick the output once on the clean input and keep it for every augmented sample, and both
push the ``n * batch`` augmented rows through the inner analyzer in chunks (one forward and one
backward per chunk), so memory stays bounded whatever ``n`` is: ``batch_size`` rows when given,
else sized automatically (on CUDA, to a memory budget measured on the first chunk).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from onnxxai.analyzers.batching import CudaMemoryBudget, RowChunks, run_chunks
from onnxxai.analyzers.core import Analyzer
from onnxxai.analyzers.function import select
from onnxxai.analyzers.gradient import Gradient, GradientAnalyzer
from onnxxai.analyzers.target import GRADIENT_OPTIONS, GradientOptions, Target, split_options
from onnxxai.errors import AnalyzerError
from onnxxai.explanation import Explanation
from onnxxai.model import Model
from onnxxai.selectors import OutputSelector

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "NoiseAugmentation",
    "InterpolationAugmentation",
    "SmoothGrad",
    "IntegratedGradients",
    "Normal",
    "Uniform",
    "quadrature",
    "DEFAULT_CHUNK_ROWS",
]

#: Rows per forward/backward when an augmentation is given no ``batch_size``.
DEFAULT_CHUNK_ROWS = 32


class Distribution(Protocol):
    """Scalar noise distribution: draws a tensor of ``shape`` from an explicit generator."""

    def sample(self, shape: tuple[int, ...], generator: torch.Generator, device: torch.device, dtype: torch.dtype) -> torch.Tensor: ...


class Normal:
    """Normal(0, std²) noise (``std`` is the standard deviation, not the variance)."""

    def __init__(self, std: float) -> None:
        if not std >= 0:
            raise AnalyzerError(f"std must be >= 0, got {std}")
        self.std = float(std)

    def sample(self, shape, generator, device, dtype):
        return torch.randn(shape, generator=generator, device=device, dtype=dtype) * self.std

    def __repr__(self) -> str:
        return f"Normal(std={self.std:g})"


class Uniform:
    """Uniform noise on [low, high)."""

    def __init__(self, low: float, high: float) -> None:
        if not high > low:
            raise AnalyzerError(f"Uniform needs low < high, got {low}, {high}")
        self.low, self.high = float(low), float(high)

    def sample(self, shape, generator, device, dtype):
        return torch.rand(shape, generator=generator, device=device, dtype=dtype) * (self.high - self.low) + self.low

    def __repr__(self) -> str:
        return f"Uniform({self.low:g}, {self.high:g})"


def _generator(seed_or_generator: int | torch.Generator | None, device: torch.device) -> torch.Generator:
    if isinstance(seed_or_generator, torch.Generator):
        return seed_or_generator
    gen = torch.Generator(device=device)
    gen.manual_seed(0 if seed_or_generator is None else int(seed_or_generator))
    return gen


class _Augmentation(Analyzer):
    gradient_based = True

    def __init__(self, analyzer: Analyzer, n: int, batch_size: int | None) -> None:
        if not isinstance(analyzer, GradientAnalyzer):
            raise AnalyzerError(
                f"augmentations wrap gradient analyzers (Gradient, InputTimesGradient, ...), got {type(analyzer).__name__}"
            )
        if int(n) < 1:
            raise AnalyzerError(f"n must be a positive integer, got {n}")
        self.analyzer = analyzer
        self.function = analyzer.function
        self.execution = dataclasses.replace(analyzer.execution, batch_size=batch_size)
        self.n = int(n)

    def _row_chunks(self, batch: int, device: torch.device) -> RowChunks:
        """Chunks of the ``n * batch`` augmented rows: ``batch_size`` rows when given; else, on CUDA,
        the first chunk has the batch's rows and the rest are sized to a memory budget measured on it;
        on the CPU, :data:`DEFAULT_CHUNK_ROWS` (or the batch, if larger)."""
        total = self.n * batch
        if self.execution.batch_size:
            return RowChunks(total, self.execution.batch_size)
        if device.type == "cuda":
            return RowChunks(total, batch, CudaMemoryBudget(device, limit=total))
        return RowChunks(total, max(DEFAULT_CHUNK_ROWS, batch))

    def _select_clean(self, x: torch.Tensor, selector: OutputSelector) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.function.output(x)
        return output, selector(output)


class NoiseAugmentation(_Augmentation):
    """Average the inner analyzer over ``n`` noisy copies of the input.

    ``std`` gives Normal(0, std²) noise; None uses 15% of each sample's value range (max - min),
    the middle of Smilkov et al.'s recommended 10-20%. ``distribution`` takes any object with
    ``sample(shape, generator, device, dtype)`` (see :class:`Normal`, :class:`Uniform`).
    ``generator`` is a torch.Generator or an int seed; None means seed 0, so results repeat.
    """

    def __init__(
        self,
        analyzer: Analyzer,
        n: int = 50,
        std: float | None = None,
        *,
        distribution: Distribution | None = None,
        generator: int | torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(analyzer, n, batch_size)
        if std is not None and distribution is not None:
            raise AnalyzerError("give either std or distribution, not both")
        self.distribution = distribution if distribution is not None else (None if std is None else Normal(std))
        self.generator = generator
        self.heatmap = analyzer.heatmap

    @property
    def name(self) -> str:
        return f"NoiseAugmentation({self.analyzer.name})"

    def explain(self, input: torch.Tensor, selector: OutputSelector) -> Explanation:
        b = input.shape[0]
        output, target = self._select_clean(input, selector)
        gen = _generator(self.generator, input.device)
        if self.distribution is None:
            flat = input.reshape(b, -1)
            scale = 0.15 * (flat.max(dim=1).values - flat.min(dim=1).values)
            dist, described = Normal(1.0), f"Normal(std=0.15*(max-min) per sample: {scale.tolist()})"
        else:
            scale, dist, described = None, self.distribution, repr(self.distribution)

        def piece(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
            sample_index = torch.arange(start, stop, device=input.device) % b
            noise = dist.sample((stop - start, *input.shape[1:]), gen, input.device, input.dtype)
            if scale is not None:
                noise = noise * scale.index_select(0, sample_index).view(-1, *[1] * (input.dim() - 1))
            rows = input.index_select(0, sample_index) + noise
            val, _, _ = self.analyzer.attribute_rows(rows, sample_index, target.index_select(0, sample_index))
            return sample_index, val

        total = torch.zeros_like(input)  # allocated before the memory budget starts measuring
        run_chunks(piece, self._row_chunks(b, input.device), into=total)
        return Explanation(
            total / self.n, input, output, target, self.name, self.heatmap,
            {"n": self.n, "noise": described, "input_name": self.function.input_name},
        )


def quadrature(n: int, method: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """Points ``alpha`` in [0, 1] and weights (summing to 1) for integrating over the path.

    ``gausslegendre`` is exact for polynomials of degree 2n-1; ``trapezoid`` includes both end
    points; ``riemann_left``/``riemann_right``/``riemann_middle`` are the plain Riemann sums.
    """
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n)
        return (x + 1) / 2, w / 2
    if method == "trapezoid":
        if n < 2:
            raise AnalyzerError("the trapezoid rule needs n >= 2")
        alphas = np.linspace(0.0, 1.0, n)
        weights = np.full(n, 1.0 / (n - 1))
        weights[[0, -1]] /= 2
        return alphas, weights
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    if method in offsets:
        return (np.arange(n) + offsets[method]) / n, np.full(n, 1.0 / n)
    raise AnalyzerError(f"unknown quadrature {method!r}; use gausslegendre, trapezoid, riemann_left, riemann_right or riemann_middle")


class InterpolationAugmentation(_Augmentation):
    """Integrate the inner analyzer along the straight path from ``baseline`` to the input, then
    multiply by ``input - baseline``.

    ``baseline``: None (zeros), a number, or an array broadcastable to one sample or the batch. For
    an integer input (attributed at its embedding) an integer baseline is a token sequence (e.g. all
    padding ids), embedded like the input.
    Reports the completeness delta ``sum(val) - (f(x) - f(baseline))`` per sample in ``extras``.
    """

    heatmap = "attribution"

    def __init__(
        self,
        analyzer: Analyzer,
        n: int = 50,
        baseline: Any = None,
        *,
        method: str = "gausslegendre",
        batch_size: int | None = None,
    ) -> None:
        super().__init__(analyzer, n, batch_size)
        self.alphas, self.weights = quadrature(self.n, method)
        self.method = method
        self.baseline = baseline

    @property
    def name(self) -> str:
        return f"InterpolationAugmentation({self.analyzer.name})"

    def _baseline(self, x: torch.Tensor) -> torch.Tensor:
        if self.baseline is None:
            return torch.zeros_like(x)
        raw = self.baseline.detach() if isinstance(self.baseline, torch.Tensor) else np.asarray(self.baseline)
        bound = getattr(self.function, "_bound", None)
        if bound is not None and not bound.is_floating_point() and not torch.as_tensor(raw).is_floating_point():
            ids = torch.as_tensor(raw, device=bound.device, dtype=bound.dtype)  # baseline tokens: embed them
            try:
                ids = torch.broadcast_to(ids, bound.shape).clone()
            except RuntimeError as exc:
                raise AnalyzerError(f"baseline ids of shape {tuple(ids.shape)} do not broadcast to the input's {tuple(bound.shape)}") from exc
            return self.function.embed(ids).to(x.dtype)
        base = torch.as_tensor(
            self.baseline.detach() if isinstance(self.baseline, torch.Tensor) else np.asarray(self.baseline),
            device=x.device, dtype=x.dtype,
        )
        try:
            return torch.broadcast_to(base, x.shape).clone()
        except RuntimeError as exc:
            raise AnalyzerError(f"baseline of shape {tuple(base.shape)} does not broadcast to the input's {tuple(x.shape)}") from exc

    def explain(self, input: torch.Tensor, selector: OutputSelector) -> Explanation:
        b = input.shape[0]
        output, target = self._select_clean(input, selector)
        baseline = self._baseline(input)
        delta = input - baseline
        alphas = torch.as_tensor(self.alphas, device=input.device, dtype=input.dtype)
        weights = torch.as_tensor(self.weights, device=input.device, dtype=input.dtype)
        shape = (-1, *[1] * (input.dim() - 1))

        def piece(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
            row = torch.arange(start, stop, device=input.device)
            sample_index, step = row % b, row // b
            rows = baseline.index_select(0, sample_index) + alphas[step].view(shape) * delta.index_select(0, sample_index)
            val, _, _ = self.analyzer.attribute_rows(rows, sample_index, target.index_select(0, sample_index))
            return sample_index, val * weights[step].view(shape)

        total = torch.zeros_like(input)  # allocated before the memory budget starts measuring
        run_chunks(piece, self._row_chunks(b, input.device), into=total)
        val = total * delta
        f_x = select(output, target)
        f_base = select(self.function.output(baseline), target)
        gap = f_x - f_base
        completeness = val.reshape(b, -1).sum(dim=1) - gap
        extras = {
            "n": self.n,
            "method": self.method,
            "input_name": self.function.input_name,
            "completeness_delta": completeness,
            "completeness_relative": (completeness.abs() / gap.abs().clamp_min(torch.finfo(gap.dtype).tiny)),
        }
        return Explanation(val, input, output, target, self.name, self.heatmap, extras)


def _inner_gradient(owner: str, model: Model, target: Target | None, options: GradientOptions) -> tuple[Gradient, int | None]:
    """The :class:`Gradient` inside SmoothGrad and IG, and the batch size, which chunks the
    augmented rows (the inner analyzer is run a chunk at a time, never on a whole batch)."""
    target, execution = split_options(owner, target, options, GRADIENT_OPTIONS)
    inner = Gradient(model, target=target, precision=execution.precision, compile=execution.compile,
                     check_precision=execution.check_precision)
    return inner, execution.batch_size


class SmoothGrad(NoiseAugmentation):
    """SmoothGrad (Smilkov et al. 2017): :class:`NoiseAugmentation` of :class:`Gradient`; takes the
    gradient analyzers' keywords (``input_name``, ``fixed_inputs``, ``precision``, ..., ``target``)."""

    def __init__(
        self,
        model: Model,
        n: int = 50,
        std: float | None = None,
        *,
        distribution: Distribution | None = None,
        generator: int | torch.Generator | None = None,
        target: Target | None = None,
        **options: Unpack[GradientOptions],
    ) -> None:
        inner, batch_size = _inner_gradient("SmoothGrad", model, target, options)
        super().__init__(inner, n, std, distribution=distribution, generator=generator, batch_size=batch_size)

    @property
    def name(self) -> str:
        return "SmoothGrad"


class IntegratedGradients(InterpolationAugmentation):
    """Integrated Gradients (Sundararajan et al. 2017): :class:`InterpolationAugmentation` of
    :class:`Gradient`, i.e. ``(x - baseline) * ∫ grad f(baseline + α(x - baseline)) dα``; takes the
    gradient analyzers' keywords (``input_name``, ``fixed_inputs``, ``precision``, ..., ``target``)."""

    def __init__(
        self,
        model: Model,
        n: int = 50,
        baseline: Any = None,
        *,
        method: str = "gausslegendre",
        target: Target | None = None,
        **options: Unpack[GradientOptions],
    ) -> None:
        inner, batch_size = _inner_gradient("IntegratedGradients", model, target, options)
        super().__init__(inner, n, baseline, method=method, batch_size=batch_size)

    @property
    def name(self) -> str:
        return "IntegratedGradients"
