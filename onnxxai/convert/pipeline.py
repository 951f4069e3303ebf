"""From an ONNX model to a torch.fx GraphModule: normalize a copy, check every node has a converter,
convert with onnx2torch plus onnxxai's converters, and name the node when conversion fails.

Converters of nodes with subgraph bodies (If, Loop, Scan, SequenceMap, FlexAttention) convert their
bodies with :func:`convert` too, and read the enclosing model (opset imports, IR version, local
functions, which onnx2torch does not hand to converters) through :func:`converting_model`. This
module imports no family module: :func:`~onnxxai.convert.registry.register_all` loads them by name.
"""

from __future__ import annotations

import operator
from contextvars import ContextVar

import onnx
import onnx2torch
import torch
from onnx import defs
from onnx2torch.node_converters.registry import get_converter
from onnx2torch.onnx_graph import OnnxGraph

from onnxxai.convert.registry import Registered, overridden_upstream, register_all
from onnxxai.errors import ConversionError, OnnxxaiError, ResourceLimitError, UnsupportedOpError
from onnxxai.proto import locate
from onnxxai.proto.normalize import PassResult, normalize

__all__ = ["convert", "unsupported_nodes", "overriding_converters", "converting_model", "CONVERTING"]

#: The ModelProto being converted (set by :func:`convert` while onnx2torch runs).
CONVERTING: ContextVar[onnx.ModelProto | None] = ContextVar("onnxxai_converting", default=None)


def converting_model() -> onnx.ModelProto | None:
    """The model being converted (onnx2torch converts a shape-inferred copy of it: same opsets,
    same functions), or None outside :func:`convert`."""
    return CONVERTING.get()


def convert(model: onnx.ModelProto, label: str = "<model>") -> tuple[onnx.ModelProto, tuple[PassResult, ...], torch.fx.GraphModule]:
    """Normalize a copy of ``model`` and convert it (no parity check: :func:`onnxxai.load` adds that).

    Returns the normalized graph, the passes applied, and the GraphModule (eval mode, frozen).
    """
    register_all()
    graph = onnx.ModelProto()
    graph.CopyFrom(model)
    passes = tuple(normalize(graph))
    _check_supported(graph, label)
    return graph, passes, _convert(graph, label)


def _opset_of(domain: str, model: onnx.ModelProto) -> tuple[str, int]:
    """The node domain as onnx2torch's registry keys it, and the model's opset for it."""
    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
    domain = "" if domain == "ai.onnx" else domain
    return domain, opsets.get(domain, 0)


def unsupported_nodes(model: onnx.ModelProto) -> list[UnsupportedOpError]:
    """Every node of a (normalized) graph whose op, domain and opset have no converter."""
    register_all()
    missing: list[UnsupportedOpError] = []
    for node in model.graph.node:
        domain, version = _opset_of(node.domain, model)
        try:
            get_converter(operation_type=node.op_type, version=version, domain=domain)
        except NotImplementedError:
            missing.append(UnsupportedOpError(node.op_type, domain, version, node.name))
    return missing


def overriding_converters(model: onnx.ModelProto) -> list[Registered]:
    """The registry entries, among those where onnxxai replaces or extends one of onnx2torch's own
    converters, that the top-level nodes of a (normalized) graph are converted by, in key order."""
    overriding = {(r.domain, r.op, r.version): r for r in overridden_upstream()}
    used = set()
    for node in model.graph.node:
        domain, version = _opset_of(node.domain, model)
        try:
            version = defs.get_schema(node.op_type, domain=domain, max_inclusive_version=version).since_version
        except (RuntimeError, defs.SchemaError):  # a domain onnx has no schemas for: keyed by the opset itself
            pass
        if (domain, node.op_type, version) in overriding:
            used.add((domain, node.op_type, version))
    return [overriding[key] for key in sorted(used)]


def _check_supported(model: onnx.ModelProto, label: str) -> None:
    missing = unsupported_nodes(model)
    if missing:
        first = missing[0]
        others = {(e.domain, e.op_type, e.opset) for e in missing[1:]} - {(first.domain, first.op_type, first.opset)}
        extra = f"; also {len(missing) - 1} more unsupported node(s)" if len(missing) > 1 else ""
        if others:
            extra += " of ops " + ", ".join(sorted(f"{d or 'ai.onnx'}::{o}-{v}" for d, o, v in others))
        raise UnsupportedOpError(
            first.op_type, first.domain, first.opset, first.node_name,
            f"{label} cannot be converted{extra}. Re-export with another opset, or add a converter with "
            "onnx2torch's add_converter",
        )


