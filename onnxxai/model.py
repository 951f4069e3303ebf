"""load() and Model: the verified, differentiable graph and its metadata."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
import torch

from onnxxai.convert.pipeline import convert
from onnxxai.errors import ConversionError, InputError, ModelFileError, ParityError, ResourceLimitError
from onnxxai.graph.diverge import failing_node, first_divergence
from onnxxai.graph.widen import HALF_DTYPES, holds_half, widen
from onnxxai.proto.artifact import ArtifactKind, artifact_kind
from onnxxai.proto.normalize import PassResult
from onnxxai.parity import (ParityReport, compare_outputs, execution_provider, onnxruntime_failure_node, parity_tolerance,
                            run_onnxruntime)
from onnxxai.proto import limits
from onnxxai.proto.batch import fixed_batch, relax_batch
from onnxxai.proto.reading import read_model
from onnxxai.proto.specs import DEFAULT_BATCH, TensorSpec, dynamic_dims, probe_candidates, index_bounds, probe_feeds, select_input, spec_of, bind_inputs

__all__ = ["load", "Model", "TensorSpec", "DEFAULT_BATCH", "DEFAULT_DIM"]

class Model:
    """A converted ONNX graph, verified against onnxruntime, ready to be explained.

    Call it on numpy arrays or torch tensors (positionally in input order, or by input name);
    outputs follow the array type of the first input. ``torch_module`` is the torch.fx
    GraphModule (eval mode, frozen parameters), usable by any torch tool. ``artifact`` names what
    kind of file it is (float32, float16, int8 QDQ, ...; :func:`onnxxai.proto.artifact.artifact_kind`).

    A float16/bfloat16 file is explained in float32 (``widened``): ``torch_module`` computes in
    float32 with the file's weights (exact in float32), float16/bfloat16 inputs are rounded to their
    type and then widened, and the parity check verifies this float32 graph against onnxruntime
    running the file as it ships, with a tolerance derived from float16's epsilon.
    """

    def __init__(
        self,
        torch_module: torch.fx.GraphModule,
        onnx_model: onnx.ModelProto,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        parity: ParityReport,
        passes: tuple[PassResult, ...],
        source: str,
        device: torch.device,
        artifact: ArtifactKind | None = None,
        widened: bool = False,
        original: onnx.ModelProto | None = None,
    ) -> None:
        self.torch_module = torch_module
        self.onnx_model = onnx_model
        self.inputs = inputs
        self.outputs = outputs
        self.parity = parity
        self.passes = passes
        self.source = source
        self.device = device
        self.artifact = artifact
        self.widened = widened
        self.original = original
        self._runtime: Any = None
        #: the file's fixed batch (None: dynamic) and how it is run: "dynamic", "relaxed" (the declared
        #: batch made symbolic after batched == per-sample was verified) or "fixed" (chunks of the fixed batch)
        self.fixed_batch: int | None = None
        self.batch_mode = "dynamic"
        #: seconds each forward may take (None: unbounded), and the memory budget in bytes (None: the default)
        self.timeout: float | None = limits.stage_timeout()
        self.memory_limit: int | None = None

    def __repr__(self) -> str:
        ins = ", ".join(str(s) for s in self.inputs)
        outs = ", ".join(str(s) for s in self.outputs)
        return f"Model({self.source!r}, inputs=[{ins}], outputs=[{outs}], {self.parity.summary()})"

    @property
    def runtime(self) -> Any:
        """The original file behind one onnxruntime session (:class:`onnxxai.runtime.RuntimeModel`),
        made on first use: black-box analyzers and audit metrics evaluate the file as it ships."""
        if self._runtime is None:
            from onnxxai.runtime import RuntimeModel

            if self.original is None:
                raise InputError(f"{self.source}: this Model was built without its original file; use onnxxai.load_runtime")
            self._runtime = RuntimeModel(self.original, self.source)
        return self._runtime

    # -- inputs ---------------------------------------------------------------------------------
    def input_spec(self, name: str | None = None) -> TensorSpec:
        """The spec of input ``name``; with None, the single float input (error if ambiguous)."""
        return select_input(self.inputs, name, self.source)

    def as_tensor(self, name: str, value: Any, *, check_finite: bool = True) -> torch.Tensor:
        """Validate ``value`` against input ``name`` (rank, static dims, finiteness) and return it as a
        tensor on the model's device with the input's dtype."""
        spec = self.input_spec(name)
        if isinstance(value, torch.Tensor):
            tensor = value.detach()
        else:
            try:
                tensor = torch.as_tensor(np.asarray(value))
            except (TypeError, ValueError) as exc:
                raise InputError(f"input {name!r}: cannot be read as an array ({exc})") from exc
        if tensor.dim() != len(spec.shape):
            raise InputError(
                f"input {name!r} has shape {tuple(tensor.shape)} but the model expects rank {len(spec.shape)} "
                f"({spec}); add or remove a batch dimension?"
            )
        for axis, (got, want) in enumerate(zip(tensor.shape, spec.shape)):
            if axis == 0 and self.batch_mode == "fixed":  # any number of samples: run in chunks (see call)
                continue
            if isinstance(want, int) and want > 0 and got != want:
                raise InputError(
                    f"input {name!r} has shape {tuple(tensor.shape)} but the model expects {spec.shape} "
                    f"(axis {axis} must be {want})"
                )
        want_dtype = torch.from_numpy(np.zeros(0, dtype=spec.dtype)).dtype
        if tensor.dtype.is_floating_point and not want_dtype.is_floating_point:
            raise InputError(f"input {name!r} is {tensor.dtype} but the model expects {spec.dtype} ({spec})")
        if check_finite and tensor.dtype.is_floating_point and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise InputError(f"input {name!r} contains {bad} NaN or infinite value(s); explanations need finite inputs")
        if self.widened and want_dtype in HALF_DTYPES:  # the file's rounding, then float32 arithmetic
            return tensor.to(device=self.device, dtype=want_dtype).to(torch.float32)
        return tensor.to(device=self.device, dtype=want_dtype)

    # -- running --------------------------------------------------------------------------------
    def forward(self, feeds: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Run the torch graph on validated tensors keyed by input name; returns all outputs (autograd kept)."""
        args = [feeds[s.name] for s in self.inputs]
        with limits.budget(timeout=self.timeout, memory=self.memory_limit, label=self.source):
            out = self.call(self.torch_module, args)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    def call(self, module: Any, args: list[torch.Tensor]) -> Any:
        """``module(*args)`` (the torch graph, or a graph cut from it), run in chunks of the file's
        fixed batch when the batch could not be relaxed (``batch_mode == "fixed"``): the last chunk
        is padded by repeating its last sample and the padding dropped; autograd flows through."""
        total = next((a.shape[0] for a in args if isinstance(a, torch.Tensor) and a.dim()), None)
        fixed = self.fixed_batch
        if self.batch_mode != "fixed" or fixed is None or total is None or total == fixed:
            return module(*args)
        parts, single = [], False
        for start in range(0, total, fixed):
            n = min(fixed, total - start)
            chunk = []
            for a in args:
                if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == total:
                    a = a[start:start + n]
                    if n < fixed:
                        a = torch.cat([a, a[-1:].expand(fixed - n, *a.shape[1:])])
                chunk.append(a)
            out = module(*chunk)
            single = not isinstance(out, (tuple, list))
            outs = [out] if single else list(out)
            if any(o.dim() == 0 or o.shape[0] != fixed for o in outs):
                raise InputError(f"{self.source}: an output has no batch axis of {fixed}; the fixed-batch file "
                                 f"runs {fixed} sample(s) per call: pass that many")
            parts.append([o[:n] for o in outs])
        joined = [torch.cat(column) for column in zip(*parts)]
        return joined[0] if single else tuple(joined)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        values = bind_inputs(self.inputs, args, kwargs, self.source)
        first = values[self.inputs[0].name]
        feeds = {s.name: self.as_tensor(s.name, values[s.name], check_finite=False) for s in self.inputs}
        with torch.no_grad():
            outs = self.forward(feeds)
        if self.widened:  # outputs in the file's own element types
            outs = [o.to(_torch_dtype(s.dtype)) if o.is_floating_point() else o for o, s in zip(outs, self.outputs)]
        if not isinstance(first, torch.Tensor):
            outs = [o.cpu().numpy() for o in outs]
        elif first.device != self.device:
            outs = [o.to(first.device) for o in outs]
        return outs[0] if len(outs) == 1 else tuple(outs)


