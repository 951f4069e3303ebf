"""ONNX-level passes that make a graph convertible by onnx2torch.

Each pass is a small function ``pass(model) -> int`` that edits the (already copied) ModelProto in
place and returns how many things it changed; :func:`normalize` runs them in order and reports the
counts, so ``onnxxai check`` can say exactly what was done to a user's graph.

A pass that cannot run (onnx shape inference refuses the graph, say) raises :class:`PassNotRun`
before it edits anything; its :class:`PassResult` then records the cause in ``error`` and the
graph goes on to the next pass unchanged. Any other exception may have left the graph half
edited: :func:`normalize` raises :class:`~onnxxai.errors.NormalizationError` naming the pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxxai.errors import NormalizationError, ResourceLimitError
from onnxxai.proto.dtypes import NARROW_NUMPY_NAMES, NARROW_WIDENED
from onnxxai.proto import contrib_shapes, limits
from onnxxai.proto.names import fresh_name
from onnxxai.proto.qdq import fuse_qdq_groups
from onnxxai.proto.walk import node_reads, subgraphs, walk_nodes

__all__ = ["normalize", "PassResult", "PassNotRun", "PASSES"]

# Ops whose value is not a function of their inputs: never folded.
_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
# Folding these would freeze a shape that depends on a dynamic input dimension.
_SHAPE_DEPENDENT = {"Shape", "Size"}


@dataclass(frozen=True)
class PassResult:
    """What one normalization pass changed; ``error`` says why it could not run (None when it ran);
    ``skipped`` names what it left alone on purpose and why (e.g. a node the reference evaluator
    cannot fold, which the converter then computes)."""

    name: str
    changed: int
    description: str
    error: str | None = None
    skipped: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.name} (not run: {self.error})" if self.error else f"{self.name} ({self.changed})"


class PassNotRun(Exception):
    """Raised by a pass that cannot run on this graph and has changed nothing; the message is the cause."""


def name_nodes(model: onnx.ModelProto) -> int:
    """Give every unnamed node a unique name (``<OpType>_<index>``) so errors and rules can name it."""
    used = {n.name for n in model.graph.node if n.name}
    changed = 0
    for i, node in enumerate(model.graph.node):
        if node.name:
            continue
        node.name = fresh_name(f"{node.op_type}_{i}", used)
        changed += 1
    return changed


def name_omitted_outputs(model: onnx.ModelProto) -> int:
    """Drop omitted ("") trailing outputs of nodes and name omitted middle ones ``<node>/unused<k>``.

    onnx2torch looks up an omitted *input* among the values nodes produce, so a node with an
    omitted output makes every omitted input elsewhere resolve to it. Trailing optional outputs
    may simply be left out in ONNX; middle ones get a name nothing reads.
    """
    changed = 0
    for node in walk_nodes(model.graph):
        outputs = list(node.output)
        if "" not in outputs:
            continue
        while outputs and not outputs[-1]:
            outputs.pop()
        outputs = [o or f"{node.name or node.op_type}/unused{k}" for k, o in enumerate(outputs)]
        node.output[:] = outputs
        changed += 1
    return changed


def remove_initializer_inputs(model: onnx.ModelProto) -> int:
    """Drop graph inputs that are really initializers (IR < 4 style), so only true inputs remain.

    The IR version is raised to 4, the first that lets initializers stand apart from the inputs
    (shape inference ignores them otherwise); nothing else about the graph's meaning changes.
    """
    inits = {t.name for t in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    removed = len(model.graph.input) - len(keep)
    if removed:
        del model.graph.input[:]
        model.graph.input.extend(keep)
        model.ir_version = max(model.ir_version, 4)
    return removed


def fold_static_shapes(model: onnx.ModelProto) -> int:
    """Turn ``Shape`` (and ``Shape`` → ``Gather`` with constant indices) into constants where every
    dimension read is static.

    Exporters test static facts at run time (``if y.shape[1] == 4``); once the dimensions read are
    known, constant folding (run again here) settles the test and :func:`inline_constant_if` the branch.
    Dynamic dimensions (batch, sequence length) are never frozen.
    """
    inferred = _inferred(model, data_prop=False)
    graph = model.graph
    dims: dict[str, list[int | None]] = {}
    for value in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if value.type.tensor_type.HasField("shape"):
            dims[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    consts = {t.name: t for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    shape_of: dict[str, list[int | None]] = {}  # Shape output -> the dims it holds
    folded: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type == "Shape" and node.domain in ("", "ai.onnx") and node.input[0] in dims:
            attrs = {a.name: a.i for a in node.attribute}
            held = dims[node.input[0]][attrs.get("start", 0):attrs["end"] if "end" in attrs else None]
            shape_of[node.output[0]] = held
            if all(d is not None for d in held) and node.output[0] not in graph_outputs:
                folded[node.output[0]] = np.array(held, dtype=np.int64)
        elif (node.op_type == "Gather" and node.domain in ("", "ai.onnx") and node.input[0] in shape_of
              and node.input[1] in consts and node.output[0] not in graph_outputs):
            index = numpy_helper.to_array(consts[node.input[1]])
            held = shape_of[node.input[0]]
            picked = [held[int(i)] for i in index.reshape(-1)] if all(-len(held) <= int(i) < len(held) for i in index.reshape(-1)) else [None]
            if all(d is not None for d in picked):
                folded[node.output[0]] = np.array(picked, dtype=np.int64).reshape(index.shape)
    if not folded:
        return 0
    kept = [n for n in graph.node if not (n.output and n.output[0] in folded)]
    read = {i for n in kept for i in node_reads(n)} | graph_outputs
    kept = [n for n in kept if not (n.op_type == "Shape" and n.output[0] not in read)]
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in folded.items())
    _drop_unused_initializers(model)
    fold_constants(model)  # what the folded dimensions settle (comparisons, casts, arithmetic)
    return len(folded)


def fold_constants(model: onnx.ModelProto, skipped: list[str] | None = None) -> int:
    """Evaluate every node whose inputs are all constants and store its outputs as initializers.

    A node the ONNX reference evaluator cannot run is left to the converter; its name, op and the
    evaluator's error are appended to ``skipped`` when given.

    This turns weights produced by ``Constant``/``ConstantOfShape``/``Identity``/``Cast``/... chains
    into plain initializers, which onnx2torch needs to build parameterised modules (Conv, Gemm, ...).
    Nodes producing graph outputs, nondeterministic nodes, nodes with subgraphs, and nodes of
    non-standard domains are left alone.
    """
    graph = model.graph
    opsets = {o.domain: o.version for o in model.opset_import}
    const: dict[str, np.ndarray | None] = {t.name: None for t in graph.initializer}  # None: not loaded yet
    init_by_name = {t.name: t for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    graph_inputs = {i.name for i in graph.input}
    new_inits: list[onnx.TensorProto] = []
    kept: list[onnx.NodeProto] = []
    folded = 0

    def value(name: str) -> np.ndarray:
        if const[name] is None:
            const[name] = numpy_helper.to_array(init_by_name[name])
        return const[name]

    for node in graph.node:
        inputs = [i for i in node.input if i]
        foldable = (
            node.domain in ("", "ai.onnx")
            and node.op_type not in _NONDETERMINISTIC
            and node.op_type not in _SHAPE_DEPENDENT
            and not subgraphs(node)
            and all(i in const and i not in graph_inputs for i in inputs)
            and not any(o in graph_outputs for o in node.output)
        )
        if not foldable:
            kept.append(node)
            continue
        limits.check_time(f"{node.op_type} node {node.name!r} (constant folding)")
        _check_fold_allocation(node, value)
        try:
            outputs = _evaluate(node, {i: value(i) for i in inputs}, opsets)
        except Exception as exc:  # noqa: BLE001 - an op the reference evaluator cannot run: the converter computes it
            if skipped is not None:
                skipped.append(f"{node.name or node.op_type} ({node.op_type}): {exc.__class__.__name__}: {str(exc)[:200]}")
            kept.append(node)
            continue
        if any(np.asarray(a).dtype.name in NARROW_NUMPY_NAMES for a in outputs):  # torch could not load it
            kept.append(node)
            continue
        for name, array in zip(node.output, outputs):
            if not name:
                continue
            array = np.asarray(array)
            const[name] = array
            tensor = numpy_helper.from_array(array, name)
            init_by_name[name] = tensor
            new_inits.append(tensor)
        folded += 1

    if folded:
        del graph.node[:]
        graph.node.extend(kept)
        graph.initializer.extend(new_inits)
        _drop_unused_initializers(model)
    return folded


def _check_fold_allocation(node: onnx.NodeProto, value: Callable[[str], np.ndarray]) -> None:
    """Refuse (MemoryLimitError) folding a node whose output would exceed the memory budget, before
    the reference evaluator allocates it (ConstantOfShape, Expand, Tile, Range, Resize, Pad, ...)."""
    found = limits.node_allocation(node, lambda n: value(n) if n else None,
                                   lambda n: tuple(value(n).shape) if n else None)
    if found is not None:
        where = f"{node.op_type} node {node.name!r}"
        itemsize = max((value(i).dtype.itemsize for i in node.input[:1] if i), default=4)
        limits.check_bytes(found[0] * itemsize, f"{where} ({found[1]}, constant folding)", where)


def inline_constant_if(model: onnx.ModelProto) -> int:
    """Replace each top-level ``If`` whose condition is a constant by the branch it selects.

    Exporters emit ``If`` for checks that constant folding settles (a flag, a static shape test).
    The chosen branch's nodes move into the graph with their values renamed ``<if node>/<name>``
    (outer-scope references keep their names) and ``Identity`` nodes bind the branch outputs to
    the ``If``'s outputs; constants then fold again, so weights built inside the branch become
    initializers. ``If`` nodes with a run-time condition are left to the control-flow converter.
    """
    inlined = 0
    while True:
        graph = model.graph
        consts = {t.name: t for t in graph.initializer}
        index = next((k for k, n in enumerate(graph.node)
                      if n.op_type == "If" and n.domain in ("", "ai.onnx") and n.input[0] in consts), None)
        if index is None:
            return inlined
        node = graph.node[index]
        taken = bool(numpy_helper.to_array(consts[node.input[0]]).reshape(-1)[0])
        branch = next(a.g for a in node.attribute if a.name == ("then_branch" if taken else "else_branch"))
        prefix = f"{node.name or 'If'}/"
        local = {t.name for t in branch.initializer} | {o for n in branch.node for o in n.output if o}
        rename = {name: prefix + name for name in local}
        new_nodes: list[onnx.NodeProto] = []
        for inner in branch.node:
            moved = onnx.NodeProto()
            moved.CopyFrom(inner)
            moved.name = prefix + (inner.name or inner.op_type)
            _rename_values(moved, rename)
            new_nodes.append(moved)
        for out, value in zip(node.output, branch.output):
            if out:
                new_nodes.append(helper.make_node("Identity", [rename.get(value.name, value.name)], [out], name=f"{prefix}output/{out}"))
        for tensor in branch.initializer:
            moved = onnx.TensorProto()
            moved.CopyFrom(tensor)
            moved.name = rename[tensor.name]
            graph.initializer.append(moved)
        nodes = list(graph.node[:index]) + new_nodes + list(graph.node[index + 1:])
        del graph.node[:]
        graph.node.extend(nodes)
        inlined += 1
        fold_constants(model)


def _rename_values(node: onnx.NodeProto, rename: dict[str, str]) -> None:
    """Rename the node's inputs and outputs, and the outer-scope references of its subgraphs."""
    node.input[:] = [rename.get(i, i) for i in node.input]
    node.output[:] = [rename.get(o, o) for o in node.output]
    for sub in subgraphs(node):
        for inner in sub.node:
            _rename_values(inner, rename)
        for out in sub.output:  # a subgraph may return an outer value directly
            out.name = rename.get(out.name, out.name)


