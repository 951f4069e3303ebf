"""ONNX graph analysis: data-flow dominators, cut tensors, candidate boundaries and split().

A *boundary* (a cut) is a tensor that every data path from the analyzed input to the explained
output passes through: in the data-flow graph of float tensors it dominates the output. Weights and
constants do not depend on the input, so they are no paths; neither are shape computations
(``Shape``/``Size`` and integer or boolean tensors), which carry no gradient. Cutting the graph at
a boundary gives a *features* graph (input -> boundary) and a *head* graph (boundary -> outputs);
GradCAM reads the boundary activation and the gradient of the output with respect to it.

Default boundary (``boundary=None``): walking from the output back towards the input, the first
cut that is

* a spatial feature map (rank 4, NCHW, H·W > 1, no larger than the input image: a channels-last
  tensor read as NCHW has its channel count as width) or a token sequence ``(N, T, C)`` whose
  tokens map onto the input's image grid (see :func:`token_grid`), and
* followed by at least one layer with weights (Conv, Gemm, MatMul, ...) before the output: a map
  after the last such layer is a per-class map (SqueezeNet's classifier convolution), where GradCAM
  degenerates to reading one channel, and
* for token sequences, one whose patch tokens influence the output (checked with onnxruntime by
  perturbing them): a ViT's final LayerNorm feeds only the class token to the head, so its patch
  tokens get a zero gradient; the default is then the input of the last encoder block.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxxai.errors import OnnxxaiError
from onnxxai.proto.normalize import normalize
from onnxxai.parity import (
    DEFAULT_ATOL, DEFAULT_RTOL, compare_outputs, execution_provider, onnxruntime_session, run_onnxruntime,
)
from onnxxai.proto.reading import read_model

__all__ = [
    "BoundaryError",
    "Boundary",
    "DataFlow",
    "boundaries",
    "default_boundary",
    "split",
    "token_grid",
    "format_boundaries",
    "MAX_PREFIX_TOKENS",
]

#: Most leading non-patch tokens (class, distillation, register tokens) a token boundary may have.
MAX_PREFIX_TOKENS = 8
_FLOAT = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
_METADATA_OPS = {"Shape", "Size"}
_WEIGHTED_OPS = {
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum", "ConvInteger", "MatMulInteger", "QLinearConv",
    "QLinearMatMul", "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention", "FusedMatMul",
}


class BoundaryError(OnnxxaiError):
    """A boundary is not a cut of the graph, or no tensor fits as a GradCAM boundary."""


@dataclass(frozen=True)
class Boundary:
    """One cut tensor of the graph, in order from input to output.

    ``shape`` comes from shape inference (a probe run when inference left dimensions open; the
    batch axis keeps its symbolic name), ``kind`` is "spatial" (NCHW map with H·W > 1 within the
    input's height and width), "tokens"
    (``(N, T, C)`` on the input's image grid) or "other", ``node``/``op_type`` name the producer,
    ``note`` says why a spatial/token cut is not eligible as the default, ``default`` marks the one
    :func:`default_boundary` picks.
    """

    name: str
    shape: tuple[int | str, ...]
    kind: str
    node: str
    op_type: str
    note: str = ""
    default: bool = False

    def __str__(self) -> str:
        dims = ", ".join(str(d) for d in self.shape) if self.shape else "?"
        return f"{self.name} [{dims}] {self.kind} ({self.op_type} {self.node!r})"


def _node_inputs(node: onnx.NodeProto) -> list[str]:
    """A node's inputs, including tensors its subgraphs (If/Loop/Scan bodies) read from outside."""
    names = [i for i in node.input if i]
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            names += sorted(_outer_refs(attr.g))
        elif attr.type == onnx.AttributeProto.GRAPHS:
            for g in attr.graphs:
                names += sorted(_outer_refs(g))
    return names


def _outer_refs(graph: onnx.GraphProto) -> set[str]:
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    refs: set[str] = set()
    for node in graph.node:
        refs.update(n for n in _node_inputs(node) if n not in defined)
        defined.update(node.output)
    return refs


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    g = model.graph
    infos = {v.name: v for v in g.value_info}
    infos.update({v.name: v for v in g.input})
    infos.update({v.name: v for v in g.output})
    return infos


def _dims(value: onnx.ValueInfoProto | None) -> tuple[int | str, ...] | None:
    if value is None or not value.type.tensor_type.HasField("shape"):
        return None
    dims: list[int | str] = []
    for i, d in enumerate(value.type.tensor_type.shape.dim):
        dims.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or f"?{i}"))
    return tuple(dims)