def _torch_dtype(dtype: Any) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


# -- loading ------------------------------------------------------------------------------------
def load(
    source: str | os.PathLike | onnx.ModelProto,
    *,
    device: str | torch.device = "cpu",
    strict: bool = True,
    probe_inputs: Mapping[str, np.ndarray] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
    probe_shapes: Mapping[str, tuple[int, ...]] | None = None,
    timeout: float | str | None = limits.DEFAULT,
    memory_limit: int | None = None,
) -> Model:
    """Read, normalize, convert and verify an ONNX model.

    Parity is checked on ``probe_inputs`` when given, else on seeded random inputs whose dynamic
    dimensions are :data:`DEFAULT_BATCH` (first axis) and :data:`DEFAULT_DIM` (others). A graph that
    disagrees with onnxruntime raises :class:`ParityError`; with ``strict=False`` it loads with a
    warning and every explanation carries the failing report.

    ``rtol``/``atol`` None derive the tolerance from the float types the graph computes in
    (:func:`onnxxai.parity.parity_tolerance`: float32 graphs rtol 1e-4, atol 1e-6; float16/bfloat16
    graphs from their epsilon and depth); a value given wins, and the report's rule says so.
    A float16/bfloat16 graph is widened to float32 arithmetic for explanation (see :class:`Model`).

    Parity compares tensor outputs. Outputs torch cannot hold are left to onnxruntime: a ZipMap's
    sequence of maps (skl2onnx classifiers) is converted to the probability tensor it wraps, which
    is what gets explained and what parity compares with onnxruntime's maps read in key order; a
    string tensor (string class labels) comes out as label indices and is reported "not compared".

    When onnxruntime refuses the default probe sizes, the sizes of :func:`onnxxai.proto.specs.probe_sizes`
    are tried for the dynamic dimensions before failing; ``probe_shapes`` (input name -> shape)
    fixes the probe shapes instead, ``probe_inputs`` the probe arrays.

    A file with a fixed batch (``torch.onnx.export`` without ``dynamic_axes``) takes any number of
    samples: its batch is relaxed to a symbolic one when onnxruntime verifies that one call on
    several samples equals per-sample runs of the file (:class:`onnxxai.runtime.RuntimeModel`),
    else the graph runs in chunks of the fixed batch (:meth:`Model.call`). ``parity.batch_mode``
    says which ("dynamic", "relaxed", "fixed") and ``parity.batch_note`` why; parity is checked on
    one more sample than the fixed batch, against per-sample runs of the original.

    The file is not trusted: loading takes at most ``timeout`` seconds ("default":
    :func:`onnxxai.proto.limits.stage_timeout`, 900 s unless set; None: unbounded), else
    :class:`~onnxxai.errors.TimeLimitError` names the stage and the node that was running; a tensor
    or node allocation over ``memory_limit`` bytes (None: :func:`onnxxai.proto.limits.default_memory_budget`)
    is refused with :class:`~onnxxai.errors.MemoryLimitError` before it is allocated. The Model keeps
    both: each forward of its torch graph has ``timeout`` seconds.
    """
    timeout = limits.resolve_timeout(timeout)
    with limits.budget(timeout=timeout, memory=memory_limit, stage="reading the file",
                       label="<ModelProto>" if isinstance(source, onnx.ModelProto) else str(source)):
        model = _load(source, device, strict, probe_inputs, rtol, atol, seed, probe_shapes)
    model.timeout, model.memory_limit = timeout, memory_limit
    return model


