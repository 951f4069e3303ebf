"""The ``onnxxai`` command line. It parses arguments and calls the library; nothing else."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import onnx

from onnxxai.diagnostics import gradient_flow
from onnxxai.errors import ConversionError, InputError, OnnxxaiError, ParityError, UnsupportedOpError
from onnxxai.methods import METHODS, MethodOptions, method, methods
from onnxxai.convert.pipeline import overriding_converters, unsupported_nodes
from onnxxai.model import load
from onnxxai.parity import parity_tolerance
from onnxxai.proto.artifact import artifact_kind
from onnxxai.proto.cpu import integer_isa
from onnxxai.proto.normalize import normalize
from onnxxai.proto import limits
from onnxxai.proto.reading import read_model
from onnxxai.runtime import load_runtime

__all__ = ["main"]


def _probe_shapes(args: argparse.Namespace) -> dict[str, tuple[int, ...]] | None:
    """--probe-shape NAME=DIMS options as load's probe_shapes (None when none is given)."""
    from onnxxai.proto.specs import parse_probe_shape

    return dict(parse_probe_shape(text) for text in args.probe_shape) if getattr(args, "probe_shape", None) else None


def _check(args: argparse.Namespace) -> int:
    proto, label = read_model(args.model)
    ops = Counter(f"{n.domain + '::' if n.domain else ''}{n.op_type}" for n in proto.graph.node)
    report: dict = {
        "model": label,
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "ir_version": proto.ir_version,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in proto.opset_import},
        "ops": dict(sorted(ops.items())),
        "artifact": artifact_kind(proto).to_dict(),
        "tolerance": parity_tolerance(proto).rule,
        "cpu": integer_isa(),
    }
    status = 0
    model = None
    try:
        model = load(args.model, strict=True, device=args.device, probe_shapes=_probe_shapes(args))
    except ParityError as exc:
        report["converted"] = True
        report["parity"] = exc.report.to_dict()
        report["error"] = str(exc)
        status = 1
    except UnsupportedOpError as exc:
        graph = onnx.ModelProto()
        graph.CopyFrom(proto)
        normalize(graph)
        report["converted"] = False
        report["unsupported"] = [{"op": e.op_type, "domain": e.domain or "ai.onnx", "opset": e.opset, "node": e.node_name}
                                 for e in unsupported_nodes(graph)] or [{"op": exc.op_type, "domain": exc.domain or "ai.onnx",
                                                                         "opset": exc.opset, "node": exc.node_name}]
        report["error"] = str(exc)
        status = 1
    except OnnxxaiError as exc:
        report["converted"] = False
        report["error"] = str(exc)
        status = 1
    if model is not None:
        report["converted"] = True
        report["inputs"] = [str(s) for s in model.inputs]
        report["outputs"] = [str(s) for s in model.outputs]
        report["passes"] = [{"name": p.name, "changed": p.changed, "error": p.error, "skipped": list(p.skipped)}
                            for p in model.passes if p.changed or p.error or p.skipped]
        report["overriding_converters"] = [{"op": f"{r.domain + '::' if r.domain else ''}{r.op}-{r.version}", "mode": r.mode,
                                            "converter": r.converter, "upstream": r.upstream}
                                           for r in overriding_converters(model.onnx_model)]
        report["parity"] = model.parity.to_dict()
        try:
            gradient = gradient_flow(model, proto, input_name=args.input)
        except OnnxxaiError as exc:
            report["gradient"] = {"ok": False, "error": str(exc)}
            status = 1
        else:
            report["gradient"] = gradient.to_dict()
            report["gradient_summary"] = gradient.summary()
            status = 0 if gradient.ok else 1
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return status
    print(f"model     {label}")
    print(f"producer  {report['producer'] or '(unknown)'}; IR {report['ir_version']}; opsets "
          + ", ".join(f"{d} {v}" for d, v in report["opsets"].items()))
    print("ops       " + ", ".join(f"{op}×{n}" for op, n in report["ops"].items()))
    print(f"artifact  {report['artifact']['name']}")
    print(f"tolerance {report['tolerance']}")
    print(f"cpu       {report['cpu']}")
    if "inputs" in report:
        print("inputs    " + "; ".join(report["inputs"]))
        print("outputs   " + "; ".join(report["outputs"]))
        print("passes    " + (", ".join(str(p) for p in model.passes if p.changed or p.error) or "none"))
        if report["overriding_converters"]:
            print("ours      " + ", ".join(f"{c['op']} ({c['mode']} onnx2torch's)" for c in report["overriding_converters"]))
        print(model.parity.summary())
        print(report.get("gradient_summary") or f"gradient FAILED: {report['gradient'].get('error')}")
    for item in report.get("unsupported", []):
        print(f"unsupported {item['domain']}::{item['op']} (opset {item['opset']}) at node {item['node']!r}")
    if "error" in report:
        print(f"error     {report['error']}")
    return status


# -- run ----------------------------------------------------------------------------------------
def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    match = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not match:
        raise InputError(f"--size must look like HxW (e.g. 224x224), not {text!r}")
    return int(match.group(1)), int(match.group(2))