class DataFlow:
    """The data-flow graph of one (normalized) ONNX model between one input and one output.

    ``path`` holds the tensors that depend on the input through float data; ``preds`` maps each of
    them to its path predecessors; ``cuts`` are the dominators of the output, input to output
    (the input and the output themselves excluded).
    """

    def __init__(self, model: onnx.ModelProto, input_name: str | None = None, output_name: str | None = None,
                 label: str = "<model>") -> None:
        self.model, self.label = model, label
        g = model.graph
        self.infos = _value_infos(model)
        self.types = {n: v.type.tensor_type.elem_type for n, v in self.infos.items() if v.type.HasField("tensor_type")}
        self.types.update({t.name: t.data_type for t in g.initializer})
        self.initializers = {t.name for t in g.initializer}
        self.graph_inputs = [i.name for i in g.input if i.name not in self.initializers]
        self.graph_outputs = [o.name for o in g.output]
        self.input_name = self._pick_input(input_name)
        self.output_name = self._pick_output(output_name)
        self.producer: dict[str, tuple[int, onnx.NodeProto]] = {}
        for i, node in enumerate(g.node):
            for o in node.output:
                if o:
                    self.producer[o] = (i, node)
        self.order: dict[str, int] = {self.input_name: 0}
        self.preds: dict[str, list[str]] = {self.input_name: []}
        self.depends: set[str] = {self.input_name}  # any dependency on the input, shape paths included
        for node in g.node:
            ins = _node_inputs(node)
            if any(i in self.depends for i in ins):
                self.depends.update(o for o in node.output if o)
            if node.op_type in _METADATA_OPS and node.domain in ("", "ai.onnx"):
                continue
            path_ins = list(dict.fromkeys(i for i in ins if i in self.preds))
            if not path_ins:
                continue
            for o in node.output:
                if o and self._is_float(o):
                    self.order[o] = len(self.order)
                    self.preds[o] = path_ins
        if self.output_name not in self.preds:
            raise BoundaryError(
                f"{label}: output {self.output_name!r} does not depend on input {self.input_name!r} through float "
                "data (only through shapes, integer or boolean tensors): nothing to cut"
            )
        self.idom = self._dominators()
        chain, t = [], self.idom[self.output_name]
        while t != self.input_name:
            chain.append(t)
            t = self.idom[t]
        self.cuts: list[str] = chain[::-1]

    # -- selection ------------------------------------------------------------------------------
    def _is_float(self, name: str) -> bool:
        t = self.types.get(name, 0)
        return t == 0 or t in _FLOAT  # unknown type: count it as a path (conservative)

    def _pick_input(self, name: str | None) -> str:
        if name is not None:
            if name not in self.graph_inputs:
                raise BoundaryError(f"{self.label}: no input named {name!r}; inputs are {self.graph_inputs}")
            return name
        floats = [n for n in self.graph_inputs if self.types.get(n, 0) in _FLOAT]
        if len(floats) != 1:
            raise BoundaryError(
                f"{self.label}: {'no' if not floats else 'several'} float inputs ({', '.join(floats) or '-'}); "
                "name the analyzed input with input_name=..."
            )
        return floats[0]

    def _pick_output(self, name: str | None) -> str:
        if name is not None:
            if name not in self.graph_outputs:
                raise BoundaryError(f"{self.label}: no output named {name!r}; outputs are {self.graph_outputs}")
            return name
        floats = [n for n in self.graph_outputs if self.types.get(n, 0) in _FLOAT]
        if not floats:
            raise BoundaryError(f"{self.label}: no float output to explain; outputs are {self.graph_outputs}")
        return floats[0]

    # -- dominators -----------------------------------------------------------------------------
    def _dominators(self) -> dict[str, str]:
        """Immediate dominators on the DAG of path tensors (tensors come in topological order)."""
        idom = {self.input_name: self.input_name}
        pos = self.order

        def meet(a: str, b: str) -> str:
            while a != b:
                while pos[a] > pos[b]:
                    a = idom[a]
                while pos[b] > pos[a]:
                    b = idom[b]
            return a

        for t in sorted(self.order, key=pos.__getitem__)[1:]:
            ps = self.preds[t]
            d = ps[0]
            for p in ps[1:]:
                d = meet(d, p)
            idom[t] = d
        return idom

    def descendants(self, name: str, *, paths_only: bool = True) -> set[str]:
        """Tensors computed from ``name`` (along float paths, or along every edge)."""
        seen = {name}
        for node in self.model.graph.node:
            if paths_only and node.op_type in _METADATA_OPS:
                continue
            if any(i in seen for i in _node_inputs(node)):
                seen.update(o for o in node.output if o and (not paths_only or o in self.preds))
        return seen

    def ancestors(self, name: str) -> set[str]:
        """Path tensors the output ``name`` is computed from (along float paths)."""
        seen, stack = set(), [name]
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            stack.extend(self.preds.get(t, ()))
        return seen

    # -- candidates -------------------------------------------------------------------------------
    def candidates(self, probe_inputs: Mapping[str, np.ndarray] | None = None) -> list[Boundary]:
        """Every cut with shape and kind, input to output; the default one marked (see :func:`boundaries`)."""
        return _candidates(self, probe_inputs)

    def default(self, probe_inputs: Mapping[str, np.ndarray] | None = None) -> str:
        """The default GradCAM boundary (see the module docstring); BoundaryError when no cut fits."""
        return _default(self, _candidates(self, probe_inputs))

    # -- checking a boundary ----------------------------------------------------------------------
    def resolve(self, boundary: str) -> str:
        """The tensor name of ``boundary`` (a tensor, or a node with one output); errors unless it is a cut."""
        name = boundary
        if name not in self.producer and name != self.input_name:
            nodes = [n for n in self.model.graph.node if n.name == boundary]
            if len(nodes) == 1 and len([o for o in nodes[0].output if o]) == 1:
                name = nodes[0].output[0]
        where = f"{self.label}: boundary {boundary!r}"
        if name in self.initializers:
            raise BoundaryError(f"{where} is a weight (initializer), not an activation; `onnxxai layers MODEL` lists the cuts")
        if name == self.input_name or name == self.output_name:
            raise BoundaryError(f"{where} is the analyzed {'input' if name == self.input_name else 'output'} itself; "
                                "pick a tensor in between (`onnxxai layers MODEL` lists them)")
        if name not in self.producer:
            raise BoundaryError(f"{where}: no tensor or single-output node of that name in the graph")
        if name not in self.preds:
            raise BoundaryError(f"{where} does not depend on input {self.input_name!r} through float data "
                                "(a constant, a shape or integer tensor)")
        if name not in self.ancestors(self.output_name):
            raise BoundaryError(f"{where}: output {self.output_name!r} is not computed from it")
        if name not in self.cuts:
            raise BoundaryError(self._bypass_message(name, where))
        return name

    def _bypass_message(self, name: str, where: str) -> str:
        chain = [self.input_name, *self.cuts, self.output_name]
        on_chain = set(chain)
        before = self.idom[name]
        while before not in on_chain:
            before = self.idom[before]
        after = chain[chain.index(before) + 1]
        paths = self.bypass_paths(name, before, after)
        shown = "; ".join(self._describe_path(p) for p in paths)
        return (
            f"{where} is not a cut between input {self.input_name!r} and output {self.output_name!r}: "
            f"{len(paths)}{'+' if len(paths) == 3 else ''} path(s) bypass it: {shown}. Nearest cuts: "
            f"{before!r} (before) and {after!r} (after); `onnxxai layers MODEL` lists every cut"
        )

    def bypass_paths(self, name: str, start: str, stop: str, limit: int = 3) -> list[list[str]]:
        """Up to ``limit`` tensor paths from cut ``start`` to cut ``stop`` that avoid ``name``
        (each later path avoids the inner tensors of the earlier ones)."""
        region = self.ancestors(stop)
        succ: dict[str, list[str]] = {}
        for t, ps in self.preds.items():
            if t in region:
                for p in ps:
                    succ.setdefault(p, []).append(t)
        banned = {name}
        paths: list[list[str]] = []
        while len(paths) < limit:
            parent: dict[str, str | None] = {start: None}
            queue = deque([start])
            while queue and stop not in parent:
                t = queue.popleft()
                for s in succ.get(t, ()):
                    if s not in parent and s not in banned:
                        parent[s] = t
                        queue.append(s)
            if stop not in parent:
                break
            path, t = [], stop
            while t is not None:
                path.append(t)
                t = parent[t]
            path.reverse()
            paths.append(path)
            inner = set(path[1:-1])
            if not inner:
                break
            banned |= inner
        return paths

    def _describe_path(self, path: list[str]) -> str:
        steps = [repr(path[0])]
        for t in path[1:]:
            _, node = self.producer[t]
            steps.append(f"{node.op_type} {node.name!r} -> {t!r}")
        if len(steps) > 7:
            steps = steps[:3] + [f"... ({len(steps) - 6} more)"] + steps[-3:]
        return " -> ".join(steps)


