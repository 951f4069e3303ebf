"""onnxruntime vs the converted torch graph on the same inputs -> ParityReport.

The reference is the *original* file run by onnxruntime, so a wrong normalization pass, a wrong
converter or a wrong opset alias all show up here, before any explanation is computed.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from onnxxai.errors import TimeLimitError
from onnxxai.proto import limits, locate
from onnxxai.proto.artifact import FLOAT_WIDTH, compute_float_types, graph_depth
from onnxxai.proto.cpu import integer_isa
from onnxxai.proto.qdq import output_steps
from onnxxai.proto.walk import subgraphs

__all__ = [
    "ParityReport", "OutputParity", "Tolerance", "parity_tolerance", "onnxruntime_session", "run_onnxruntime",
    "compare_outputs", "execution_provider", "onnxruntime_failure_node",
]

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-6
#: The float32 rule (also the rule of every graph that computes in float32 or wider).
FLOAT32_RULE = f"float32 compute: rtol={DEFAULT_RTOL:g}, atol={DEFAULT_ATOL:g}"
#: a quantized graph's outputs may differ from onnxruntime's by this many output quantization steps
QUANT_STEPS = 2


@dataclass(frozen=True)
class Tolerance:
    """The parity tolerance of a graph and the rule that set it."""

    rtol: float
    atol: float
    rule: str


def parity_tolerance(model: onnx.ModelProto, rtol: float | None = None, atol: float | None = None) -> Tolerance:
    """The parity tolerance of ``model``, derived from the float types it computes in.

    One rule for every model: a graph whose narrowest float type (initializers, Constant values,
    Cast targets, declared value types) is float32 or wider gets rtol 1e-4, atol 1e-6. A graph that
    computes in float16 or bfloat16 gets ``rtol = eps * max(2, sqrt(depth))`` -- eps the machine
    epsilon of its narrowest type (2**-10, 2**-7), depth the number of nodes on its longest path
    (rounding errors of independent ops add up like a random walk) -- and atol 1e-6.

    A quantized graph whose float outputs are dequantized quantized tensors (static int8/int16, QDQ
    or QOperator: :func:`onnxxai.proto.qdq.output_steps` reads each output's step, the scale of the
    DequantizeLinear reading the last QuantizeLinear/QLinear op's output) also gets
    ``atol = QUANT_STEPS (2) * step``, ``step`` the smallest such step of its outputs: where
    onnxruntime fuses a group into an integer kernel that the converted graph does not reproduce
    bit for bit (e.g. int8-activation QDQ on x86, fused only in part), a value one step off upstream
    moves an output by about one step, and the rounding of the output's own requantization adds one.
    Dynamic int8 graphs have no static output scale and keep the float rule (they run bit-exact).

    A tolerance the user passes wins over the derived one (each of rtol/atol separately), and the
    rule says so.
    """
    floats = compute_float_types(model)
    narrow = [t for t in floats if FLOAT_WIDTH[t][1] > FLOAT_WIDTH[onnx.TensorProto.FLOAT][1]]
    if narrow:
        name, eps = FLOAT_WIDTH[max(narrow, key=lambda t: FLOAT_WIDTH[t][1])]
        depth = graph_depth(model)
        derived = Tolerance(
            eps * max(2.0, depth**0.5), DEFAULT_ATOL,
            f"{name} compute: rtol=eps*max(2, sqrt(depth))={eps * max(2.0, depth**0.5):.3g} "
            f"(eps={eps:.3g}, depth={depth}), atol={DEFAULT_ATOL:g}",
        )
    else:
        derived = Tolerance(DEFAULT_RTOL, DEFAULT_ATOL, FLOAT32_RULE)
    steps = output_steps(model)
    if steps:
        step = min(steps.values())
        derived = Tolerance(derived.rtol, max(derived.atol, QUANT_STEPS * step),
                            f"quantized output: atol={QUANT_STEPS}*step={QUANT_STEPS * step:.3g} (step={step:.3g}, the "
                            f"output scale of {min(steps, key=steps.get)!r}), rtol={derived.rtol:.3g} ({derived.rule.split(':')[0]})")
    if rtol is None and atol is None:
        return derived
    given = ", ".join(f"{k}={v:g}" for k, v in (("rtol", rtol), ("atol", atol)) if v is not None)
    return Tolerance(derived.rtol if rtol is None else float(rtol), derived.atol if atol is None else float(atol),
                     f"user: {given} (derived would be {derived.rule})")


@dataclass(frozen=True)
class OutputParity:
    """Agreement of one output: max abs error and max error relative to the output's largest magnitude."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    ok: bool
    #: why the output was not compared (a string tensor: left to onnxruntime), empty when it was
    skipped: str = ""


def tensor_of(value: object) -> np.ndarray | None:
    """An onnxruntime output as the tensor parity compares: arrays as they are, ZipMap's sequence of
    maps as the (N, classes) tensor it wraps (values in key order: the class order of skl2onnx and
    onnxmltools, whose ZipMaps list sorted labels), None for what torch cannot hold (string tensors)."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return np.asarray([[v[k] for k in sorted(v)] for v in value], dtype=np.float32)
    array = np.asarray(value)
    return None if array.dtype.kind in "OUS" else array


@dataclass(frozen=True)
class ParityReport:
    """How closely the converted graph reproduces onnxruntime on seeded probe inputs.

    ``max_rel`` of an output is ``max|torch - ort| / max|ort|`` (a norm-wise relative error, stable
    near zeros); an output passes when ``max_rel <= rtol`` or ``max_abs <= atol``. Integer and bool
    outputs must match exactly.
    """

    outputs: tuple[OutputParity, ...]
    rtol: float
    atol: float
    provider: str
    probe_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: which rule set rtol/atol (see :func:`parity_tolerance`)
    tolerance_rule: str = FLOAT32_RULE
    #: what kind of artifact the file is (:func:`onnxxai.proto.artifact.artifact_kind`'s name), "" if not known
    artifact: str = ""
    #: the CPU's integer-kernel instruction-set extensions (onnxruntime's int8 kernels differ with and without VNNI)
    cpu: str = field(default_factory=integer_isa)
    #: how the file's batch is run: "dynamic" (declared so), "relaxed" (a fixed batch made symbolic after
    #: batched == per-sample runs was verified) or "fixed" (chunks of the fixed batch); ``batch_note`` says why
    batch_mode: str = "dynamic"
    batch_note: str = ""
    #: on failure, the first node (graph order) whose output differs between onnxruntime and the torch graph
    #: (``Op node 'name'``, :func:`onnxxai.graph.diverge.first_divergence`), and by how much or why it was not found
    diverging: str = ""
    diverging_note: str = ""

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    @property
    def max_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=0.0)

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    def summary(self) -> str:
        parts = [f"{o.name}: not compared ({o.skipped})" if o.skipped else
                 f"{o.name}: max_rel={o.max_rel:.3g} max_abs={o.max_abs:.3g}{'' if o.ok else ' FAIL'}" for o in self.outputs]
        rule = "" if self.tolerance_rule == FLOAT32_RULE else f" [{self.tolerance_rule}]"
        kind = f"{self.artifact}, " if self.artifact and self.artifact != "float32" else ""
        if "int" in kind:  # integer kernels depend on the CPU
            kind += f"CPU {self.cpu}, "
        batch = f", batch {self.batch_mode}" if self.batch_mode != "dynamic" else ""
        first = ""
        if self.diverging:
            first = f"first diverging node: {self.diverging} ({self.diverging_note}); "
        elif self.diverging_note:
            first = f"first diverging node not found: {self.diverging_note}; "
        return (f"parity {'ok' if self.ok else 'FAILED'} ({first}{'; '.join(parts)}; rtol={self.rtol:g}{rule}, "
                f"{kind}{self.provider}{batch})")

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def execution_provider() -> str:
    """CUDA when onnxruntime-gpu can use it, else CPU."""
    available = ort.get_available_providers()
    return "CUDAExecutionProvider" if "CUDAExecutionProvider" in available else "CPUExecutionProvider"


def onnxruntime_session(model: onnx.ModelProto, provider: str | None = None) -> ort.InferenceSession:
    """An onnxruntime session for ``model`` on ``provider`` (default: :func:`execution_provider`),
    built under the current time budget (:func:`onnxxai.proto.limits.onnxruntime_session`: graph
    optimization of a pathological file can take minutes and cannot be cancelled)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return limits.onnxruntime_session(model, options, [provider or execution_provider()])


#: onnxruntime names the node a run failed in: "... while running Loop node. Name:'spin' ..."
_ORT_NODE = re.compile(r"running (\S+) node\. Name:'([^']*)'")


def run_onnxruntime(
    model: onnx.ModelProto | ort.InferenceSession,
    feeds: Mapping[str, np.ndarray],
    provider: str | None = None,
    *,
    outputs: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Run ``model`` (a ModelProto, or a session made by :func:`onnxruntime_session`) in onnxruntime on
    ``feeds``; returns the requested outputs (default: every graph output) in order.

    Every onnxruntime run of onnxxai goes through here, under the current time budget
    (:func:`onnxxai.proto.limits.budget`): a watchdog thread sets ``RunOptions.terminate`` at the
    deadline, and the run then raises :class:`~onnxxai.errors.TimeLimitError` naming the stage and
    the node onnxruntime was running. Without a budget the run is not watched.
    """
    session = model if isinstance(model, ort.InferenceSession) else onnxruntime_session(model, provider)
    options = ort.RunOptions()
    options.log_severity_level = 4  # failures come back as exceptions; keep stderr to one line
    names = list(outputs) if outputs is not None else None
    left = limits.remaining()
    if left is None:
        return session.run(names, dict(feeds), options)
    suspects = limits.session_suspects(session)
    if left <= 0:
        raise limits.time_error("onnxruntime's run (before it started)", suspects)
    stopped = threading.Event()

    def stop() -> None:
        stopped.set()
        options.terminate = True

    watchdog = threading.Timer(left, stop)
    watchdog.daemon = True
    watchdog.start()
    try:
        return session.run(names, dict(feeds), options)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors have no common base; re-raised unless we stopped it
        if not stopped.is_set():
            raise
        found = _ORT_NODE.search(str(exc))
        node = f"{found.group(1)} node {found.group(2)!r} in onnxruntime's run" if found else "onnxruntime's run"
        raise limits.time_error(node, suspects) from exc
    finally:
        watchdog.cancel()


def compare_outputs(
    names: Sequence[str],
    reference: Sequence[np.ndarray],
    actual: Sequence[np.ndarray],
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    provider: str = "",
    probe_shapes: Mapping[str, tuple[int, ...]] | None = None,
    tolerance_rule: str = FLOAT32_RULE,
    artifact: str = "",
) -> ParityReport:
    """Compare torch outputs with onnxruntime's, output by output."""
    results = []
    for name, ref, act in zip(names, reference, actual):
        ref, act = tensor_of(ref), np.asarray(act)
        if ref is None:  # string labels: the converted graph gives their index; onnxruntime has the strings
            results.append(OutputParity(name, tuple(act.shape), 0.0, 0.0, True, "string tensor, left to onnxruntime"))
            continue
        if ref.shape != act.shape:
            results.append(OutputParity(name, tuple(ref.shape), float("inf"), float("inf"), False))
            continue
        if ref.dtype.kind in "biu" or ref.dtype == bool:
            equal = bool(np.array_equal(ref, act))
            err = 0.0 if equal else float("inf")
            results.append(OutputParity(name, tuple(ref.shape), err, err, equal))
            continue
        ref64, act64 = ref.astype(np.float64), act.astype(np.float64)
        same_nonfinite = np.array_equal(np.isnan(ref64), np.isnan(act64)) and np.array_equal(
            np.where(np.isinf(ref64), ref64, 0), np.where(np.isinf(act64), act64, 0)
        )
        finite = np.isfinite(ref64) & np.isfinite(act64)
        diff = np.abs(ref64[finite] - act64[finite])
        max_abs = float(diff.max()) if diff.size else 0.0
        scale = float(np.abs(ref64[finite]).max()) if diff.size else 0.0
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
        if not same_nonfinite:
            max_abs = max_rel = float("inf")
        ok = same_nonfinite and (max_rel <= rtol or max_abs <= atol)
        results.append(OutputParity(name, tuple(ref.shape), max_abs, max_rel, ok))
    if len(actual) != len(reference):
        results.append(OutputParity("<output count>", (), float("inf"), float("inf"), False))
    return ParityReport(tuple(results), rtol, atol, provider, dict(probe_shapes or {}), tolerance_rule, artifact)


#: a source location in onnxruntime's text ("pool_attributes.h:88"): what a lone node's failure must repeat
_ORT_WHERE = re.compile(r"([\w.]+\.(?:h|cc|cpp|hpp)):(\d+)")
#: how long (at most) the lone-node search of :func:`onnxruntime_failure_node` may take
LONE_NODE_SECONDS = 10.0


def onnxruntime_failure_node(model: onnx.ModelProto, exc: BaseException, provider: str | None = None) -> str:
    """The node onnxruntime failed at, as ``Op node 'name'``; "" when it cannot be told.

    onnxruntime's text often names it ("... running Conv node. Name:'n3' ...", "Node (n3) Op (Conv)
    ..."): that name, matched against the graph's nodes. When it names none (a kernel refusing its
    attributes at session creation says only where in onnxruntime's sources it stopped), each
    top-level node is given to onnxruntime alone, in graph order (its inputs typed by ONNX shape
    inference, the initializers it reads included), and the first one refused with the same source
    location is the answer; the search stops after :data:`LONE_NODE_SECONDS` or half the time budget left.

    A node onnxruntime made while optimizing (a fused ``Conv`` named ``<tensor>_nchwc``) is traced
    to the file's node of that op type making the tensor. A node that fails while running is
    followed by the nodes its inputs come from (a shape it cannot take is often made upstream).
    """
    text = str(exc)
    found = _ORT_NODE.search(text)
    if found:
        at = _ort_named(model, found.group(1), found.group(2))
        if at is not None:
            return at.label + _fed_by(model, at)
    named = locate.nodes_named_in(model, text)
    if named:
        return named[0].label
    return _lone_node_refused(model, text, provider)


def _ort_named(model: onnx.ModelProto, op: str, name: str) -> locate.NodeAt | None:
    """The file's node behind onnxruntime's node ``name`` of type ``op``: the node of that name, else
    (a node onnxruntime made, named after a tensor plus a suffix such as ``_nchwc``) the node of type
    ``op`` making that tensor or, within three steps up its first inputs, the one feeding it."""
    nodes = locate.graph_nodes(model.graph)
    exact = [at for at in nodes if at.node.name == name]
    if exact:
        return exact[0]
    top = [at for at in nodes if not at.scope]
    makers = {out: at for at in top for out in at.node.output if out}
    candidate = name
    for _ in range(2):
        if candidate in makers:
            at = makers[candidate]
            for _ in range(4):
                if at.node.op_type == op:
                    return at
                first = next((i for i in at.node.input if i in makers), None)
                if first is None:
                    break
                at = makers[first]
            return makers[candidate]
        if "_" not in candidate:
            break
        candidate = candidate.rsplit("_", 1)[0]
    return None


#: nodes that only make constants (weights stored as nodes): not where a wrong input comes from
_CONSTANT_OPS = frozenset({"Constant", "ConstantOfShape"})


def _fed_by(model: onnx.ModelProto, at: locate.NodeAt) -> str:
    """`` (inputs from Op node 'a', ...)``: the nodes making ``at``'s inputs (not constants), at most three; "" for none."""
    if at.scope:
        return ""
    makers = {out: n for n in model.graph.node if n.op_type not in _CONSTANT_OPS for out in n.output if out}
    feeding = list(dict.fromkeys(locate.node_label(makers[i]) for i in at.node.input if i in makers))
    if not feeding:
        return ""
    more = f" and {len(feeding) - 3} more" if len(feeding) > 3 else ""
    return f" (inputs from {', '.join(feeding[:3])}{more})"


def _lone_node_refused(model: onnx.ModelProto, text: str, provider: str | None) -> str:
    where = _ORT_WHERE.search(text)
    if where is None or "initializ" not in text.lower():  # only session creation's kernel checks are searched
        return ""
    left = limits.remaining()
    stop = time.monotonic() + min(LONE_NODE_SECONDS, left / 2 if left is not None else LONE_NODE_SECONDS)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, RuntimeError, ValueError):
        inferred = model
    graph = inferred.graph
    types = {v.name: v for v in (*graph.input, *graph.value_info, *graph.output) if v.type.HasField("tensor_type")}
    inits = {t.name: t for t in model.graph.initializer}
    options = ort.SessionOptions()
    options.log_severity_level = 4
    for index, node in enumerate(model.graph.node):
        if time.monotonic() > stop:
            break
        if subgraphs(node) or not node.op_type:
            continue
        reads = [n for n in node.input if n and n not in inits]
        if any(n not in types for n in reads):
            continue
        one = helper.make_graph([node], "lone", [types[n] for n in dict.fromkeys(reads)],
                                [onnx.ValueInfoProto(name=o) for o in node.output if o],
                                [inits[n] for n in dict.fromkeys(node.input) if n in inits])
        lone = helper.make_model(one, opset_imports=model.opset_import, ir_version=model.ir_version)
        lone.functions.extend(model.functions)
        try:
            limits.onnxruntime_session(lone, options, [provider or execution_provider()])
        except TimeLimitError:
            break  # the search is a courtesy: the budget it runs under is spent
        except Exception as lone_exc:  # noqa: BLE001 - a refusal is the answer sought; its text is compared below
            if where.group(0) in str(lone_exc):
                return locate.node_label(node, index)
    return ""