def widen_narrow_constants(model: onnx.ModelProto) -> int:
    """Store bfloat16, float8, float4 and int4 initializers and Constant values in a type torch can load
    (float32, int8/uint8; exact) followed by a Cast back to their type, which onnxxai converts."""
    graph = model.graph
    casts: list[onnx.NodeProto] = []
    widened: list[onnx.TensorProto] = []
    keep: list[onnx.TensorProto] = []
    for tensor in graph.initializer:
        if tensor.data_type not in NARROW_WIDENED:
            keep.append(tensor)
            continue
        wide = numpy_helper.to_array(tensor).astype(NARROW_WIDENED[tensor.data_type])
        widened.append(numpy_helper.from_array(wide, f"{tensor.name}/wide"))
        casts.append(helper.make_node("Cast", [f"{tensor.name}/wide"], [tensor.name], name=f"{tensor.name}/narrow", to=tensor.data_type))
    nodes: list[onnx.NodeProto] = []
    constants = 0
    for node in graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and value is not None and value.t.data_type in NARROW_WIDENED:
            to = value.t.data_type
            wide = numpy_helper.to_array(value.t).astype(NARROW_WIDENED[to])
            out = node.output[0]
            nodes.append(helper.make_node("Constant", [], [f"{out}/wide"], name=f"{node.name}/wide",
                                          value=numpy_helper.from_array(wide, f"{out}/wide")))
            nodes.append(helper.make_node("Cast", [f"{out}/wide"], [out], name=f"{node.name}/narrow", to=to))
            constants += 1
            continue
        nodes.append(node)
    if casts or constants:
        del graph.initializer[:]
        graph.initializer.extend(keep + widened)
        del graph.node[:]
        graph.node.extend(casts + nodes)
    return len(casts) + constants


