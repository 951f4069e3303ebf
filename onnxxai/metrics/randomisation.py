"""Randomisation (sanity) tests: does the explanation depend on the model's parameters and on the
explained output at all? Similarities per sample from :mod:`onnxxai.metrics.similarity`; lower
similarity is better (↓) for every test here.

* :func:`model_parameter_randomisation` (Adebayo et al. 2018): re-draws the ONNX initializers of the
  file's parameterised nodes (every node with a float initializer of two or more values: weights,
  biases, normalisation parameters), re-loads the file (convert + parity check), re-explains the same
  inputs for the same outputs, and compares with the original explanation. ``mode="cascading"``
  randomises layer after layer from the output down (the curve has one point per layer, the value is
  the similarity once every layer is randomised); ``"independent"`` randomises one layer at a time
  (the value is the mean over layers). ``details`` reports how many parameterised nodes the file has
  and how many were randomised (all of them in cascading mode).
* :func:`random_logit` (Sixt et al. 2020): explains each sample for a randomly drawn other class and
  compares with the explanation of the explained class.

Re-drawn values: Normal(0, σ) with σ the standard deviation of the tensor being replaced (its mean
absolute value when it is constant, 0.01 when that is 0), seeded; variances of BatchNormalization are
drawn as |Normal| + 1e-3 so they stay valid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from onnxxai.errors import InputError
from onnxxai.explanation import Explanation
from onnxxai.methods import MethodOptions, method
from onnxxai.metrics._common import as_numpy, inputs_of, targets_of
from onnxxai.metrics.result import Curve, MetricResult, mean_of
from onnxxai.metrics.similarity import compare
from onnxxai.model import Model, load

__all__ = ["ParameterisedNode", "parameterised_nodes", "randomise", "model_parameter_randomisation", "random_logit",
           "build_analyzer"]

#: a method to re-run on a randomised model: a method name (``onnxxai.methods``) or ``Model -> Analyzer``
MethodSpec = str | Callable[[Model], Any]


@dataclass(frozen=True)
class ParameterisedNode:
    """A node of the file with learned parameters: its position, name, op and the initializers it owns."""

    index: int
    name: str
    op_type: str
    initializers: tuple[str, ...]


def parameterised_nodes(onnx_model: onnx.ModelProto) -> list[ParameterisedNode]:
    """The nodes of the main graph that read a float initializer of two or more values, in graph
    (topological) order; an initializer read by several nodes belongs to the first."""
    floats = {t.name for t in onnx_model.graph.initializer
              if onnx.helper.tensor_dtype_to_np_dtype(t.data_type).kind == "f" and int(np.prod(t.dims)) >= 2}
    owned: set[str] = set()
    nodes = []
    for i, node in enumerate(onnx_model.graph.node):
        mine = tuple(dict.fromkeys(n for n in node.input if n in floats and n not in owned))
        if mine:
            owned.update(mine)
            nodes.append(ParameterisedNode(i, node.name or f"{node.op_type}_{i}", node.op_type, mine))
    return nodes


def randomise(onnx_model: onnx.ModelProto, nodes: Sequence[ParameterisedNode], seed: int) -> onnx.ModelProto:
    """A copy of ``onnx_model`` whose initializers owned by ``nodes`` are re-drawn (module docstring);
    the caller's model is not touched."""
    copy = onnx.ModelProto()
    copy.CopyFrom(onnx_model)
    rng = np.random.default_rng(seed)
    variances = {node.input[4] for node in copy.graph.node if node.op_type == "BatchNormalization" and len(node.input) > 4}
    wanted = {name for n in nodes for name in n.initializers}
    for tensor in copy.graph.initializer:
        if tensor.name not in wanted:
            continue
        old = numpy_helper.to_array(tensor)
        sd = float(old.std()) or float(np.abs(old).mean()) or 0.01
        new = rng.normal(0.0, sd, old.shape)
        if tensor.name in variances:
            new = np.abs(new) + 1e-3
        tensor.CopyFrom(numpy_helper.from_array(new.astype(old.dtype), tensor.name))
    return copy


def build_analyzer(spec: MethodSpec, model: Model, options: MethodOptions | None = None) -> Any:
    """The analyzer ``spec`` names (see :data:`onnxxai.methods.METHODS`) or builds, for ``model``."""
    if isinstance(spec, str):
        return method(spec).build(model, options or MethodOptions())
    if callable(spec):
        return spec(model)
    raise InputError(f"a method is a name from onnxxai.methods.METHODS or a callable Model -> Analyzer, got {spec!r}")