# -- candidates ---------------------------------------------------------------------------------
def token_grid(tokens: int, height: int, width: int) -> tuple[int, int, int] | None:
    """``(prefix, h, w)``: how a sequence of ``tokens`` maps onto an ``height × width`` image.

    The rule: patches are ``p × p`` for an integer ``p`` (``h = height // p``, ``w = width // p``),
    laid out row-major after ``prefix`` leading tokens (class, distillation or register tokens,
    at most :data:`MAX_PREFIX_TOKENS`), which are dropped. Among the patch sizes that fit, the one
    with the fewest dropped tokens wins. None when no patch size fits.
    """
    best: tuple[int, int, int] | None = None
    for p in range(1, min(height, width) + 1):
        h, w = height // p, width // p
        prefix = tokens - h * w
        if 0 <= prefix <= MAX_PREFIX_TOKENS and h * w > 1 and (best is None or prefix < best[0]):
            best = (prefix, h, w)
    return best


def _image_hw(shape: Sequence[int | str]) -> tuple[int, int] | None:
    """H, W of an image batch: NCHW when axis 1 has 1, 3 or 4 entries, else NHWC."""
    if len(shape) != 4:
        return None
    h, w = (shape[2], shape[3]) if shape[1] in (1, 3, 4) else (shape[1], shape[2])
    return (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None


def _kind(shape: Sequence[int | str] | None, image_hw: tuple[int, int] | None) -> str:
    if shape is None:
        return "other"
    if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int) and shape[2] * shape[3] > 1:
        # a channels-last tensor read as NCHW has the channel count as its width: larger than the image
        if image_hw is None or (shape[2] <= image_hw[0] and shape[3] <= image_hw[1]):
            return "spatial"
        return "other"
    if len(shape) == 3 and isinstance(shape[1], int) and image_hw is not None and token_grid(shape[1], *image_hw):
        return "tokens"
    return "other"


