"""The analyzer interface, the model function gradient methods differentiate, and analyze()."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import contextlib

import numpy as np
import torch

from onnxxai.analyzers.tap import Tap, choose_tensor
from onnxxai.errors import AnalyzerError, InputError
from onnxxai.explanation import Explanation
from onnxxai.model import Model
from onnxxai.selectors import IndexSelector, MaxActivation, OutputSelector, as_selector

__all__ = ["Analyzer", "ModelFunction", "analyze", "select", "chunks", "row_targets", "RowChunks", "CudaMemoryBudget", "PRECISIONS"]

#: numerics of the forward/backward passes: exact float32, TF32 tensor cores, or bfloat16 autocast
PRECISIONS = ("float32", "tf32", "bf16")


class Analyzer(ABC):
    """An explanation method. Subclasses implement :meth:`explain` on a torch batch.

    ``analyzer(input, output_selection)`` is the same as ``analyze(input, analyzer, output_selection)``.
    An analyzer with a ``function`` (a :class:`ModelFunction`) or ``model`` (a :class:`Model`)
    attribute gets its input validated against the model, as a tensor on the model's device, and
    the model's parity report in ``extras``.
    """

    #: preset drawing style of this analyzer's explanations
    heatmap: str = "sensitivity"

    @property
    def name(self) -> str:
        return type(self).__name__

    @abstractmethod
    def explain(self, input: torch.Tensor, selector: OutputSelector) -> Explanation:
        """Explain a batch ``input`` (a tensor on the model's device) for the outputs ``selector`` picks."""

    def __call__(self, input: Any, output_selection: Any = None) -> Explanation:
        return analyze(input, self, output_selection)


class ModelFunction:
    """The differentiable function ``rows -> output`` that gradient methods explain.

    It feeds ``rows`` (a batch of the analyzed input, possibly augmented) to input ``input_name``
    and the user's ``fixed_inputs`` to the others; ``sample_index`` maps each row to the sample
    of the original batch whose fixed inputs it uses. It returns output ``output_name`` (by default
    the first float output).

    An integer input (token ids, bytes) is attributed at the first float tensor computed from it
    (the embedding lookup; :mod:`onnxxai.analyzers.tap`), or at ``attribute_at`` when given: the
    rows are then values of that tensor, and the input itself is bound per analysis with
    :meth:`bound`. ``attribute_at`` also works for a float input (layer attribution).
    ``integer_inputs=False`` refuses integer inputs instead (methods that need the input itself).
    """

    def __init__(
        self,
        model: Model,
        input_name: str | None = None,
        output_name: str | None = None,
        fixed_inputs: Mapping[str, Any] | None = None,
        precision: str = "float32",
        compile: bool = False,
        attribute_at: str | None = None,
        integer_inputs: bool = True,
    ) -> None:
        if precision not in PRECISIONS:
            raise AnalyzerError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.precision = precision
        self.compile = bool(compile)
        self._compiled: Any = None
        if not isinstance(model, Model):
            raise AnalyzerError(f"expected an onnxxai.Model (from onnxxai.load), got {type(model).__name__}")
        self.model = model
        self.input_name = _input_name(model, input_name, integer_inputs)
        spec = model.input_spec(self.input_name)
        if not spec.is_float and not integer_inputs:
            raise InputError(f"{model.source}: input {self.input_name!r} is {spec.dtype}; this method needs a float input")
        self.tap: Tap | None = None
        if not spec.is_float or attribute_at is not None:
            self.tap = Tap(model, choose_tensor(model, self.input_name, attribute_at) if not spec.is_float else attribute_at)
        self._bound: torch.Tensor | None = None
        names = [o.name for o in model.outputs]
        if output_name is None:  # the first float output: classifiers may put an integer label first
            floats = [o.name for o in model.outputs if o.is_float]
            if not floats:
                raise AnalyzerError(f"{model.source}: no float output to explain; outputs are {[str(o) for o in model.outputs]}")
            output_name = floats[0]
        if output_name not in names:
            raise AnalyzerError(f"{model.source}: no output named {output_name!r}; outputs are {names}")
        self.output_name = output_name
        self.output_index = names.index(output_name)
        fixed_inputs = dict(fixed_inputs or {})
        others = [s.name for s in model.inputs if s.name != self.input_name]
        unknown = sorted(set(fixed_inputs) - set(others))
        if unknown:
            raise InputError(f"{model.source}: fixed_inputs names unknown input(s) {unknown}; other inputs are {others}")
        missing = [n for n in others if n not in fixed_inputs]
        if missing:
            raise InputError(
                f"{model.source}: inputs {missing} need values: pass fixed_inputs={{name: array}} "
                f"(attributing to {self.input_name!r})"
            )
        self.fixed = {n: model.as_tensor(n, v) for n, v in fixed_inputs.items()}

    def __call__(self, rows: torch.Tensor, sample_index: torch.Tensor) -> torch.Tensor:
        args = self._args(rows, sample_index)
        with self.numerics(rows.device):
            out = self._module()(*args)
        out = out[self.output_index] if isinstance(out, (tuple, list)) else out
        return out.to(rows.dtype) if out.dtype != rows.dtype and out.is_floating_point() else out

    def _args(self, rows: torch.Tensor, sample_index: torch.Tensor) -> list[torch.Tensor]:
        """The graph's arguments for ``rows``: the inputs in order, then the tap value if any."""
        if self.tap is None:
            feeds = self.feeds(self.input_name, rows, sample_index)
            return [feeds[s.name] for s in self.model.inputs]
        if self._bound is None:
            raise AnalyzerError(f"attributing at {self.tap.tensor!r}: bind the input with ModelFunction.bound(x)")
        feeds = self.feeds(self.input_name, self._bound.index_select(0, sample_index), sample_index)
        return [feeds[s.name] for s in self.model.inputs] + [rows]

    def feeds(self, name: str, value: torch.Tensor, sample_index: torch.Tensor) -> dict[str, torch.Tensor]:
        """``value`` for input ``name`` and the fixed inputs of the samples ``sample_index``."""
        feeds = {name: value}
        for fixed_name, fixed in self.fixed.items():
            if fixed.shape[0] == 1:
                feeds[fixed_name] = fixed.expand(value.shape[0], *fixed.shape[1:])
            else:
                if int(sample_index.max()) >= fixed.shape[0]:
                    raise InputError(
                        f"fixed input {fixed_name!r} has batch {fixed.shape[0]}, fewer than the analyzed batch; "
                        "give it batch 1 or the same batch"
                    )
                feeds[fixed_name] = fixed.index_select(0, sample_index)
        return feeds

    def _module(self):
        module = self.model.torch_module if self.tap is None else self.tap.substitute
        if not self.compile:
            return module
        if self._compiled is None:
            self._compiled = torch.compile(module, dynamic=True)
        return self._compiled

    @contextlib.contextmanager
    def bound(self, x: torch.Tensor):
        """Bind the analyzed input batch ``x`` while attributing at the tap tensor; yields the tap
        tensor's values on ``x`` (the rows the analyzers start from)."""
        try:
            self._bound = x
            yield self.embed(x)
        finally:
            self._bound = None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The tap tensor's values when the analyzed input is ``x`` (other inputs as fixed)."""
        if self.tap is None:
            raise AnalyzerError("embed() needs attribution at a tensor (integer input or attribute_at)")
        feeds = self.feeds(self.input_name, x, torch.arange(x.shape[0], device=x.device))
        with torch.no_grad():
            return self.tap.embed(*[feeds[s.name] for s in self.model.inputs]).detach()

    @contextlib.contextmanager
    def numerics(self, device: torch.device):
        """float32 (no TF32 anywhere), tf32 (TF32 matmuls and convolutions) or bf16 (autocast); the
        global flags touched are restored on exit."""
        matmul = torch.backends.cuda.matmul.allow_tf32
        try:
            torch.backends.cuda.matmul.allow_tf32 = self.precision == "tf32"
            with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=self.precision == "tf32"):
                if self.precision == "bf16":
                    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                        yield
                else:
                    yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = matmul

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """The output on a clean batch, without autograd."""
        with torch.no_grad():
            return self(x, torch.arange(x.shape[0], device=x.device))


