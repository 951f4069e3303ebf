"""Run ONNX's node conformance cases through onnxxai's conversion and report the pass rate.

    python scripts/conformance.py [--raw] [--failures FILE] [--write-readme]

Each case (from ``onnx.backend.test.case.node.collect_testcases``) is a one-node model with inputs
and expected outputs computed by ONNX's reference implementation. A case passes when the converted
torch graph reproduces every expected output within the case's own rtol/atol. ``--raw`` measures
plain ``onnx2torch.convert`` instead, for comparison. "Float-tensor cases" are those whose inputs
and outputs are all float16/32/64 tensors: the graphs gradient methods can explain.
"""

from __future__ import annotations

import argparse
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import torch
from readme_tables import write_block

FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}


def is_float_case(model: onnx.ModelProto) -> bool:
    values = list(model.graph.input) + list(model.graph.output)
    return all(v.type.HasField("tensor_type") and v.type.tensor_type.elem_type in FLOATS for v in values)


#: ml_dtypes element types torch holds bit for bit (decoded through a uint8 view).
_TORCH_FLOAT8 = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e4m3fnuz": torch.float8_e4m3fnuz,
                 "float8_e5m2": torch.float8_e5m2, "float8_e5m2fnuz": torch.float8_e5m2fnuz}
#: ml_dtypes sub-byte integers: torch has no such dtype, onnxxai carries them in int8/uint8.
_SUB_BYTE = {"int4": np.int8, "uint4": np.uint8, "int2": np.int8, "uint2": np.uint8}
#: ml_dtypes float types torch lacks: onnxxai carries their (exact) values in float32 tensors.
_FLOAT32_CARRIED = ("float4_e2m1fn", "float8_e8m0fnu")


def _typed(array, spec: onnx.ValueInfoProto) -> torch.Tensor:
    """The case's input as a tensor of the graph input's dtype (some cases store data as object
    arrays; bfloat16 arrays go through float32, which holds them exactly; float8 arrays are
    reinterpreted bit for bit; int4/uint4/int2/uint2 go into int8/uint8 containers)."""
    a = onnx.numpy_helper.to_array(array) if isinstance(array, onnx.TensorProto) else np.array(array)
    if a.dtype == object:
        a = a.astype(onnx.helper.tensor_dtype_to_np_dtype(spec.type.tensor_type.elem_type))
    if a.dtype.name in _FLOAT32_CARRIED:
        return torch.from_numpy(a.astype(np.float32))
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
    if a.dtype.name in _TORCH_FLOAT8:
        return torch.from_numpy(np.ascontiguousarray(a).view(np.uint8)).view(_TORCH_FLOAT8[a.dtype.name])
    if a.dtype.name in _SUB_BYTE:
        return torch.from_numpy(a.astype(_SUB_BYTE[a.dtype.name]))
    return torch.from_numpy(a)


def _is_tensor_sequence(type_proto: onnx.TypeProto) -> bool:
    """A sequence of tensors (the graph value is a Python list of tensors in the torch graph)."""
    return type_proto.HasField("sequence_type") and type_proto.sequence_type.elem_type.HasField("tensor_type")


def _feed(value, spec: onnx.ValueInfoProto):
    """A case input as the converted graph takes it: a tensor, or a list of tensors for a sequence."""
    if not _is_tensor_sequence(spec.type):
        return _typed(value, spec)
    element = onnx.ValueInfoProto()
    element.type.CopyFrom(spec.type.sequence_type.elem_type)
    return [_typed(v, element) for v in value]


def _comparable(want: np.ndarray) -> np.ndarray:
    """Expected values of ml_dtypes types as plain numpy values (float32 / int64)."""
    if want.dtype.name == "bfloat16" or want.dtype.name in _TORCH_FLOAT8 or want.dtype.name in _FLOAT32_CARRIED:
        return want.astype(np.float32)
    if want.dtype.name in _SUB_BYTE:
        return want.astype(np.int64)
    return want


