"""Shared chores of the metrics: the scorer that runs the original file, features and their ranking,
array conversion, seeded draws."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from onnxxai.errors import InputError
from onnxxai.explanation import Explanation
from onnxxai.runtime import RuntimeModel

__all__ = ["Scorer", "runtime_of", "as_numpy", "features_of", "relevance", "rank_of", "random_state", "groups",
           "random_explanation", "explanation_of"]

SCORES = ("auto", "softmax", "raw")


def as_numpy(value: Any) -> np.ndarray:
    """A numpy copy-free view of ``value`` (torch tensors are moved to the CPU)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def runtime_of(model: Any) -> RuntimeModel:
    """The onnxruntime session of ``model``: a :class:`RuntimeModel` itself, or a loaded Model's
    :attr:`~onnxxai.model.Model.runtime` (its original file as it ships)."""
    if isinstance(model, RuntimeModel):
        return model
    runtime = getattr(model, "runtime", None)
    if isinstance(runtime, RuntimeModel):
        return runtime
    raise InputError(f"metrics evaluate an onnxxai Model or RuntimeModel, got {type(model).__name__}")


def random_state(seed: int | np.random.RandomState) -> np.random.RandomState:
    """The draws of a metric. A legacy ``RandomState`` on purpose: seeded with the same integer it
    gives the same numbers as ``np.random.seed(seed)`` followed by ``np.random.*``, which is how Quantus
    draws, so both can be fed the same random draws (never the global RNG here)."""
    if isinstance(seed, np.random.RandomState):
        return seed
    return np.random.RandomState(int(seed))


class Scorer:
    """Runs the original file through onnxruntime and returns each sample's selected score.

    ``scores``: ``"softmax"`` (probability of the selected class, as Petsiuk et al. and Quantus use),
    ``"raw"`` (the output value itself), or ``"auto"``: raw when the clean outputs already are
    probabilities (non-negative rows that sum to 1), else softmax for a 2-D output with several
    columns, else raw. ``output_name`` picks the output (default: the first float output).
    """

    def __init__(self, model: Any, *, scores: str = "auto", output_name: str | None = None,
                 clean_output: Any = None, input_name: str | None = None) -> None:
        if scores not in SCORES:
            raise InputError(f"scores must be one of {SCORES}, got {scores!r}")
        self.runtime = runtime_of(model)
        self.input_name = self.runtime.input_spec(input_name).name
        if output_name is None:
            floats = [o.name for o in self.runtime.outputs if o.dtype.kind == "f"]
            if not floats:
                raise InputError(f"{self.runtime.source}: no float output to score")
            output_name = floats[0]
        elif output_name not in {o.name for o in self.runtime.outputs}:
            raise InputError(f"{self.runtime.source}: no output named {output_name!r}; "
                             f"outputs are {[o.name for o in self.runtime.outputs]}")
        self.output_name = output_name
        self.scores = self._resolve(scores, clean_output)
        #: the largest score there is: 1.0 for probabilities (softmax, or a file whose outputs already are
        #: probabilities, detected by ``"auto"``), None when unbounded (logits, regression outputs)
        self.score_bound: float | None = 1.0 if self.scores == "softmax" or (
            scores == "auto" and self._probabilities(clean_output)) else None

    @staticmethod
    def _resolve(scores: str, clean_output: Any) -> str:
        if scores != "auto":
            return scores
        if clean_output is None:
            return "softmax"
        if Scorer._probabilities(clean_output):
            return "raw"
        out = as_numpy(clean_output)
        return "softmax" if out.ndim == 2 and out.shape[1] >= 2 else "raw"

    @staticmethod
    def _probabilities(clean_output: Any) -> bool:
        """Whether ``clean_output`` rows already are probabilities (several non-negative columns summing to 1)."""
        if clean_output is None:
            return False
        out = as_numpy(clean_output).astype(np.float64)
        flat = out.reshape(out.shape[0], -1) if out.ndim else out.reshape(1, 1)
        return flat.shape[1] >= 2 and bool((flat >= 0).all()) and bool(np.allclose(flat.sum(axis=1), 1.0, atol=1e-4))

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """The transformed outputs of every sample of ``x``, flattened to ``(samples, -1)``, float64."""
        feeds = {self.input_name: self.runtime.as_array(self.input_name, x)}
        (out,) = self.runtime.run(feeds, [self.output_name])
        flat = np.asarray(out, dtype=np.float64).reshape(len(x), -1)
        if self.scores == "softmax":
            flat = np.exp(flat - flat.max(axis=1, keepdims=True))
            flat /= flat.sum(axis=1, keepdims=True)
        return flat

    def __call__(self, x: np.ndarray, target: np.ndarray) -> np.ndarray:
        """The selected score of each sample of ``x`` (``target``: one flat output index per sample)."""
        return self.outputs(x)[np.arange(len(x)), np.asarray(target, dtype=np.int64)]

    def describe(self) -> dict[str, Any]:
        return {"scores": self.scores, "score_bound": self.score_bound, "output": self.output_name,
                "batch_mode": self.runtime.batch_mode}


