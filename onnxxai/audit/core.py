"""The audit's computation: load the file, read the inputs, explain them with each method, score every
explanation with each metric, compare with a reference file, and gather it all in one JSON-ready dict.

Everything random takes ``settings.seed``; nothing machine- or time-dependent enters the report dict
(timings and package versions go to :attr:`Audit.env`), so the same file, inputs and seed give the
same report.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxxai import metrics as mx
from onnxxai.dataset.core import sha256_of
from onnxxai.diagnostics import gradient_flow
from onnxxai.dispatch import analyze
from onnxxai.errors import ConversionError, InputError, OnnxxaiError, ParityError, UnsupportedOpError
from onnxxai.heatmap import heatmap
from onnxxai.methods import METHODS, MethodOptions, method
from onnxxai.metrics._common import model_outputs
from onnxxai.metrics.result import MetricResult, jsonable
from onnxxai.model import Model, load
from onnxxai.preprocess import find_images, image_spec, load_images, read_csv_table
from onnxxai.proto.artifact import artifact_kind
from onnxxai.proto.cpu import integer_isa
from onnxxai.proto.reading import read_model
from onnxxai.runtime import RuntimeModel, load_runtime

__all__ = ["AuditSettings", "AuditInputs", "Audit", "run_audit", "read_inputs", "DEFAULT_METHODS", "DEFAULT_METRICS",
           "THRESHOLDS", "REPORT_FORMAT", "verdict_of"]

#: version of the report dict's layout (bumped when keys change meaning)
REPORT_FORMAT = 2
DEFAULT_METHODS = ("gradient", "integrated-gradients")
#: every metric of :data:`onnxxai.metrics.METRICS` but the independent MPRT (one re-load per layer, again)
DEFAULT_METRICS = ("deletion", "insertion", "road_morf", "road_lerf", "faithfulness_correlation", "infidelity",
                   "max_sensitivity", "random_logit", "mprt_cascading")

#: the documented pass rules, ``result name -> (comparison, threshold, what is compared)``:
#: sanity checks (lower similarity is better) and faithfulness against random attributions
THRESHOLDS: dict[str, tuple[str, float, str]] = {
    "mprt_cascading_spearman": ("<", 0.3, "Spearman similarity once every layer is randomised"),
    "random_logit_ssim": ("<", 0.5, "mean SSIM to the explanation of a random other class"),
    "deletion_auc": ("<=", 0.5, "deletion AUC as a fraction of random attributions'"),
    "insertion_auc": (">=", 1.5, "insertion AUC as a multiple of random attributions'"),
}


@dataclass(frozen=True)
class AuditSettings:
    """What the audit runs: ``methods`` (names of :data:`onnxxai.methods.METHODS`), ``metrics`` (names of
    :data:`onnxxai.metrics.METRICS`), the ``seed`` of every random draw (methods, metrics, random
    attributions, randomised weights), ``samples`` of sampled methods (None: their default), ``steps``
    of the deletion/insertion curves, the explained output ``target`` (None: each input's top prediction)
    and the sizes of the sampled metrics."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    metrics: tuple[str, ...] = DEFAULT_METRICS
    seed: int = 0
    samples: int | None = None
    steps: int = mx.DEFAULT_STEPS
    target: int | None = None
    batch_size: int | None = None
    device: str = "cpu"
    correlation_runs: int = 100
    infidelity_samples: int = 64
    sensitivity_samples: int = 10

    def __post_init__(self) -> None:
        for name in self.methods:
            method(name)  # an unknown name raises InputError listing the names
        unknown = [m for m in self.metrics if m not in mx.METRICS]
        if unknown:
            raise InputError(f"unknown metric(s) {', '.join(unknown)}; choose among {', '.join(mx.METRICS)}")
        if not self.methods or not self.metrics:
            raise InputError("an audit needs at least one method and one metric")
        if self.steps < 2:
            raise InputError(f"--steps must be at least 2, got {self.steps}")
        if self.samples is not None and self.samples < 1:
            raise InputError(f"--samples must be a positive integer, got {self.samples}")

    def options(self) -> MethodOptions:
        return MethodOptions(batch_size=self.batch_size, samples=self.samples, seed=self.seed)


@dataclass(frozen=True)
class AuditInputs:
    """The inputs audited: one batch ``x``, a ``name`` per sample (file name, or table and row), their
    ``kind`` ("image" or "table"), the table's ``columns`` and the image ``layout``."""

    x: np.ndarray
    names: list[str]
    kind: str
    columns: list[str] | None = None
    layout: str = "auto"
    preprocessing: str = ""


@dataclass
class Audit:
    """An audit's outcome: ``report`` (plain JSON types, deterministic), ``images[(sample, method)]``
    the PNG-ready RGB overlays (or None for tables), ``inputs`` the audited inputs and ``env``
    (package versions, platform, timings: not part of the report so the report is reproducible)."""

    report: dict[str, Any]
    inputs: AuditInputs
    overlays: dict[str, np.ndarray] = field(default_factory=dict)
    attributions: dict[str, np.ndarray] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)