def _known(shape: tuple[int | str, ...] | None) -> bool:
    return shape is not None and all(isinstance(d, int) and d > 0 for d in shape[1:])


def _probe_feeds(model: onnx.ModelProto, given: Mapping[str, np.ndarray] | None, seed: int = 0, batch: int = 1,
                 ) -> dict[str, np.ndarray]:
    """Seeded random inputs (dynamic dims: ``batch`` for axis 0, 64 for the others) unless given."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        if given is not None and value.name in given:
            feeds[value.name] = np.asarray(given[value.name])
            continue
        tt = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (batch if i == 0 else 64)
                      for i, d in enumerate(tt.shape.dim))
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type or onnx.TensorProto.FLOAT))
        feeds[value.name] = (rng.standard_normal(shape) if dtype.kind == "f" else np.zeros(shape)).astype(dtype)
    return feeds


def _run_tensors(model: onnx.ModelProto, names: Iterable[str], feeds: Mapping[str, np.ndarray],
                 types: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Run ``model`` in onnxruntime and return the values of (intermediate) tensors ``names``."""
    names = list(dict.fromkeys(names))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for n in names:
        if n not in have:
            probe.graph.output.append(helper.make_tensor_value_info(n, types.get(n) or onnx.TensorProto.FLOAT, None))
    values = onnxruntime_session(probe).run(names, dict(feeds))
    return dict(zip(names, values))