def features_of(shape: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
    """How a metric counts features of one sample of ``shape`` (without the batch axis): an image
    ``(C, H, W)`` has ``H*W`` pixel features (all channels of a pixel go together); any other shape
    has one feature per element. Returns (feature grid shape, number of features)."""
    if len(shape) == 3:
        return shape[1:], int(shape[1] * shape[2])
    return shape, int(np.prod(shape, dtype=np.int64))


def relevance(attribution: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per-feature relevance ``(B, F)`` of ``attribution`` for inputs ``x``: for images, summed over the
    channel axis when the attribution has one per channel; otherwise the attribution itself."""
    a = as_numpy(attribution).astype(np.float64)
    b = x.shape[0]
    if x.ndim == 4:
        if a.ndim == 3:
            a = a[:, None]
        if a.ndim != 4 or a.shape[0] != b or a.shape[2:] != x.shape[2:] or a.shape[1] not in (1, x.shape[1]):
            raise InputError(f"attribution of shape {a.shape} does not fit inputs of shape {x.shape}")
        return a.sum(axis=1).reshape(b, -1)
    if a.shape != x.shape:
        raise InputError(f"attribution of shape {a.shape} does not fit inputs of shape {x.shape}")
    return a.reshape(b, -1)


def rank_of(order: np.ndarray) -> np.ndarray:
    """The position of each feature in ``order`` (``order[b, j]`` is the j-th feature of sample b)."""
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(order.shape[1]), order.shape), axis=1)
    return rank


def apply_mask(x: np.ndarray, mask: np.ndarray, substrate: np.ndarray) -> np.ndarray:
    """``x`` with the features where ``mask`` ``(N, F)`` is True taken from ``substrate`` (both ``(N, ...)``)."""
    n = x.shape[0]
    if x.ndim == 4:
        m = mask.reshape(n, 1, *x.shape[2:])
    else:
        m = mask.reshape(x.shape)
    return np.where(m, substrate, x).astype(x.dtype, copy=False)


def groups(samples: int, per_sample: int, runtime: RuntimeModel) -> Iterator[slice]:
    """Slices of samples so that one group's ``per_sample`` variants each fill about one session
    chunk: one sample per group when its variants alone fill a chunk, as many as fit otherwise."""
    size = max(1, runtime.batch_size // max(per_sample, 1))
    for start in range(0, samples, size):
        yield slice(start, min(samples, start + size))


def targets_of(expl: Explanation) -> np.ndarray:
    """The explained flat output index of each sample."""
    sel = as_numpy(expl.output_selection).astype(np.int64).reshape(-1)
    n = as_numpy(expl.input).shape[0]
    if sel.size == 1 and n > 1:
        sel = np.repeat(sel, n)
    return sel


def inputs_of(expl: Explanation) -> np.ndarray:
    x = as_numpy(expl.input)
    if x.dtype.kind != "f":
        raise InputError("metrics perturb float inputs; this explanation's input is "
                         f"{x.dtype} (attribute token inputs at their embedding and evaluate there)")
    return x


def random_explanation(expl: Explanation, seed: int = 0) -> Explanation:
    """A copy of ``expl`` whose attribution is seeded uniform noise: the chance level a metric of a
    real method is compared with (``analyzer`` is ``"Random"``)."""
    x = inputs_of(expl)
    val = np.random.default_rng(seed).random(x.shape).astype(np.float32)
    return replace(expl, val=val, analyzer="Random", heatmap="attribution", extras={"seed": seed})


def model_outputs(model: Any, x: np.ndarray, purpose: str = "score") -> np.ndarray:
    """The first float output of the ORIGINAL file on ``x`` (one onnxruntime pass through
    :func:`runtime_of`), as float64 rows ``(N, -1)``; ``purpose`` words the error of a file without one."""
    runtime = runtime_of(model)
    name = runtime.input_spec().name
    floats = [o.name for o in runtime.outputs if o.dtype.kind == "f"]
    if not floats:
        raise InputError(f"{runtime.source}: no float output to {purpose}")
    (out,) = runtime.run({name: runtime.as_array(name, x)}, [floats[0]])
    return np.asarray(out, dtype=np.float64).reshape(len(x), -1)


def explanation_of(x: Any, attribution: Any, target: Any, *, output: Any = None, analyzer: str = "custom") -> Explanation:
    """An :class:`Explanation` of precomputed arrays, so attributions from any tool can be evaluated."""
    x = as_numpy(x)
    sel = np.asarray(as_numpy(target), dtype=np.int64).reshape(-1)
    if sel.size == 1:
        sel = np.repeat(sel, x.shape[0])
    return Explanation(val=as_numpy(attribution), input=x, output=output, output_selection=sel,
                       analyzer=analyzer, heatmap="attribution")


#: analyzers a randomisation or robustness metric re-runs: an analyzer, or a builder from a Model
AnalyzerFactory = Callable[[Any], Any]