def read_inputs(paths: Sequence[str | Path], model: Any, *, layout: str = "auto", size: tuple[int, int] | None = None,
                scale: float | None = None, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None) -> AuditInputs:
    """Images (files or folders) or CSV tables (header row = column names), as the model's input."""
    spec = model.input_spec()
    tables = [Path(p) for p in paths if str(p).lower().endswith(".csv")]
    if tables:
        if len(tables) != len(paths):
            raise InputError("give either CSV tables or images, not both")
        names, rows, columns = [], [], None
        for table in tables:
            cols, values = read_csv_table(table)
            if columns is not None and cols != columns:
                raise InputError(f"{table}: its columns differ from those of {tables[0]}")
            columns = cols
            rows.append(values)
            names += [f"{table.name} row {i}" for i in range(len(values))]
        if len(spec.shape) != 2 or (isinstance(spec.shape[1], int) and spec.shape[1] > 0 and spec.shape[1] != len(columns)):
            raise InputError(f"{tables[0]}: {len(columns)} columns, but the model's input is {spec}")
        return AuditInputs(np.concatenate(rows).astype(spec.dtype), names, "table", columns)
    images = find_images(paths)
    ispec = image_spec(spec, layout=layout, size=size, scale=scale, mean=mean, std=std)
    x = load_images(images, ispec, spec.dtype)
    return AuditInputs(x, [p.name for p in images], "image", None, ispec.layout, ispec.describe())


def load_model(path: str | Path, methods: Sequence[str], device: str = "cpu") -> Model | RuntimeModel:
    """The converted, verified Model (parity failures are reported, not raised), or, when every method is
    black-box, the original file in onnxruntime alone. A file that does not convert names the methods
    that still explain it."""
    if all(METHODS[m].blackbox for m in methods):
        return load_runtime(path)
    try:
        return load(path, device=device, strict=False)
    except (UnsupportedOpError, ConversionError, ParityError) as exc:
        blackbox = ",".join(name for name, m in METHODS.items() if m.blackbox)
        raise InputError(f"{exc}; gradient methods need the converted graph; the black-box methods run this file in "
                         f"onnxruntime as it is: --methods {blackbox}") from exc


def model_facts(path: str | Path, model: Model | RuntimeModel, *, gradient: bool = True) -> dict[str, Any]:
    """What the report says about a file: SHA-256, producer, IR and opsets, artifact kind, inputs and
    outputs, the parity report and the gradient check (for a converted Model)."""
    proto, label = read_model(path)
    facts: dict[str, Any] = {
        "file": str(path), "name": Path(path).name, "sha256": sha256_of(path),
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "ir_version": proto.ir_version,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in proto.opset_import},
        "nodes": len(proto.graph.node),
        "artifact": artifact_kind(proto).to_dict(),
        "inputs": [str(s) for s in model.inputs], "outputs": [str(s) for s in model.outputs],
    }
    if isinstance(model, Model):
        facts["parity"] = {**model.parity.to_dict(), "summary": model.parity.summary()}
        if gradient:
            try:
                report = gradient_flow(model)
            except OnnxxaiError as exc:
                facts["gradient"] = {"ok": False, "error": _cause(exc), "summary": f"gradient check failed: {_cause(exc)}"}
            else:
                facts["gradient"] = {**report.to_dict(), "summary": report.summary()}
    else:
        facts["runtime"] = {"batch_mode": model.batch_mode, "conversion_error": model.conversion_error,
                            "summary": "onnxruntime only (black-box methods): no converted graph to check"}
    return facts