def _graph_of(model_or_path) -> tuple[onnx.ModelProto, str]:
    """The normalized ONNX graph of a Model, a ModelProto or a path."""
    from onnxxai.model import Model

    if isinstance(model_or_path, Model):
        return model_or_path.onnx_model, model_or_path.source
    if not isinstance(model_or_path, (onnx.ModelProto, str, os.PathLike)):
        raise BoundaryError(f"expected an onnxxai.Model, an onnx.ModelProto or a path, got {type(model_or_path).__name__}")
    proto, label = read_model(model_or_path)
    normalize(proto)
    return proto, label


def boundaries(model_or_path, *, input_name: str | None = None, output_name: str | None = None,
               probe_inputs: Mapping[str, np.ndarray] | None = None) -> list[Boundary]:
    """Every cut tensor between the analyzed input and output, input to output, with shapes and
    kinds; the one :func:`default_boundary` picks has ``default=True`` (none when no cut fits)."""
    proto, label = _graph_of(model_or_path)
    return DataFlow(proto, input_name, output_name, label).candidates(probe_inputs)


def _candidates(flow: DataFlow, probe_inputs: Mapping[str, np.ndarray] | None) -> list[Boundary]:
    shapes = {n: _dims(flow.infos.get(n)) for n in flow.cuts}
    input_shape = _dims(flow.infos.get(flow.input_name)) or ()
    feeds = None
    values: dict[str, np.ndarray] = {}
    image_hw = _image_hw(input_shape)
    unknown = [n for n in flow.cuts if not _known(shapes[n])]
    maybe_tokens = [n for n in flow.cuts if shapes[n] is not None and len(shapes[n]) == 3]
    if unknown or image_hw is None or maybe_tokens:
        feeds = _probe_feeds(flow.model, probe_inputs)
        x = feeds[flow.input_name]
        image_hw = image_hw or _image_hw(x.shape)
        probe_names = unknown + maybe_tokens
        if probe_names:
            try:
                values = _run_tensors(flow.model, probe_names, feeds, flow.types)
            except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors have no common base
                raise BoundaryError(f"{flow.label}: onnxruntime cannot run the model on probe inputs to read the "
                                    f"shapes of its cut tensors ({exc}); pass probe_inputs=") from exc
        for n in unknown:
            batch = shapes[n][0] if shapes[n] else "batch"
            shapes[n] = (batch, *values[n].shape[1:])
    after_weights = _last_weighted_cut(flow)
    result: list[Boundary] = []
    default_found = False
    for n in reversed(flow.cuts):
        _, node = flow.producer[n]
        kind = _kind(shapes[n], image_hw)
        note, is_default = "", False
        if kind != "other":
            if flow.order[n] >= after_weights:
                note = "no layer with weights after it (a per-class map)"
            elif kind == "tokens" and not default_found and not _patches_matter(flow, n, values, feeds, image_hw):
                note = "its patch tokens do not influence the output"
            elif not default_found:
                is_default = default_found = True
        result.append(Boundary(n, tuple(shapes[n] or ()), kind, node.name, node.op_type, note, is_default))
    return result[::-1]


def _last_weighted_cut(flow: DataFlow) -> int:
    """Position (in ``flow.order``) of the output of the last weighted node on the output's paths;
    cuts at or after it have no weighted layer left before the output."""
    region = flow.ancestors(flow.output_name)
    last = -1
    for t in region:
        if t in flow.producer and flow.producer[t][1].op_type in _WEIGHTED_OPS:
            last = max(last, flow.order[t])
    return last


def _patches_matter(flow: DataFlow, name: str, values: Mapping[str, np.ndarray],
                    feeds: Mapping[str, np.ndarray] | None, image_hw: tuple[int, int] | None) -> bool:
    """Whether perturbing the patch tokens of ``name`` changes the output (head run in onnxruntime)."""
    act = values.get(name)
    if act is None or feeds is None or image_hw is None:
        return True
    grid = token_grid(act.shape[1], *image_hw)
    if grid is None:
        return False
    head, extra = _head(flow, name)
    head_feeds = {name: act}
    needed = [i.name for i in head.graph.input if i.name != name]
    if needed:
        head_feeds.update({k: feeds[k] for k in needed if k in feeds})
        missing = [k for k in needed if k not in head_feeds]
        if missing:
            head_feeds.update(_run_tensors(flow.model, missing, feeds, flow.types))
    rng = np.random.default_rng(0)
    moved = act.copy()
    scale = float(np.abs(act).max()) or 1.0
    moved[:, grid[0]:, :] += (rng.standard_normal(moved[:, grid[0]:, :].shape) * scale).astype(act.dtype)
    session = onnxruntime_session(head)
    out = [o.name for o in head.graph.output].index(flow.output_name)
    a = session.run(None, head_feeds)[out]
    b = session.run(None, {**head_feeds, name: moved})[out]
    return bool(np.abs(a.astype(np.float64) - b).max() > 1e-6 * max(float(np.abs(a).max()), 1e-30))


