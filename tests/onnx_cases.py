"""The tests' one harness for small hand-built ONNX models: build a one-node (or few-node) model, run it
through onnxxai's conversion, compare with onnxruntime or ONNX's reference evaluator, and gradcheck
modules in float64.

    model = one_node("Gelu", {"x": randn(rng, 2, 7)}, opset=20)
    assert_matches(model, {"x": ...})                        # against onnxruntime
    assert_matches(model, feeds, reference="onnx")           # against onnx.reference.ReferenceEvaluator
    gradcheck(SomeModule(), (2, 3, 4))                       # float64 torch.autograd.gradcheck
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxxai.convert.pipeline import convert
from onnxxai.parity import run_onnxruntime
from onnxxai.testing import graph_outputs, to_numpy

#: A graph input: an array (typed from its dtype and shape), an (element type, shape) pair, a
#: ValueInfoProto, or None for an omitted optional input ("" in the node's inputs).
Input = Union[np.ndarray, "tuple[int, Any]", onnx.ValueInfoProto, None]
#: The references a converted graph is compared with.
REFERENCES = ("onnxruntime", "onnx")


def value_info(name: str, elem_type: int = TensorProto.FLOAT, shape: Sequence | None = None) -> onnx.ValueInfoProto:
    """A tensor value info (graph input or output; no shape when ``shape`` is None)."""
    return helper.make_tensor_value_info(name, elem_type, shape)


def _input(name: str, value: Input) -> onnx.ValueInfoProto:
    if isinstance(value, onnx.ValueInfoProto):
        return value
    if isinstance(value, tuple):
        return value_info(name, value[0], value[1])
    value = np.asarray(value)
    return value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)


def graph_model(nodes: Sequence[onnx.NodeProto], inputs: Sequence[onnx.ValueInfoProto], outputs: Sequence[onnx.ValueInfoProto],
                initializers: Sequence[onnx.TensorProto] = (), *, opset: int, domains: Mapping[str, int] | None = None,
                graph_name: str = "g") -> onnx.ModelProto:
    """A model of ``nodes`` at ONNX ``opset`` (plus the opset of every other domain in ``domains``)."""
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
    return helper.make_model(helper.make_graph(list(nodes), graph_name, list(inputs), list(outputs), list(initializers)),
                             opset_imports=opsets)


def one_node(op: str, inputs: Mapping[str, Input], n_outputs: int = 1, *, opset: int, attrs: Mapping[str, Any] | None = None,
             domain: str = "", domain_opset: int = 1, initializers: Mapping[str, Any] | None = None,
             node_inputs: Sequence[str] | None = None, output_type: int | Sequence[int] | None = None,
             outputs: Sequence[str] | None = None) -> onnx.ModelProto:
    """A model of one ``op`` node named ``the_<op>``: ``inputs`` are its graph inputs (None: an omitted
    optional input), ``initializers`` (name -> array) follow them; ``node_inputs`` overrides the node's
    input list. Outputs ``y0``, ``y1``, ... (or ``outputs``) are untyped unless ``output_type`` gives
    one element type for all or one per output (see also :func:`typed_outputs`)."""
    initializers = dict(initializers or {})
    names = list(node_inputs) if node_inputs is not None else [n if v is not None else "" for n, v in inputs.items()] + list(initializers)
    outs = list(outputs) if outputs is not None else [f"y{i}" for i in range(n_outputs)]
    types = output_type if isinstance(output_type, Sequence) else [output_type] * len(outs)
    node = helper.make_node(op, names, outs, name=f"the_{op.lower()}", domain=domain, **(attrs or {}))
    graph_inputs = [_input(n, v) for n, v in inputs.items() if v is not None]
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in initializers.items() if n]
    out_infos = [helper.make_empty_tensor_value_info(o) if t is None else value_info(o, t) for o, t in zip(outs, types)]
    return graph_model([node], graph_inputs, out_infos, inits, opset=opset, domains={domain: domain_opset} if domain else None)


def typed_outputs(model: onnx.ModelProto, results: Sequence[np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs carry the element type and shape of ``results``."""
    typed = onnx.ModelProto()
    typed.CopyFrom(model)
    for out, r in zip(typed.graph.output, results):
        out.CopyFrom(value_info(out.name, helper.np_dtype_to_tensor_dtype(r.dtype), r.shape))
    return typed


def reference_outputs(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], reference: str = "onnxruntime") -> list:
    """``model``'s outputs on ``feeds`` from onnxruntime (CPU) or ONNX's reference evaluator ("onnx")."""
    if reference == "onnxruntime":
        return run_onnxruntime(model, feeds, provider="CPUExecutionProvider")
    if reference == "onnx":
        return ReferenceEvaluator(model).run(None, dict(feeds))
    raise ValueError(f"reference must be one of {REFERENCES}, not {reference!r}")


def converted(model: onnx.ModelProto, label: str = "single_op") -> torch.fx.GraphModule:
    """``model`` converted by onnxxai (normalization, onnx2torch and onnxxai's converters)."""
    return convert(model, label)[2]


def _tensor(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, list):  # a tensor sequence
        return [_tensor(v) for v in value]
    return torch.from_numpy(np.require(np.asarray(value), requirements="C"))


def _numpy(value: Any) -> Any:
    return [_numpy(v) for v in value] if isinstance(value, (list, tuple)) else to_numpy(value)


