"""Helpers the test suite and the scripts in scripts/ share: exporting torch modules to ONNX, feeding
ONNX values to a converted torch graph and reading its outputs back, and running one of ONNX's node
conformance cases through onnxxai's conversion.

Tests and scripts import these from here and never from each other. This is the top layer of the
package: it may import any onnxxai module, and no onnxxai module imports it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from onnxxai.errors import UnsupportedOpError
from onnxxai.convert.pipeline import convert
from onnxxai.proto.dtypes import NUMPY_FLOAT_TYPES

__all__ = ["FLOATS", "export", "graph_outputs", "is_float_case", "is_tensor_sequence", "run_case", "to_numpy", "to_torch"]

#: ONNX element types of the float tensors gradient methods explain.
FLOATS = NUMPY_FLOAT_TYPES

#: ml_dtypes element types torch holds bit for bit (decoded through a uint8 view).
_TORCH_FLOAT8 = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e4m3fnuz": torch.float8_e4m3fnuz,
                 "float8_e5m2": torch.float8_e5m2, "float8_e5m2fnuz": torch.float8_e5m2fnuz}
#: ml_dtypes sub-byte integers: torch has no such dtype, onnxxai carries them in int8/uint8.
_SUB_BYTE = {"int4": np.int8, "uint4": np.uint8, "int2": np.int8, "uint2": np.uint8}
#: ml_dtypes float types torch lacks: onnxxai carries their (exact) values in float32 tensors.
_FLOAT32_CARRIED = ("float4_e2m1fn", "float8_e8m0fnu")


def export(module: torch.nn.Module, example: torch.Tensor | tuple, path: Path, *, dynamo: bool = False, **kwargs: Any) -> Path:
    """Export ``module`` to ``path`` with a dynamic batch dimension on every input (inputs ``x`` or
    ``x0``, ``x1``, ...; output ``y``), so tests and scripts explain the same kind of export."""
    module = module.eval()
    args = example if isinstance(example, tuple) else (example,)
    names = kwargs.pop("input_names", [f"x{i}" if len(args) > 1 else "x" for i in range(len(args))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch")
            torch.onnx.export(module, args, str(path), input_names=names, output_names=["y"],
                              dynamic_shapes=tuple({0: batch} for _ in args), verbose=False, **kwargs)
        else:
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=kwargs.pop("opset_version", 17),
                              input_names=names, output_names=["y"],
                              dynamic_axes={**{n: {0: "batch"} for n in names}, "y": {0: "batch"}}, **kwargs)
    return path


def is_float_case(model: onnx.ModelProto) -> bool:
    """Whether every graph input and output of ``model`` is a float16/32/64 tensor."""
    values = list(model.graph.input) + list(model.graph.output)
    return all(v.type.HasField("tensor_type") and v.type.tensor_type.elem_type in FLOATS for v in values)


def is_tensor_sequence(type_proto: onnx.TypeProto) -> bool:
    """A sequence of tensors (the graph value is a Python list of tensors in the torch graph)."""
    return type_proto.HasField("sequence_type") and type_proto.sequence_type.elem_type.HasField("tensor_type")


def to_torch(array: Any, spec: onnx.ValueInfoProto) -> torch.Tensor:
    """An ONNX input value (array or TensorProto) as a tensor of the graph input's dtype, as the
    converted graph takes it: object arrays are typed from ``spec``; bfloat16 goes through float32,
    which holds it exactly; float8 is reinterpreted bit for bit; int4/uint4/int2/uint2 go into
    int8/uint8 containers, float4e2m1/float8e8m0 into float32 ones."""
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


def _feed(value: Any, spec: onnx.ValueInfoProto) -> torch.Tensor | list[torch.Tensor]:
    """A case input as the converted graph takes it: a tensor, or a list of tensors for a sequence."""
    if not is_tensor_sequence(spec.type):
        return to_torch(value, spec)
    element = onnx.ValueInfoProto()
    element.type.CopyFrom(spec.type.sequence_type.elem_type)
    return [to_torch(v, element) for v in value]


def graph_outputs(out: Any, model: onnx.ModelProto) -> list:
    """The converted module's result as one entry per graph output of ``model``: one graph output
    comes back bare (a sequence output is itself a list), several as a tuple or list."""
    if len(model.graph.output) == 1:
        return [out]
    return list(out) if isinstance(out, (tuple, list)) else [out]


def to_numpy(value: Any) -> np.ndarray:
    """A converted graph's output tensor as numpy; bfloat16 and float8, which numpy lacks, as float32."""
    if isinstance(value, torch.Tensor):
        value = (value.float() if value.dtype in (torch.bfloat16, *_TORCH_FLOAT8.values()) else value).detach().cpu().numpy()
    return np.asarray(value)


def _comparable(want: np.ndarray) -> np.ndarray:
    """Expected values of ml_dtypes types as plain numpy values (float32 / int64)."""
    if want.dtype.name == "bfloat16" or want.dtype.name in _TORCH_FLOAT8 or want.dtype.name in _FLOAT32_CARRIED:
        return want.astype(np.float32)
    if want.dtype.name in _SUB_BYTE:
        return want.astype(np.int64)
    return want


def run_case(case: Any, raw: bool) -> tuple[str, str]:
    """Run one of ONNX's node conformance cases (``onnx.backend.test.case.node``) through onnxxai's
    conversion (or plain ``onnx2torch.convert`` when ``raw``): ('pass', '') or (reason class, detail).
    Failures are recorded as reasons, not raised: the conformance table counts them."""
    import onnx2torch

    model = case.model
    if not case.data_sets:
        return "no data", ""
    values = list(model.graph.input) + list(model.graph.output)
    if any(not (v.type.HasField("tensor_type") or is_tensor_sequence(v.type)) for v in values):
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
    except UnsupportedOpError as exc:
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
        outs = graph_outputs(out, model)
        if len(outs) != len(expected):
            return "wrong number of outputs", f"{len(outs)} vs {len(expected)}"
        pairs = []
        for got, want, spec in zip(outs, expected, model.graph.output):
            if not is_tensor_sequence(spec.type):
                pairs.append((got, want))
            elif not isinstance(got, (list, tuple)) or len(got) != len(want):
                length = len(got) if isinstance(got, (list, tuple)) else "-"
                return "wrong values", f"sequence output {spec.name!r}: got {type(got).__name__} of length {length}, want {len(want)}"
            else:
                pairs.extend(zip(got, want))
        for got, want in pairs:
            got = to_numpy(got)
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