def default_boundary(model_or_path, *, input_name: str | None = None, output_name: str | None = None,
                     probe_inputs: Mapping[str, np.ndarray] | None = None) -> str:
    """The tensor GradCAM uses by default (see the module docstring); BoundaryError when none fits."""
    proto, label = _graph_of(model_or_path)
    return DataFlow(proto, input_name, output_name, label).default(probe_inputs)


def _default(flow: DataFlow, found: list[Boundary]) -> str:
    for b in found:
        if b.default:
            return b.name
    usable = [b for b in found if b.kind != "other"]
    detail = ("; spatial/token cuts rejected: " + "; ".join(f"{b.name} ({b.note})" for b in usable)) if usable else ""
    shapes = ", ".join(f"{b.name} {list(b.shape)}" for b in found[-4:]) or "none"
    raise BoundaryError(
        f"{flow.label}: no cut between input {flow.input_name!r} and output {flow.output_name!r} is a spatial feature "
        f"map (N, C, H, W with H·W > 1) or a token sequence (N, T, C) on the input's image grid{detail} "
        f"(last cuts: {shapes}). GradCAM needs one: use a gradient method (Gradient, IntegratedGradients, LRP) "
        "for this model, or pass boundary=<tensor name>"
    )


def format_boundaries(found: Sequence[Boundary]) -> str:
    """A table of candidate boundaries for the CLI: name, shape, kind, producer, default mark."""
    rows = [("", "tensor", "shape", "kind", "producer", "note")]
    for b in found:
        rows.append(("*" if b.default else "", b.name, "[" + ", ".join(map(str, b.shape)) + "]", b.kind,
                     f"{b.op_type} {b.node}", b.note))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + (f"  {r[5]}" if r[5] else "") for r in rows]
    return "\n".join(line.rstrip() for line in lines)


# -- splitting ----------------------------------------------------------------------------------
def _closure(flow: DataFlow, targets: Iterable[str], stop: set[str]) -> tuple[set[int], set[str], list[str]]:
    """Nodes computing ``targets`` back to the graph inputs, initializers and the ``stop`` tensors.

    Returns the node indices, the initializers used, and the graph inputs / stop tensors reached.
    """
    nodes: set[int] = set()
    inits: set[str] = set()
    reached: list[str] = []
    seen: set[str] = set()
    stack = list(targets)
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in stop or (t in flow.graph_inputs and t not in flow.producer):
            reached.append(t)
        elif t in flow.initializers:
            inits.add(t)
        elif t in flow.producer:
            i, node = flow.producer[t]
            if i not in nodes:
                nodes.add(i)
                stack.extend(_node_inputs(node))
    return nodes, inits, reached


def _value_info(flow: DataFlow, name: str) -> onnx.ValueInfoProto:
    info = flow.infos.get(name)
    if info is not None and info.type.HasField("tensor_type"):
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(info)
        return copy
    return helper.make_tensor_value_info(name, flow.types.get(name) or onnx.TensorProto.FLOAT, None)


def _subgraph(flow: DataFlow, nodes: set[int], inits: set[str], inputs: Sequence[str], outputs: Sequence[str],
              suffix: str) -> onnx.ModelProto:
    g = flow.model.graph
    graph = helper.make_graph(
        [n for i, n in enumerate(g.node) if i in nodes], f"{g.name or 'graph'}_{suffix}",
        [_value_info(flow, n) for n in inputs], [_value_info(flow, n) for n in outputs],
        initializer=[t for t in g.initializer if t.name in inits],
    )
    used = {o for i in nodes for o in g.node[i].output} - set(outputs)
    graph.value_info.extend(v for v in g.value_info if v.name in used)
    model = helper.make_model(graph, opset_imports=list(flow.model.opset_import), ir_version=flow.model.ir_version)
    model.functions.extend(flow.model.functions)
    model.producer_name = "onnxxai.split"
    return model


