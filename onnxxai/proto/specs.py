"""Tensor specs of graph inputs and outputs, and the one rule for probe inputs.

A *probe* is a seeded input the library makes up when it must run a model without user data: the
parity check of :func:`onnxxai.load`, the shape probe of GradCAM's boundary search, the split check,
LRP's canonization check and the gradient check. They all follow :func:`probe_feeds`:

* dynamic dimensions become ``batch`` on the first axis (:data:`DEFAULT_BATCH` unless a caller asks
  for batch 1) and :data:`DEFAULT_DIM` on every other axis;
* values come from ``numpy.random.default_rng(seed)``, drawn input by input in graph order:
  standard normal for float inputs, integers in ``[0, 10)`` for integer inputs (valid token ids and
  indices for any table of ten or more rows; ``[0, rows)`` for an input that indexes a smaller table,
  such as BERT's token types, see :func:`index_bounds`), fair coin flips for boolean inputs; with
  ``integers="zeros"`` every non-float input is zero instead and draws nothing;
* arrays the user gives (``given``) are taken as they are, cast to the input's dtype.

The size of each dynamic non-batch dimension is derived from the graph where it can be
(:func:`axis_sizes`): an axis that reaches a convolution's channel axis through ops that keep the
layout takes the weight's input channels x group; a spatial axis of a convolution takes
:data:`DEFAULT_DIM` when that fits its kernel and stride, else the kernel's own length. Specs read
by :func:`graph_input_specs` carry these sizes (``TensorSpec.probe``), and :func:`onnxxai.load`
replaces them by the shapes onnxruntime accepted, so every later probe repeats them.

When onnxruntime refuses these sizes (an audio model that frames its signal by 512 samples, a
patch embedding followed by a fixed number of positions), :func:`probe_candidates` gives the other
shapes to try, dimension by dimension: channel axes keep their size, a spatial axis steps through
multiples of its kernel (then the other sizes at least as long), every other axis through the
sizes the graph itself names (Reshape targets, convolution and pooling kernels, Split sizes, frame
lengths), then a ladder (:func:`probe_sizes`). ``shapes`` (``probe_inputs=``,
``--probe-shape NAME=DIMS``) names exact shapes where that is not enough.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxxai.errors import InputError

__all__ = [
    "TensorSpec", "spec_of", "dims_of", "graph_input_specs", "DEFAULT_BATCH", "DEFAULT_DIM", "probe_shape",
    "probe_feeds", "select_input", "bind_inputs", "probe_sizes", "dynamic_dims", "sized_shapes", "parse_probe_shape", "PROBE_LADDER", "index_bounds",
    "axis_sizes", "probe_candidates",
]

#: Size given to a dynamic first (batch) dimension in probe inputs.
DEFAULT_BATCH = 2
#: Size given to any other dynamic dimension in probe inputs.
DEFAULT_DIM = 64


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints, or strings for dynamic dimensions) and numpy dtype of a graph input or output;
    ``high``: for an integer input that indexes a constant table, its number of rows (valid values are
    ``[0, high)``), else None; ``probe``: the probe shape of a graph input as the probe rule derived it
    from the graph (or as onnxruntime accepted it at load), its first axis replaced by the batch where
    dynamic; None: :data:`DEFAULT_DIM` for every dynamic axis."""

    name: str
    shape: tuple[int | str, ...]
    dtype: np.dtype
    high: int | None = None
    probe: tuple[int, ...] | None = None

    @property
    def is_float(self) -> bool:
        return self.dtype.kind == "f"

    def __str__(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


def dims_of(value: onnx.ValueInfoProto | None) -> tuple[int | str, ...] | None:
    """The dimensions of a value: ints where static, the symbolic name (or ``?<axis>``) where dynamic;
    None when the value has no shape at all (rank unknown)."""
    if value is None or not value.type.tensor_type.HasField("shape"):
        return None
    return tuple(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or f"?{i}")
                 for i, d in enumerate(value.type.tensor_type.shape.dim))