def _results(prefix: str, sims: dict[str, np.ndarray], expl: Explanation, params: dict, details: dict,
             curve: dict[str, np.ndarray] | None = None, labels: list[str] | None = None,
             value_from: str = "last") -> dict[str, MetricResult]:
    out = {}
    for name, per_sample in sims.items():
        c = None
        if curve is not None:
            rows = curve[name]  # (points, B)
            c = Curve(x=list(labels or []), y=[mean_of(r) for r in rows], per_sample=rows.T.tolist(),
                      x_label="randomised layers", y_label=f"{name} similarity to the original explanation")
        out[name] = MetricResult(name=f"{prefix}_{name}", value=mean_of(per_sample), higher_is_better=False,
                                 per_sample=np.asarray(per_sample).tolist(), method=expl.analyzer, curve=c,
                                 params={**params, "similarity": name}, details=details)
    return out


def model_parameter_randomisation(model: Model, explanation: Explanation, method_spec: MethodSpec, *,
                                  mode: str = "cascading", similarities: Sequence[str] = ("spearman", "ssim"),
                                  absolute: bool = False, seed: int = 0, options: MethodOptions | None = None,
                                  ) -> dict[str, MetricResult]:
    """The model-parameter randomisation test of ``explanation`` (made on ``model`` by ``method_spec``),
    one :class:`MetricResult` per similarity (↓ better), keyed by similarity name. ``absolute``
    compares absolute attributions (Adebayo et al. report both). ``options`` are passed to a named
    method. Each randomised file is loaded with ``strict=False``; its parity verdict is in ``details``."""
    if mode not in ("cascading", "independent"):
        raise InputError(f"mode must be 'cascading' or 'independent', got {mode!r}")
    if not isinstance(model, Model) or model.original is None:
        raise InputError("model parameter randomisation re-draws the initializers of a loaded Model's original file")
    x, target = inputs_of(explanation), targets_of(explanation)
    original = as_numpy(explanation.val)
    nodes = parameterised_nodes(model.original)
    if not nodes:
        raise InputError(f"{model.source}: no node with float parameters to randomise")
    top_down = nodes[::-1]
    steps = [top_down[: i + 1] for i in range(len(nodes))] if mode == "cascading" else [[n] for n in top_down]
    curve: dict[str, list[np.ndarray]] = {s: [] for s in similarities}
    parity = []
    for i, chosen in enumerate(steps):
        randomised = load(randomise(model.original, chosen, seed + i), device=model.device, strict=False)
        parity.append(bool(randomised.parity.ok))
        val = as_numpy(build_analyzer(method_spec, randomised, options)(x, target).val)
        a, b = (np.abs(original), np.abs(val)) if absolute else (original, val)
        for name, per_sample in compare(a, b, tuple(similarities)).items():
            curve[name].append(per_sample)
    stacked = {k: np.stack(v) for k, v in curve.items()}
    final = {k: (v[-1] if mode == "cascading" else np.nanmean(v, axis=0)) for k, v in stacked.items()}
    details = {"parameterised_nodes": len(nodes),
               "randomised_nodes": len(steps[-1]) if mode == "cascading" else len(nodes),
               "layers": [f"{n.name} ({n.op_type})" for n in top_down], "parity_ok": parity}
    params = {"mode": mode, "absolute": absolute, "seed": seed}
    labels = [f"+{n.name}" if mode == "cascading" else n.name for n in top_down]
    return _results(f"mprt_{mode}", final, explanation, params, details, stacked, labels)


def random_logit(analyzer: Any, explanation: Explanation, *, off_target: Any = None, seed: int = 0,
                 similarities: Sequence[str] = ("ssim", "spearman")) -> dict[str, MetricResult]:
    """The random-logit test (↓ better): similarity between the explanation of the explained class and
    ``analyzer``'s explanation of another class, per sample; one result per similarity. The other
    class is ``off_target`` (one flat index per sample) or drawn uniformly among the other outputs by
    ``numpy.random.default_rng(seed)``."""
    x, target = inputs_of(explanation), targets_of(explanation)
    if explanation.output is None:
        raise InputError("the random-logit test needs the explanation's output (to know the number of classes)")
    classes = as_numpy(explanation.output).reshape(len(x), -1).shape[1]
    if classes < 2:
        raise InputError("the random-logit test needs a model with at least two outputs to choose from")
    if off_target is None:
        off = (target + np.random.default_rng(seed).integers(1, classes, len(x))) % classes
    else:
        off = np.asarray(as_numpy(off_target), dtype=np.int64).reshape(-1)
        if off.shape != target.shape or (off == target).any():
            raise InputError("off_target must give one other output index per sample")
    other = as_numpy(analyzer(x, off).val)
    sims = compare(as_numpy(explanation.val), other, tuple(similarities))
    return _results("random_logit", sims, explanation,
                    {"seed": seed if off_target is None else "given"}, {"off_target": off.tolist()})