def _head(flow: DataFlow, boundary: str) -> tuple[onnx.ModelProto, list[str]]:
    """The head graph (boundary, side inputs, other graph inputs -> outputs computed from the
    boundary) and its side tensors: what the head needs that depends on the input without passing
    the boundary (shape computations only, since the boundary is a cut)."""
    below = flow.descendants(boundary, paths_only=False)
    outputs = [o for o in flow.graph_outputs if o in below]
    upstream = flow.depends - below
    nodes, inits, reached = _closure(flow, outputs, {boundary} | upstream)
    sides = [t for t in reached if t != boundary and t in flow.depends]
    others = [t for t in flow.graph_inputs if t in reached and t not in flow.depends]
    return _subgraph(flow, nodes, inits, [boundary, *sides, *others], outputs, "head"), sides


def _features(flow: DataFlow, boundary: str, sides: Sequence[str]) -> onnx.ModelProto:
    targets = [boundary, *sides]
    nodes, inits, reached = _closure(flow, targets, set())
    inputs = [t for t in flow.graph_inputs if t in reached]
    return _subgraph(flow, nodes, inits, inputs, targets, "features")


def split(
    model_or_path,
    boundary: str | None = None,
    *,
    input_name: str | None = None,
    output_name: str | None = None,
    probe_inputs: Mapping[str, np.ndarray] | None = None,
    verify: bool = True,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
) -> tuple[onnx.ModelProto, onnx.ModelProto, str]:
    """Cut the graph at ``boundary`` (a cut tensor or single-output node; None: the default GradCAM
    boundary) into ``(features, head, boundary_name)``.

    ``features`` maps the model's inputs to the boundary (first output) plus any side tensors the
    head needs (shape computations); ``head`` takes the boundary, those side tensors and any other
    graph inputs it reads, by name, and returns the model outputs computed from the boundary.
    With ``verify``, onnxruntime checks on seeded probe inputs (or ``probe_inputs``) that
    ``head(features(x))`` equals ``model(x)``; a mismatch raises :class:`BoundaryError`.
    """
    proto, label = _graph_of(model_or_path)
    flow = DataFlow(proto, input_name, output_name, label)
    name = flow.resolve(boundary) if boundary is not None else flow.default(probe_inputs)
    head, sides = _head(flow, name)
    features = _features(flow, name, sides)
    if verify:
        verify_split(proto, features, head, probe_inputs, rtol=rtol, atol=atol, label=label)
    return features, head, name


def verify_split(model: onnx.ModelProto, features: onnx.ModelProto, head: onnx.ModelProto,
                 probe_inputs: Mapping[str, np.ndarray] | None = None, *, rtol: float = DEFAULT_RTOL,
                 atol: float = DEFAULT_ATOL, label: str = "<model>"):
    """Run ``model`` and ``head(features(x))`` in onnxruntime on the same probe inputs; return the
    ParityReport of the head's outputs, or raise :class:`BoundaryError` when they differ."""
    feeds = _probe_feeds(model, probe_inputs, batch=2)
    names = [o.name for o in model.graph.output]
    try:
        reference = dict(zip(names, run_onnxruntime(model, feeds)))
        feats = dict(zip([o.name for o in features.graph.output],
                         run_onnxruntime(features, {i.name: feeds[i.name] for i in features.graph.input})))
        head_feeds = {i.name: feats[i.name] if i.name in feats else feeds[i.name] for i in head.graph.input}
        outs = run_onnxruntime(head, head_feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own errors have no common base
        raise BoundaryError(f"{label}: onnxruntime cannot run the split at {features.graph.output[0].name!r} ({exc})") from exc
    out_names = [o.name for o in head.graph.output]
    report = compare_outputs(out_names, [reference[n] for n in out_names], outs, rtol=rtol, atol=atol,
                             provider=execution_provider(),
                             probe_shapes={k: tuple(v.shape) for k, v in feeds.items()})
    if not report.ok:
        raise BoundaryError(f"{label}: head(features(x)) differs from the model at boundary "
                            f"{features.graph.output[0].name!r}: {report.summary()}")
    return report