def _run_dataset(args: argparse.Namespace) -> int:
    """``run --engine local|ray``: the inputs as one dataset, explained into sharded Parquet + PNGs."""
    from onnxxai.dataset import explain_dataset

    if len(args.inputs) != 1:
        raise InputError("--engine takes one dataset: a folder of images or a CSV/Parquet file")
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    image = {k: v for k, v in (("layout", args.layout), ("size", _size(args.size)), ("scale", args.scale),
                                ("mean", args.mean), ("std", args.std)) if v is not None}
    progress = None if args.quiet else (lambda done, total: print(f"\r{done}/{total} inputs", end="", file=sys.stderr,
                                                                   flush=True))
    run = explain_dataset(args.inputs[0], args.model, methods, out=args.out, engine=args.engine, address=args.address,
                          actors=args.actors, shard_size=args.shard_size, output_selection=args.target,
                          samples=args.samples, batch_size=args.batch_size, seed=args.seed, device=args.device,
                          png=True, image=image if Path(args.inputs[0]).is_dir() else None, progress=progress)
    if not args.quiet:
        print(file=sys.stderr)
        print(f"{run.inputs} inputs x {len(methods)} method(s): {len(run.written)} shard(s) written, "
              f"{len(run.skipped)} already there -> {run.out} ({run.seconds:.1f} s, engine {run.engine})")
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.engine is not None:
        return _run_dataset(args)
    names = methods(args.method)
    options = MethodOptions(batch_size=args.batch_size, samples=args.samples, seed=args.seed)
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError("--batch-size must be a positive integer")
    captured = _Captured()
    if args.text is not None:
        return _run_text(args, names, options, captured)
    if args.tokenizer is not None:
        raise InputError("--tokenizer goes with --text \"...\"")
    if not args.inputs:
        raise InputError("give input files (images, a directory of images, CSV tables or .npy arrays) or --text")
    tables = [p for p in args.inputs if str(p).lower().endswith(".csv")]
    arrays = [p for p in args.inputs if str(p).lower().endswith(".npy")]
    if tables or arrays:
        if len(tables) + len(arrays) != len(args.inputs) or (tables and arrays):
            raise InputError("give one kind of input per run: CSV tables, .npy arrays, or images")
        if tables:
            for name in names:
                _run_tables(args, method(name), options, tables, name)
            return 0
        return _run_arrays(args, names, options, arrays, captured)
    return _run_images(args, names, options, captured)