def run_case(case, raw: bool) -> tuple[str, str]:
    """('pass', '') or (reason class, detail)."""
    import onnx2torch

    import onnxxai
    from onnxxai.model import convert

    model = case.model
    if not case.data_sets:
        return "no data", ""
    values = list(model.graph.input) + list(model.graph.output)
    if any(not (v.type.HasField("tensor_type") or _is_tensor_sequence(v.type)) for v in values):
        return "non-tensor input/output (optional, map, nested sequence)", ""
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001
        return "model fails the ONNX checker", str(exc)[:100]
    try:
        if raw:
            module = onnx2torch.convert(model)
        else:
            _, _, module = convert(model, case.name)
    except onnxxai.UnsupportedOpError as exc:
        message = str(exc)
        if "converter failed" in message:
            return "converter refused the node", f"{exc.op_type}-{exc.opset}: " + message.split("converter failed", 1)[1][:200]
        return "converter not implemented", message[:160]
    except NotImplementedError as exc:
        reason = "converter not implemented" if "Converter is not implemented" in str(exc) else "converter refused the node"
        return reason, str(exc)[:160]
    except Exception as exc:  # noqa: BLE001
        return "conversion error", f"{exc.__class__.__name__}: {str(exc)[:140]}"
    graph_inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    for inputs, expected in case.data_sets:
        try:
            with torch.no_grad():
                args = [_feed(a, spec) for a, spec in zip(inputs, graph_inputs)]
                out = module(*args)
        except Exception as exc:  # noqa: BLE001
            return "runtime error", f"{exc.__class__.__name__}: {str(exc)[:140]}"
        # one graph output comes back bare (a sequence output is itself a list); several as a list/tuple
        outs = [out] if len(model.graph.output) == 1 else list(out) if isinstance(out, (tuple, list)) else [out]
        if len(outs) != len(expected):
            return "wrong number of outputs", f"{len(outs)} vs {len(expected)}"
        pairs = []
        for got, want, spec in zip(outs, expected, model.graph.output):
            if not _is_tensor_sequence(spec.type):
                pairs.append((got, want))
            elif not isinstance(got, (list, tuple)) or len(got) != len(want):
                length = len(got) if isinstance(got, (list, tuple)) else "-"
                return "wrong values", f"sequence output {spec.name!r}: got {type(got).__name__} of length {length}, want {len(want)}"
            else:
                pairs.extend(zip(got, want))
        for got, want in pairs:
            if isinstance(got, torch.Tensor):
                got = (got.float() if got.dtype in (torch.bfloat16, *_TORCH_FLOAT8.values()) else got).detach().cpu().numpy()
            got = np.asarray(got)
            want = onnx.numpy_helper.to_array(want) if isinstance(want, onnx.TensorProto) else np.asarray(want)
            want = _comparable(want)
            if got.shape != want.shape:
                return "wrong shape", f"{got.shape} vs {want.shape}"
            if want.dtype.kind in "fc":
                if not np.allclose(got.astype(np.float64), want.astype(np.float64), rtol=max(case.rtol, 1e-5), atol=max(case.atol, 1e-6), equal_nan=True):
                    return "wrong values", ""
            elif not np.array_equal(got, want):
                return "wrong values", ""
    return "pass", ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", action="store_true", help="measure plain onnx2torch.convert")
    parser.add_argument("--failures", type=Path, help="write every failing case with its reason here")
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--filter", default="", help="only cases whose name contains this")
    args = parser.parse_args()
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = [c for c in collect_testcases(None) if args.filter in c.name]
        results = []
        for case in cases:
            reason, detail = run_case(case, args.raw)
            results.append((case.name, is_float_case(case.model), reason, detail))
    loadable = [r for r in results if r[2] != "no data"]
    floats = [r for r in loadable if r[1]]
    passed = sum(r[2] == "pass" for r in loadable)
    passed_f = sum(r[2] == "pass" for r in floats)
    who = "raw onnx2torch" if args.raw else "onnxxai"
    lines = [
        f"{who}: {passed} of {len(loadable)} cases with data pass ({passed / len(loadable):.1%}); "
        f"float-tensor cases: {passed_f} of {len(floats)} ({passed_f / max(len(floats), 1):.1%}).",
        "",
        "| failure reason | all cases | float-tensor cases |",
        "|---|---|---|",
    ]
    reasons = Counter(r[2] for r in loadable if r[2] != "pass")
    reasons_f = Counter(r[2] for r in floats if r[2] != "pass")
    for reason, count in reasons.most_common():
        lines.append(f"| {reason} | {count} | {reasons_f.get(reason, 0)} |")
    text = "\n".join(lines)
    print(text)
    if args.failures:
        args.failures.write_text("\n".join(f"{n}\t{'float' if f else 'other'}\t{r}\t{d}" for n, f, r, d in results if r != "pass") + "\n")
    if args.write_readme:
        write_block("conformance-raw" if args.raw else "conformance", text)


if __name__ == "__main__":
    main()
