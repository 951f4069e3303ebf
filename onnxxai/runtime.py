"""The original file run by onnxruntime alone: what black-box methods and audit metrics evaluate.

:class:`RuntimeModel` holds ONE ``InferenceSession`` of the file as it ships (no normalization, no
torch) and runs any number of samples through it in chunks of bounded size. It imports no torch, so
a file that does not convert, or a machine without torch, can still be explained by perturbation
methods.

Batch handling (:attr:`RuntimeModel.batch_mode`):

* ``"dynamic"``: the file declares a dynamic first dimension; chunks of :attr:`batch_size` samples.
* ``"relaxed"``: the file declares a fixed batch (``torch.onnx.export`` without ``dynamic_axes``), the
  declaration was made symbolic (:func:`onnxxai.proto.batch.relax_batch`) and the relaxed graph was
  verified on seeded probes: one call on several samples equals per-sample runs of the original
  within the file's parity tolerance. Chunks of :attr:`batch_size`.
* ``"fixed"``: the relaxed graph failed that check (or onnxruntime refused it; the reason is kept in
  :attr:`relax_error`); the original runs in chunks of its fixed batch, the last chunk padded by
  repeating its last sample and the padding dropped from the outputs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from onnxxai.errors import InputError, ModelFileError, ResourceLimitError
from onnxxai.parity import (compare_outputs, execution_provider, onnxruntime_failure_node, onnxruntime_session, parity_tolerance,
                            run_onnxruntime)
from onnxxai.proto import limits
from onnxxai.proto.artifact import ArtifactKind, artifact_kind
from onnxxai.proto.batch import fixed_batch, relax_batch
from onnxxai.proto.reading import read_model
from onnxxai.proto.specs import TensorSpec, graph_input_specs, probe_feeds, probe_shape, select_input, spec_of, bind_inputs

__all__ = ["RuntimeModel", "load_runtime", "DEFAULT_MAX_BATCH", "DEFAULT_CHUNK_BYTES"]

#: Most samples in one session call (dynamic and relaxed files).
DEFAULT_MAX_BATCH = 64
#: Most bytes of input in one session call; large inputs get smaller chunks.
DEFAULT_CHUNK_BYTES = 256 * 2**20


class RuntimeModel:
    """The original ONNX file behind one reused onnxruntime session (see the module docstring).

    ``calls`` counts session runs (benchmarks and cost bounds read it); ``conversion_error`` holds why
    the file could not be converted to torch, when a loader tried and failed.
    """

    def __init__(
        self,
        onnx_model: onnx.ModelProto,
        source: str,
        *,
        provider: str | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        seed: int = 0,
        conversion_error: str | None = None,
        timeout: float | str | None = limits.DEFAULT,
    ) -> None:
        if max_batch < 1:
            raise InputError(f"max_batch must be at least 1, got {max_batch}")
        self.onnx_model = onnx_model
        self.source = source
        self.provider = provider or execution_provider()
        self.artifact: ArtifactKind = artifact_kind(onnx_model)
        self.inputs: tuple[TensorSpec, ...] = tuple(graph_input_specs(onnx_model))
        self.outputs: tuple[TensorSpec, ...] = tuple(spec_of(v) for v in onnx_model.graph.output)
        self.conversion_error = conversion_error
        self.max_batch = int(max_batch)
        self.chunk_bytes = int(chunk_bytes)
        self.calls = 0
        #: seconds one :meth:`run` may take (None: unbounded); past it, TimeLimitError names the node
        self.timeout = timeout = limits.resolve_timeout(timeout)
        self.relax_error: str | None = None
        try:
            with limits.budget(timeout=timeout, stage="onnxruntime session creation", label=source):
                self._session = onnxruntime_session(onnx_model, self.provider)
        except ResourceLimitError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors have no common base
            node = onnxruntime_failure_node(onnx_model, exc, self.provider)  # first: a cut message still names it
            raise ModelFileError(f"{source}: {node + ': ' if node else ''}onnxruntime cannot create a session for this file: "
                                 f"{exc}") from exc
        self.fixed_batch = fixed_batch(onnx_model)
        with limits.budget(timeout=timeout, stage="relaxed-batch check (onnxruntime)", label=source):
            self.batch_mode = "dynamic" if self.fixed_batch is None else self._relax(seed)
        self.calls = 0  # the relaxation check's runs are not the caller's

    def __repr__(self) -> str:
        ins = ", ".join(str(s) for s in self.inputs)
        return f"RuntimeModel({self.source!r}, inputs=[{ins}], batch={self.batch_mode})"

    # -- batch -----------------------------------------------------------------------------------
    def _relax(self, seed: int) -> str:
        """Try the relaxed declaration; keep it only if batched equals per-sample on seeded probes."""
        fixed = self.fixed_batch
        relaxed = relax_batch(self.onnx_model)
        assert fixed is not None and relaxed is not None
        samples = fixed + 2
        shapes = {s.name: (samples, *probe_shape(s)[1:]) for s in self.inputs if s.shape}
        try:
            feeds = probe_feeds(self.inputs, seed=seed, shapes=shapes, label=self.source)
            session = onnxruntime_session(relaxed, self.provider)
            batched = run_onnxruntime(session, feeds)
        except ResourceLimitError:
            raise
        except Exception as exc:  # noqa: BLE001 - any refusal means: keep the fixed batch
            self.relax_error = f"onnxruntime refuses the relaxed batch: {exc.__class__.__name__}: {exc}".splitlines()[0]
            return "fixed"
        per_sample = self._run_fixed(feeds)
        tolerance = parity_tolerance(self.onnx_model)
        report = compare_outputs([o.name for o in self.outputs], per_sample, batched,
                                 rtol=tolerance.rtol, atol=tolerance.atol)
        if not report.ok:
            self.relax_error = f"batched differs from per-sample runs ({report.summary()})"
            return "fixed"
        self._session = session
        return "relaxed"

    @property
    def batch_size(self) -> int:
        """Samples per session call: the fixed batch, or :attr:`max_batch` (see :meth:`chunk_size`)."""
        return self.fixed_batch if self.batch_mode == "fixed" else self.max_batch  # type: ignore[return-value]

    def chunk_size(self, feeds: Mapping[str, np.ndarray]) -> int:
        """Samples per call for these feeds: the fixed batch, else :attr:`max_batch` reduced so one
        call's inputs stay under :attr:`chunk_bytes`."""
        if self.batch_mode == "fixed":
            return self.fixed_batch  # type: ignore[return-value]
        per_sample = sum(v[:1].nbytes for v in feeds.values() if v.ndim)
        return max(1, min(self.max_batch, self.chunk_bytes // max(per_sample, 1)))

    # -- running ---------------------------------------------------------------------------------
    def input_spec(self, name: str | None = None) -> TensorSpec:
        """The spec of input ``name``; with None, the single float input (error if ambiguous)."""
        return select_input(self.inputs, name, self.source)

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        """Run every sample of ``feeds`` (all inputs share the first axis) through the session in
        chunks; returns the requested outputs (default all) concatenated along the first axis.
        The whole call has :attr:`timeout` seconds (TimeLimitError past it)."""
        with limits.budget(timeout=self.timeout, stage="onnxruntime run", label=self.source):
            return self._run(feeds, outputs)

    def _run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None) -> list[np.ndarray]:
        feeds = {k: np.ascontiguousarray(v) for k, v in feeds.items()}
        sizes = {v.shape[0] for v in feeds.values() if v.ndim}
        if len(sizes) > 1:
            raise InputError(f"{self.source}: inputs have different numbers of samples {sorted(sizes)}")
        names = list(outputs) if outputs is not None else None
        if not sizes:  # no batch axis at all: one call
            self.calls += 1
            return run_onnxruntime(self._session, feeds, outputs=names)
        if self.batch_mode == "fixed":
            return self._run_fixed(feeds, names)
        total, step = sizes.pop(), self.chunk_size(feeds)
        parts = []
        for start in range(0, total, step):
            self.calls += 1
            parts.append(run_onnxruntime(self._session, {k: v[start:start + step] if v.ndim else v for k, v in feeds.items()},
                                         outputs=names))
        return _concat(parts, self.source)

    def _run_fixed(self, feeds: Mapping[str, np.ndarray], names: list[str] | None = None) -> list[np.ndarray]:
        fixed = self.fixed_batch
        assert fixed is not None
        total = next(v.shape[0] for v in feeds.values() if v.ndim)
        parts, keep = [], []
        for start in range(0, total, fixed):
            chunk = {}
            for k, v in feeds.items():
                part = v[start:start + fixed] if v.ndim else v
                if v.ndim and part.shape[0] < fixed:  # pad with the last sample; dropped below
                    part = np.concatenate([part, np.repeat(part[-1:], fixed - part.shape[0], axis=0)])
                chunk[k] = part
            self.calls += 1
            parts.append(run_onnxruntime(self._session, chunk, outputs=names))
            keep.append(min(fixed, total - start))
        return _concat([[o[:n] if o.ndim and o.shape[0] == fixed else o for o in p] for p, n in zip(parts, keep)],
                       self.source)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run on arrays given positionally (input order) or by name; returns numpy output(s)."""
        values = bind_inputs(self.inputs, args, kwargs, self.source)
        feeds = {s.name: self.as_array(s.name, values[s.name]) for s in self.inputs}
        outs = self.run(feeds)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def as_array(self, name: str, value: Any) -> np.ndarray:
        """``value`` as a numpy array of input ``name``'s dtype, checked against its rank and static
        dimensions (the fixed batch of a relaxed or fixed-batch file excepted)."""
        spec = self.input_spec(name)
        if hasattr(value, "detach"):  # a torch tensor, without importing torch
            value = value.detach().cpu().numpy()
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise InputError(f"input {name!r}: cannot be read as an array ({exc})") from exc
        if array.ndim != len(spec.shape):
            raise InputError(f"input {name!r} has shape {array.shape} but the model expects rank {len(spec.shape)} "
                             f"({spec}); add or remove a batch dimension?")
        for axis, (got, want) in enumerate(zip(array.shape, spec.shape)):
            if axis == 0 and self.fixed_batch is not None:
                continue
            if isinstance(want, int) and want > 0 and got != want:
                raise InputError(f"input {name!r} has shape {array.shape} but the model expects {spec.shape} "
                                 f"(axis {axis} must be {want})")
        if array.dtype.kind == "f" and spec.dtype.kind != "f":
            raise InputError(f"input {name!r} is {array.dtype} but the model expects {spec.dtype} ({spec})")
        return np.ascontiguousarray(array.astype(spec.dtype, copy=False))


def _concat(parts: list[list[np.ndarray]], source: str) -> list[np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    out = []
    for i, pieces in enumerate(zip(*parts)):
        if any(p.ndim == 0 for p in pieces):
            raise InputError(f"{source}: output {i} has no batch axis; run fewer samples per call")
        out.append(np.concatenate(pieces, axis=0))
    return out


def load_runtime(
    source: str | os.PathLike | onnx.ModelProto,
    *,
    provider: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    seed: int = 0,
    conversion_error: str | None = None,
    timeout: float | str | None = limits.DEFAULT,
    memory_limit: int | None = None,
) -> RuntimeModel:
    """Read ``source`` and open it in onnxruntime as it ships (no conversion, no torch). The file is
    not trusted: tensors and node allocations over ``memory_limit`` bytes are refused
    (MemoryLimitError), and each run has ``timeout`` seconds (TimeLimitError)."""
    with limits.budget(memory=memory_limit):
        original, label = read_model(source)
    return RuntimeModel(original, label, provider=provider, max_batch=max_batch, seed=seed,
                        conversion_error=conversion_error, timeout=timeout)