class _Progress:
    """A one-line progress display on stderr: done/total, rate and time left (silent with --quiet)."""

    def __init__(self, total: int, unit: str, quiet: bool) -> None:
        self.total, self.unit, self.quiet, self.done = total, unit, quiet, 0
        self.start = time.perf_counter()
        self._closed_at = 0

    def advance(self, n: int) -> None:
        self.done += n
        if not self.quiet:
            rate = self.done / max(time.perf_counter() - self.start, 1e-9)
            eta = max(self.total - self.done, 0) / rate if rate > 0 else 0.0
            print(f"\r{self.done}/{self.total} {self.unit} ({rate:.1f}/s, ETA {_duration(eta)})  ", end="",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self.quiet and self.done and self.done != self._closed_at:
            print(file=sys.stderr)
        self._closed_at = self.done


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class _Captured:
    """Warnings raised while loading and explaining: onnxxai's own are printed as one line each (once);
    third-party ones (onnx2torch, torch, transformers) stay off the terminal and go to the JSON."""

    def __init__(self) -> None:
        self.records: list[dict[str, str]] = []
        self._seen: set[tuple[str, str]] = set()

    @contextlib.contextmanager
    def __call__(self):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                for w in caught:
                    self._add(w)

    def _add(self, w: warnings.WarningMessage) -> None:
        message = _one_line(w.message)
        key = (w.category.__name__, message)
        if key in self._seen:
            return
        self._seen.add(key)
        own = w.category.__module__.startswith("onnxxai") or Path(w.filename).resolve().is_relative_to(_PACKAGE)
        self.records.append({"category": w.category.__name__, "message": message[:500],
                             "source": "onnxxai" if own else "third-party", "file": Path(w.filename).name})
        if own:
            print(f"onnxxai: warning: {message}", file=sys.stderr)


_PACKAGE = Path(__file__).resolve().parent


def _load_for_methods(names: list[str], args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The model each method runs on (gradient methods: the converted Model; black-box ones: the
    original file in onnxruntime) and the methods refused with their reason. With one method a file
    that does not convert is an error naming the methods that still explain it."""
    gradient = [n for n in names if not METHODS[n].blackbox]
    refused: dict[str, str] = {}
    model = None
    if gradient:
        try:
            model = load(args.model, device=args.device, strict=True, probe_shapes=_probe_shapes(args))
        except (UnsupportedOpError, ConversionError, ParityError) as exc:
            blackbox = "|".join(name for name, m in METHODS.items() if m.blackbox)
            if len(names) == 1:
                raise InputError(f"{exc}; gradient methods need the converted graph; the black-box methods run this "
                                 f"file in onnxruntime as it is: --method {blackbox}") from exc
            refused.update(dict.fromkeys(gradient, f"the file does not convert to a differentiable graph: {_one_line(exc)}"))
    runtime = None
    if len(gradient) < len(names):
        runtime = model.runtime if model is not None else load_runtime(args.model)
    chosen = {n: (runtime if METHODS[n].blackbox else model) for n in names if n not in refused}
    return chosen, refused


def _attempt(fn: Callable[[], Any], name: str, several: bool, refused: dict[str, str], captured: "_Captured") -> Any:
    """``fn()`` (building or running method ``name``) with third-party warnings captured; with ``several``
    methods a refusal is recorded in ``refused`` and None returned, with one it is raised."""
    try:
        with captured():
            return fn()
    except OnnxxaiError as exc:
        if not several:
            raise
        refused[name] = _one_line(exc)
        return None


def _build(names: list[str], models: dict[str, Any], options: MethodOptions, refused: dict[str, str],
           captured: "_Captured") -> dict[str, Any]:
    """Each method's analyzer; with several methods, one that refuses the model is recorded instead."""
    analyzers = {}
    for name in names:
        if name not in models:
            continue
        built = _attempt(lambda: METHODS[name].build(models[name], options), name, len(names) > 1, refused, captured)
        if built is not None:
            analyzers[name] = built
    if not analyzers:
        raise InputError("no method can explain this model: " + "; ".join(f"{n}: {r}" for n, r in refused.items()))
    return analyzers


def _proto(model: Any) -> Any:
    """The model file as read (metadata and initializers), for a Model or a RuntimeModel."""
    return getattr(model, "original", None) or model.onnx_model


def _top(logits: Any, labels: list[str] | None, k: int = 5) -> list[dict[str, Any]]:
    import numpy as np

    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    return [{"index": int(j), "label": _label(labels, int(j)), "logit": float(logits[j]), "probability": float(probs[j])}
            for j in np.argsort(-logits)[:k]]


def _summary_of(expl: Any, i: int, name: str, model: Any, labels: list[str] | None) -> dict[str, Any]:
    """The JSON fields every input kind shares for sample ``i`` of explanation ``expl``."""
    import numpy as np

    target = int(np.asarray(expl.output_selection).reshape(-1)[i])
    summary = {"model": model.source, "method": name, "analyzer": expl.analyzer,
               "parameters": _jsonable(expl.extras.get("parameters")
                                       or {k: v for k, v in expl.extras.items() if k in ("n", "method", "noise", "boundary")}),
               "target": target, "target_label": _label(labels, target),
               "top5": _top(np.asarray(expl.output)[i], labels), **_model_report(model)}
    if "completeness_relative" in expl.extras:
        summary["completeness_relative"] = float(np.asarray(expl.extras["completeness_relative"]).reshape(-1)[i])
    return summary


def _normalization_check(model: Any, spec: Any, ispec: Any) -> dict[str, Any] | None:
    """A float image model fed without normalization whose first layer says it expected one: one
    warning line on stderr; the verdict goes to the JSON (see onnxxai.proto.input_stats)."""
    from onnxxai.proto.input_stats import expected_input_range

    if not spec.is_float:
        return None
    verdict = expected_input_range(_proto(model), spec.name)
    if verdict is None:
        return None
    if verdict.expects == "zero-mean" and not ispec.normalized:
        print(f"onnxxai: warning: {model.source}: no normalization is applied, but the first layer ({verdict.node}) "
              "was trained on zero-mean inputs; pass --preset imagenet|inception|clip or --mean/--std", file=sys.stderr)
    return verdict.to_dict()


def _run_images(args: argparse.Namespace, names: list[str], options: MethodOptions, captured: _Captured) -> int:
    """Explain image files with each method: maps drawn over each file at its own resolution, raw
    values at the model's, a JSON summary per file and method, and a comparison sheet per file when
    several methods run."""
    import numpy as np

    from onnxxai.dispatch import analyze
    from onnxxai.heatmap import PRESETS, colorize, save_png, scaled_maps
    from onnxxai.preprocess import find_images, image_spec, load_images_with_geometry, metadata_preprocessing, read_image
    from onnxxai.sheet import Panel, comparison_sheet

    images = find_images(args.inputs)
    labels = _read_labels(args)
    t0 = time.perf_counter()
    with captured():
        models, refused = _load_for_methods(names, args)
    t_load = time.perf_counter() - t0
    first = next(iter(models.values()), None)
    if first is None:
        raise InputError("no method can explain this model: " + "; ".join(f"{n}: {r}" for n, r in refused.items()))
    spec = first.input_spec()
    ispec = image_spec(spec, layout=args.layout, size=_size(args.size), scale=args.scale, mean=args.mean, std=args.std,
                       preset=args.preset, metadata=metadata_preprocessing(_proto(first)), fit=args.fit)
    range_check = _normalization_check(first, spec, ispec)
    analyzers = _build(names, models, options, refused, captured)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_input = {n: METHODS[n].samples_per_input(options) for n in analyzers}
    sampled = any(p > 1 for p in per_input.values())
    progress = _Progress(len(images) * sum(per_input.values()), "samples" if sampled else "images", args.quiet)
    rows = args.batch_size or 16
    summaries: list[dict[str, Any]] = []
    for start in range(0, len(images), rows):
        paths = images[start : start + rows]
        x, geometries = load_images_with_geometry(paths, ispec, spec.dtype)
        photos = [read_image(p, 3, None).round().astype(np.uint8) for p in paths]
        per_image: list[dict[str, Any]] = [{} for _ in paths]
        tiles: list[list[Any]] = [[] for _ in paths]
        for name, analyzer in list(analyzers.items()):
            step = max(1, rows // per_input[name])  # images per call: the progress moves every chunk of samples
            for sub in range(0, len(paths), step):
                t1 = time.perf_counter()
                expl = _attempt(lambda: analyze(x[sub : sub + step], analyzer, args.target), name, len(names) > 1,
                                refused, captured)
                if expl is None:
                    del analyzers[name]
                    progress.advance((len(images) - start - sub) * per_input[name])
                    break
                t_explain = time.perf_counter() - t1
                progress.advance(min(step, len(paths) - sub) * per_input[name])
                scaled = scaled_maps(expl, layout=ispec.layout)
                _, _, colormap, alpha = PRESETS[expl.heatmap]
                for j in range(scaled.shape[0]):
                    i = sub + j
                    path, geometry, photo = paths[i], geometries[i], photos[i]
                    stem = out_dir / f"{path.stem}_{name}"
                    drawn = geometry.to_original(scaled[j])
                    heat = colorize(drawn, colormap)
                    overlay = colorize(drawn, colormap, background=photo, alpha=0.5 if alpha is None else alpha)
                    save_png(heat, f"{stem}_heatmap.png")
                    save_png(overlay, f"{stem}_overlay.png")
                    np.save(f"{stem}.npy", np.asarray(expl.val[j]))
                    summary = {"image": str(path), **_summary_of(expl, j, name, models[name], labels),
                               "preprocessing": {**ispec.to_dict(), "geometry": geometry.to_dict()},
                               "files": {"heatmap": f"{stem}_heatmap.png", "overlay": f"{stem}_overlay.png",
                                         "values": f"{stem}.npy"},
                               "timings_s": {"load": round(t_load, 4), "explain_batch": round(t_explain, 4),
                                             "batch_size": int(scaled.shape[0])}}
                    if range_check is not None:
                        summary["normalization_check"] = range_check
                    if captured.records:
                        summary["warnings"] = list(captured.records)
                    Path(f"{stem}.json").write_text(json.dumps(summary, indent=2))
                    per_image[i][name] = summary
                    # the sheet shows the overlay where the preset blends, else the plain map
                    tiles[i].append(Panel(name, _thumbnail(overlay if alpha is not None else heat), expl.heatmap))
        for i, path in enumerate(paths):
            if len(names) == 1:
                summaries.extend(per_image[i].values())
                continue
            drawn = {p.name: p for p in tiles[i]}
            panels = [drawn.get(n) or Panel(n, reason=refused.get(n, "not run")) for n in names]
            sheet = out_dir / f"{path.stem}_sheet.png"
            comparison_sheet(_thumbnail(photos[i]), panels, sheet, title=f"{path.name}: {Path(args.model).name}")
            summaries.append({"image": str(path), "methods": per_image[i], "refused": {n: refused[n] for n in names if n in refused},
                              "files": {"sheet": str(sheet)}})
    progress.close()
    if args.json:
        print(json.dumps(summaries if len(summaries) > 1 else summaries[0], indent=2))
    elif not args.quiet:
        for s in summaries:
            if "methods" in s:
                print(f"{s['image']}: {len(s['methods'])} method(s), {len(s['refused'])} refused -> {s['files']['sheet']}")
            else:
                best = s["top5"][0]
                print(f"{s['image']}: target {s['target']} ({s['target_label'] or '-'}), top {best['index']} "
                      f"p={best['probability']:.3f} -> {s['files']['overlay']}")
    return 0


def _thumbnail(image: Any, side: int = 512) -> Any:
    """An RGB image no larger than ``side`` pixels on its longer side (sheets of large photos stay small)."""
    import numpy as np
    from PIL import Image

    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image
    scale = side / max(h, w)
    return np.asarray(Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR))


def _run_arrays(args: argparse.Namespace, names: list[str], options: MethodOptions, arrays: list[str],
                captured: _Captured) -> int:
    """Explain ``.npy`` arrays (a batch of the model's input, or one sample): values as .npy, a line
    plot with the attribution shaded under the signal for rank-2/3 inputs (time series, audio frames),
    a heatmap for image-like ones, and a JSON summary per array, method and row."""
    import numpy as np

    from onnxxai.dispatch import analyze
    from onnxxai.heatmap import heatmap, save_png, save_series_plot
    from onnxxai.preprocess import read_array

    labels = _read_labels(args)
    with captured():
        models, refused = _load_for_methods(names, args)
    analyzers = _build(names, models, options, refused, captured)  # no model at all: _build says why
    first = next(iter(models.values()))
    spec = first.input_spec(getattr(next(iter(analyzers.values())), "input_name", None))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {path: read_array(path, spec) for path in arrays}
    per_input = {n: METHODS[n].samples_per_input(options) for n in analyzers}
    progress = _Progress(sum(len(x) for x in data.values()) * sum(per_input.values()), "samples", args.quiet)
    summaries = []
    for path, x in data.items():
        for name, analyzer in analyzers.items():
            t1 = time.perf_counter()
            expl = _attempt(lambda: analyze(x, analyzer, args.target), name, len(names) > 1, refused, captured)
            if expl is None:
                continue
            progress.advance(len(x) * per_input[name])
            val = np.asarray(expl.val)
            stem = out_dir / f"{Path(path).stem}_{name}"
            np.save(f"{stem}.npy", val)
            for i in range(len(x)):
                row = f"{stem}_row{i}" if len(x) > 1 else str(stem)
                files = {"values": f"{stem}.npy"}
                title = f"{Path(path).name}{f' row {i}' if len(x) > 1 else ''}: {expl.analyzer}, output {int(np.asarray(expl.output_selection).reshape(-1)[i])}"
                if x.ndim in (2, 3) and val.shape == x.shape:
                    signal, attribution = x[i].astype(np.float64), val[i]
                    if x.ndim == 3 and x.shape[1] < x.shape[2]:  # (channels, time): time on the longer axis
                        signal, attribution = signal.T, attribution.T
                    save_series_plot(signal, attribution, f"{row}_plot.png", title)
                    files["plot"] = f"{row}_plot.png"
                elif x.ndim == 4 and val.ndim in (3, 4):
                    save_png(heatmap(expl)[i], f"{row}_heatmap.png")
                    files["heatmap"] = f"{row}_heatmap.png"
                summary = {"array": str(path), "row": i, **_summary_of(expl, i, name, models[name], labels), "files": files,
                           "timings_s": {"explain": round(time.perf_counter() - t1, 4)}}
                if captured.records:
                    summary["warnings"] = list(captured.records)
                Path(f"{row}.json").write_text(json.dumps(summary, indent=2))
                summaries.append(summary)
    progress.close()
    if refused and not args.quiet:
        for name, reason in refused.items():
            print(f"{name}: refused ({reason})", file=sys.stderr)
    if args.json:
        print(json.dumps(summaries if len(summaries) > 1 else summaries[0], indent=2))
    elif not args.quiet:
        for s in summaries:
            print(f"{s['array']} row {s['row']} ({s['method']}): target {s['target']} -> {s['files'].get('plot') or s['files']['values']}")
    return 0


def _run_text(args: argparse.Namespace, names: list[str], options: MethodOptions, captured: _Captured) -> int:
    """Explain one string: tokenized with --tokenizer, attention mask and token types fed to the
    model's inputs of those names, per-token attributions (at the embedding, summed over its
    dimensions) as an HTML page, coloured terminal text and JSON per method."""
    import numpy as np

    from onnxxai.analyzers import Target
    from onnxxai.dispatch import analyze
    from onnxxai.text import IDS_NAMES, MASK_NAMES, TYPE_NAMES, ansi_text, html_page, tokenize

    if args.tokenizer is None:
        raise InputError("--text needs --tokenizer tokenizer.json (a Hugging Face tokenizer file)")
    if args.inputs:
        raise InputError("--text explains the string it is given; input files go without --text")
    tokens = tokenize(args.tokenizer, args.text)
    labels = _read_labels(args)
    refused = {n: "a black-box method; text runs attribute token ids at the embedding with gradient methods"
               for n in names if METHODS[n].blackbox}
    gradient = [n for n in names if n not in refused]
    if not gradient:
        raise InputError("--text takes gradient methods (gradient, input-x-gradient, smoothgrad, integrated-gradients)")
    with captured():
        model = load(args.model, device=args.device, strict=True, probe_shapes=_probe_shapes(args))
    integer = [s for s in model.inputs if not s.is_float]
    feeds_from = {**{n: "ids" for n in IDS_NAMES}, **{n: "mask" for n in MASK_NAMES}, **{n: "types" for n in TYPE_NAMES}}
    ids_name = next((s.name for s in model.inputs if feeds_from.get(s.name) == "ids"), None)
    if ids_name is None:
        candidates = [s.name for s in integer if s.name not in feeds_from]
        if len(candidates) != 1:
            raise InputError(f"{model.source}: cannot tell which input takes the token ids ({[str(s) for s in model.inputs]}); "
                             f"name it one of {', '.join(IDS_NAMES)}")
        ids_name = candidates[0]
    values = {"ids": tokens.ids, "mask": tokens.attention_mask, "types": tokens.type_ids}
    fixed = {}
    for s in model.inputs:
        if s.name == ids_name:
            continue
        kind = feeds_from.get(s.name)
        if kind is None:
            raise InputError(f"{model.source}: input {s} is not fed by the tokenizer (token ids, {'/'.join(MASK_NAMES)}, "
                             f"{'/'.join(TYPE_NAMES)})")
        fixed[s.name] = values[kind].astype(s.dtype)
    ids = tokens.ids.astype(model.input_spec(ids_name).dtype)
    options = dataclasses.replace(options, target=Target(input_name=ids_name, fixed_inputs=fixed))
    analyzers = _build(gradient, {n: model for n in gradient}, options, refused, captured)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = _Progress(sum(METHODS[n].samples_per_input(options) for n in analyzers), "samples", args.quiet or args.json)
    summaries = []
    for name, analyzer in analyzers.items():
        expl = _attempt(lambda: analyze(ids, analyzer, args.target), name, len(names) > 1, refused, captured)
        if expl is None:
            continue
        progress.advance(METHODS[name].samples_per_input(options))
        per_token = np.asarray(expl.val, dtype=np.float64).reshape(-1)
        stem = out_dir / f"text_{name}"
        summary = {"text": args.text, "tokenizer": str(args.tokenizer), **_summary_of(expl, 0, name, model, labels),
                   "input": ids_name, "fed": {n: "attention mask" if feeds_from[n] == "mask" else "token types" for n in fixed},
                   "attributed_at": expl.extras.get("attributed_at"),
                   "tokens": [{"token": t, "id": int(i), "offsets": list(o), "attribution": float(v)}
                              for t, i, o, v in zip(tokens.tokens, tokens.ids[0], tokens.offsets, per_token)],
                   "files": {"html": f"{stem}.html", "values": f"{stem}.npy"}}
        if captured.records:
            summary["warnings"] = list(captured.records)
        np.save(f"{stem}.npy", per_token)
        target = f"output {summary['target']}" + (f" ({summary['target_label']})" if summary["target_label"] else "")
        Path(f"{stem}.html").write_text(html_page(tokens.tokens, per_token, title=f"{expl.analyzer}: {target}",
                                                  note=f"{Path(args.model).name}; sum over the embedding's dimensions"))
        Path(f"{stem}.json").write_text(json.dumps(summary, indent=2))
        summaries.append(summary)
        if not args.quiet and not args.json:
            progress.close()
            print(f"{name} ({target}): {ansi_text(tokens.tokens, per_token)}")
    progress.close()
    for name, reason in refused.items():
        if not args.quiet:
            print(f"{name}: refused ({reason})", file=sys.stderr)
    if not summaries:
        raise InputError("no method explained the text: " + "; ".join(f"{n}: {r}" for n, r in refused.items()))
    if args.json:
        print(json.dumps(summaries if len(summaries) > 1 else summaries[0], indent=2))
    return 0


def _model_report(model: Any) -> dict[str, Any]:
    """The summary's account of the model: parity of the converted graph, or the runtime-only mode."""
    if hasattr(model, "parity"):
        return {"parity": model.parity.to_dict()}
    return {"runtime": {"batch_mode": model.batch_mode, "conversion_error": model.conversion_error}}


def _run_tables(args: argparse.Namespace, chosen: Any, options: MethodOptions, tables: list[str],
                name: str) -> int:
    """Explain every row of CSV tables (header = column names): per-row attributions as CSV, a bar
    chart PNG per row and a JSON summary."""
    import numpy as np

    from onnxxai.dispatch import analyze
    from onnxxai.heatmap import save_bar_chart
    from onnxxai.preprocess import read_csv_table

    model = _load_for_methods([name], args)[0][name]  # one method: a file that does not convert is an error
    labels = _read_labels(args)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = []
    for table in tables:
        columns, values = read_csv_table(table)
        if hasattr(options, "background"):  # methods with a reference set (TreeSHAP) take the table's rows
            options = dataclasses.replace(options, background=values)
        analyzer = chosen.build(model, options)
        spec = model.input_spec(getattr(analyzer, "input_name", None))
        if len(spec.shape) != 2 or (isinstance(spec.shape[1], int) and spec.shape[1] > 0 and spec.shape[1] != len(columns)):
            raise InputError(f"{table}: {len(columns)} columns, but the model's input is {spec}")
        t1 = time.perf_counter()
        expl = analyze(values.astype(spec.dtype), analyzer, args.target)
        t_explain = time.perf_counter() - t1
        val = np.asarray(expl.val, dtype=np.float64)
        stem = out_dir / f"{Path(table).stem}_{name}"
        lines = [",".join(["row", "target", *columns])]
        lines += [",".join([str(i), str(int(expl.output_selection[i])), *(repr(float(v)) for v in val[i])]) for i in range(len(val))]
        Path(f"{stem}.csv").write_text("\n".join(lines) + "\n")
        charts = []
        for i in range(len(val)):
            target = int(expl.output_selection[i])
            chart = f"{stem}_row{i}.png"
            save_bar_chart(val[i], columns, chart, f"{Path(table).name} row {i}: {expl.analyzer}, output {target} "
                           f"({_label(labels, target) or '-'})")
            charts.append(chart)
        summary = {"table": table, "model": model.source, "method": name, "analyzer": expl.analyzer,
                   "rows": len(val), "columns": columns, "targets": [int(t) for t in expl.output_selection],
                   "parameters": _jsonable(expl.extras.get("parameters", {})),
                   "files": {"attributions": f"{stem}.csv", "charts": charts},
                   "timings_s": {"explain": round(t_explain, 4)}, **_model_report(model)}
        Path(f"{stem}.json").write_text(json.dumps(summary, indent=2))
        summaries.append(summary)
        if not args.quiet and not args.json:
            print(f"{table}: {len(val)} rows -> {stem}.csv, {len(charts)} charts")
    if args.json:
        print(json.dumps(summaries if len(summaries) > 1 else summaries[0], indent=2))
    return 0


def _audit(args: argparse.Namespace) -> int:
    """Audit a model on images or CSV rows: methods × metrics, sanity verdicts, deployment shift; write
    the HTML report, its JSON twin, a CSV per metric and the environment file into --out."""
    from onnxxai.audit import AuditSettings, run_audit, write_report
    from onnxxai.audit.core import DEFAULT_METHODS, DEFAULT_METRICS

    settings = AuditSettings(
        methods=tuple(args.methods or DEFAULT_METHODS), metrics=tuple(args.metrics or DEFAULT_METRICS), seed=args.seed,
        samples=args.samples, steps=args.steps, target=args.target, batch_size=args.batch_size, device=args.device)
    bar: list[_Progress] = []

    def progress(units: int, total: int) -> None:
        if not bar:
            bar.append(_Progress(total, "units (inputs x methods x metrics)", args.quiet))
        bar[0].advance(units)

    image_options = {"layout": args.layout, "size": _size(args.size), "scale": args.scale, "mean": args.mean, "std": args.std}
    engine = None if args.engine is None else {"engine": args.engine, "address": args.address, "actors": args.actors}
    audit = run_audit(args.model, args.inputs, reference=args.reference, settings=settings, progress=progress,
                      image_options=image_options, engine=engine,
                      work_dir=None if engine is None else Path(args.out) / "explanations")
    if bar:
        bar[0].close()
    paths = write_report(audit, args.out)
    if not args.quiet:
        verdicts = [r["verdict"]["passed"] for r in audit.report["results"] if r.get("verdict")]
        decided = [v for v in verdicts if v is not None]
        undecidable = f", {len(verdicts) - len(decided)} N/A (no explanation could pass)" if len(decided) < len(verdicts) else ""
        print(f"{paths['html']}: {len(audit.report['inputs'])} inputs, {len(settings.methods)} methods, "
              f"{len(audit.report['results'])} results, verdicts {sum(decided)}/{len(decided)} PASS{undecidable}; "
              f"JSON {paths['json']}")
    return 0


def _read_labels(args: argparse.Namespace) -> list[str] | None:
    if not args.labels:
        return None
    try:
        return Path(args.labels).read_text().splitlines()
    except OSError as exc:
        raise InputError(f"{args.labels}: cannot read labels ({exc.strerror})") from exc


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def _label(labels: list[str] | None, index: int) -> str | None:
    return labels[index] if labels is not None and 0 <= index < len(labels) else None


def _layers(args: argparse.Namespace) -> int:
    from onnxxai.graph import boundaries, format_boundaries

    found = boundaries(args.model, input_name=args.input, output_name=args.output)
    if args.json:
        print(json.dumps([{"name": b.name, "shape": list(b.shape), "kind": b.kind, "node": b.node,
                           "op_type": b.op_type, "note": b.note, "default": b.default} for b in found], indent=2))
    else:
        print(format_boundaries(found))
        if not any(b.default for b in found):
            print("no default GradCAM boundary: no cut is a spatial feature map or a token sequence on the "
                  "input's image grid", file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="onnxxai", description="Verified explanations for ONNX models.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="convert and verify a model (parity with onnxruntime, gradient flow); print the report")
    check.add_argument("model", help="path to an .onnx file")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--device", default="cpu", help="torch device for the converted graph (default: cpu)")
    check.add_argument("--probe-shape", action="append", metavar="NAME=DIMS",
                       help="shape of the probe input NAME for the parity and gradient checks, e.g. audio=1,16000 "
                            "(repeatable; for inputs whose dynamic dimensions refuse the default sizes)")
    check.add_argument("--input", help="the input whose gradient is checked: a name, or 'all' for every input "
                                       "(default: the one analyzers explain; several float inputs: each)")
    check.set_defaults(func=_check)

    layers = sub.add_parser("layers", help="list the cut tensors GradCAM can use as boundary, marking the default (*)")
    layers.add_argument("model", help="path to an .onnx file")
    layers.add_argument("--input", help="the analyzed input (default: the single float input)")
    layers.add_argument("--output", help="the explained output (default: the first float output)")
    layers.add_argument("--json", action="store_true", help="print the candidates as JSON")
    layers.set_defaults(func=_layers)

    listing = "; ".join(f"{name}: {m.description}" for name, m in METHODS.items())
    run = sub.add_parser("run", help="explain image files with a model; write heatmaps, values and a JSON summary",
                         description="Explain image files (or every image in a directory) with an ONNX model.")
    run.add_argument("model", help="path to an .onnx file")
    run.add_argument("inputs", nargs="*", metavar="INPUT",
                     help="image files and/or directories of images; or CSV tables (header row = column names; "
                          "one explanation per row, written as CSV and a bar chart per row); or .npy arrays (a batch "
                          "of the model's input or one sample; rank-2/3 inputs get a line plot)")
    run.add_argument("--method", default="integrated-gradients",
                     help=f"attribution method, several as a,b,c, or all (images: a comparison sheet per input). {listing}")
    run.add_argument("--preset", choices=("imagenet", "inception", "clip", "none"),
                     help="image preprocessing: imagenet (mean .485 .456 .406, std .229 .224 .225; shorter side to "
                          "S*256/224, centre crop), inception (pixels in [-1, 1]; central 87.5%% crop), clip (CLIP's "
                          "mean/std; shorter side to S, centre crop, bicubic), none (pixels in [0, 1], stretched). "
                          "Default: the model's metadata_props (Image.NominalPixelRange, Image.BitmapPixelFormat, "
                          "onnxxai.mean/onnxxai.std/onnxxai.preset/onnxxai.fit), else none")
    run.add_argument("--fit", choices=("stretch", "crop", "letterbox"),
                     help="how an image of another size or aspect meets the model's size (default: the preset's)")
    run.add_argument("--text", help="explain this string (with --tokenizer): per-token attributions as HTML, "
                                    "terminal colours and JSON")
    run.add_argument("--tokenizer", help="a Hugging Face tokenizer.json for --text; its attention mask and token types "
                                         "feed the model's inputs of those names")
    run.add_argument("--target", type=int, default=None, help="output index to explain (default: the top prediction)")
    run.add_argument("--labels", help="text file with one label per output index")
    run.add_argument("--out", default="onnxxai-out", help="output directory (default: onnxxai-out)")
    run.add_argument("--size", help="resize images to HxW (default: the model's fixed input size)")
    run.add_argument("--mean", type=float, nargs="+", help="per-channel mean subtracted after scaling (default 0)")
    run.add_argument("--std", type=float, nargs="+", help="per-channel std divided after the mean (default 1)")
    run.add_argument("--scale", type=float, help="pixel scale applied first (default 1/255: pixels in [0, 1])")
    run.add_argument("--layout", default="auto", help="auto|nchw|nhwc (default: read off the model's input)")
    run.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    run.add_argument("--probe-shape", action="append", metavar="NAME=DIMS",
                     help="shape of the probe input NAME for the parity check, e.g. x=1,3,224,224 (repeatable)")
    run.add_argument("--batch-size", type=int, help="images per batch and rows per forward/backward (default 16)")
    run.add_argument("--samples", type=int, help="samples for smoothgrad / steps for integrated-gradients (default 50); "
                     "masks for rise, coalitions for kernelshap / lime")
    run.add_argument("--seed", type=int, default=0, help="seed of SmoothGrad's noise, RISE's masks, KernelSHAP's and LIME's coalitions (default 0)")
    run.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    run.add_argument("--quiet", action="store_true", help="no progress bar, no per-image lines")
    run.add_argument("--engine", choices=("local", "ray"), default=None,
                     help="explain the inputs as one dataset into sharded Parquet (+ PNGs) under --out, resumable: "
                          "local (this process) or ray (Ray Data actors; pip install 'onnxxai[ray]')")
    run.add_argument("--address", help="with --engine ray: the Ray cluster to join (default: start a local Ray)")
    run.add_argument("--actors", type=int, help="with --engine ray: actors, each loading the model once (default 1)")
    run.add_argument("--shard-size", type=int, default=64, help="with --engine: inputs per shard (default 64)")
    run.set_defaults(func=_run)

    audit = sub.add_parser("audit", help="audit a model: faithfulness and sanity metrics per method, deployment shift; "
                                         "write one self-contained HTML report, its JSON twin and a CSV per metric",
                           description="Audit an ONNX model on images or CSV rows (onnxxai.audit).")
    audit.add_argument("model", help="path to an .onnx file (the file audited, e.g. the deployed one)")
    audit.add_argument("inputs", nargs="+", metavar="IMAGES_OR_CSV", help="image files and/or directories, or CSV tables")
    audit.add_argument("--reference", help="a second .onnx file (e.g. the float32 file behind an int8 one): prediction "
                                           "agreement and per-method explanation similarity")
    audit.add_argument("--methods", nargs="+", metavar="METHOD", help=f"methods (default: {' '.join(('gradient', 'integrated-gradients'))}); "
                       f"any of {', '.join(METHODS)}")
    audit.add_argument("--metrics", nargs="+", metavar="METRIC", help="metrics (default: all but mprt_independent); any of "
                       "deletion, insertion, road_morf, road_lerf, faithfulness_correlation, infidelity, max_sensitivity, "
                       "random_logit, mprt_cascading, mprt_independent")
    audit.add_argument("--out", default="onnxxai-audit", help="output directory (default: onnxxai-audit)")
    audit.add_argument("--seed", type=int, default=0, help="seed of every random draw: methods, metrics, random "
                                                           "attributions, randomised weights (default 0)")
    audit.add_argument("--samples", type=int, help="samples of sampled methods (IG steps, SmoothGrad copies, masks; "
                                                   "default: the method's)")
    audit.add_argument("--steps", type=int, default=32, help="points on the deletion/insertion curves (default 32)")
    audit.add_argument("--target", type=int, default=None, help="output index to explain (default: each top prediction)")
    audit.add_argument("--batch-size", type=int, help="rows per forward/backward of the methods")
    audit.add_argument("--size", help="resize images to HxW (default: the model's fixed input size)")
    audit.add_argument("--mean", type=float, nargs="+", help="per-channel mean subtracted after scaling (default 0)")
    audit.add_argument("--std", type=float, nargs="+", help="per-channel std divided after the mean (default 1)")
    audit.add_argument("--scale", type=float, help="pixel scale applied first (default 1/255)")
    audit.add_argument("--layout", default="auto", help="auto|nchw|nhwc (default: read off the model's input)")
    audit.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    audit.add_argument("--engine", choices=("local", "ray"), default=None,
                       help="compute the explanations as a dataset run (onnxxai.explain_dataset) on this engine, "
                            "resumable under --out/explanations: local or ray (Ray Data actors); metrics run here")
    audit.add_argument("--address", help="with --engine ray: the Ray cluster to join (default: start a local Ray)")
    audit.add_argument("--actors", type=int, help="with --engine ray: actors, each loading the model once (default 1)")
    audit.add_argument("--quiet", action="store_true", help="no progress bar, no summary line")
    audit.set_defaults(func=_audit)
    _common_options(sub)
    return parser


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2) that point to --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common_options(sub: Any) -> None:
    """Options every command (of the subparsers action ``sub``) takes: budgets for untrusted files, and --debug."""
    for command in sub.choices.values():
        command.add_argument("--timeout", type=_seconds, default=limits.DEFAULT_TIMEOUT, metavar="SECONDS",
                             help=f"time budget of each stage that runs the model: parity probes, gradient check, "
                                  f"boundary probing, each analysis forward (default {limits.DEFAULT_TIMEOUT:g}; 0: none)")
        command.add_argument("--memory-limit", type=_bytes, default=None, metavar="SIZE",
                             help="largest tensor or allocation a file may ask for, e.g. 8G (default: "
                                  f"{limits.MEMORY_FRACTION:g} of this machine's memory)")
        command.add_argument("--debug", action="store_true", help="print the traceback of an internal error")


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"a timeout must be >= 0 seconds, not {text!r}")
    return value or None


def _bytes(text: str) -> int:
    try:
        return limits.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def main(argv: list[str] | None = None) -> int:
    """Run the command line; every failure is one line on stderr: exit 2 for what the user can fix
    (a named onnxxai error, an unreadable or unwritable file), exit 3 for an internal error, whose
    traceback goes to a file (printed with --debug)."""
    args = _parser().parse_args(argv)
    try:
        with limits.stage_timeouts(args.timeout), limits.budget(memory=args.memory_limit):
            return args.func(args)
    except OnnxxaiError as exc:
        print(f"onnxxai: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the user named cannot be read or written (--out, --labels, ...)
        if exc.filename is None:
            return _internal_error(exc, args)
        print(f"onnxxai: error: {exc.filename}: {exc.strerror or _one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onnxxai: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - an internal error: one line, the traceback kept in a file
        return _internal_error(exc, args)


def _internal_error(exc: BaseException, args: argparse.Namespace) -> int:
    """One line naming the internal error and where its traceback is (or the traceback, with --debug)."""
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(exc))
    if getattr(args, "debug", False):
        print(text, file=sys.stderr, end="")
        return 3
    with tempfile.NamedTemporaryFile("w", prefix="onnxxai-traceback-", suffix=".txt", delete=False) as f:
        f.write(text)
    print(f"onnxxai: internal error: {exc.__class__.__name__}: {_one_line(exc)[:300]} (a bug in onnxxai; traceback in "
          f"{f.name}; --debug prints it)", file=sys.stderr)
    return 3


def console() -> None:
    """The ``onnxxai`` command: :func:`main`, then exit with its status at once. Native work a time budget
    abandoned (an onnxruntime session still optimizing a hostile graph) cannot be stopped; waiting for it
    at interpreter exit could take as long as the hang the budget ended, and letting the interpreter
    finalize under it aborts the process, so the command flushes its output and leaves without either."""
    from onnxxai.proto.limits import wait_for_abandoned

    code = main()
    if not wait_for_abandoned(timeout=0.0):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console()
