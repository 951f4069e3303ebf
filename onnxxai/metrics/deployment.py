"""Deployment shift: did deploying a model (int8, float16, an optimizer) change what it predicts and
what its explanations point at?

:func:`deployment_shift` runs both ORIGINAL files through onnxruntime on the same inputs (prediction
agreement, largest output difference), then explains every input with each method on both models
for the same output (the reference model's prediction) and compares the two explanations per sample
(Spearman, top-10% IoU, SSIM: :mod:`onnxxai.metrics.similarity`; ↑ = explanations agree), listing the
inputs whose explanations moved most (lowest Spearman).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxxai.errors import InputError, OnnxxaiError
from onnxxai.methods import MethodOptions
from onnxxai.metrics._common import as_numpy, model_outputs
from onnxxai.metrics.randomisation import MethodSpec, build_analyzer
from onnxxai.metrics.result import MetricResult, jsonable, mean_of
from onnxxai.metrics.similarity import compare, constant_maps
from onnxxai.model import Model

__all__ = ["DeploymentShift", "deployment_shift"]


@dataclass(frozen=True)
class DeploymentShift:
    """What changed between ``reference`` (e.g. the float32 file) and ``model`` (e.g. its int8 file).

    ``agreement``: fraction of inputs whose top output (argmax) is the same; ``predictions`` /
    ``reference_predictions`` per input; ``output_max_abs_difference`` per input (raw outputs);
    ``similarity[method][name]`` a :class:`MetricResult` per method and similarity (↑ better);
    ``most_moved[method]``: up to ``top`` (input index, Spearman) pairs, lowest Spearman first;
    ``errors[method]``: why a method could not explain one of the two files (e.g. LRP on a dynamically
    quantized file), that method then has no similarity.
    """

    model: str
    reference: str
    model_artifact: str
    reference_artifact: str
    agreement: float
    predictions: list[int]
    reference_predictions: list[int]
    output_max_abs_difference: list[float]
    similarity: dict[str, dict[str, MetricResult]] = field(default_factory=dict)
    most_moved: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return jsonable({
            "model": self.model, "reference": self.reference, "model_artifact": self.model_artifact,
            "reference_artifact": self.reference_artifact, "agreement": self.agreement,
            "predictions": self.predictions, "reference_predictions": self.reference_predictions,
            "output_max_abs_difference": self.output_max_abs_difference,
            "similarity": {m: {k: r.to_dict() for k, r in sims.items()} for m, sims in self.similarity.items()},
            "most_moved": {m: [list(p) for p in pairs] for m, pairs in self.most_moved.items()},
            "errors": self.errors,
        })

    def summary(self) -> str:
        parts = [f"prediction agreement {self.agreement:.1%}"]
        for m, sims in self.similarity.items():
            parts.append(f"{m}: " + ", ".join(f"{k} {r.value:.3f}" for k, r in sims.items()))
            constant = next(iter(sims.values())).details.get("constant_maps", {})
            if constant.get("model"):
                parts[-1] += (f" ({len(constant['model'])} of {len(self.predictions)} inputs: the model's "
                              f"explanation is constant)")
        return "; ".join(parts)


def deployment_shift(model: Model, reference_model: Model, inputs: Any, methods: Sequence[MethodSpec] = ("gradient",),
                     *, options: MethodOptions | None = None, top: int = 5,
                     similarities: Sequence[str] = ("spearman", "top_k_iou", "ssim")) -> DeploymentShift:
    """Compare ``model`` (deployed) with ``reference_model`` on ``inputs``; see the module docstring.
    ``methods``: names of :data:`onnxxai.methods.METHODS` or callables ``Model -> Analyzer``."""
    x = as_numpy(inputs)
    out, ref = model_outputs(model, x, "compare"), model_outputs(reference_model, x, "compare")
    if out.shape != ref.shape:
        raise InputError(f"the two files' outputs differ in shape: {out.shape} vs {ref.shape}")
    pred, ref_pred = out.argmax(axis=1), ref.argmax(axis=1)
    similarity: dict[str, dict[str, MetricResult]] = {}
    most_moved: dict[str, list[tuple[int, float]]] = {}
    errors: dict[str, str] = {}
    for spec in methods:
        name = spec if isinstance(spec, str) else getattr(spec, "__name__", repr(spec))
        try:
            a = as_numpy(build_analyzer(spec, model, options)(x, ref_pred).val)
            b = as_numpy(build_analyzer(spec, reference_model, options)(x, ref_pred).val)
        except OnnxxaiError as exc:  # recorded per method: the other methods still compare
            errors[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            continue
        sims = compare(a, b, tuple(similarities))
        # explanations with no ranking at all (e.g. a quantized file's zero gradient): counted, and scored 0
        constant = {"model": np.flatnonzero(constant_maps(a)).tolist(),
                    "reference": np.flatnonzero(constant_maps(b)).tolist()}
        similarity[name] = {
            k: MetricResult(name=f"shift_{k}", value=mean_of(v), higher_is_better=True, per_sample=v.tolist(),
                            method=name, params={"target": "reference prediction"},
                            details={"constant_maps": constant})
            for k, v in sims.items()}
        key = sims.get("spearman", next(iter(sims.values())))
        order = np.argsort(np.where(np.isfinite(key), key, -np.inf), kind="stable")[:top]
        most_moved[name] = [(int(i), float(key[i])) for i in order]
    return DeploymentShift(
        model=str(getattr(model, "source", "")), reference=str(getattr(reference_model, "source", "")),
        model_artifact=str(getattr(model, "artifact", "")), reference_artifact=str(getattr(reference_model, "artifact", "")),
        agreement=float((pred == ref_pred).mean()), predictions=pred.tolist(), reference_predictions=ref_pred.tolist(),
        output_max_abs_difference=np.abs(out - ref).max(axis=1).tolist(),
        similarity=similarity, most_moved=most_moved, errors=errors,
    )
