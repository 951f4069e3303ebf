"""Scan, Loop and If: subgraph bodies converted by onnxxai and run in a Python loop (or branch).

onnx2torch has no converter for any ONNX control-flow op. Each body GraphProto is turned into a
ModelProto (the enclosing model's opset imports, IR version and local functions) and converted by
onnxxai's own pipeline (:func:`onnxxai.convert.pipeline.convert`: normalize, then onnx2torch plus onnxxai's
converters), so a body supports exactly the ops a top-level graph supports, nested control flow
included. The resulting GraphModules are submodules of the control-flow module, which calls them
once per iteration (Scan, Loop) or once for the branch picked by the run-time condition (If).

Bodies may read outer-scope tensors by name (ONNX implicit inputs). :func:`outer_scope_names`
finds them (recursively through nested bodies); they become extra trailing inputs of the body
model and of the converter's OnnxMapping, so the parent fx graph passes them in.

The opset imports of the enclosing model are not handed to converters by onnx2torch; onnxxai's
``convert`` publishes the model being converted (:func:`onnxxai.convert.pipeline.converting_model`).
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
import torch
from onnx import helper
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

from onnxxai.convert.pipeline import convert, converting_model
from onnxxai.convert.registry import register, since
from onnxxai.errors import OnnxxaiError, ResourceLimitError
from onnxxai.proto import limits
from onnxxai.proto.names import fresh_name
from onnxxai.proto.walk import outer_scope_names

__all__ = ["OnnxScan", "OnnxScan8", "OnnxLoop", "OnnxIf", "outer_scope_names", "convert_body"]


# -- subgraphs --------------------------------------------------------------------------------------
def _value_info(name: str, graph: onnx.GraphProto) -> onnx.ValueInfoProto | None:
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        if value.name == name and value.type.WhichOneof("value") is not None:
            return value
    for tensor in graph.initializer:
        if tensor.name == name:
            return helper.make_tensor_value_info(name, tensor.data_type, list(tensor.dims))
    return None


def body_model(body: onnx.GraphProto, extra_inputs: Sequence[str], parent: onnx.ModelProto,
               input_types: Sequence[onnx.TypeProto | None] = ()) -> onnx.ModelProto:
    """A standalone ModelProto of ``body``: its formal inputs, then the outer-scope ``extra_inputs``.

    Formal inputs without an element type get the one from ``input_types`` (the parent's tensors
    they are bound to); extra inputs get their type from the parent graph. Outputs that no body
    node produces (a formal or outer input, an initializer) or that repeat an earlier output are
    routed through an Identity node, since a converted graph returns node results only.
    """
    graph = onnx.GraphProto()
    graph.CopyFrom(body)
    for value, hint in zip(graph.input, input_types):
        if hint is not None and not value.type.tensor_type.elem_type and hint.HasField("tensor_type"):
            value.type.tensor_type.elem_type = hint.tensor_type.elem_type
    for name in extra_inputs:
        info = _value_info(name, parent.graph)
        graph.input.append(info if info is not None else helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None))
    produced = {o for n in graph.node for o in n.output if o}
    taken = produced | {v.name for v in graph.input} | {t.name for t in graph.initializer} | {o.name for o in graph.output}
    seen: set[str] = set()
    for value in graph.output:
        if value.name not in produced or value.name in seen:
            fresh = fresh_name(f"{value.name}__cf_out", taken, sep="")
            graph.node.append(helper.make_node("Identity", [value.name], [fresh], name=fresh))
            value.name = fresh
        seen.add(value.name)
    model = helper.make_model(graph, opset_imports=list(parent.opset_import), ir_version=max(parent.ir_version, 4))
    model.functions.extend(parent.functions)
    return model


def convert_body(node: OnnxNode, attr: str, body: onnx.GraphProto, extra_inputs: Sequence[str], graph: OnnxGraph,
                 input_types: Sequence[onnx.TypeProto | None] = ()) -> torch.fx.GraphModule:
    """Convert one body of a control-flow node with onnxxai's pipeline; failures name the node and the inner op."""
    what = f"{node.operation_type} node {node.name!r}"
    parent = converting_model()
    if parent is None:
        raise NotImplementedError(f"{what}: cannot find the model holding the node, so its opset for the {attr} body is unknown")
    limits.check_time(f"{what} (converting its {attr} body)")
    model = body_model(body, extra_inputs, parent, input_types)
    try:
        _, _, module = convert(model, f"{what} ({attr} body)")
    except ResourceLimitError:
        raise
    except (OnnxxaiError, NotImplementedError) as exc:
        raise NotImplementedError(f"{what}: its {attr} body cannot be converted ({exc})") from exc
    return module


