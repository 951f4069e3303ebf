"""Resource budgets for untrusted files: a time budget for every stage that runs the model, and a
memory budget checked before anything big is allocated.

**Time.** :func:`budget` opens a deadline for a stage (a nested budget never extends an outer one)
and names the stage and the file. Code that runs the model checks it: onnxruntime runs go through
:func:`onnxxai.parity.run_onnxruntime`, whose watchdog thread sets ``RunOptions.terminate``; every
onnxruntime session is built by :func:`onnxruntime_session`, in a thread abandoned at the deadline
(graph optimization cannot be cancelled); the torch Loop/Scan modules and constant folding call
:func:`check_time` once per iteration or node. Past the deadline they raise
:class:`~onnxxai.errors.TimeLimitError` naming the file, the stage, the node, the nodes of the file
that can run unbounded (:func:`unbounded_nodes`: Loops of huge or unknown trip counts, deeply nested
Ifs) and, when the stage stopped is not where the time went, the seconds each stage took. A signal
cannot stop native code, so nothing here relies on one. :func:`check_size` refuses files of more
than :data:`MAX_NODES` nodes or :data:`MAX_SUBGRAPHS` subgraphs before any stage walks them.

**Memory.** :func:`check_tensors` (declared sizes of initializers and Constant values; data present
versus dims) and :func:`check_allocations` (what ConstantOfShape, Expand, Tile, Range, Resize,
Upsample, Pad, OneHot and the scan outputs of a Loop would allocate, from constant inputs and static
shapes, plus every statically inferred tensor at the probe shapes) run before folding or probing,
and refuse a file asking more than :func:`memory_budget` with :class:`~onnxxai.errors.MemoryLimitError`.
The default budget is :data:`MEMORY_FRACTION` of the machine's memory (or of the address space
left under ``RLIMIT_AS``, when that is lower).
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from collections import ChainMap
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxxai.errors import MemoryLimitError, ModelFileError, ResourceLimitError, TimeLimitError

__all__ = [
    "DEFAULT_TIMEOUT", "DEFAULT", "MEMORY_FRACTION", "budget", "stage_timeout", "stage_timeouts", "resolve_timeout", "remaining", "check_time", "time_error", "current_stage",
    "current_label", "memory_budget", "default_memory_budget", "check_bytes", "check_tensors", "check_allocations",
    "node_allocation", "parse_size", "check_size", "MAX_NODES", "MAX_SUBGRAPHS", "note_model", "unbounded_nodes",
    "call_within_budget", "wait_for_abandoned", "onnxruntime_session", "session_suspects",
]

#: Seconds each stage that runs the model may take by default (generous: large models on a CPU).
DEFAULT_TIMEOUT = 900.0
#: Share of the machine's memory one tensor or allocation may take by default.
MEMORY_FRACTION = 0.5


@dataclass(eq=False)
class _Frame:
    """One named stage as it runs: when it started, the seconds its finished sub-stages took, and
    (shared by every stage of one budget tree) the seconds each finished stage took on its own."""

    stage: str
    started: float
    parent: _Frame | None
    spent: dict[str, float]
    children: float = 0.0
    #: the file whose unbounded nodes a TimeLimitError of this stage (or a sub-stage) names
    model: onnx.ModelProto | None = field(default=None, repr=False)


@dataclass(frozen=True)
class _Budget:
    expires: float | None  # time.monotonic() deadline
    seconds: float | None  # the budget that set it (for messages)
    stage: str
    label: str
    memory: int | None  # bytes; None: the default
    frame: _Frame | None = None


_CURRENT: ContextVar[_Budget] = ContextVar("onnxxai_budget", default=_Budget(None, None, "running the model", "<model>", None))


@contextmanager
def budget(*, timeout: float | None = None, memory: int | None = None, stage: str | None = None,
           label: str | None = None) -> Iterator[None]:
    """Run the block under a time budget of ``timeout`` seconds (None: the enclosing one, if any),
    a memory budget of ``memory`` bytes (None: the enclosing one or the default), named ``stage`` for
    the file ``label``. An inner budget never extends an outer deadline."""
    outer = _CURRENT.get()
    expires, seconds = outer.expires, outer.seconds
    if timeout is not None:
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        mine = time.monotonic() + float(timeout)
        if expires is None or mine < expires:
            expires, seconds = mine, float(timeout)
    if memory is not None and memory <= 0:
        raise ValueError(f"memory limit must be a positive number of bytes, got {memory!r}")
    frame = outer.frame
    if stage is not None:  # a named stage keeps its own account of time (see time_error)
        frame = _Frame(stage, time.monotonic(), outer.frame, outer.frame.spent if outer.frame is not None else {})
    token = _CURRENT.set(_Budget(expires, seconds, stage or outer.stage, label or outer.label,
                                 memory if memory is not None else outer.memory, frame))
    try:
        yield
    finally:
        _CURRENT.reset(token)
        if frame is not None and frame is not outer.frame:
            elapsed = time.monotonic() - frame.started
            frame.spent[frame.stage] = frame.spent.get(frame.stage, 0.0) + elapsed - frame.children
            if frame.parent is not None:
                frame.parent.children += elapsed


#: What a ``timeout="default"`` argument means: :func:`stage_timeout`.
DEFAULT = "default"
_STAGE_TIMEOUT: ContextVar[float | None] = ContextVar("onnxxai_stage_timeout", default=DEFAULT_TIMEOUT)


def stage_timeout() -> float | None:
    """Seconds a stage that runs the model gets when its caller names no timeout (:data:`DEFAULT_TIMEOUT`
    unless :func:`stage_timeouts` set another; None: unbounded)."""
    return _STAGE_TIMEOUT.get()


@contextmanager
def stage_timeouts(seconds: float | None) -> Iterator[None]:
    """Give every stage that runs the model inside the block ``seconds`` unless told otherwise (the
    command line's ``--timeout``)."""
    if seconds is not None and not seconds > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {seconds!r}")
    token = _STAGE_TIMEOUT.set(seconds)
    try:
        yield
    finally:
        _STAGE_TIMEOUT.reset(token)


def resolve_timeout(timeout: float | str | None) -> float | None:
    """``timeout`` as seconds: :data:`DEFAULT` means :func:`stage_timeout`, None unbounded."""
    return stage_timeout() if timeout == DEFAULT else timeout  # type: ignore[return-value]


def remaining() -> float | None:
    """Seconds left in the current time budget (None: no budget)."""
    current = _CURRENT.get()
    return None if current.expires is None else current.expires - time.monotonic()


def current_stage() -> str:
    """The stage the current budget names."""
    return _CURRENT.get().stage


def current_label() -> str:
    """The file the current budget names."""
    return _CURRENT.get().label


def note_model(model: onnx.ModelProto) -> None:
    """Let every TimeLimitError of the current stage and its sub-stages name the nodes of ``model``
    that can run unbounded (:func:`unbounded_nodes`), whatever was running when the deadline passed."""
    frame = _CURRENT.get().frame
    if frame is not None:
        frame.model = model


def _time_spent(current: _Budget) -> tuple[float, str]:
    """(seconds the running stage took on its own, "stage 6.1 s, stage 0.4 s" for every stage of the
    budget tree that took a tenth of a second or more, longest first)."""
    frame = current.frame
    if frame is None:
        return 0.0, ""
    now = time.monotonic()
    spent = dict(frame.spent)
    inner = 0.0  # seconds of the running sub-stage, not yet counted in its parent's children
    own = None
    while frame is not None:
        elapsed = now - frame.started
        mine = elapsed - frame.children - inner
        spent[frame.stage] = spent.get(frame.stage, 0.0) + mine
        own = mine if own is None else own
        inner, frame = elapsed, frame.parent
    parts = [f"{stage} {seconds:.1f} s" for stage, seconds in sorted(spent.items(), key=lambda kv: -kv[1]) if seconds >= 0.1]
    return own or 0.0, ", ".join(parts)


def time_error(node: str = "", suspects: str | None = None) -> TimeLimitError:
    """The error of the current stage past its deadline, naming ``node`` (e.g. ``"Loop node 'spin'"``),
    the nodes that can run unbounded (``suspects``, else those of the file :func:`note_model` named)
    and, when the running stage took less than half the budget, the seconds each stage took."""
    current = _CURRENT.get()
    if suspects is None:
        frame = current.frame
        while frame is not None and frame.model is None:
            frame = frame.parent
        suspects = unbounded_nodes(frame.model) if frame is not None and frame.model is not None else ""
    own, spent = _time_spent(current)
    if current.seconds and own >= current.seconds / 2:
        spent = ""  # the stage stopped is where the time went: nothing to add
    details = "; ".join(part for part in (node, suspects, f"time spent: {spent}" if spent else "") if part)
    return TimeLimitError(current.label, current.stage, current.seconds or 0.0, details)


def check_time(node: str = "") -> None:
    """Raise :class:`TimeLimitError` (naming ``node``) when the current budget's deadline has passed."""
    current = _CURRENT.get()
    if current.expires is not None and time.monotonic() > current.expires:
        raise time_error(node)


# -- what can run unbounded ---------------------------------------------------------------------------
#: A Loop of at least this many trips (or of a trip count unknown before it runs) can run unbounded.
LONG_LOOP = 1_000_000
#: An If whose branches hold at least this many subgraphs (or nest Ifs this deep) is named too.
_NESTED_IF_DEPTH, _NESTED_IF_GRAPHS = 3, 64


def unbounded_nodes(model: onnx.ModelProto, most: int = 3) -> str:
    """The nodes of ``model`` that can keep a run or a session creation busy for unbounded or long
    time, as "unbounded nodes: Loop 'spin' (trip count 4611686018427387904); nested subgraphs: If 'deep'
    (Ifs nested 12 deep, 8190 subgraphs)": Loops of :data:`LONG_LOOP` or more trips or of a trip count
    unknown before they run, and Ifs whose branches nest Ifs or hold many subgraphs (the outermost
    of a nest); at most ``most`` of each kind named, "" when there is none. One walk over the file
    (linear in its size)."""
    loops: list[tuple[float, str]] = []
    ifs: list[tuple[int, str]] = []

    def walk(graph: onnx.GraphProto, outer: Mapping[str, onnx.TensorProto], in_if: bool) -> tuple[int, int]:
        """(subgraphs below ``graph``, deepest If nesting below it); fills ``loops`` and ``ifs`` (the
        outermost If of a nest only: ``in_if`` says an If encloses ``graph``)."""
        local = {t.name: t for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                for a in node.attribute:
                    if a.name == "value" and a.HasField("t"):
                        local[node.output[0]] = a.t
        consts = ChainMap(local, outer)
        total, deepest = 0, 0
        for node in graph.node:
            subgraphs, depth = 0, 0
            for a in node.attribute:
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    below, nested = walk(g, consts, in_if or node.op_type == "If")
                    subgraphs, depth = subgraphs + 1 + below, max(depth, nested)
            if node.op_type == "If":
                depth += 1
                if not in_if and (depth >= _NESTED_IF_DEPTH or subgraphs >= _NESTED_IF_GRAPHS):
                    ifs.append((subgraphs, f"If {node.name!r} (Ifs nested {depth} deep, {subgraphs} subgraphs)"))
            elif node.op_type == "Loop":
                trips = _trip_count(node, consts)
                if trips is None or trips >= LONG_LOOP:
                    what = ("no trip count: runs while its condition holds" if not node.input or not node.input[0]
                            else "trip count computed at run time") if trips is None else f"trip count {trips}"
                    loops.append((math.inf if trips is None else trips, f"Loop {node.name!r} ({what})"))
            total, deepest = total + subgraphs, max(deepest, depth)
        return total, deepest

    try:
        walk(model.graph, {}, False)
    except RecursionError:  # nesting deeper than Python's stack: say so rather than name nothing
        return "subgraphs nested deeper than can be walked"
    parts = []
    for kind, found in (("unbounded nodes", loops), ("nested subgraphs", ifs)):
        named = [d for _, d in sorted(found, key=lambda t: -t[0])]
        if named:
            extra = f" and {len(named) - most} more" if len(named) > most else ""
            parts.append(f"{kind}: {', '.join(named[:most])}{extra}")
    return "; ".join(parts)


def _trip_count(node: onnx.NodeProto, consts: Mapping[str, onnx.TensorProto]) -> int | None:
    """The constant trip count of a Loop node, None when it has none or it is computed."""
    tensor = consts.get(node.input[0]) if node.input and node.input[0] else None
    if tensor is None or math.prod(tensor.dims) != 1 or tensor.data_location == onnx.TensorProto.EXTERNAL:
        return None
    try:
        return int(numpy_helper.to_array(tensor).reshape(-1)[0])
    except (ValueError, TypeError, KeyError, OverflowError):
        return None


_T = TypeVar("_T")


def call_within_budget(fn: Callable[[], _T], what: str, suspects: str | None = None) -> _T:
    """``fn()`` (native code that cannot be cancelled, e.g. building an onnxruntime session) under the
    current time budget: it runs in a daemon thread abandoned at the deadline (it finishes, or dies
    with the process, in the background), and TimeLimitError names ``what`` and ``suspects``.
    Without a budget ``fn`` runs here."""
    left = remaining()
    if left is None:
        return fn()
    if left <= 0:
        raise time_error(f"{what} (before it started)", suspects)
    done: dict[str, Any] = {}

    def run() -> None:
        try:
            done["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            done["error"] = exc

    thread = threading.Thread(target=run, name="onnxxai-within-budget", daemon=True)
    thread.start()
    thread.join(max(left, 0.0))
    if thread.is_alive():
        _abandon(thread)
        raise time_error(f"{what}, left to finish in the background", suspects)
    if "error" in done:
        raise done["error"]
    return done["value"]


_ABANDONED: list[threading.Thread] = []


def _abandon(thread: threading.Thread) -> None:
    """Keep ``thread`` (native work past its deadline) to be waited for at exit: a daemon thread still
    inside onnxruntime when the interpreter finalizes is stopped by a forced unwind that aborts the
    process (``terminate called without an active exception``, exit status 134 instead of the
    program's own)."""
    if not _ABANDONED:
        import atexit  # noqa: PLC0415 - registered once, on the first abandoned thread

        atexit.register(wait_for_abandoned)
    _ABANDONED.append(thread)


def wait_for_abandoned(timeout: float | None = None) -> bool:
    """Wait (up to ``timeout`` seconds in all; None: as long as it takes) for the native work that
    time budgets abandoned to finish; True when none is left running."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for thread in list(_ABANDONED):
        thread.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))
        if not thread.is_alive():
            _ABANDONED.remove(thread)
    return not _ABANDONED


#: onnxruntime sessions made by :func:`onnxruntime_session` -> the nodes of their file that can run unbounded
_SUSPECTS: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


def onnxruntime_session(model: onnx.ModelProto, options: Any = None, providers: list[str] | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``model`` built under the current time budget
    (:func:`call_within_budget`: graph optimization of a hostile file can take minutes and cannot be
    cancelled); past the deadline a TimeLimitError names the session creation and the file's
    :func:`unbounded_nodes`. Every session of onnxxai is built here; :func:`session_suspects` gives
    what its runs' timeouts name."""
    import onnxruntime as ort  # noqa: PLC0415 - only the stages that run the model need it

    if options is None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
    data = model.SerializeToString()
    suspects = unbounded_nodes(model)
    session = call_within_budget(
        lambda: ort.InferenceSession(data, sess_options=options, providers=providers or ["CPUExecutionProvider"]),
        "onnxruntime's session creation (graph optimization)", suspects)
    _SUSPECTS[session] = suspects
    return session


def session_suspects(session: Any) -> str | None:
    """The unbounded nodes of the file a session of :func:`onnxruntime_session` runs (None: not one of them)."""
    try:
        return _SUSPECTS.get(session)
    except TypeError:
        return None


# -- memory -----------------------------------------------------------------------------------------
def default_memory_budget() -> int:
    """:data:`MEMORY_FRACTION` of the machine's physical memory, or of the address space still free
    under ``RLIMIT_AS`` when that is smaller."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 16 GiB
        total = 16 * 2**30
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            total = min(total, max(soft - used, 0))
    except (ImportError, OSError, ValueError):
        pass
    return max(int(total * MEMORY_FRACTION), 1)


def memory_budget() -> int:
    """Bytes one tensor or allocation may take under the current budget."""
    memory = _CURRENT.get().memory
    return memory if memory is not None else default_memory_budget()


def parse_size(text: str) -> int:
    """Bytes from ``"8G"``, ``"512M"``, ``"1.5GiB"``, ``"1000000"`` (command-line memory limits)."""
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = value[-1:] if value[-1:] in units and value[-1:] else ""
    number = value[:-1] if unit else value
    try:
        size = float(number) * units[unit]
    except ValueError:
        raise ValueError(f"not a size: {text!r} (use e.g. 8G, 512M or a number of bytes)") from None
    if not size > 0:
        raise ValueError(f"a size must be positive, not {text!r}")
    return int(size)


def check_bytes(nbytes: int, what: str, node: str = "") -> None:
    """Refuse (MemoryLimitError naming ``what`` and the file) an allocation of ``nbytes`` over the budget."""
    limit = memory_budget()
    if nbytes > limit:
        raise MemoryLimitError(current_label(), what, int(nbytes), limit, node)


def _itemsize(elem_type: int) -> float:
    """Bytes per element of an ONNX element type (fractions for sub-byte types; strings count 1)."""
    if elem_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return 1
    bits = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4, onnx.TensorProto.FLOAT4E2M1: 4}
    bits.update({getattr(onnx.TensorProto, n): 2 for n in ("INT2", "UINT2") if hasattr(onnx.TensorProto, n)})
    if elem_type in bits:
        return bits[elem_type] / 8
    try:
        return float(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize)
    except (KeyError, TypeError, ValueError):  # an element type this onnx does not know
        return 1


def _dtype_name(elem_type: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"type {elem_type}"


def _all_tensors(model: onnx.ModelProto) -> Iterator[tuple[onnx.TensorProto, str]]:
    """Every tensor a model holds, with where it sits: initializers (of every graph) and tensor
    attributes (Constant values, ConstantOfShape fill values, ...)."""

    def graph_tensors(graph: onnx.GraphProto) -> Iterator[tuple[onnx.TensorProto, str]]:
        for t in graph.initializer:
            yield t, f"initializer {t.name!r}"
        for s in graph.sparse_initializer:
            yield s.values, f"sparse initializer {s.values.name!r}"
        for node in graph.node:
            yield from node_tensors(node)

    def node_tensors(node: onnx.NodeProto) -> Iterator[tuple[onnx.TensorProto, str]]:
        where = f"{node.op_type} node {node.name!r}"
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR or a.HasField("t"):
                yield a.t, f"attribute {a.name!r} of {where}"
            for t in a.tensors:
                yield t, f"attribute {a.name!r} of {where}"
            if a.HasField("sparse_tensor"):
                yield a.sparse_tensor.values, f"sparse attribute {a.name!r} of {where}"
            if a.HasField("g"):
                yield from graph_tensors(a.g)
            for g in a.graphs:
                yield from graph_tensors(g)

    yield from graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from node_tensors(node)


def _stored_elements(t: onnx.TensorProto) -> tuple[int, str] | None:
    """How many elements the tensor's data holds and in which field; None when it cannot be told
    (strings, packed sub-byte types in typed fields, external data)."""
    elem = t.data_type
    if t.data_location == onnx.TensorProto.EXTERNAL or elem in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    size = _itemsize(elem)
    if t.HasField("raw_data"):
        return int(len(t.raw_data) / size) if size >= 1 else int(len(t.raw_data) * round(1 / size)), "raw_data"
    fields = {
        onnx.TensorProto.FLOAT: ("float_data", 1), onnx.TensorProto.COMPLEX64: ("float_data", 2),
        onnx.TensorProto.DOUBLE: ("double_data", 1), onnx.TensorProto.COMPLEX128: ("double_data", 2),
        onnx.TensorProto.INT64: ("int64_data", 1), onnx.TensorProto.UINT64: ("uint64_data", 1),
        onnx.TensorProto.UINT32: ("uint64_data", 1), onnx.TensorProto.INT32: ("int32_data", 1),
    }
    if elem in fields:
        name, per = fields[elem]
        return len(getattr(t, name)) // per, name
    if size == 1 or size == 2:  # 8/16-bit types, bool, float16/bfloat16, float8: one per int32_data entry
        return len(t.int32_data), "int32_data"
    return None


#: Most nodes a file may hold, subgraphs included (the largest real graphs hold tens of thousands;
#: a pathological nesting of If branches can hold millions, which no stage could walk in bounded time).
MAX_NODES = 1_000_000
#: Most subgraphs (If branches, Loop and Scan bodies) a file may hold. Real files hold a few dozen;
#: each one is converted into its own torch module and built into its own onnxruntime graph (about
#: 4 ms and 0.5 ms of a CPU each), and Ifs that nest both branches double their count per level.
MAX_SUBGRAPHS = 4096


def check_size(model: onnx.ModelProto, label: str, max_nodes: int = MAX_NODES, max_subgraphs: int = MAX_SUBGRAPHS) -> int:
    """The number of nodes in ``model`` (subgraphs and functions included); ResourceLimitError naming
    the count when it exceeds ``max_nodes``, or naming the count and the node whose subgraphs hold
    most of them when the subgraphs exceed ``max_subgraphs``. Checks the time budget as it walks."""
    count = sum(len(function.node) for function in model.functions)
    # (graph, the top-level node it belongs to): a refusal names the node whose subgraphs overflow
    stack: list[tuple[onnx.GraphProto, onnx.NodeProto | None]] = [(model.graph, None)]
    graphs = 0
    owners: dict[int, int] = {}
    tops: dict[int, onnx.NodeProto] = {}
    while stack:
        graph, top = stack.pop()
        graphs += 1
        count += len(graph.node)
        if count > max_nodes:
            raise ResourceLimitError(f"{label}: the file holds more than {max_nodes} nodes (subgraphs included, "
                                     f"{graphs} graphs walked so far); refused, since no stage could handle it in "
                                     "bounded time")
        if top is not None:
            owners[id(top)] = owners.get(id(top), 0) + 1
        if graphs > max_subgraphs + 1:
            worst = tops[max(owners, key=owners.get)]
            raise ResourceLimitError(
                f"{label}: the file holds more than {max_subgraphs} subgraphs (If branches, Loop and Scan bodies; "
                f"{worst.op_type} node {worst.name!r} holds {owners[id(worst)]} of them so far"
                f"{_if_nesting(worst)}); refused, since no stage could handle it in bounded time")
        if graphs % 256 == 0:
            check_time(f"counting the nodes of graph {graph.name!r}")
        for node in graph.node:
            for a in node.attribute:
                owner = top if top is not None else node
                tops[id(owner)] = owner
                if a.HasField("g"):
                    stack.append((a.g, owner))
                stack.extend((g, owner) for g in a.graphs)
    return count


def _if_nesting(node: onnx.NodeProto) -> str:
    """", Ifs nested 12 deep" for an If whose branches hold Ifs (only the first branch of each level
    is followed: linear in the depth), else ""."""
    depth = 0
    while node is not None and node.op_type == "If" and node.domain in ("", "ai.onnx"):
        depth += 1
        branch = next((a.g for a in node.attribute if a.HasField("g")), None)
        node = next((n for n in branch.node if n.op_type == "If"), None) if branch is not None else None
    return f", Ifs nested {depth} deep" if depth > 1 else ""


def check_tensors(model: onnx.ModelProto, label: str, memory: int | None = None) -> None:
    """Refuse, before any of it is decoded into arrays, a tensor whose declared dims are negative
    (ModelFileError), whose declared size exceeds the memory budget (MemoryLimitError), or whose data
    holds a different number of elements than its dims declare (ModelFileError: truncated data).
    External-data tensors get the size check here; their bytes are checked when they are read."""
    with budget(memory=memory, label=label):
        check_size(model, label)
        note_model(model)  # of a size walked in bounded time: a timeout from here on names its Loops and nested Ifs
        limit = memory_budget()
        for k, (tensor, where) in enumerate(_all_tensors(model)):
            if k % 4096 == 4095:
                check_time(f"checking the declared size of {where}")
            dims = list(tensor.dims)
            if tensor.data_type not in onnx.TensorProto.DataType.values():
                raise ModelFileError(f"{label}: {where} has element type {tensor.data_type}, which ONNX does not define")
            if any(d < 0 for d in dims):
                raise ModelFileError(f"{label}: {where} declares negative dimensions {dims}")
            elements = math.prod(dims)
            nbytes = int(elements * _itemsize(tensor.data_type))
            if nbytes > limit:
                raise MemoryLimitError(label, f"{where} ({_dtype_name(tensor.data_type)}{dims}, {elements} elements)",
                                       nbytes, limit, where)
            stored = _stored_elements(tensor)
            if stored is not None and stored[0] != elements and not (elements == 0 and stored[0] == 0):
                raise ModelFileError(
                    f"{label}: {where} declares dims {dims} ({elements} elements of {_dtype_name(tensor.data_type)}) "
                    f"but its {stored[1]} holds {stored[0]}; the file is truncated or corrupt"
                )
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                info = {e.key: e.value for e in tensor.external_data}
                length = info.get("length")
                if length is not None and length.isdigit() and int(length) != math.ceil(nbytes):
                    raise ModelFileError(
                        f"{label}: {where} declares dims {dims} ({nbytes} bytes) but its external data length is "
                        f"{length} bytes; the file is corrupt"
                    )


# -- allocations of nodes ---------------------------------------------------------------------------
Value = Callable[[str], "np.ndarray | None"]
Shape = Callable[[str], "tuple[int, ...] | None"]


def _ints(array: np.ndarray | None) -> list[int] | None:
    if array is None or array.dtype.kind not in "iu":
        return None
    return [int(v) for v in array.reshape(-1)]


def _broadcast(a: list[int], b: list[int]) -> list[int]:
    rank = max(len(a), len(b))
    a, b = [1] * (rank - len(a)) + a, [1] * (rank - len(b)) + b
    return [max(x, y) for x, y in zip(a, b)]


def node_allocation(node: onnx.NodeProto, value: Value, shape: Shape) -> tuple[int, str] | None:
    """(elements, description) of the largest output ``node`` would allocate, worked out from its
    constant inputs (``value``) and static input shapes (``shape``); None when they do not tell
    (inputs of the wrong kind included: the node's own run names those).
    Covers the ops whose output can be far larger than their inputs."""
    try:
        return _node_allocation(node, value, shape)
    except (ValueError, TypeError, IndexError, OverflowError, KeyError):
        return None


def _node_allocation(node: onnx.NodeProto, value: Value, shape: Shape) -> tuple[int, str] | None:
    op, ins = node.op_type, list(node.input)

    def arg(k: int) -> str:
        return ins[k] if len(ins) > k else ""

    def attr(name: str, default=None):
        for a in node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default

    if node.domain not in ("", "ai.onnx"):
        return None
    if op == "ConstantOfShape":
        dims = _ints(value(arg(0)))
        return (math.prod(max(d, 0) for d in dims), f"output shape {dims}") if dims is not None else None
    if op == "Expand":
        target = _ints(value(arg(1)))
        if target is None:
            return None
        source = shape(arg(0)) or []
        dims = _broadcast(list(source), target)
        return math.prod(max(d, 0) for d in dims), f"output shape {dims}"
    if op == "Tile":
        repeats, source = _ints(value(arg(1))), shape(arg(0))
        if repeats is None or source is None or len(repeats) != len(source):
            return None
        dims = [s * r for s, r in zip(source, repeats)]
        return math.prod(max(d, 0) for d in dims), f"output shape {dims}"
    if op == "Range":
        start, limit, delta = (value(arg(k)) for k in range(3))
        if start is None or limit is None or delta is None or start.size != 1 or limit.size != 1 or delta.size != 1:
            return None
        s, lim, d = (float(np.asarray(v).reshape(-1)[0]) for v in (start, limit, delta))
        if d == 0 or not all(math.isfinite(x) for x in (s, lim, d)):
            return None
        count = max(math.ceil((lim - s) / d), 0)
        return count, f"{count} elements from Range({s:g}, {lim:g}, {d:g})"
    if op in ("Resize", "Upsample"):
        source = shape(arg(0))
        sizes = _ints(value(arg(3))) if op == "Resize" else None
        if sizes:
            if source is not None and len(sizes) != len(source):
                axes = attr("axes")
                if axes is None or len(axes) != len(sizes):
                    return None
                dims = list(source)
                for a, s in zip(axes, sizes):
                    dims[a] = s
            else:
                dims = sizes
            return math.prod(max(d, 0) for d in dims), f"output shape {dims}"
        scales_name = arg(2) if op == "Resize" else arg(1)
        scales = value(scales_name) if scales_name else None
        if scales is None and op == "Upsample":
            scales = np.asarray(attr("scales", []), dtype=np.float64)
        if source is None or scales is None or scales.size != len(source) or scales.dtype.kind != "f":
            return None
        dims = [int(math.floor(d * float(s))) for d, s in zip(source, scales.reshape(-1)) if math.isfinite(float(s))]
        if len(dims) != len(source):
            return None
        return math.prod(max(d, 0) for d in dims), f"output shape {dims}"
    if op == "Pad":
        source = shape(arg(0))
        pads = _ints(value(arg(1))) if arg(1) else list(attr("pads", []) or [])
        if source is None or pads is None or len(pads) != 2 * len(source):
            return None  # pads of some axes only (opset 18 axes input): not estimated
        dims = [d + pads[i] + pads[i + len(source)] for i, d in enumerate(source)]
        return math.prod(max(d, 0) for d in dims), f"output shape {dims}"
    if op == "OneHot":
        depth, indices = value(arg(1)), shape(arg(0))
        if depth is None or depth.size != 1 or indices is None:
            return None
        count = math.prod(indices) * max(int(np.asarray(depth).reshape(-1)[0]), 0)
        return count, f"{count} elements (indices {list(indices)} x depth {int(np.asarray(depth).reshape(-1)[0])})"
    return None


def _value_dims(v: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    t = v.type.tensor_type
    if not v.type.HasField("tensor_type") or not t.HasField("shape"):
        return None
    if not all(d.HasField("dim_value") for d in t.shape.dim):
        return None
    return tuple(int(d.dim_value) for d in t.shape.dim)


def _light(model: onnx.ModelProto, probe_dims: Mapping[str, tuple[int, ...]]) -> onnx.ModelProto:
    """A copy of ``model`` without its large weights (kept as typed graph inputs), whose inputs take
    the probe shapes: cheap to run shape inference on."""
    light = onnx.ModelProto()
    light.ir_version = max(model.ir_version, 4)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    g, src = light.graph, model.graph
    g.name = src.name
    g.node.extend(src.node)
    g.output.extend(src.output)
    inits = {t.name for t in src.initializer}
    for value in src.input:
        if value.name in inits:
            continue
        copy = g.input.add()
        copy.CopyFrom(value)
        dims = probe_dims.get(value.name)
        if dims is not None and copy.type.tensor_type.HasField("shape") and len(copy.type.tensor_type.shape.dim) == len(dims):
            for d, n in zip(copy.type.tensor_type.shape.dim, dims):
                d.Clear()
                d.dim_value = int(n)
    for t in src.initializer:
        if math.prod(t.dims) <= 64 and t.data_location != onnx.TensorProto.EXTERNAL:
            g.initializer.add().CopyFrom(t)
        else:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return light


def check_allocations(model: onnx.ModelProto, label: str, probe_dims: Mapping[str, tuple[int, ...]] | None = None,
                      memory: int | None = None) -> None:
    """Refuse (MemoryLimitError naming the node, its op and the size) a node that would allocate more
    than the memory budget: ConstantOfShape/Expand/Tile/Range/Resize/Upsample/Pad/OneHot outputs
    from constant inputs (:func:`node_allocation`), a Loop whose constant trip count times its scan
    outputs does, and any tensor whose static shape, inferred at the probe shapes
    (``probe_dims``: input name -> dims), does."""
    with budget(memory=memory, label=label):
        limit = memory_budget()
        inferred: dict[str, tuple[tuple[int, ...], int]] = {}
        try:
            from onnxxai.proto.contrib_shapes import infer_shapes

            done = infer_shapes(_light(model, probe_dims or {}), data_prop=True)
            for v in list(done.graph.input) + list(done.graph.value_info) + list(done.graph.output):
                dims = _value_dims(v)
                if dims is not None:
                    inferred[v.name] = dims, v.type.tensor_type.elem_type
        except Exception:  # noqa: BLE001 - no static shapes: the constant-input checks below still run
            inferred = {}
        _check_graph(model.graph, {}, inferred, limit, label, top=True)


def _check_graph(graph: onnx.GraphProto, outer: Mapping[str, onnx.TensorProto], inferred: Mapping, limit: int,
                 label: str, top: bool) -> None:
    check_time(f"checking the allocations of graph {graph.name!r}")
    # the enclosing graphs' constants are chained, not copied: linear in the file's size however the
    # subgraphs nest (a copy per subgraph costs subgraphs x outer constants)
    local: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
    consts: Mapping[str, onnx.TensorProto] = ChainMap(local, outer) if outer else local  # type: ignore[arg-type]
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
            for a in node.attribute:
                if a.name == "value" and a.HasField("t"):
                    local[node.output[0]] = a.t
    cache: dict[str, np.ndarray | None] = {}

    def value(name: str) -> np.ndarray | None:
        if name not in cache:
            t = consts.get(name)
            small = t is not None and math.prod(t.dims) <= 4096 and t.data_location != onnx.TensorProto.EXTERNAL
            try:
                cache[name] = numpy_helper.to_array(t) if small else None
            except (ValueError, TypeError, KeyError):
                cache[name] = None
        return cache[name]

    def shape(name: str) -> tuple[int, ...] | None:
        if name in consts:
            return tuple(consts[name].dims)
        found = inferred.get(name) if top else None
        return found[0] if found is not None else None

    if top:
        producers = {o: n for n in graph.node for o in n.output if o}
        inputs = {v.name for v in graph.input} - set(consts)
        for name, (dims, elem) in inferred.items():
            node = producers.get(name)
            nbytes = int(math.prod(dims) * _itemsize(elem))
            if nbytes <= limit:
                continue
            if node is not None:
                where = f"{node.op_type} node {node.name!r}"
                raise MemoryLimitError(label, f"{where} (output {name!r} of shape {list(dims)} at the probe shapes)",
                                       nbytes, limit, where)
            if name in inputs:
                raise MemoryLimitError(label, f"a probe of graph input {name!r} (static shape {list(dims)})", nbytes, limit)
    for node in graph.node:
        where = f"{node.op_type} node {node.name!r}"
        found = node_allocation(node, value, shape)
        if found is not None:
            elements, what = found
            elem = inferred.get(node.output[0], ((), onnx.TensorProto.FLOAT))[1] if node.output else onnx.TensorProto.FLOAT
            nbytes = int(elements * _itemsize(elem))
            if nbytes > limit:
                raise MemoryLimitError(label, f"{where} ({what})", nbytes, limit, where)
        if node.op_type == "Loop" and node.domain in ("", "ai.onnx"):
            _check_loop(node, value, limit, label)
        for a in node.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                _check_graph(g, consts, inferred, limit, label, top=False)


def _check_loop(node: onnx.NodeProto, value: Value, limit: int, label: str) -> None:
    """A Loop with a constant trip count M and scan outputs stacks M of them: refuse when that is over budget."""
    trips = _ints(value(node.input[0])) if node.input and node.input[0] else None
    body = next((a.g for a in node.attribute if a.name == "body"), None)
    if not trips or body is None:
        return
    n_carried = max(len(node.input) - 2, 0)
    scan_outputs = list(body.output)[1 + n_carried:]
    if not scan_outputs:
        return
    per_trip = 0
    for out in scan_outputs:
        dims = _value_dims(out) or ()
        per_trip += int(max(math.prod(dims), 1) * _itemsize(out.type.tensor_type.elem_type or onnx.TensorProto.FLOAT))
    nbytes = max(trips[0], 0) * per_trip
    if nbytes > limit:
        where = f"Loop node {node.name!r}"
        raise MemoryLimitError(label, f"{where} (trip count {trips[0]} x {per_trip} bytes of scan outputs per trip)",
                               nbytes, limit, where)
