"""The ``onnxxai`` command line. It parses arguments and calls the library; nothing else."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, NoReturn

import onnx

from onnxxai.diagnostics import gradient_flow
from onnxxai.errors import ConversionError, InputError, OnnxxaiError, ParityError, UnsupportedOpError
from onnxxai.methods import METHODS, MethodOptions, method
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


class _Progress:
    """A one-line progress display on stderr (silent with --quiet or when nothing is to show)."""

    def __init__(self, total: int, unit: str, quiet: bool) -> None:
        self.total, self.unit, self.quiet, self.done = total, unit, quiet, 0
        self.start = time.perf_counter()

    def advance(self, n: int) -> None:
        self.done += n
        if not self.quiet:
            rate = self.done / max(time.perf_counter() - self.start, 1e-9)
            print(f"\r{self.done}/{self.total} {self.unit} ({rate:.1f}/s)", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self.quiet and self.done:
            print(file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from onnxxai.dispatch import analyze
    from onnxxai.heatmap import heatmap, save_png
    from onnxxai.preprocess import find_images, image_spec, load_images

    chosen = method(args.method)
    options = MethodOptions(batch_size=args.batch_size, samples=args.samples, seed=args.seed)
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError("--batch-size must be a positive integer")
    tables = [p for p in args.inputs if str(p).lower().endswith(".csv")]
    if tables:
        if len(tables) != len(args.inputs):
            raise InputError("give either CSV tables or images, not both")
        return _run_tables(args, chosen, options, tables)
    images = find_images(args.inputs)
    labels = None
    if args.labels:
        try:
            labels = Path(args.labels).read_text().splitlines()
        except OSError as exc:
            raise InputError(f"{args.labels}: cannot read labels ({exc.strerror})") from exc
    t0 = time.perf_counter()
    model = _load_for(chosen, args)
    t_load = time.perf_counter() - t0
    spec = model.input_spec()
    ispec = image_spec(spec, layout=args.layout, size=_size(args.size), scale=args.scale, mean=args.mean, std=args.std)
    analyzer = chosen.build(model, options)
    chunk = args.batch_size or 16
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_image = chosen.samples_per_input(options)
    progress = _Progress(len(images) * per_image, "images" if per_image == 1 else "samples", args.quiet)
    summaries = []
    for start in range(0, len(images), chunk):
        paths = images[start : start + chunk]
        x = load_images(paths, ispec, spec.dtype)
        t1 = time.perf_counter()
        expl = analyze(x, analyzer, args.target)
        t_explain = time.perf_counter() - t1
        progress.advance(len(paths) * per_image)
        maps = heatmap(expl, layout=ispec.layout)
        overlays = heatmap(expl, layout=ispec.layout, overlay=True)
        logits = np.asarray(expl.output, dtype=np.float64).reshape(len(paths), -1)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        for i, path in enumerate(paths):
            stem = out_dir / f"{path.stem}_{args.method}"
            save_png(maps[i], f"{stem}_heatmap.png")
            save_png(overlays[i], f"{stem}_overlay.png")
            np.save(f"{stem}.npy", expl.val[i])
            top = np.argsort(-logits[i])[:5]
            summary = {
                "image": str(path),
                "model": model.source,
                "method": args.method,
                "analyzer": expl.analyzer,
                "parameters": _jsonable(expl.extras.get("parameters")
                                        or {k: v for k, v in expl.extras.items() if k in ("n", "method", "noise", "boundary")}),
                "target": int(expl.output_selection[i]),
                "target_label": _label(labels, int(expl.output_selection[i])),
                "top5": [{"index": int(j), "label": _label(labels, int(j)), "logit": float(logits[i, j]),
                          "probability": float(probs[i, j])} for j in top],
                "preprocessing": ispec.describe(),
                **_model_report(model),
                "files": {"heatmap": f"{stem}_heatmap.png", "overlay": f"{stem}_overlay.png", "values": f"{stem}.npy"},
                "timings_s": {"load": round(t_load, 4), "explain_batch": round(t_explain, 4), "batch_size": len(paths)},
            }
            if "completeness_relative" in expl.extras:
                summary["completeness_relative"] = float(np.asarray(expl.extras["completeness_relative"])[i])
            Path(f"{stem}.json").write_text(json.dumps(summary, indent=2))
            summaries.append(summary)
    progress.close()
    if args.json:
        print(json.dumps(summaries if len(summaries) > 1 else summaries[0], indent=2))
    elif not args.quiet:
        for s in summaries:
            best = s["top5"][0]
            print(f"{s['image']}: target {s['target']} ({s['target_label'] or '-'}), top {best['index']} "
                  f"p={best['probability']:.3f} -> {s['files']['overlay']}")
    return 0


def _load_for(chosen: Any, args: argparse.Namespace) -> Any:
    """A black-box method gets the original file in onnxruntime (no conversion); a gradient method
    the converted Model, and a file that does not convert says which methods still explain it."""
    if chosen.blackbox:
        return load_runtime(args.model)
    try:
        return load(args.model, device=args.device, strict=True, probe_shapes=_probe_shapes(args))
    except (UnsupportedOpError, ConversionError, ParityError) as exc:
        blackbox = "|".join(name for name, m in METHODS.items() if m.blackbox)
        raise InputError(f"{exc}; gradient methods need the converted graph; the black-box methods run this file in "
                         f"onnxruntime as it is: --method {blackbox}") from exc


def _model_report(model: Any) -> dict[str, Any]:
    """The summary's account of the model: parity of the converted graph, or the runtime-only mode."""
    if hasattr(model, "parity"):
        return {"parity": model.parity.to_dict()}
    return {"runtime": {"batch_mode": model.batch_mode, "conversion_error": model.conversion_error}}


def _run_tables(args: argparse.Namespace, chosen: Any, options: MethodOptions, tables: list[str]) -> int:
    """Explain every row of CSV tables (header = column names): per-row attributions as CSV, a bar
    chart PNG per row and a JSON summary."""
    import numpy as np

    from onnxxai.dispatch import analyze
    from onnxxai.heatmap import save_bar_chart
    from onnxxai.preprocess import read_csv_table

    model = _load_for(chosen, args)
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
        stem = out_dir / f"{Path(table).stem}_{args.method}"
        lines = [",".join(["row", "target", *columns])]
        lines += [",".join([str(i), str(int(expl.output_selection[i])), *(repr(float(v)) for v in val[i])]) for i in range(len(val))]
        Path(f"{stem}.csv").write_text("\n".join(lines) + "\n")
        charts = []
        for i in range(len(val)):
            target = int(expl.output_selection[i])
            chart = f"{stem}_row{i}.png"
            save_bar_chart(val[i], columns, chart, f"{Path(table).name} row {i}: {expl.analyzer}, output {target} "
                           f"({_label(_read_labels(args), target) or '-'})")
            charts.append(chart)
        summary = {"table": table, "model": model.source, "method": args.method, "analyzer": expl.analyzer,
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
    run.add_argument("inputs", nargs="+", metavar="IMAGE_DIR_OR_CSV",
                     help="image files and/or directories of images, or CSV tables (header row = column names; "
                          "one explanation per row, written as CSV and a bar chart per row)")
    run.add_argument("--method", default="integrated-gradients", help=f"attribution method. {listing}")
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
    run.set_defaults(func=_run)
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


if __name__ == "__main__":
    sys.exit(main())