def spec_of(value: onnx.ValueInfoProto, high: int | None = None, probe: tuple[int, ...] | None = None) -> TensorSpec:
    """The :class:`TensorSpec` of a graph input or output (float32 when the element type is unset);
    ``high`` as :func:`index_bounds` reads it, ``probe`` as :func:`probe_candidates` gives it."""
    tensor_type = value.type.tensor_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)) if tensor_type.elem_type else np.dtype("float32")
    return TensorSpec(value.name, dims_of(value) or (), dtype, high, probe)


def graph_input_specs(model: onnx.ModelProto) -> list[TensorSpec]:
    """Specs of the true inputs of ``model`` (graph inputs that are not initializers), in order, with
    their index bounds and graph-derived probe shapes."""
    inits = {t.name for t in model.graph.initializer}
    bounds = index_bounds(model)
    specs = [spec_of(v, bounds.get(v.name)) for v in model.graph.input if v.name not in inits]
    first = probe_candidates(model, specs)[0]
    return [replace(s, probe=first.get(s.name)) for s in specs]


def _constant_dims(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """The dims of every initializer and Constant ``value`` of the main graph, by tensor name."""
    dims = {t.name: tuple(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            dims[node.output[0]] = tuple(node.attribute[0].t.dims)
    return dims


def _readers(model: onnx.ModelProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    """Tensor name -> the (node, input position) pairs of the main graph that read it."""
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for position, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, position))
    return readers


#: ops that pass an integer tensor's values on unchanged (first input only)
_VALUE_PRESERVING = {"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Expand", "Transpose", "Slice"}
#: (domain, op) -> {index input position: table input position} of the lookups whose table bounds the index
_LOOKUPS = {("", "Gather"): {1: 0}, ("com.microsoft", "EmbedLayerNormalization"): {0: 2, 1: 4}}


def index_bounds(model: onnx.ModelProto) -> dict[str, int]:
    """For each integer graph input whose values index constant tables (a ``Gather`` of an initializer
    or Constant, the token ids and segment ids of com.microsoft ``EmbedLayerNormalization``), possibly
    through casts and reshapes: the smallest table's number of rows along the gathered axis. Probe
    inputs stay below it, so a BERT export's two-row token-type table gets 0s and 1s."""
    tables, readers = _constant_dims(model), _readers(model)
    bounds: dict[str, int] = {}
    for value in model.graph.input:
        if value.name in tables or value.type.tensor_type.elem_type not in _INTEGER_TYPES:
            continue
        seen, todo, found = {value.name}, [value.name], []
        while todo:
            for node, position in readers.get(todo.pop(), ()):
                if node.op_type in _VALUE_PRESERVING and position == 0 and node.output[0] not in seen:
                    seen.add(node.output[0])
                    todo.append(node.output[0])
                table = _LOOKUPS.get((node.domain, node.op_type), {}).get(position)
                if table is not None and table < len(node.input) and node.input[table] in tables:
                    dims = tables[node.input[table]]
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0) if node.op_type == "Gather" else 0
                    if dims and -len(dims) <= axis < len(dims):
                        found.append(int(dims[axis]))
        if found:
            bounds[value.name] = max(1, min(found))
    return bounds


_INTEGER_TYPES = {onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
                  onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64}


def probe_shape(spec: TensorSpec, batch: int = DEFAULT_BATCH) -> tuple[int, ...]:
    """The shape of a probe for ``spec``: static dimensions kept, dynamic ones ``batch`` (axis 0) or
    the spec's graph-derived size (``spec.probe``, else :data:`DEFAULT_DIM`; other axes)."""
    probe = spec.probe if spec.probe is not None and len(spec.probe) == len(spec.shape) else None
    return tuple(d if isinstance(d, int) and d > 0 else (batch if axis == 0 else (probe[axis] if probe else DEFAULT_DIM))
                 for axis, d in enumerate(spec.shape))


def probe_feeds(
    specs: Iterable[TensorSpec],
    given: Mapping[str, np.ndarray] | None = None,
    *,
    seed: int = 0,
    batch: int = DEFAULT_BATCH,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    integers: Literal["random", "zeros"] = "random",
    require_all: bool = False,
    label: str = "<model>",
) -> dict[str, np.ndarray]:
    """Seeded probe inputs for ``specs`` (see the module docstring for the rule).

    ``given`` arrays are used for the inputs they name; with ``require_all`` an input missing from
    a non-empty ``given`` is an :class:`InputError` (the parity check must not mix user data with
    made-up values), otherwise it gets a probe. ``shapes`` overrides the probe shape of the inputs
    it names (to repeat an earlier probe's shapes). A dtype with no probe rule (strings) raises
    :class:`InputError` naming the input.
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        if given is not None and spec.name in given:
            feeds[spec.name] = np.ascontiguousarray(np.asarray(given[spec.name]).astype(spec.dtype, copy=False))
            continue
        if given is not None and require_all:
            raise InputError(f"{label}: probe_inputs lacks input {spec.name!r}")
        shape = (shapes or {}).get(spec.name) or probe_shape(spec, batch)
        if spec.dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif integers == "zeros":
            feeds[spec.name] = np.zeros(shape).astype(spec.dtype)
        elif spec.dtype.kind in "iu":
            feeds[spec.name] = rng.integers(0, min(10, spec.high or 10), size=shape).astype(spec.dtype)
        elif spec.dtype == np.bool_:
            feeds[spec.name] = rng.random(shape) < 0.5
        else:
            raise InputError(f"{label}: cannot make a probe for input {spec} (dtype {spec.dtype}); pass probe_inputs=")
    return feeds


#: Sizes tried for dynamic non-batch dimensions after :data:`DEFAULT_DIM` and the graph's own sizes.
PROBE_LADDER = (16, 32, 128, 256, 512, 1024, 2048, 4096, 16000)
#: Most elements one probe input may have (a larger candidate is skipped).
PROBE_MAX_ELEMENTS = 2**24
#: Most candidate sizes :func:`probe_sizes` returns.
PROBE_MAX_TRIES = 12


def _graph_sizes(model: onnx.ModelProto) -> list[int]:
    """Sizes the graph names: positive Reshape target entries, kernel lengths (attribute or weight),
    Split sizes and their sum, frame lengths of STFT/DFT constants."""
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    sizes: list[int] = []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Reshape" and len(node.input) > 1 and node.input[1] in consts:
            sizes += [int(v) for v in consts[node.input[1]].ravel() if v > 1]
        elif node.op_type in ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "ConvInteger", "QLinearConv"):
            kernel = list(attrs.get("kernel_shape", ()))
            weight = node.input[3 if node.op_type == "QLinearConv" else 1] if len(node.input) > 1 else ""
            if not kernel and weight in consts:
                kernel = list(consts[weight].shape[2:])
            sizes += [int(k) for k in kernel if k > 1]
        elif node.op_type == "Split":
            split = list(attrs.get("split", ())) or (list(consts[node.input[1]].ravel()) if len(node.input) > 1 and node.input[1] in consts else [])
            if split:
                sizes += [int(sum(split))] + [int(s) for s in split if s > 1]
        elif node.op_type in ("STFT", "DFT"):
            sizes += [int(consts[i].ravel()[0]) for i in node.input[2:4] if i in consts and consts[i].size == 1 and consts[i].ravel()[0] > 1]
    return sizes


def probe_sizes(model: onnx.ModelProto) -> list[int]:
    """The sizes to try, in order, for the dynamic non-batch dimensions of probe inputs after
    :data:`DEFAULT_DIM`: the graph's own sizes (each, largest first, then twice each) and
    :data:`PROBE_LADDER`; at most :data:`PROBE_MAX_TRIES`."""
    named = sorted(set(_graph_sizes(model)), reverse=True)
    order: list[int] = []
    for size in [*named, *(2 * s for s in named), *PROBE_LADDER]:
        if size != DEFAULT_DIM and size not in order:
            order.append(size)
    return order[:PROBE_MAX_TRIES]


#: ops through which an input keeps its layout (axis i of the output is axis i of the input)
_LAYOUT_KEEPING = {"Cast", "Identity", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "Neg", "Abs", "Exp", "Log", "Sqrt",
                   "Add", "Sub", "Mul", "Div", "Pow", "BatchNormalization", "InstanceNormalization", "Dropout",
                   "QuantizeLinear", "DequantizeLinear", "Floor", "Round", "Erf", "Softplus", "HardSigmoid"}
#: convolution-like ops: (weight input position, whether attributes give a kernel even without a weight)
_CONVS = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
_POOLS = {"MaxPool", "AveragePool", "LpPool"}
#: Multiples of a strided kernel a spatial axis tries (ViT's 32x32 = 2 patches of 16 per side).
KERNEL_FACTORS = (1, 2, 3, 4, 6, 8, 12, 14, 16)


@dataclass(frozen=True)
class _Axis:
    """What the graph says about one input axis: a size it must have, or the (effective) kernel and
    stride of a convolution or pool that slides along it."""

    size: int | None = None
    kernel: int | None = None
    stride: int = 1


def axis_sizes(model: onnx.ModelProto, specs: Iterable[TensorSpec] | None = None) -> dict[str, dict[int, "_Axis"]]:
    """For each graph input, what the first convolution or pool it reaches through layout-keeping ops
    (casts, elementwise arithmetic with constants, normalizations) says about its axes: axis 1 must
    equal the weight's input channels x group, axes 2.. slide a kernel with a stride."""
    consts, readers = _constant_dims(model), _readers(model)
    names = [s.name for s in specs] if specs is not None else [v.name for v in model.graph.input if v.name not in consts]
    found: dict[str, dict[int, _Axis]] = {}
    for name in names:
        seen, todo, axes = {name}, [name], {}
        while todo and not axes:
            for node, position in readers.get(todo.pop(0), ()):
                attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                weight_at = _CONVS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
                if position == 0 and (weight_at is not None or node.op_type in _POOLS):
                    weight = consts.get(node.input[weight_at]) if weight_at is not None and weight_at < len(node.input) else None
                    kernel = list(attrs.get("kernel_shape", ())) or (list(weight[2:]) if weight else [])
                    strides = list(attrs.get("strides", ())) or [1] * len(kernel)
                    dilations = list(attrs.get("dilations", ())) or [1] * len(kernel)
                    if weight and len(weight) >= 3:
                        axes[1] = _Axis(size=int(weight[1]) * int(attrs.get("group", 1)))
                    for i, k in enumerate(kernel):
                        axes[2 + i] = _Axis(kernel=int(dilations[i]) * (int(k) - 1) + 1, stride=int(strides[i]))
                    break
                if node.op_type in _LAYOUT_KEEPING and node.domain in ("", "ai.onnx") and node.output and node.output[0] not in seen:
                    others = [i for j, i in enumerate(node.input) if j != position and i]
                    if all(i in consts for i in others):  # only constants join the input: its layout stays
                        seen.add(node.output[0])
                        todo.append(node.output[0])
        if axes:
            found[name] = axes
    return found


def probe_candidates(model: onnx.ModelProto, specs: Iterable[TensorSpec], batch: int = DEFAULT_BATCH,
                     tries: int | None = None) -> list[dict[str, tuple[int, ...]]]:
    """Probe shapes to try in order, the first being the default probe (see the module docstring):
    each dynamic non-batch axis steps through its own list of sizes (:func:`axis_sizes`, else
    :data:`DEFAULT_DIM` then :func:`probe_sizes`); step ``t`` takes each list's ``t``-th size (its
    last when shorter). Candidates over :data:`PROBE_MAX_ELEMENTS` elements are left out; at most
    ``tries`` (default :data:`PROBE_MAX_TRIES`) shapes after the first."""
    specs = tuple(specs)
    # both walk the graph (probe_sizes decodes every constant): only when a dynamic non-batch axis needs them
    dynamic = any(axis and not (isinstance(d, int) and d > 0) for s in specs for axis, d in enumerate(s.shape))
    known = axis_sizes(model, specs) if dynamic else {}
    free = [DEFAULT_DIM, *probe_sizes(model)] if dynamic else []
    lists: dict[tuple[str, int], list[int]] = {}
    for spec in specs:
        for axis, dim in enumerate(spec.shape):
            if axis == 0 or (isinstance(dim, int) and dim > 0):
                continue
            info = known.get(spec.name, {}).get(axis)
            if info is not None and info.size is not None:
                lists[spec.name, axis] = [info.size]
            elif info is not None and info.kernel is not None:
                k, step = info.kernel, info.stride
                fits = [size for size in free if size >= k and (step == 1 or (size - k) % step == 0)]
                multiples = [k * f for f in KERNEL_FACTORS] if step > 1 else []
                lists[spec.name, axis] = list(dict.fromkeys([*fits[:1], *multiples, *fits[1:], k]))
            else:
                lists[spec.name, axis] = free
    steps = max((len(v) for v in lists.values()), default=1)
    out: list[dict[str, tuple[int, ...]]] = []
    for t in range(steps):
        shapes = {}
        for spec in specs:
            shapes[spec.name] = tuple(
                d if isinstance(d, int) and d > 0 else (batch if axis == 0 else lists[spec.name, axis][min(t, len(lists[spec.name, axis]) - 1)])
                for axis, d in enumerate(spec.shape))
        if out and (shapes in out or any(int(np.prod(v, dtype=np.int64)) > PROBE_MAX_ELEMENTS for v in shapes.values())):
            continue
        out.append(shapes)
        if len(out) > (PROBE_MAX_TRIES if tries is None else tries):
            break
    return out


def dynamic_dims(specs: Iterable[TensorSpec]) -> list[str]:
    """The dynamic non-batch dimensions of ``specs``, as "input 'x' axis 2 ('time')"."""
    return [f"input {s.name!r} axis {axis}" + (f" ({d!r})" if not str(d).startswith("?") else "")
            for s in specs for axis, d in enumerate(s.shape) if axis > 0 and not (isinstance(d, int) and d > 0)]


def sized_shapes(specs: Iterable[TensorSpec], size: int, batch: int = DEFAULT_BATCH) -> dict[str, tuple[int, ...]] | None:
    """Probe shapes whose dynamic non-batch dimensions are all ``size`` (None when some input would
    exceed :data:`PROBE_MAX_ELEMENTS` elements)."""
    shapes = {}
    for spec in specs:
        shape = tuple(d if isinstance(d, int) and d > 0 else (batch if axis == 0 else size) for axis, d in enumerate(spec.shape))
        if int(np.prod(shape, dtype=np.int64)) > PROBE_MAX_ELEMENTS:
            return None
        shapes[spec.name] = shape
    return shapes


def parse_probe_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``NAME=DIMS`` (DIMS like ``1,16000`` or ``1x3x224x224``) as (name, shape); InputError otherwise."""
    name, sep, dims = text.rpartition("=")
    parts = [p for p in dims.replace("x", ",").replace("X", ",").split(",") if p.strip()]
    if not sep or not name or not parts or not all(p.strip().isdigit() for p in parts):
        raise InputError(f"--probe-shape must look like NAME=DIMS (e.g. audio=1,16000), not {text!r}")
    return name, tuple(int(p) for p in parts)


def select_input(specs: Iterable[TensorSpec], name: str | None, label: str = "<model>") -> TensorSpec:
    """The spec named ``name``; with None, the single float input (an :class:`InputError` naming the
    candidates when there is none or several)."""
    specs = tuple(specs)
    if name is not None:
        for spec in specs:
            if spec.name == name:
                return spec
        raise InputError(f"{label}: no input named {name!r}; inputs are {[s.name for s in specs]}")
    floats = [s for s in specs if s.is_float]
    if len(floats) == 1:
        return floats[0]
    if not floats:
        raise InputError(
            f"{label}: the model has no float input to attribute to (inputs: "
            f"{', '.join(str(s) for s in specs)})"
        )
    raise InputError(
        f"{label}: the model has several float inputs ({', '.join(s.name for s in floats)}); "
        "name the one to explain with input_name=... and pass the others as fixed_inputs={...}"
    )


def bind_inputs(specs: Iterable[TensorSpec], args: tuple, kwargs: Mapping[str, object], label: str = "<model>") -> dict:
    """``{input name: value}`` of a call's positional (input order) and keyword arguments; too many
    positional arguments or a missing input is an :class:`InputError` naming the model."""
    specs = tuple(specs)
    if len(args) > len(specs):
        raise InputError(f"{label}: got {len(args)} inputs, the model takes {len(specs)}")
    values = {s.name: a for s, a in zip(specs, args)}
    values.update(kwargs)
    missing = [s.name for s in specs if s.name not in values]
    if missing:
        raise InputError(f"{label}: missing input(s) {missing}")
    return values