def _cause(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def versions() -> dict[str, str]:
    """Versions of the packages that produce the numbers (for the environment file)."""
    found = {"python": platform.python_version()}
    for name in ("onnxxai", "numpy", "scipy", "onnx", "onnxruntime", "torch", "onnx2torch", "matplotlib", "pillow"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


class _Clock:
    """Wall-clock seconds per stage, for the environment file only."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def __call__(self, key: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.times[key] = round(time.perf_counter() - start, 4)


def verdict_of(result: dict[str, Any], chance: float | None) -> dict[str, Any] | None:
    """The documented pass rule of ``result`` (see :data:`THRESHOLDS`): ``passed`` True/False, or None with
    ``decidable`` False when no explanation could pass -- an insertion AUC of probabilities is at most 1,
    so when random attributions already reach more than 1/1.5 of it, a FAIL would blame the method for what
    the model and inputs make impossible (the verdict says so and gives the largest reachable ratio)."""
    rule = THRESHOLDS.get(result["name"])
    if rule is None or result["value"] is None:
        return None
    op, threshold, what = rule
    value = result["value"]
    text = f"{what} {op} {threshold:g}"
    if result["name"] in ("deletion_auc", "insertion_auc"):
        if chance is None or not chance:
            return None
        value = value / chance
        bound = (result.get("params") or {}).get("score_bound")
        if op == ">=" and bound is not None and chance > 0 and bound / chance < threshold:
            return {"passed": None, "decidable": False, "compared": value, "rule": text,
                    "reason": f"random attributions already reach {chance:.3g} of a largest possible AUC of "
                              f"{bound:g}, so no explanation can reach {threshold:g}x (at most "
                              f"{bound / chance:.3g}x): this test cannot tell explanations from chance here"}
    passed = value < threshold if op == "<" else value <= threshold if op == "<=" else value >= threshold
    return {"passed": bool(passed), "decidable": True, "compared": value, "rule": text}


def _metric_results(name: str, model: Any, analyzer: Any, expl: Any, method_name: str,
                    settings: AuditSettings) -> list[MetricResult]:
    """One metric of one explanation, as a list of results (sanity checks give one per similarity)."""
    seed = settings.seed
    info = mx.METRICS[name]
    if name == "deletion":
        return [mx.deletion(model, expl, steps=settings.steps)]
    if name == "insertion":
        return [mx.insertion(model, expl, steps=settings.steps)]
    if name in ("road_morf", "road_lerf"):
        return [mx.road(model, expl, order=name[5:], seed=seed)]
    if name == "faithfulness_correlation":
        return [mx.faithfulness_correlation(model, expl, runs=settings.correlation_runs, seed=seed)]
    if name == "infidelity":
        return [mx.infidelity(model, expl, samples=settings.infidelity_samples, seed=seed)]
    if name == "max_sensitivity":
        return [mx.max_sensitivity(analyzer, expl, samples=settings.sensitivity_samples, seed=seed)]
    if name == "random_logit":
        return list(mx.random_logit(analyzer, expl, seed=seed).values())
    if name in ("mprt_cascading", "mprt_independent"):
        if not isinstance(model, Model):
            raise InputError("model-parameter randomisation re-loads the converted file; this file runs in onnxruntime "
                             "only")
        return list(mx.model_parameter_randomisation(model, expl, method_name, mode=name[5:], seed=seed,
                                                          options=settings.options()).values())
    raise InputError(f"metric {name!r} ({info.description}) is not run by the audit")


def _explained_by_dataset_engine(model_path: str | Path, x: np.ndarray, settings: AuditSettings, engine: dict[str, Any],
                                  work: Path) -> dict[str, np.ndarray]:
    """Every method's attributions of ``x`` computed by :func:`onnxxai.dataset.explain_dataset` on the
    engine ``engine["engine"]`` (e.g. Ray actors), resumable in ``work``; ``{method: (N, ...) array}``."""
    from onnxxai.dataset import explain_dataset
    from onnxxai.dataset.core import attributions

    run = explain_dataset(x, model_path, settings.methods, out=work, engine=engine.get("engine", "local"),
                          address=engine.get("address"), actors=engine.get("actors"),
                          output_selection=settings.target, samples=settings.samples, batch_size=settings.batch_size,
                          seed=settings.seed, device=settings.device)
    table = run.table()
    return {name: np.stack([by_id[str(i)] for i in range(len(x))])
            for name in settings.methods for by_id in [attributions(table, name)]}


def run_audit(model_path: str | Path, input_paths: Sequence[str | Path], *, reference: str | Path | None = None,
              settings: AuditSettings = AuditSettings(), progress: Callable[[int, int], None] | None = None,
              image_options: dict[str, Any] | None = None, engine: dict[str, Any] | None = None,
              work_dir: str | Path | None = None) -> Audit:
    """Audit ``model_path`` on the inputs: see the module docstring. ``progress(n, total)`` is called
    as work of ``n`` units is done, out of ``total`` (:func:`total_units`: inputs × methods × metrics
    and the rest). ``image_options``: layout, size, scale, mean, std for :func:`read_inputs`.

    ``engine`` (e.g. ``{"engine": "ray", "actors": 2, "address": None}``) computes the methods'
    explanations with :func:`onnxxai.dataset.explain_dataset` on that engine, in shards written under
    ``work_dir`` (a stopped audit resumes them), instead of in this process; the metrics then score those
    attributions here. A seeded method (SmoothGrad) then draws per input, as dataset runs do."""
    clock = _Clock()
    model = clock("load", lambda: load_model(model_path, settings.methods, settings.device))
    runtime = model.runtime if isinstance(model, Model) else model
    reference_model = None
    if reference is not None:  # loaded first: a wrong reference fails before the audit's work
        reference_model = clock("load reference", lambda: load_model(reference, settings.methods, settings.device))
    inputs = read_inputs(input_paths, model, **(image_options or {}))
    x, n = inputs.x, len(inputs.x)
    total = total_units(n, settings, reference is not None)

    def step(units: int) -> None:
        if progress is not None:
            progress(units, total)
    facts = clock("model checks", lambda: model_facts(model_path, model))
    out = clock("predict", lambda: model_outputs(runtime, x, "explain"))
    prediction = out.argmax(axis=1)
    if settings.target is not None and not 0 <= settings.target < out.shape[1]:
        raise InputError(f"--target {settings.target} is not an output index (the model has {out.shape[1]} outputs)")
    target = np.full(n, settings.target) if settings.target is not None else prediction
    options = settings.options()
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "model": facts,
        "settings": {**dataclasses.asdict(settings), "methods": list(settings.methods),
                     "metrics": list(settings.metrics), "method_samples": options.n},
        "seeds": {"methods": settings.seed, "metrics": settings.seed, "random_attributions": settings.seed,
                  "randomised_weights": settings.seed},
        "inputs": [{"index": i, "name": inputs.names[i], "prediction": int(prediction[i]),
                    "target": int(target[i]), "output": float(out[i, target[i]])} for i in range(n)],
        "input_kind": inputs.kind, "columns": inputs.columns, "preprocessing": inputs.preprocessing,
        "methods": {}, "results": [], "errors": [],
    }
    audit = Audit(report, inputs)
    explanation_metrics = [m for m in settings.metrics if mx.METRICS[m].takes == "explanation"]
    chance: dict[str, float] = {}
    first_expl = None
    precomputed: dict[str, np.ndarray] = {}
    if engine is not None:
        if work_dir is None:
            raise InputError("an audit on a dataset engine needs a work folder for its shards (work_dir)")
        precomputed = clock("explain (dataset engine)", lambda: _explained_by_dataset_engine(
            model_path, x, settings, engine or {}, Path(work_dir)))
    for name in settings.methods:
        chosen = method(name)
        entry: dict[str, Any] = {"description": chosen.description}
        report["methods"][name] = entry
        try:
            analyzer = chosen.build(model, options)
            if name in precomputed:  # the preset and output of one sample; the values from the engine
                probe = analyze(x[:1], analyzer, target[:1])
                expl = dataclasses.replace(mx.explanation_of(x, precomputed[name], target, output=out,
                                                             analyzer=probe.analyzer), heatmap=probe.heatmap)
            else:
                expl = clock(f"{name}/explain", lambda: analyze(x, analyzer, target))
        except OnnxxaiError as exc:  # recorded: the other methods still run
            entry["error"] = _cause(exc)
            report["errors"].append({"method": name, "metric": None, "error": entry["error"]})
            step(n * (1 + len(settings.metrics)))
            continue
        step(n)
        entry["analyzer"] = expl.analyzer
        first_expl = first_expl or expl
        audit.attributions[name] = np.asarray(expl.val)
        if inputs.kind == "image":
            audit.overlays[name] = heatmap(expl, layout=inputs.layout, overlay=True)
        for metric_name in settings.metrics:
            try:
                results = clock(f"{name}/{metric_name}",
                                lambda: _metric_results(metric_name, runtime if mx.METRICS[metric_name].takes
                                                        == "explanation" else model, analyzer, expl, name, settings))
            except OnnxxaiError as exc:
                report["errors"].append({"method": name, "metric": metric_name, "error": _cause(exc)})
            else:
                for r in results:
                    report["results"].append({**r.to_dict(), "method": name, "analyzer": r.method, "metric": metric_name,
                                              "description": mx.METRICS[metric_name].description,
                                              "reference": mx.METRICS[metric_name].reference,
                                              "direction": r.direction})
            step(n)
    # chance level: the same metrics of seeded uniform random attributions for the same outputs
    random_rows = []
    if first_expl is not None:
        rand = mx.random_explanation(first_expl, seed=settings.seed)
        for metric_name in explanation_metrics:
            try:
                results = clock(f"random/{metric_name}",
                                lambda: _metric_results(metric_name, runtime, None, rand, "random", settings))
            except OnnxxaiError as exc:
                report["errors"].append({"method": "random", "metric": metric_name, "error": _cause(exc)})
            else:
                for r in results:
                    chance[r.name] = r.value
                    random_rows.append({**r.to_dict(), "method": "random", "metric": metric_name,
                                        "direction": r.direction})
            step(n)
    else:
        step(n * len(explanation_metrics))
    report["random"] = random_rows
    for row in report["results"]:
        row["chance"] = jsonable(chance.get(row["name"]))
        row["verdict"] = verdict_of(row, chance.get(row["name"]))
    if reference is not None:
        # the reference's parity is reported; its gradient check is left to `onnxxai check` (the audited file's is here)
        report["reference"] = clock("reference checks", lambda: model_facts(reference, reference_model, gradient=False))
        shift = clock("deployment shift", lambda: mx.deployment_shift(
            model, reference_model, x, list(settings.methods), options=options))
        report["deployment_shift"] = shift.to_dict()
        step(n * len(settings.methods))
    audit.report = jsonable(report)
    audit.env = {"versions": versions(), "platform": platform.platform(), "cpu_integer_isa": integer_isa(),
                 "timings_s": clock.times, "engine": engine or {"engine": "in-process"}}
    return audit


def total_units(inputs: int, settings: AuditSettings, reference: bool) -> int:
    """The progress units :func:`run_audit` reports for ``inputs`` samples: inputs × (methods × (1 +
    metrics) + random attributions' metrics + methods compared with the reference)."""
    per_input = len(settings.methods) * (1 + len(settings.metrics))
    per_input += sum(mx.METRICS[m].takes == "explanation" for m in settings.metrics)
    per_input += len(settings.methods) if reference else 0
    return inputs * per_input