def _load(source: str | os.PathLike | onnx.ModelProto, device: str | torch.device, strict: bool,
          probe_inputs: Mapping[str, np.ndarray] | None, rtol: float | None, atol: float | None, seed: int,
          probe_shapes: Mapping[str, tuple[int, ...]] | None = None) -> Model:
    original, label = read_model(source)
    fixed, batch_mode, batch_note, runtime, relaxed = _batch_mode(original, label, seed)
    with limits.budget(stage="normalization and conversion", label=label):
        graph, passes, module = convert(relaxed or original, label)
    device = torch.device(device)
    kind = artifact_kind(original)
    widened = kind.precision in ("float16", "bfloat16") and holds_half(module)
    if widened:
        module = widen(module)
    module = module.to(device)
    tolerance = parity_tolerance(original, rtol, atol)

    bounds = index_bounds(graph)  # integer inputs that index small tables (token types) get probes below their rows
    inputs = tuple(spec_of(v, bounds.get(v.name)) for v in graph.graph.input)
    outputs = tuple(spec_of(v) for v in graph.graph.output)

    provider = execution_provider()
    batch = DEFAULT_BATCH if fixed is None else fixed + 1  # a fixed-batch file is checked beyond its batch
    feeds = _working_probes(original, inputs, probe_inputs, probe_shapes, batch, seed, label, provider, fixed)
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    # every later probe (GradCAM's shape probe, the split check, deployment references) repeats these shapes
    inputs = tuple(dataclasses.replace(s, probe=shapes.get(s.name)) for s in inputs)
    model = Model(module, graph, inputs, outputs, None, passes, label, device, kind, widened,  # type: ignore[arg-type]
                  original=original)
    model.fixed_batch, model.batch_mode, model._runtime = fixed, batch_mode, runtime
    try:
        with limits.budget(stage="parity probe (onnxruntime on the original file)"):
            reference = _run_original(original, feeds, provider, fixed)
    except ResourceLimitError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors have no common base
        raise ModelFileError(f"{label}: {_at_node(original, exc, provider)}onnxruntime cannot run the original model on probe "
                             f"inputs {shapes}: {exc}") from exc
    try:
        with torch.no_grad(), limits.budget(stage="parity probe (converted torch graph)"):
            tensors = {k: torch.from_numpy(v).to(device) for k, v in feeds.items()}
            if widened:
                tensors = {k: v.to(torch.float32) if v.dtype in HALF_DTYPES else v for k, v in tensors.items()}
            outs = model.forward(tensors)
    except ResourceLimitError:
        raise
    except Exception as exc:  # noqa: BLE001
        node = _failing_node(model, feeds)
        raise ConversionError(f"{label}: {node + ': ' if node else ''}the converted graph fails on probe inputs {shapes}: "
                              f"{exc.__class__.__name__}: {exc}") from exc
    actual = [o.detach().cpu().numpy() for o in outs]
    report = compare_outputs(
        [o.name for o in outputs], reference, actual, rtol=tolerance.rtol, atol=tolerance.atol, provider=provider,
        probe_shapes=shapes, tolerance_rule=tolerance.rule, artifact=kind.name,
    )
    report = dataclasses.replace(report, batch_mode=batch_mode, batch_note=batch_note)
    if not report.ok:
        report = dataclasses.replace(report, **_divergence(model, original, feeds, tolerance.rtol, tolerance.atol, provider))
    model.parity = report
    if not report.ok:
        if strict:
            raise ParityError(report, label)
        warnings.warn(f"{label}: {report.summary()}; explanations carry this report", stacklevel=2)
    return model