def _attr(node: OnnxNode, name: str, default=None):
    for attr in node.proto.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _type_of(name: str, graph: OnnxGraph) -> onnx.TypeProto | None:
    info = graph.value_info.get(name)
    if info is not None and info.type.WhichOneof("value") is not None:
        return info.type
    if name in graph.initializers:
        return helper.make_tensor_type_proto(graph.initializers[name].proto.data_type, None)
    return None


def _elem_type(name: str, graph: OnnxGraph) -> onnx.TypeProto | None:
    found = _type_of(name, graph)
    if found is None or not found.HasField("tensor_type"):
        return found
    return helper.make_tensor_type_proto(found.tensor_type.elem_type, None)


def _returns_one(body: torch.nn.Module) -> bool:
    """Whether a converted body returns its single output bare (which may itself be a list: a sequence)."""
    if not isinstance(body, torch.fx.GraphModule):
        return False
    output = next(n for n in body.graph.nodes if n.op == "output")
    return not isinstance(output.args[0], (tuple, list))


def _run(body: torch.nn.Module, args: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out = body(*args)
    if _returns_one(body):
        return [out]
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _pack(outputs: Sequence[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, ...]:
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


def _check_count(node: OnnxNode, attr: str, body: onnx.GraphProto, n_inputs: int | None, n_outputs: int) -> None:
    if n_inputs is not None and len(body.input) != n_inputs:
        raise NotImplementedError(f"{node.operation_type} node {node.name!r}: its {attr} body takes {len(body.input)} inputs, "
                                  f"expected {n_inputs}")
    if len(body.output) != n_outputs:
        raise NotImplementedError(f"{node.operation_type} node {node.name!r}: its {attr} body returns {len(body.output)} outputs, "
                                  f"expected {n_outputs}")


# -- If ---------------------------------------------------------------------------------------------
class OnnxIf(torch.nn.Module):
    """ONNX If: runs ``then_branch`` or ``else_branch`` (both converted up front) on the run-time condition.

    Forward inputs: the condition, then the outer-scope tensors of both branches; each branch gets
    the ones it reads (``then_refs`` / ``else_refs`` index into them).
    """

    def __init__(self, then_branch: torch.nn.Module, else_branch: torch.nn.Module,
                 then_refs: list[int], else_refs: list[int]) -> None:
        super().__init__()
        self.then_branch, self.else_branch = then_branch, else_branch
        self.then_refs, self.else_refs = then_refs, else_refs

    def forward(self, cond: torch.Tensor, *outer: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if bool(cond.reshape(-1)[0]):
            return _pack(_run(self.then_branch, [outer[i] for i in self.then_refs]))
        return _pack(_run(self.else_branch, [outer[i] for i in self.else_refs]))


@register("If", since(1))
def convert_if(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """If (every version): both branches converted; outer-scope tensors fed as extra inputs."""
    then_g, else_g = _attr(node, "then_branch"), _attr(node, "else_branch")
    n_out = len(node.output_values)
    _check_count(node, "then_branch", then_g, None, n_out)
    _check_count(node, "else_branch", else_g, None, n_out)
    then_names, else_names = outer_scope_names(then_g), outer_scope_names(else_g)
    names = then_names + [n for n in else_names if n not in then_names]
    then_body = convert_body(node, "then_branch", then_g, then_names, graph)
    else_body = convert_body(node, "else_branch", else_g, else_names, graph)
    module = OnnxIf(then_body, else_body, [names.index(n) for n in then_names], [names.index(n) for n in else_names])
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=(node.input_values[0], *names), outputs=node.output_values))


# -- Loop -------------------------------------------------------------------------------------------
def _device(tensors: Sequence[torch.Tensor | None]) -> torch.device:
    return next((t.device for t in tensors if isinstance(t, torch.Tensor)), torch.device("cpu"))


class OnnxLoop(torch.nn.Module):
    """ONNX Loop: runs the body while ``it < M`` and the condition holds; scan outputs stacked on axis 0.

    Forward inputs: M (if given), cond (if given), the N loop-carried initial values, then the
    body's outer-scope tensors. With no condition input the body's condition output is ignored
    (as the spec says). A loop that runs zero times gives scan outputs of length 0 whose other
    dimensions come from one dry run of the body on the initial values.
    """

    def __init__(self, body: torch.nn.Module, has_trip_count: bool, has_cond: bool, n_carried: int, n_scan: int,
                 name: str = "") -> None:
        super().__init__()
        self.body = body
        self.has_trip_count, self.has_cond, self.n_carried, self.n_scan = has_trip_count, has_cond, n_carried, n_scan
        self.node_name = name

    def extra_repr(self) -> str:
        return f"trip_count={self.has_trip_count}, cond={self.has_cond}, carried={self.n_carried}, scan_outputs={self.n_scan}"

    def forward(self, *args: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        i = 0
        trip = cond = None
        if self.has_trip_count:
            trip, i = args[0], 1
        if self.has_cond:
            cond, i = args[i], i + 1
        carried = list(args[i:i + self.n_carried])
        outer = list(args[i + self.n_carried:])
        device = _device(args)
        max_trip = int(trip.reshape(-1)[0]) if trip is not None else None
        going = bool(cond.reshape(-1)[0]) if cond is not None else True
        scans: list[list[torch.Tensor]] = [[] for _ in range(self.n_scan)]
        it = 0
        where, stacked_bytes = f"Loop node {self.node_name!r} (iteration {{}})", 0
        while going and (max_trip is None or it < max_trip):
            limits.check_time(where.format(it))  # a loop whose condition stays true ends at the deadline
            outs = _run(self.body, [torch.tensor(it, dtype=torch.int64, device=device),
                                    torch.tensor(going, dtype=torch.bool, device=device), *carried, *outer])
            if self.has_cond:
                going = bool(outs[0].reshape(-1)[0])
            carried = outs[1:1 + self.n_carried]
            for k in range(self.n_scan):
                scans[k].append(outs[1 + self.n_carried + k])
                stacked_bytes += outs[1 + self.n_carried + k].nbytes
            if self.n_scan:  # the scan outputs grow with every trip: stop them at the memory budget
                limits.check_bytes(2 * stacked_bytes, f"the scan outputs of Loop node {self.node_name!r} after {it + 1} "
                                   "iterations (stacked at the end)", f"Loop node {self.node_name!r}")
            it += 1
        if it == 0 and self.n_scan:
            with torch.no_grad():
                probe = _run(self.body, [torch.tensor(0, dtype=torch.int64, device=device),
                                         torch.tensor(True, device=device), *carried, *outer])[1 + self.n_carried:]
            stacked = [p.new_zeros((0, *p.shape)) for p in probe]
        else:
            stacked = [torch.stack(s, 0) for s in scans]
        return _pack([*carried, *stacked])


@register("Loop", since(1))
def convert_loop(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Loop (every version): trip count and/or condition, loop-carried values, scan outputs."""
    inputs = node.input_values
    has_m = len(inputs) > 0 and bool(inputs[0])
    has_cond = len(inputs) > 1 and bool(inputs[1])
    if not has_m and not has_cond:
        raise NotImplementedError(f"Loop node {node.name!r} with neither trip count M nor condition never ends; not supported")
    carried = list(inputs[2:])
    if any(not name for name in carried):
        raise NotImplementedError(f"Loop node {node.name!r} with an empty loop-carried input is not supported")
    body = _attr(node, "body")
    n_scan = len(node.output_values) - len(carried)
    _check_count(node, "body", body, 2 + len(carried), 1 + len(carried) + n_scan)
    names = outer_scope_names(body)
    hints = [helper.make_tensor_type_proto(onnx.TensorProto.INT64, []), helper.make_tensor_type_proto(onnx.TensorProto.BOOL, [])]
    hints += [_elem_type(name, graph) for name in carried]  # carried shapes may change per iteration
    module = OnnxLoop(convert_body(node, "body", body, names, graph, hints), has_m, has_cond, len(carried), n_scan,
                      node.name)
    present = [name for name in inputs[:2] if name]
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=(*present, *carried, *names), outputs=node.output_values))


# -- Scan -------------------------------------------------------------------------------------------
class OnnxScan(torch.nn.Module):
    """ONNX Scan (opset 9 on): iterate the body over slices of the scan inputs along their scan axes.

    Forward inputs: N initial states, M scan inputs, then the body's outer-scope tensors. Outputs:
    N final states, then K scan outputs stacked along their output axes (direction 1: in reverse
    iteration order). A zero-length scan gives length-0 scan outputs shaped by a dry run of the
    body on zero slices.
    """

    def __init__(self, body: torch.nn.Module, n_states: int, input_axes: list[int], input_directions: list[int],
                 output_axes: list[int], output_directions: list[int], name: str = "") -> None:
        super().__init__()
        self.body, self.n_states, self.node_name = body, n_states, name
        self.input_axes, self.input_directions = input_axes, input_directions
        self.output_axes, self.output_directions = output_axes, output_directions

    def extra_repr(self) -> str:
        return (f"states={self.n_states}, input_axes={self.input_axes}, input_directions={self.input_directions}, "
                f"output_axes={self.output_axes}, output_directions={self.output_directions}")

    def forward(self, *args: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        n, m = self.n_states, len(self.input_axes)
        states, xs, outer = list(args[:n]), args[n:n + m], list(args[n + m:])
        axes = [a + x.dim() if a < 0 else a for a, x in zip(self.input_axes, xs)]
        length = xs[0].shape[axes[0]]
        scans: list[list[torch.Tensor]] = [[] for _ in self.output_axes]
        for t in range(length):
            limits.check_time(f"Scan node {self.node_name!r} (iteration {t})")
            elements = [x.select(a, length - 1 - t if d else t) for x, a, d in zip(xs, axes, self.input_directions)]
            outs = _run(self.body, [*states, *elements, *outer])
            states = outs[:n]
            for k, out in enumerate(outs[n:]):
                scans[k].append(out)
        if length == 0:
            with torch.no_grad():
                probe = _run(self.body, [*states, *[x.new_zeros(x.shape[:a] + x.shape[a + 1:]) for x, a in zip(xs, axes)], *outer])
            return _pack([*states, *[p.new_zeros((0, *p.shape)).movedim(0, self._axis(k, p.dim() + 1))
                                     for k, p in enumerate(probe[n:])]])
        stacked = []
        for k, seq in enumerate(scans):
            if self.output_directions[k]:
                seq = seq[::-1]
            stacked.append(torch.stack(seq, self._axis(k, seq[0].dim() + 1)))
        return _pack([*states, *stacked])

    def _axis(self, k: int, rank: int) -> int:
        axis = self.output_axes[k]
        return axis + rank if axis < 0 else axis


class OnnxScan8(torch.nn.Module):
    """ONNX Scan-8: batch axis 0 and scan axis 1 on every input; optional per-batch ``sequence_lens``.

    The body is written for one batch element, so it is vectorised over the batch with
    ``torch.func.vmap`` (outer-scope tensors are shared, not batched) and looped over time only.
    With ``sequence_lens`` a batch element stops updating its states after its length, its scan
    outputs are zero beyond it (the spec leaves them undefined), and a reverse direction reads its
    own valid part backwards.
    """

    def __init__(self, body: torch.nn.Module, has_lens: bool, n_states: int, directions: list[int], name: str = "") -> None:
        super().__init__()
        self.body, self.has_lens, self.n_states, self.directions = body, has_lens, n_states, directions
        self.node_name = name

    def extra_repr(self) -> str:
        return f"sequence_lens={self.has_lens}, states={self.n_states}, directions={self.directions}"

    def forward(self, *args: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        lens = args[0] if self.has_lens else None
        args = args[1:] if self.has_lens else args
        n, m = self.n_states, len(self.directions)
        states, xs, outer = list(args[:n]), args[n:n + m], list(args[n + m:])
        batch, length = xs[0].shape[0], xs[0].shape[1]
        step = torch.func.vmap(lambda *a: tuple(_run(self.body, a[:n + m] + tuple(outer))), in_dims=0)
        rows = torch.arange(batch, device=xs[0].device)
        scans: list[list[torch.Tensor]] = []
        for t in range(length):
            limits.check_time(f"Scan node {self.node_name!r} (iteration {t})")
            if lens is None:
                elements = [x[:, length - 1 - t if d else t] for x, d in zip(xs, self.directions)]
            else:
                lens = lens.to(device=xs[0].device, dtype=torch.int64)
                elements = [x[rows, (lens - 1 - t).clamp(min=0) if d else torch.full_like(lens, t)]
                            for x, d in zip(xs, self.directions)]
            outs = list(step(*states, *elements))
            new_states, scan_elems = outs[:n], outs[n:]
            if lens is not None:
                valid = t < lens
                new_states = [torch.where(valid.reshape(-1, *[1] * (s.dim() - 1)), s, old) for s, old in zip(new_states, states)]
                scan_elems = [torch.where(valid.reshape(-1, *[1] * (e.dim() - 1)), e, torch.zeros_like(e)) for e in scan_elems]
            states = new_states
            if not scans:
                scans = [[] for _ in scan_elems]
            for k, e in enumerate(scan_elems):
                scans[k].append(e)
        if length == 0:
            raise RuntimeError("Scan-8 over a sequence of length 0 is not supported (scan output shapes unknown)")
        return _pack([*states, *[torch.stack(s, 1) for s in scans]])


def _scan_counts(node: OnnxNode, first: int) -> tuple[int, int, int]:
    m = int(_attr(node, "num_scan_inputs"))
    n = len(node.input_values) - first - m
    k = len(node.output_values) - n
    if n < 0 or k < 0:
        raise NotImplementedError(f"Scan node {node.name!r}: num_scan_inputs={m} does not fit its {len(node.input_values)} inputs")
    return n, m, k


@register("Scan", since(9))
def convert_scan(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Scan (opset 9 on): scan axes and directions, state variables, scan outputs."""
    n, m, k = _scan_counts(node, 0)
    body = _attr(node, "body")
    _check_count(node, "body", body, n + m, n + k)
    inputs = node.input_values
    names = outer_scope_names(body)
    hints = [_elem_type(name, graph) for name in inputs]
    module = OnnxScan(
        convert_body(node, "body", body, names, graph, hints), n,
        list(_attr(node, "scan_input_axes", [0] * m)), list(_attr(node, "scan_input_directions", [0] * m)),
        list(_attr(node, "scan_output_axes", [0] * k)), list(_attr(node, "scan_output_directions", [0] * k)), node.name,
    )
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=(*inputs, *names), outputs=node.output_values))


@register("Scan", (8,))
def convert_scan8(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Scan-8: batched (axis 0) scan over axis 1 with optional sequence_lens."""
    n, m, k = _scan_counts(node, 1)
    body = _attr(node, "body")
    _check_count(node, "body", body, n + m, n + k)
    inputs = node.input_values
    has_lens = bool(inputs[0])
    names = outer_scope_names(body)
    hints = [_elem_type(name, graph) for name in inputs[1:]]
    module = OnnxScan8(convert_body(node, "body", body, names, graph, hints), has_lens, n,
                       list(_attr(node, "directions", [0] * m)), node.name)
    present = inputs if has_lens else inputs[1:]
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=(*present, *names), outputs=node.output_values))