def _input_name(model: Model, name: str | None, integer_inputs: bool) -> str:
    """``name``, or the single float input, or (when integer inputs are allowed and the model has
    no float input) the single input."""
    if name is not None or not integer_inputs or any(s.is_float for s in model.inputs) or len(model.inputs) != 1:
        return model.input_spec(name).name
    return model.inputs[0].name


def select(output: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Each row's selected output value: ``output.reshape(R, -1)[r, index[r]]``."""
    return output.reshape(output.shape[0], -1).gather(1, index.view(-1, 1)).squeeze(1)


def row_targets(selector: OutputSelector, pieces: list, full_output) -> torch.Tensor | OutputSelector:
    """A row-wise selector, or any selector when the batch is one chunk, is applied to each chunk's
    own output; otherwise the selector sees the full batch output (one extra forward, only when
    the batch is split into several chunks)."""
    if isinstance(selector, (MaxActivation, IndexSelector)) or len(pieces) == 1:
        return selector
    return selector(full_output())


def chunks(total: int, size: int | None):
    """``(start, stop)`` pairs covering ``range(total)`` in pieces of at most ``size`` (all at once if None)."""
    size = total if not size else int(size)
    if size < 1:
        raise AnalyzerError(f"batch_size must be a positive integer, got {size}")
    for start in range(0, total, size):
        yield start, min(start + size, total)


class RowChunks:
    """``(start, stop)`` pieces over ``total`` rows, of ``size`` rows each; with a ``resize``
    callback, the size after the first piece is ``resize(rows_in_first_piece)`` (used to fit the
    chunk to a memory budget measured on the first piece)."""

    def __init__(self, total: int, size: int, resize=None) -> None:
        self.total, self.size, self.resize = total, max(1, int(size)), resize

    def __iter__(self):
        start, first = 0, True
        while start < self.total:
            stop = min(start + self.size, self.total)
            yield start, stop
            if first and self.resize is not None:
                self.size = max(1, int(self.resize(stop - start)))
            first = False
            start = stop


class CudaMemoryBudget:
    """Measures the peak CUDA memory of the first chunk and sizes the next ones to use at most
    ``fraction`` of the memory still available (free on the device plus cached by torch).

    Resets torch's CUDA peak-memory statistics when it starts a measurement.
    """

    def __init__(self, device: torch.device, fraction: float = 0.6, limit: int | None = None) -> None:
        self.device, self.fraction, self.limit = device, fraction, limit
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        self.base = torch.cuda.memory_allocated(device)

    def __call__(self, rows: int) -> int:
        torch.cuda.synchronize(self.device)
        per_row = max((torch.cuda.max_memory_allocated(self.device) - self.base) / rows, 1.0)
        free, _ = torch.cuda.mem_get_info(self.device)
        cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        size = int(self.fraction * (free + cached) / per_row)
        return max(1, min(size, self.limit or size))


def analyze(input: Any, analyzer: Analyzer, output_selection: Any = None) -> Explanation:
    """Explain ``input`` with ``analyzer`` for ``output_selection`` (None: each sample's max output).

    numpy in gives numpy out; torch in gives torch out on the input's device.
    """
    if not isinstance(analyzer, Analyzer):
        raise AnalyzerError(f"expected an onnxxai analyzer, got {type(analyzer).__name__}")
    function: ModelFunction | None = getattr(analyzer, "function", None)
    model = function.model if function is not None else getattr(analyzer, "model", None)
    if isinstance(model, Model):
        x = model.as_tensor(function.input_name if function is not None else model.input_spec().name, input)
    else:
        x = input.detach() if isinstance(input, torch.Tensor) else torch.as_tensor(np.asarray(input))
    selector = as_selector(output_selection)
    if function is not None and function.tap is not None:
        with function.bound(x) as rows:
            expl = _explain(analyzer, function, rows, selector)
        _attribute_to_input(expl, function, x)
    else:
        expl = _explain(analyzer, function, x, selector)
    if isinstance(model, Model):
        report = model.parity
        expl.extras.setdefault("parity", report)
        if not report.ok:
            expl.extras["warning"] = "the converted graph failed its parity check: " + report.summary()
    return _follow_input_type(expl, input)


def _explain(analyzer: Analyzer, function: ModelFunction | None, x: torch.Tensor, selector: OutputSelector) -> Explanation:
    expl = analyzer.explain(x, selector)
    if function is not None and getattr(analyzer, "check_precision", False) and function.precision != "float32":
        expl.extras["precision_error"] = _precision_error(analyzer, function, x, selector, expl)
    return expl


def _attribute_to_input(expl: Explanation, function: ModelFunction, x: torch.Tensor) -> None:
    """After attributing at the tap tensor: keep its attribution in ``extras["tap_attribution"]``;
    for an integer input whose tap tensor has the input's shape plus feature axes (an embedding),
    ``val`` becomes the sum over those axes, one value per token (sums are preserved, so IG's
    completeness still holds for ``val``)."""
    tap_val = expl.val
    expl.extras["attributed_at"] = function.tap.tensor
    expl.extras["tap_attribution"] = tap_val
    integer = not x.is_floating_point()
    if integer and tap_val.dim() >= x.dim() and tuple(tap_val.shape[: x.dim()]) == tuple(x.shape):
        expl.val = tap_val.sum(dim=tuple(range(x.dim(), tap_val.dim()))) if tap_val.dim() > x.dim() else tap_val


def _precision_error(analyzer: Analyzer, function: ModelFunction, x: torch.Tensor, selector, expl: Explanation) -> dict:
    """Relative L2 distance and cosine similarity of the attribution to a float32 run (same selection)."""
    precision, compiled = function.precision, function.compile
    try:
        function.precision, function.compile = "float32", False
        reference = analyzer.explain(x, lambda _out: expl.output_selection).val
    finally:
        function.precision, function.compile = precision, compiled
    a, b = expl.val.double().flatten(), reference.double().flatten()
    return {
        "precision": precision,
        "relative_l2": float((a - b).norm() / b.norm().clamp_min(1e-30)),
        "cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=0)),
    }


def _follow_input_type(expl: Explanation, input: Any) -> Explanation:
    if isinstance(input, torch.Tensor):
        device = input.device
        expl.val = expl.val.detach().to(device)
        expl.output = expl.output.detach().to(device)
        expl.output_selection = expl.output_selection.to(device)
    else:
        expl.val = expl.val.detach().cpu().numpy()
        expl.output = expl.output.detach().cpu().numpy()
        expl.output_selection = expl.output_selection.detach().cpu().numpy()
        for key, value in list(expl.extras.items()):
            if isinstance(value, torch.Tensor):
                expl.extras[key] = value.detach().cpu().numpy()
    expl.input = input
    return expl