def _batch_mode(original: onnx.ModelProto, label: str, seed: int) -> tuple[int | None, str, str, Any, onnx.ModelProto | None]:
    """(fixed batch, batch mode, why, RuntimeModel or None, relaxed graph or None) of ``original``:
    a fixed batch is relaxed only when onnxruntime runs the relaxed graph on more samples than the
    fixed batch and matches per-sample runs of the original (the rule of :mod:`onnxxai.runtime`)."""
    fixed = fixed_batch(original)
    if fixed is None:
        return None, "dynamic", "", None, None
    from onnxxai.runtime import RuntimeModel

    try:
        runtime = RuntimeModel(original, label, seed=seed)
    except ModelFileError as exc:  # onnxruntime cannot open the file: conversion and parity say why, as before
        return fixed, "fixed", f"runs in chunks of the fixed batch {fixed}: {exc}", None, None
    if runtime.batch_mode == "relaxed":
        note = (f"fixed batch {fixed} relaxed: onnxruntime on {fixed + 2} samples at once equals per-sample runs "
                "of the original file")
        return fixed, "relaxed", note, runtime, relax_batch(original)
    return fixed, "fixed", f"runs in chunks of the fixed batch {fixed}: {runtime.relax_error}", runtime, None


def _run_original(original: onnx.ModelProto, feeds: Mapping[str, np.ndarray], provider: str, fixed: int | None) -> list:
    """onnxruntime on the original file: one call, or (fixed batch) per chunk of the fixed batch, the
    last chunk padded by repeating its last sample and the padding dropped."""
    if fixed is None:
        return run_onnxruntime(original, feeds, provider)
    total = next(v.shape[0] for v in feeds.values() if v.ndim)
    parts = []
    for start in range(0, total, fixed):
        n = min(fixed, total - start)
        chunk = {k: v[start:start + n] if v.ndim else v for k, v in feeds.items()}
        chunk = {k: np.concatenate([v, np.repeat(v[-1:], fixed - n, axis=0)]) if v.ndim and n < fixed else v
                 for k, v in chunk.items()}
        parts.append([np.asarray(o)[:n] for o in run_onnxruntime(original, chunk, provider)])
    return [np.concatenate(column) for column in zip(*parts)]