def _convert(model: onnx.ModelProto, label: str) -> torch.fx.GraphModule:
    token = CONVERTING.set(model)
    try:
        try:
            module = onnx2torch.convert(model)
        except ResourceLimitError:  # a body's folding ran past the budget: that is the answer, not the converter
            raise
        except Exception as exc:  # noqa: BLE001 - find which node's converter failed and name it
            raise _conversion_error(model, label, exc) from exc
    finally:
        CONVERTING.reset(token)
    _one_result_per_graph_output(module, model)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _one_result_per_graph_output(module: torch.fx.GraphModule, model: onnx.ModelProto) -> None:
    """Make the GraphModule return exactly the graph's outputs, in order.

    onnx2torch returns one result per *node* that produces graph outputs, so a graph output taken
    from a multi-output node (Split, LayerNormalization, Attention, ...) comes back as the node's
    whole tuple, and two outputs of one node collapse into one. Rewire the fx output to pick each
    graph output by index.
    """
    graph = OnnxGraph(model.graph)
    if not any(len(graph.value_as_node_output(v)[0].output_values) > 1
               for v in graph.output_values if graph.value_type(v).name == "NODE_OUTPUT"):
        return
    by_target = {n.target: n for n in module.graph.nodes if n.op == "call_module"}
    output = next(n for n in module.graph.nodes if n.op == "output")
    results = []
    with module.graph.inserting_before(output):
        for value in graph.output_values:
            onnx_node, index = graph.value_as_node_output(value)
            fx_node = by_target[onnx_node.unique_name]
            if len(onnx_node.output_values) > 1:
                fx_node = module.graph.call_function(operator.getitem, (fx_node, index))
            results.append(fx_node)
    output.args = (results[0] if len(results) == 1 else tuple(results),)
    module.graph.lint()
    module.recompile()


def _conversion_error(model: onnx.ModelProto, label: str, exc: Exception) -> OnnxxaiError:
    """The error for a failed ``onnx2torch.convert`` (the caller chains ``exc`` as its cause): an
    UnsupportedOpError naming the first node whose converter fails when re-tried on its own, else a
    ConversionError, which also says so when the graph could not even be re-read for that search."""
    failed = f"{label}: conversion to torch failed ({exc.__class__.__name__}: {exc})"
    try:
        graph = OnnxGraph(model.graph)
    except Exception as graph_exc:  # noqa: BLE001 - onnx2torch's graph reader raises anything; reported below
        return ConversionError(f"{failed}; no node could be re-tried to find the failing one, since the graph "
                               f"cannot be re-read ({graph_exc.__class__.__name__}: {graph_exc})")
    for onnx_node in graph.nodes.values():
        domain, version = _opset_of(onnx_node.domain, model)
        try:
            get_converter(operation_type=onnx_node.operation_type, version=version, domain=domain)(onnx_node, graph)
        except Exception as node_exc:  # noqa: BLE001 - converters raise anything; this is the answer sought
            missing = _missing_value_info(onnx_node, node_exc)
            if missing is not None:
                return _shape_error(model, label, onnx_node, missing, node_exc)
            return UnsupportedOpError(
                onnx_node.operation_type, onnx_node.domain, version, onnx_node.name,
                f"{label}: the converter failed ({node_exc.__class__.__name__}: {node_exc})",
            )
    return ConversionError(f"{failed}; every node's converter succeeds when re-tried on its own")


def _missing_value_info(onnx_node, exc: Exception) -> str | None:
    """The tensor a converter looked up and found no shape or type for (onnx2torch's converters read
    ``graph.value_info[name]``, filled by ONNX shape inference): a KeyError naming one of the node's
    inputs or outputs; None for any other failure."""
    if not isinstance(exc, KeyError) or not exc.args:
        return None
    name = exc.args[0]
    values = set(onnx_node.input_values) | set(onnx_node.output_values)
    return name if isinstance(name, str) and name in values else None


def _shape_error(model: onnx.ModelProto, label: str, onnx_node, tensor: str, exc: Exception) -> ConversionError:
    """A ConversionError naming the node ONNX shape inference stops at (the cause: the tensors after
    it have no inferred shape) and the node whose converter needed the shape of ``tensor``."""
    needing = f"{onnx_node.operation_type} node {onnx_node.name!r}"
    failure = locate.shape_inference_failure(model)
    if failure is None:
        return ConversionError(
            f"{label}: {needing}: its converter needs the shape of {tensor!r}, which ONNX shape inference "
            f"does not give ({exc.__class__.__name__}: {exc}); declare it in the graph's value_info or re-export")
    at = failure.node.label
    after = "" if failure.node.node.name == onnx_node.name else f"; {needing} needs the shape of {tensor!r}, which is not known past it"
    return ConversionError(f"{label}: {at}: ONNX shape inference fails there ({failure.message}){after}; "
                           "the node's attributes or inputs do not fit its operator (a damaged or hand-edited file?)")