def _evaluate(node: onnx.NodeProto, feeds: dict[str, np.ndarray], opsets: dict[str, int]) -> list[np.ndarray]:
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in feeds.items()]
    outputs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
    probe = onnx.NodeProto()
    probe.CopyFrom(node)
    graph = helper.make_graph([probe], "fold", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    return ReferenceEvaluator(model).run(None, feeds)


def _drop_unused_initializers(model: onnx.ModelProto) -> int:
    used = {o.name for o in model.graph.output}
    for node in walk_nodes(model.graph):
        used.update(node.input)
    keep = [t for t in model.graph.initializer if t.name in used]
    removed = len(model.graph.initializer) - len(keep)
    if removed:
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    return removed


def alias_dotted_domains(model: onnx.ModelProto) -> int:
    """Rename the dotted domains ai.onnx.ml and ai.onnx.preview to ai_onnx_ml and ai_onnx_preview.

    onnx2torch names each module "<domain>/<node name>" and torch refuses dots in module names;
    onnxxai registers its ai.onnx.ml converters under the underscored name. Parity is always
    checked against the original file, whose domains are untouched.
    """
    changed = 0
    for node in model.graph.node:
        if node.domain in _ALIASED_DOMAINS:
            node.domain = _ALIASED_DOMAINS[node.domain]
            changed += 1
    if changed:
        for opset in list(model.opset_import):
            if opset.domain in _ALIASED_DOMAINS:
                model.opset_import.append(helper.make_opsetid(_ALIASED_DOMAINS[opset.domain], opset.version))
    return changed


#: dotted domains onnxxai has converters for (other domains keep their names, so errors name them as written)
_ALIASED_DOMAINS = {"ai.onnx.ml": "ai_onnx_ml", "ai.onnx.preview": "ai_onnx_preview", "com.microsoft": "com_microsoft",
                    "com.microsoft.nchwc": "com_microsoft_nchwc"}


def dotted_domains(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the domains :func:`alias_dotted_domains` renamed spelled as onnxruntime knows
    them (a copy when any was renamed): pieces of a normalized graph (GradCAM's boundary probes,
    split checks) run in onnxruntime."""
    dotted = {v: k for k, v in _ALIASED_DOMAINS.items()}
    if not any(n.domain in dotted for n in model.graph.node):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in copy.graph.node:
        node.domain = dotted.get(node.domain, node.domain)
    kept = [o for o in copy.opset_import if o.domain not in dotted]
    del copy.opset_import[:]
    copy.opset_import.extend(kept)
    return copy


def reshape_allowzero(model: onnx.ModelProto) -> int:
    """Set ``allowzero=0`` on Reshape nodes whose constant target shape has no zero (where the flag
    cannot matter); the dynamo exporter sets it everywhere and onnx2torch refuses it."""
    inits = {t.name: t for t in model.graph.initializer}
    changed = 0
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        for attr in node.attribute:
            if attr.name == "allowzero" and attr.i == 1 and 0 not in numpy_helper.to_array(inits[node.input[1]]).tolist():
                attr.i = 0
                changed += 1
    return changed


_AUTO_PAD_OPS = {"Conv", "MaxPool", "AveragePool", "LpPool"}


def explicit_auto_pad(model: onnx.ModelProto) -> int:
    """Turn ``auto_pad`` SAME_UPPER / SAME_LOWER / VALID into explicit ``pads`` where the input's
    spatial size is known (onnx2torch refuses SAME_*; JAX and TensorFlow exports use it)."""
    shapes = _known_shapes(model)
    inits = {t.name: t for t in model.graph.initializer}
    changed = 0
    for node in model.graph.node:
        if node.op_type not in _AUTO_PAD_OPS:
            continue
        attrs = {a.name: a for a in node.attribute}
        mode = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
        if mode in ("NOTSET", ""):
            continue
        spatial = shapes.get(node.input[0], [])[2:]
        if "kernel_shape" in attrs:
            kernel = list(attrs["kernel_shape"].ints)
        elif node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits:
            kernel = list(inits[node.input[1]].dims[2:])
        else:
            continue
        rank = len(kernel)
        strides = list(attrs["strides"].ints) if "strides" in attrs else [1] * rank
        dilations = list(attrs["dilations"].ints) if "dilations" in attrs else [1] * rank
        if mode == "VALID":
            pads = [0] * (2 * rank)
        elif len(spatial) == rank and all(isinstance(d, int) and d > 0 for d in spatial):
            begins, ends = [], []
            for size, k, st, dl in zip(spatial, kernel, strides, dilations):
                out = -(-size // st)
                total = max((out - 1) * st + (k - 1) * dl + 1 - size, 0)
                small, large = total // 2, total - total // 2
                begins.append(small if mode == "SAME_UPPER" else large)
                ends.append(large if mode == "SAME_UPPER" else small)
            pads = begins + ends
        else:
            continue  # dynamic spatial size: leave it, the converter will name the node
        for name in ("auto_pad", "pads"):
            if name in attrs:
                node.attribute.remove(attrs[name])
        node.attribute.append(helper.make_attribute("pads", pads))
        changed += 1
    return changed


def _known_shapes(model: onnx.ModelProto) -> dict[str, list]:
    shapes: dict[str, list] = {}
    for value in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def _inferred(model: onnx.ModelProto, *, data_prop: bool) -> onnx.ModelProto:
    """``model`` with inferred shapes, or :class:`PassNotRun` saying why onnx could not infer them."""
    try:
        return contrib_shapes.infer_shapes(model, data_prop=data_prop)  # onnx's, seeing through contrib ops
    except Exception as exc:  # noqa: BLE001 - onnx raises several unrelated types; the cause is recorded
        raise PassNotRun(f"onnx shape inference failed: {exc.__class__.__name__}: {exc}".strip()) from exc


def infer_shapes(model: onnx.ModelProto) -> int:
    """Annotate intermediate tensors with inferred shapes and dtypes (a help, not a requirement:
    when onnx cannot infer them the pass records why and the graph stays as it is)."""
    inferred = _inferred(model, data_prop=True)
    added = len(inferred.graph.value_info) - len(model.graph.value_info)
    model.CopyFrom(inferred)
    return max(added, 0)


def _fold_constants_pass(model: onnx.ModelProto) -> tuple[int, list[str]]:
    skipped: list[str] = []
    return fold_constants(model, skipped), skipped


Pass = tuple[str, Callable[[onnx.ModelProto], int | tuple[int, list[str]]], str]

#: Names first: later passes, rules and error messages refer to nodes and values by name.
_NAMING: list[Pass] = [
    ("name_nodes", name_nodes, "gave unnamed nodes unique names"),
    ("name_omitted_outputs", name_omitted_outputs, "dropped or named omitted (empty) node outputs"),
    ("remove_initializer_inputs", remove_initializer_inputs, "dropped initializers listed as graph inputs"),
]
#: Then what runs: QDQ groups before folding (folding would dissolve their weight DequantizeLinear),
#: constants, static shapes and the If branches they settle.
_COMPUTATION: list[Pass] = [
    ("fuse_qdq_groups", fuse_qdq_groups, "rewrote QDQ groups onnxruntime fuses into its integer ops (QLinearConv, QGemm, ...)"),
    ("fold_constants", _fold_constants_pass, "folded nodes with constant inputs into initializers"),
    ("fold_static_shapes", fold_static_shapes, "replaced Shape reads of static dimensions by constants"),
    ("inline_constant_if", inline_constant_if, "replaced If nodes with a constant condition by the chosen branch"),
]
#: Last, the forms onnx2torch and torch can take.
_CONVERTIBLE: list[Pass] = [
    ("alias_dotted_domains", alias_dotted_domains, "renamed dotted node domains (ai.onnx.ml, ai.onnx.preview -> ai_onnx_*)"),
    ("reshape_allowzero", reshape_allowzero, "cleared Reshape allowzero where the shape has no zero"),
    ("widen_narrow_constants", widen_narrow_constants, "stored bfloat16/float8/int4 constants widened, cast back in the graph"),
    ("infer_shapes", infer_shapes, "annotated tensors with inferred shapes"),
    ("explicit_auto_pad", explicit_auto_pad, "replaced auto_pad SAME_*/VALID by explicit pads"),
]
#: (name, pass, description) in the order they run; a pass returns how many things it changed, or
#: that count and the things it left alone with the reason (see :attr:`PassResult.skipped`).
PASSES: list[Pass] = _NAMING + _COMPUTATION + _CONVERTIBLE


def normalize(model: onnx.ModelProto) -> list[PassResult]:
    """Run every pass on ``model`` in place; return what each changed, or why it could not run.

    A pass that fails after it may have edited the graph raises :class:`NormalizationError`
    naming the pass and the cause.
    """
    results = []
    for name, fn, desc in PASSES:
        limits.check_time(f"normalization pass {name!r}")
        try:
            outcome = fn(model)
            changed, skipped = outcome if isinstance(outcome, tuple) else (outcome, [])
            results.append(PassResult(name, changed, desc, skipped=tuple(skipped)))
        except PassNotRun as exc:
            results.append(PassResult(name, 0, desc, str(exc)))
        except ResourceLimitError:  # the file asks too much time or memory: that is the answer
            raise
        except Exception as exc:  # noqa: BLE001 - re-raised as a named error
            raise NormalizationError(
                f"normalization pass {name!r} ({desc}) failed and may have left the graph half edited: "
                f"{exc.__class__.__name__}: {exc}", pass_name=name,
            ) from exc
    return results