def run_converted(model: onnx.ModelProto, feeds: Mapping[str, Any] | Sequence[Any], *, as_numpy: bool = True) -> list:
    """The converted graph's outputs (one per graph output; numpy unless ``as_numpy`` is False) on
    ``feeds``: a mapping by graph input name, or the values in graph-input order."""
    if isinstance(feeds, Mapping):
        constants = {t.name for t in model.graph.initializer}
        feeds = [feeds[i.name] for i in model.graph.input if i.name not in constants]
    module = converted(model)
    with torch.no_grad():
        out = module(*[_tensor(v) for v in feeds])
    outs = graph_outputs(out, model)
    return [_numpy(o) for o in outs] if as_numpy else outs


def assert_close(got: np.ndarray, want: np.ndarray, *, rtol: float = 1e-5, atol: float = 1e-5, check_dtype: bool = False,
                 in_float64: bool = False) -> None:
    """Equal shapes (and dtypes when ``check_dtype``) and values within rtol/atol (compared in float64
    when ``in_float64``)."""
    got, want = np.asarray(got), np.asarray(want)
    if check_dtype:
        assert got.dtype == want.dtype, (got.dtype, want.dtype, got.shape, want.shape)
    assert got.shape == want.shape, (got.dtype, want.dtype, got.shape, want.shape)
    if in_float64:
        got, want = got.astype(np.float64), want.astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def assert_matches(model: onnx.ModelProto, feeds: Mapping[str, Any], reference: str | Sequence[Any] = "onnxruntime", *,
                   rtol: float = 1e-5, atol: float = 1e-5, check_dtype: bool = False, in_float64: bool = False) -> list:
    """Convert ``model``, run it on ``feeds`` and compare every output with ``reference``: "onnxruntime",
    "onnx" (ONNX's reference evaluator) or the expected outputs themselves. Tensor sequences compare
    element by element. Returns the converted graph's outputs (numpy)."""
    want = reference_outputs(model, feeds, reference) if isinstance(reference, str) else list(reference)
    got = run_converted(model, feeds)
    assert len(got) == len(want), (len(got), len(want))
    for g, w in zip(got, want):
        if isinstance(w, list):
            assert isinstance(g, list) and len(g) == len(w), (type(g), len(w))
            for ge, we in zip(g, w):
                assert_close(ge, we, rtol=rtol, atol=atol, check_dtype=check_dtype, in_float64=in_float64)
        else:
            assert_close(g, w, rtol=rtol, atol=atol, check_dtype=check_dtype, in_float64=in_float64)
    return got


def typed_node(op: str, inputs: Mapping[str, Input], n_outputs: int = 1, *, reference: str = "onnxruntime",
               **kwargs: Any) -> tuple[onnx.ModelProto, list]:
    """:func:`one_node` with its outputs typed from the reference run on ``inputs`` (the arrays among
    them are the feeds); returns the model and the reference outputs."""
    model = one_node(op, inputs, n_outputs, **kwargs)
    want = reference_outputs(model, _feeds(inputs), reference)
    return typed_outputs(model, want), want


def check_node(op: str, inputs: Mapping[str, Input], n_outputs: int = 1, *, reference: str = "onnxruntime", typed: bool = False,
               rtol: float = 1e-5, atol: float = 1e-5, check_dtype: bool = False, in_float64: bool = False,
               **kwargs: Any) -> list:
    """Build :func:`one_node` (outputs typed from the reference run when ``typed``), feed it the arrays
    of ``inputs`` and :func:`assert_matches` it against ``reference``; returns the converted outputs."""
    if typed:
        model, want = typed_node(op, inputs, n_outputs, reference=reference, **kwargs)
    else:
        model = one_node(op, inputs, n_outputs, **kwargs)
        want = reference_outputs(model, _feeds(inputs), reference)
    return assert_matches(model, _feeds(inputs), want, rtol=rtol, atol=atol, check_dtype=check_dtype, in_float64=in_float64)


def _feeds(inputs: Mapping[str, Input]) -> dict[str, np.ndarray]:
    """The graph inputs given as arrays (not as types or value infos, not omitted)."""
    return {n: v for n, v in inputs.items() if v is not None and not isinstance(v, (tuple, onnx.ValueInfoProto))}


def randn(rng: np.random.Generator, *shape: int, dtype: Any = np.float32) -> np.ndarray:
    """Standard normal values of ``shape`` drawn from ``rng``, as ``dtype``."""
    return rng.standard_normal(shape).astype(dtype)


def double(*shape: int, seed: int | torch.Generator | None = None) -> torch.Tensor:
    """A float64 standard normal tensor that requires grad, drawn from torch's default generator, a
    generator seeded with ``seed``, or the generator ``seed`` itself."""
    generator = torch.Generator().manual_seed(seed) if isinstance(seed, int) else seed
    return torch.randn(*shape, dtype=torch.float64, generator=generator, requires_grad=True)


def gradcheck(fn: Callable[..., Any], *shapes: Sequence[int], constants: Sequence[Any] = (), seed: int | None = None) -> None:
    """``torch.autograd.gradcheck`` of ``fn(*inputs, *constants)`` in float64, one random input per shape
    (drawn in turn from one generator seeded with ``seed``, or from torch's default one)."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    inputs = tuple(double(*s, seed=generator) for s in shapes)
    assert torch.autograd.gradcheck(lambda *a: fn(*a, *constants), inputs)
