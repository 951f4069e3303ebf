"""The ``onnxxai`` command line. It parses arguments and calls the library; nothing else."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

import onnx

from onnxxai.errors import OnnxxaiError, ParityError
from onnxxai.model import load
from onnxxai.reading import read_model

__all__ = ["main"]


def _check(args: argparse.Namespace) -> int:
    proto, label = read_model(args.model)
    ops = Counter(f"{n.domain + '::' if n.domain else ''}{n.op_type}" for n in proto.graph.node)
    report: dict = {
        "model": label,
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "ir_version": proto.ir_version,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in proto.opset_import},
        "ops": dict(sorted(ops.items())),
    }
    status = 0
    try:
        model = load(args.model, strict=True, device=args.device)
    except ParityError as exc:
        report["converted"] = True
        report["parity"] = exc.report.to_dict()
        report["error"] = str(exc)
        status = 1
    except OnnxxaiError as exc:
        report["converted"] = False
        report["error"] = str(exc)
        status = 1
    else:
        report["converted"] = True
        report["inputs"] = [str(s) for s in model.inputs]
        report["outputs"] = [str(s) for s in model.outputs]
        report["passes"] = [{"name": p.name, "changed": p.changed} for p in model.passes if p.changed]
        report["parity"] = model.parity.to_dict()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return status
    print(f"model     {label}")
    print(f"producer  {report['producer'] or '(unknown)'}; IR {report['ir_version']}; opsets "
          + ", ".join(f"{d} {v}" for d, v in report["opsets"].items()))
    print("ops       " + ", ".join(f"{op}×{n}" for op, n in report["ops"].items()))
    if "inputs" in report:
        print("inputs    " + "; ".join(report["inputs"]))
        print("outputs   " + "; ".join(report["outputs"]))
        print("passes    " + (", ".join(f"{p['name']} ({p['changed']})" for p in report["passes"]) or "none"))
        print(model.parity.summary())
    if "error" in report:
        print(f"error     {report['error']}")
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onnxxai", description="Verified explanations for ONNX models.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="convert and verify a model against onnxruntime; print the report")
    check.add_argument("model", help="path to an .onnx file")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--device", default="cpu", help="torch device for the converted graph (default: cpu)")
    check.set_defaults(func=_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except OnnxxaiError as exc:
        print(f"onnxxai: error: {exc}", file=sys.stderr)
        return 2
    except onnx.checker.ValidationError as exc:  # pragma: no cover - read_model wraps these
        print(f"onnxxai: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
