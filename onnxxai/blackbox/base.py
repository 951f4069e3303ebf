"""The black-box analyzer interface: perturb an input, run the original file in onnxruntime, attribute.

A :class:`BlackBoxAnalyzer` needs only a :class:`onnxxai.runtime.RuntimeModel` (the ORIGINAL file
behind one reused session), so it explains files that do not convert to torch and machines without
torch. Subclasses implement :meth:`BlackBoxAnalyzer.attribute` on one numpy batch; the base class
does the chores every method shares: which input and output, the clean output and the selected
output index of each sample (:mod:`onnxxai.selectors`), evaluating perturbed rows in bounded chunks
(one session call per chunk, :meth:`BlackBoxAnalyzer.evaluate`), array types in and out, and the
:class:`~onnxxai.explanation.Explanation` with call counts. This module imports no torch.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from onnxxai.errors import AnalyzerError, InputError
from onnxxai.explanation import Explanation
from onnxxai.runtime import RuntimeModel, load_runtime
from onnxxai.selectors import as_selector

__all__ = ["BlackBoxAnalyzer", "as_runtime", "analyze_blackbox", "RowMaker"]

#: make(start, stop) -> (rows of the analyzed input, sample index of each row) for rows start..stop-1
RowMaker = Callable[[int, int], tuple[np.ndarray, np.ndarray]]


def as_runtime(model: Any) -> RuntimeModel:
    """The :class:`RuntimeModel` to perturb: a RuntimeModel itself, a loaded torch ``onnxxai.Model``
    (its ``runtime``: the original file), or a path (opened with :func:`onnxxai.load_runtime`)."""
    if isinstance(model, RuntimeModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_runtime(model)
    runtime = getattr(model, "runtime", None)  # onnxxai.Model, without importing torch here
    if isinstance(runtime, RuntimeModel):
        return runtime
    raise AnalyzerError(
        f"black-box methods need an onnxxai.RuntimeModel (onnxxai.load_runtime) or an onnxxai.Model, "
        f"got {type(model).__name__}"
    )


def _value_kind(value: Any) -> str:
    """'tensor' for a tensor value info, 'map_sequence' for a sequence of maps (ZipMap), else 'other'."""
    which = value.type.WhichOneof("value")
    if which == "tensor_type":
        return "tensor"
    if which == "sequence_type" and value.type.sequence_type.elem_type.WhichOneof("value") == "map_type":
        return "map_sequence"
    return "other"


def output_matrix(value: Any) -> np.ndarray:
    """An output as a float64 array ``(B, ...)``: tensors as they are, a sequence of maps (ZipMap's
    class probabilities) as rows ordered by key."""
    if isinstance(value, list):
        if value and isinstance(value[0], dict):
            keys = sorted(value[0])
            return np.asarray([[row[k] for k in keys] for row in value], dtype=np.float64)
        return np.asarray(value, dtype=np.float64)
    return np.asarray(value)


class BlackBoxAnalyzer(ABC):
    """An explanation method that needs only onnxruntime (see the module docstring).

    ``model``: a RuntimeModel, an ``onnxxai.Model`` (its original file is run) or a path.
    ``input_name``: the analyzed input (default: the single float input, or the only input).
    ``output_name``: the explained output (default: the first float tensor output, else the first
    sequence of maps, e.g. ZipMap probabilities). ``fixed_inputs``: arrays for the other inputs (one
    row per sample; each perturbed row gets its sample's). ``batch_size``: rows per session call
    (default: the runtime's chunk size; a fixed-batch file always runs at its batch).
    ``analyzer(input, output_selection)`` is the same as ``onnxxai.analyze(input, analyzer, output_selection)``.
    """

    #: preset drawing style of this analyzer's explanations
    heatmap: str = "attribution"

    def __init__(
        self,
        model: Any,
        *,
        input_name: str | None = None,
        output_name: str | None = None,
        fixed_inputs: Mapping[str, Any] | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.runtime = as_runtime(model)
        rt = self.runtime
        if input_name is None and len(rt.inputs) == 1:
            input_name = rt.inputs[0].name
        self.input_spec = rt.input_spec(input_name)
        self.input_name = self.input_spec.name
        kinds = {v.name: _value_kind(v) for v in rt.onnx_model.graph.output}
        names = [o.name for o in rt.outputs]
        if output_name is None:
            floats = [o.name for o in rt.outputs if kinds[o.name] == "tensor" and o.is_float]
            maps = [n for n in names if kinds[n] == "map_sequence"]
            if not floats and not maps:
                raise AnalyzerError(f"{rt.source}: no float output to explain; outputs are {[str(o) for o in rt.outputs]}")
            output_name = (floats or maps)[0]
        if output_name not in names:
            raise AnalyzerError(f"{rt.source}: no output named {output_name!r}; outputs are {names}")
        self.output_name = output_name
        others = [s.name for s in rt.inputs if s.name != self.input_name]
        fixed = dict(fixed_inputs or {})
        unknown = sorted(set(fixed) - set(others))
        if unknown:
            raise InputError(f"{rt.source}: fixed_inputs names unknown input(s) {unknown}; other inputs are {others}")
        missing = [n for n in others if n not in fixed]
        if missing:
            raise InputError(f"{rt.source}: inputs {missing} need values: pass fixed_inputs={{name: array}} "
                             f"(attributing to {self.input_name!r})")
        self.fixed_inputs = {k: rt.as_array(k, v) for k, v in fixed.items()}
        if batch_size is not None and batch_size < 1:
            raise AnalyzerError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self._rows = 0

    @property
    def name(self) -> str:
        return type(self).__name__

    def parameters(self) -> dict[str, Any]:
        """The method's parameters, recorded in ``extras["parameters"]``."""
        return {}

    @abstractmethod
    def attribute(self, x: np.ndarray, target: np.ndarray, output: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Attributions of batch ``x`` (numpy, the input's dtype) for flat output index ``target[b]``
        of each sample (``output``: the clean outputs, ``(B, ...)``); returns ``(val, extras)`` with
        ``val`` of ``x``'s shape."""

    def __call__(self, input: Any, output_selection: Any = None) -> Explanation:
        return analyze_blackbox(input, self, output_selection)

    # -- running -----------------------------------------------------------------------------
    def _feeds(self, rows: np.ndarray, sample: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {self.input_name: rows}
        for name, value in self.fixed_inputs.items():
            feeds[name] = value[sample] if value.ndim else value
        return feeds

    def outputs(self, rows: np.ndarray, sample: np.ndarray) -> np.ndarray:
        """The explained output of ``rows`` (flattened per row, float64); ``sample[i]`` is the sample
        whose fixed inputs row ``i`` takes. Chunks by the runtime's rule."""
        (out,) = self.runtime.run(self._feeds(rows, sample), [self.output_name])
        self._rows += len(rows)
        return output_matrix(out).reshape(len(rows), -1).astype(np.float64)

    def chunk(self, sample_shape: tuple[int, ...]) -> int:
        """Rows to build and run at once: ``batch_size`` when given, else the runtime's chunk size
        for rows of ``sample_shape`` (a fixed-batch file: a multiple of its batch)."""
        rt = self.runtime
        probe = {self.input_name: np.empty((1, *sample_shape), self.input_spec.dtype)}
        probe.update({k: v[:1] if v.ndim else v for k, v in self.fixed_inputs.items()})
        size = self.batch_size or rt.chunk_size(probe)
        if rt.batch_mode == "fixed":
            fixed = rt.fixed_batch or 1
            size = max(fixed, size // fixed * fixed)
        return size

    def evaluate(self, total: int, make: RowMaker, target: np.ndarray, sample_shape: tuple[int, ...]) -> np.ndarray:
        """Run ``total`` perturbed rows built ``chunk`` at a time by ``make(start, stop)`` and return
        the selected output of each row (``target[sample of the row]``), float64 ``(total,)``.
        Memory stays bounded by one chunk of rows."""
        step = self.chunk(sample_shape)
        scores = np.empty(total, dtype=np.float64)
        for start in range(0, total, step):
            stop = min(total, start + step)
            rows, sample = make(start, stop)
            out = self.outputs(rows, sample)
            scores[start:stop] = out[np.arange(stop - start), target[sample]]
        return scores

    def coalition_scores(
        self,
        x: np.ndarray,
        baseline: np.ndarray,
        ids: list[np.ndarray],
        keep: list[np.ndarray],
        target: np.ndarray,
        on_rows: Callable[[np.ndarray, np.ndarray, np.ndarray], None] | None = None,
    ) -> list[np.ndarray]:
        """The selected output for coalitions of features, all samples in shared chunks.

        ``ids[b]``: sample ``b``'s feature ids (0..M-1, one sample's rank, axes of 1 allowed);
        ``keep[b]``: ``(n_b, M)`` booleans, True where a feature keeps its value from ``x[b]`` and
        False where it takes ``baseline[b]``. ``on_rows(rows, sample, row_in_sample)`` sees every
        chunk of built rows (LIME's similarity). Returns one ``(n_b,)`` float64 array per sample.
        """
        counts = np.array([len(k) for k in keep], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])

        def make(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
            rows = np.empty((stop - start, *x.shape[1:]), dtype=x.dtype)
            sample = np.searchsorted(offsets, np.arange(start, stop), side="right") - 1
            for b in np.unique(sample):
                lo, hi = max(start, offsets[b]), min(stop, offsets[b + 1])
                flags = keep[b][lo - offsets[b]:hi - offsets[b]][:, ids[b]]
                rows[lo - start:hi - start] = np.where(flags, x[b], baseline[b])
            if on_rows is not None:
                on_rows(rows, sample, np.arange(start, stop) - offsets[sample])
            return rows, sample

        scores = self.evaluate(int(offsets[-1]), make, target, x.shape[1:])
        return [scores[offsets[b]:offsets[b + 1]] for b in range(len(keep))]


def analyze_blackbox(input: Any, analyzer: BlackBoxAnalyzer, output_selection: Any = None) -> Explanation:
    """Explain ``input`` with a black-box ``analyzer`` for ``output_selection`` (None: each sample's
    largest output). numpy in gives numpy out; a torch tensor in gives a torch tensor out on its device.
    ``extras`` holds ``parameters``, ``n_calls`` (session calls) and ``forwards`` (rows evaluated)."""
    if not isinstance(analyzer, BlackBoxAnalyzer):
        raise AnalyzerError(f"expected an onnxxai black-box analyzer, got {type(analyzer).__name__}")
    rt = analyzer.runtime
    x = rt.as_array(analyzer.input_name, input)
    if x.ndim == 0:
        raise InputError(f"input {analyzer.input_name!r} needs a batch axis (got a scalar)")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise InputError(f"input {analyzer.input_name!r} contains NaN or Inf")
    for name, value in analyzer.fixed_inputs.items():
        if value.ndim and value.shape[0] != x.shape[0]:
            raise InputError(f"fixed input {name!r} has {value.shape[0]} rows for a batch of {x.shape[0]} samples")
    calls0 = rt.calls
    analyzer._rows = 0
    (raw,) = rt.run(analyzer._feeds(x, np.arange(len(x))), [analyzer.output_name])
    analyzer._rows += len(x)
    output = output_matrix(raw)
    if output.ndim == 0 or output.shape[0] != len(x):
        raise AnalyzerError(f"{rt.source}: output {analyzer.output_name!r} has shape {output.shape}, not one row per sample")
    selector = as_selector(output_selection)
    target = np.asarray(selector(output.reshape(len(x), -1)), dtype=np.int64).reshape(-1)
    if target.shape != (len(x),):
        raise AnalyzerError(f"output_selection gave {target.shape} indices for a batch of {len(x)} samples")
    val, extras = analyzer.attribute(x, target, output)
    extras = {"parameters": analyzer.parameters(), **extras, "n_calls": rt.calls - calls0, "forwards": analyzer._rows,
              "batch_mode": rt.batch_mode, "output_name": analyzer.output_name, "input_name": analyzer.input_name}
    if rt.conversion_error:
        extras["conversion_error"] = rt.conversion_error
    val = np.asarray(val)
    if val.shape != x.shape:
        raise AnalyzerError(f"{analyzer.name} returned attributions of shape {val.shape} for an input of shape {x.shape}")
    val = val.astype(x.dtype if x.dtype.kind == "f" else np.float32, copy=False)
    expl = Explanation(val=val, input=input, output=output,
                       output_selection=target, analyzer=analyzer.name, heatmap=analyzer.heatmap, extras=extras)
    if hasattr(input, "detach"):  # a torch tensor: answer in torch on its device (torch is installed then)
        import torch

        device = input.device
        expl.val = torch.from_numpy(np.ascontiguousarray(expl.val)).to(device)
        expl.output = torch.from_numpy(np.ascontiguousarray(expl.output)).to(device)
        expl.output_selection = torch.from_numpy(target).to(device)
    return expl