def _working_probes(original: onnx.ModelProto, inputs: tuple[TensorSpec, ...], given: Mapping[str, np.ndarray] | None,
                    shapes: Mapping[str, tuple[int, ...]] | None, batch: int, seed: int, label: str, provider: str,
                    fixed: int | None) -> dict[str, np.ndarray]:
    """Probe inputs onnxruntime runs the original file on: those given, else the first shapes of
    :func:`onnxxai.proto.specs.probe_candidates` (graph-derived sizes per dimension, then other sizes
    per dimension) that it accepts; a ModelFileError naming the dimensions and how to pass probes
    when none is."""
    if given or shapes:
        return probe_feeds(inputs, given, seed=seed, batch=batch, shapes=shapes, require_all=True, label=label)
    candidates = probe_candidates(original, inputs, batch)
    dims = dynamic_dims(inputs)
    if not dims:
        return probe_feeds(inputs, seed=seed, batch=batch, shapes=candidates[0], label=label)
    first, tried, failure = "", [], None
    for candidate in candidates:
        feeds = probe_feeds(inputs, seed=seed, batch=batch, shapes=candidate, label=label)
        tried.append("/".join("x".join(map(str, v[1:])) for v in candidate.values() if len(v) > 1) or "()")
        try:
            _run_original(original, feeds, provider, fixed)
            return feeds
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors have no common base: try the next shapes
            if not first:
                first, failure = f"{exc.__class__.__name__}: {exc}".splitlines()[0], exc
    example = next(s for s in inputs if any(d in dims[0] for d in (repr(s.name),)))
    shape = ",".join(str(d) if isinstance(d, int) and d > 0 else ("1" if i == 0 else "N") for i, d in enumerate(example.shape))
    raise ModelFileError(
        f"{label}: {_at_node(original, failure, provider) if failure else ''}onnxruntime cannot run the original model on "
        f"probe inputs: no shape in [{', '.join(tried)}] fits the dynamic "
        f"dimension(s) {', '.join(dims)} ({first}); pass probes: onnxxai.load(..., probe_shapes={{{example.name!r}: (...)}}) "
        f"or probe_inputs={{name: array}}, or --probe-shape {example.name}={shape} on the command line"
    )


def _at_node(original: onnx.ModelProto, exc: BaseException, provider: str) -> str:
    """``"Op node 'name': "`` for the node onnxruntime failed at (:func:`onnxxai.parity.onnxruntime_failure_node`),
    put first in the error so that a cut message still names it; "" when it cannot be told."""
    node = onnxruntime_failure_node(original, exc, provider)
    return f"{node}: " if node else ""


def _probe_args(model: Model, feeds: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[torch.Tensor]]:
    """The probe feeds for one run of the original file and the torch graph's arguments for them: a
    fixed-batch file's probes cut to its fixed batch (the file runs no other)."""
    if model.fixed_batch is not None:
        feeds = {k: v[:model.fixed_batch] if v.ndim else v for k, v in feeds.items()}
    args = []
    for spec in model.inputs:
        tensor = torch.from_numpy(np.ascontiguousarray(feeds[spec.name])).to(model.device)
        args.append(tensor.to(torch.float32) if model.widened and tensor.dtype in HALF_DTYPES else tensor)
    return feeds, args


def _failing_node(model: Model, feeds: Mapping[str, np.ndarray]) -> str:
    """``Op node 'name'`` of the node whose torch module raised on the probes ("" when not found)."""
    _, args = _probe_args(model, feeds)
    with limits.budget(stage="finding the failing node (converted torch graph)"):
        return failing_node(model.torch_module, model.onnx_model, args)


def _divergence(model: Model, original: onnx.ModelProto, feeds: Mapping[str, np.ndarray], rtol: float, atol: float,
                provider: str) -> dict[str, str]:
    """The ParityReport fields of a failed parity check's first diverging node
    (:func:`onnxxai.graph.diverge.first_divergence`), or why it was not found."""
    feeds, args = _probe_args(model, feeds)
    try:
        with limits.budget(stage="finding the first diverging node"):
            found = first_divergence(original, model.onnx_model, model.torch_module, feeds, args, rtol=rtol, atol=atol,
                                     provider=provider)
    except ResourceLimitError as exc:
        return {"diverging_note": f"stopped by the budget ({exc.__class__.__name__})"}
    except Exception as exc:  # noqa: BLE001 - onnxruntime/torch errors have no common base; recorded in the report
        return {"diverging_note": f"{exc.__class__.__name__}: {exc}".splitlines()[0][:200]}
    if found is None:
        return {"diverging_note": "every intermediate tensor both compute agrees; only the outputs differ"}
    return {"diverging": found.node, "diverging_note": found.note()}
