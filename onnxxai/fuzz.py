"""Mutation fuzzing of :func:`onnxxai.load`: untrusted files must end in a verified load or a specific
named error, in bounded time and memory.

A *mutant* is a corpus model changed by one mutation (:data:`MUTATIONS`): byte-level ones
(truncation, byte flips) and structure-aware ones (op types, attributes, shapes, dtypes, opset
imports, subgraphs, external data, metadata, huge constants, a Loop of 2^62 trips, cycles, ...).
:func:`run_mutant` loads one in a child process forked from a clean fork server, with an address-space
limit (``RLIMIT_AS``) set in the child and a wall-clock limit enforced by the parent, and
classifies the outcome (:data:`OUTCOMES`):

* ``parity``: loaded, parity with onnxruntime verified;
* ``named``: a specific onnxxai error (a subclass of OnnxxaiError) whose message names the file;
* ``unnamed``: an onnxxai error that does not name the file, or the bare base class (a catch-all);
* ``generic``: an error whose message is a generic "internal error" wrapper;
* ``foreign``: any other exception (a traceback a user would see);
* ``crash``: the child died (signal, abort, out-of-memory kill) without a result;
* ``hang``: the child ran past the wall-clock limit and was killed.

Only ``parity`` and ``named`` are good outcomes. ``scripts/fuzz.py`` runs thousands of mutants;
``tests/test_untrusted.py`` a small seeded sample.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["MUTATIONS", "OUTCOMES", "GOOD", "Outcome", "mutate", "run_mutant", "loop_model", "huge_constant_model"]

OUTCOMES = ("parity", "named", "unnamed", "generic", "foreign", "crash", "hang")
GOOD = ("parity", "named")


# -- seeds that exercise the limits directly ---------------------------------------------------------
def loop_model(trips: int = 2**62, name: str = "spin", batch: int | str = 1) -> onnx.ModelProto:
    """``y = x + trips`` (x of shape (batch, 4)) computed by a Loop whose condition stays true: runs
    ``trips`` iterations."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
         helper.make_node("Add", ["x_in", "one"], ["x_out"], name="step")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "c", "x"], ["y"], body=body, name=name)], "loop",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor("M", TensorProto.INT64, [], [trips]), helper.make_tensor("c", TensorProto.BOOL, [], [True])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def huge_constant_model(elements: int = 10**12, kind: str = "ConstantOfShape") -> onnx.ModelProto:
    """``y = x + c`` with ``c`` a constant of ``elements`` float32 elements: a ConstantOfShape node
    (``kind="ConstantOfShape"``) or an initializer declaring the dims with no data (``"initializer"``)."""
    side = int(round(elements ** 0.5))
    dims = [side, elements // side]
    nodes = [helper.make_node("Add", ["x", "c"], ["y"], name="add")]
    inits = []
    if kind == "ConstantOfShape":
        inits.append(numpy_helper.from_array(np.array(dims, dtype=np.int64), "shape"))
        nodes.insert(0, helper.make_node("ConstantOfShape", ["shape"], ["c"], name="fill",
                                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])))
    else:
        t = TensorProto(name="c", data_type=TensorProto.FLOAT, dims=dims)
        t.raw_data = b"\0" * 16
        inits.append(t)
    graph = helper.make_graph(nodes, "huge", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, dims[1]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["h", "w"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# -- mutations -----------------------------------------------------------------------------------------
@dataclass
class Mutant:
    """A mutated file's bytes (or model), extra files beside it, and the node the mutation aimed at."""

    data: bytes
    node: str = ""
    extra: dict[str, bytes] | None = None
    note: str = ""


Mutation = Callable[[onnx.ModelProto, bytes, np.random.Generator], Mutant]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _pick(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))] if len(items) else None


def _done(model: onnx.ModelProto, node: str = "", note: str = "", extra: dict[str, bytes] | None = None) -> Mutant:
    return Mutant(model.SerializeToString(), node, extra, note)


def _first_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    inits = {t.name for t in model.graph.initializer}
    return next(v for v in model.graph.input if v.name not in inits)


def m_truncate(model, data, rng):
    cut = int(rng.integers(0, max(len(data), 1)))
    return Mutant(data[:cut], note=f"cut at {cut} of {len(data)}")


def m_byte_flip(model, data, rng):
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(len(buf)))
        buf[i] = int(rng.integers(256))
    return Mutant(bytes(buf), note="bytes flipped")


def m_bad_op_type(model, data, rng):
    m = _copy(model)
    node = _pick(rng, m.graph.node)
    node.op_type = _pick(rng, ["NoSuchOp", "", "conv", "Loop", "If", "Scan", "Constant", "com.x.Op", "Relu6"])
    if rng.random() < 0.3:
        node.domain = _pick(rng, ["com.unknown", "ai.onnx.ml", "com.microsoft", "ai.onnx"])
    return _done(m, node.name)


def m_drop_initializer(model, data, rng):
    m = _copy(model)
    if not m.graph.initializer:
        return m_drop_node(model, data, rng)
    k = int(rng.integers(len(m.graph.initializer)))
    name = m.graph.initializer[k].name
    del m.graph.initializer[k]
    return _done(m, note=f"dropped initializer {name}")


def m_drop_node(model, data, rng):
    m = _copy(model)
    k = int(rng.integers(len(m.graph.node)))
    name = m.graph.node[k].name
    del m.graph.node[k]
    return _done(m, note=f"dropped node {name}")


def m_bad_input_dims(model, data, rng):
    m = _copy(model)
    value = _first_input(m)
    shape = value.type.tensor_type.shape
    choice = rng.integers(5)
    if choice == 0 and len(shape.dim):
        shape.dim[int(rng.integers(len(shape.dim)))].dim_value = int(_pick(rng, [0, 10**9, 2**40, 7, 1]))
    elif choice == 1:
        for d in shape.dim:
            d.Clear()
            d.dim_value = 100000
    elif choice == 2:
        shape.dim.add().dim_value = 3  # one rank more
    elif choice == 3 and len(shape.dim):
        del shape.dim[-1]  # one rank less
    else:
        value.type.tensor_type.ClearField("shape")
    return _done(m, note=f"input {value.name} dims")


def _externalize(model: onnx.ModelProto, rng: np.random.Generator) -> tuple[onnx.ModelProto, onnx.TensorProto | None]:
    m = _copy(model)
    inits = [t for t in m.graph.initializer if t.HasField("raw_data") or t.float_data]
    t = _pick(rng, inits)
    if t is None:
        return m, None
    raw = numpy_helper.to_array(t).tobytes()
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    t.external_data.add(key="location", value="weights.bin")
    t.external_data.add(key="length", value=str(len(raw)))
    return m, t


def m_external_traversal(model, data, rng):
    m, t = _externalize(model, rng)
    if t is None:
        return m_huge_constant(model, data, rng)
    t.external_data[0].value = _pick(rng, ["../../../../etc/passwd", "/etc/passwd", "sub/../../outside.bin",
                                           "..\\..\\windows\\system.ini", "link.bin", "weights.bin/../../x"])
    extra = {}
    if t.external_data[0].value == "link.bin":
        extra["link.bin"] = b"@symlink:/etc/hostname"
    return _done(m, note=f"external {t.external_data[0].value}", extra=extra)


def m_external_data(model, data, rng):
    m, t = _externalize(model, rng)
    if t is None:
        return m_raw_data_short(model, data, rng)
    length = int(t.external_data[1].value)
    case = int(rng.integers(5))
    extra: dict[str, bytes] = {"weights.bin": b"\0" * length}
    if case == 0:
        extra = {}  # the file is missing
    elif case == 1:
        extra["weights.bin"] = b"\0" * (length // 2)  # too short
    elif case == 2:
        t.external_data.add(key="offset", value=str(10**12))
    elif case == 3:
        t.external_data[1].value = str(length * 1000)
    else:
        t.external_data[0].value = ""
    return _done(m, note=f"external data case {case}", extra=extra)


def m_huge_constant(model, data, rng):
    m = _copy(model)
    inp = _first_input(m)
    elements = int(_pick(rng, [10**12, 10**10, 2**62 // 4, 10**15]))
    side = int(elements ** 0.5)
    dims = [side, max(elements // side, 1)]
    kind = int(rng.integers(4))
    out = "fuzz_huge"
    if kind == 0:
        m.graph.initializer.append(numpy_helper.from_array(np.array(dims, np.int64), "fuzz_shape"))
        m.graph.node.append(helper.make_node("ConstantOfShape", ["fuzz_shape"], [out], name="fuzz_fill"))
    elif kind == 1:
        t = TensorProto(name=out, data_type=TensorProto.FLOAT, dims=dims)
        m.graph.initializer.append(t)
        m.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, ["h", "w"]))
        return _done(m, note="declared huge initializer")
    elif kind == 2:
        m.graph.initializer.append(numpy_helper.from_array(np.array([1.0], np.float32), "fuzz_one"))
        m.graph.initializer.append(numpy_helper.from_array(np.array(dims, np.int64), "fuzz_shape"))
        m.graph.node.append(helper.make_node("Expand", ["fuzz_one", "fuzz_shape"], [out], name="fuzz_expand"))
    else:
        m.graph.initializer.extend([numpy_helper.from_array(np.array(v, np.float32), n)
                                    for n, v in (("fuzz_start", 0.0), ("fuzz_limit", float(elements)), ("fuzz_delta", 1.0))])
        m.graph.node.append(helper.make_node("Range", ["fuzz_start", "fuzz_limit", "fuzz_delta"], [out], name="fuzz_range"))
    m.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, ["n"] if kind == 3 else ["h", "w"]))
    return _done(m, m.graph.node[-1].name)


def m_loop(model, data, rng):
    """A Loop of 2^62 trips whose condition stays true, reading a graph input, as an extra output."""
    m = _copy(model)
    inp = _first_input(m)
    elem = inp.type.tensor_type.elem_type or TensorProto.FLOAT
    carried_in, carried_out = onnx.ValueInfoProto(), onnx.ValueInfoProto()
    carried_in.CopyFrom(inp)
    carried_in.name = "fz_v"
    carried_out.CopyFrom(inp)
    carried_out.name = "fz_v_out"
    body = helper.make_graph(
        [helper.make_node("Identity", ["fz_c"], ["fz_c_out"], name="fuzz_keep"),
         helper.make_node("Identity", ["fz_v"], ["fz_v_out"], name="fuzz_carry")],
        "fuzz_body",
        [helper.make_tensor_value_info("fz_i", TensorProto.INT64, []), helper.make_tensor_value_info("fz_c", TensorProto.BOOL, []),
         carried_in],
        [helper.make_tensor_value_info("fz_c_out", TensorProto.BOOL, []), carried_out])
    m.graph.initializer.extend([helper.make_tensor("fuzz_M", TensorProto.INT64, [], [2**62]),
                                helper.make_tensor("fuzz_cond", TensorProto.BOOL, [], [True])])
    m.graph.node.append(helper.make_node("Loop", ["fuzz_M", "fuzz_cond", inp.name], ["fuzz_loop_out"], body=body, name="fuzz_loop"))
    out = m.graph.output.add()
    out.CopyFrom(carried_out)
    out.name = "fuzz_loop_out"
    return _done(m, "fuzz_loop")


def m_cycle(model, data, rng):
    m = _copy(model)
    nodes = [n for n in m.graph.node if n.input]
    if len(nodes) < 2:
        return m_bad_op_type(model, data, rng)
    i, j = sorted(int(x) for x in rng.choice(len(nodes), 2, replace=False))
    early, late = nodes[i], nodes[j]
    early.input[0] = late.output[0]
    return _done(m, early.name, note=f"{early.name} reads {late.name}")


def m_node_order(model, data, rng):
    m = _copy(model)
    nodes = list(m.graph.node)
    rng.shuffle(nodes)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return _done(m, note="nodes shuffled")


_NONSENSE = [0, -1, -(2**62), 2**62, 10**9, 99, 3]


def m_nonsense_attribute(model, data, rng):
    m = _copy(model)
    node = _pick(rng, m.graph.node)
    name = _pick(rng, ["axis", "axes", "kernel_shape", "strides", "pads", "dilations", "group", "perm", "to", "mode",
                       "epsilon", "alpha", "keepdims", "transB", "auto_pad", "value", "body", "noop_with_empty_axes"])
    kind = int(rng.integers(6))
    if kind == 0:
        attr = helper.make_attribute(name, int(_pick(rng, _NONSENSE)))
    elif kind == 1:
        attr = helper.make_attribute(name, [int(_pick(rng, _NONSENSE)) for _ in range(int(rng.integers(0, 9)))] or [0])
    elif kind == 2:
        attr = helper.make_attribute(name, float(_pick(rng, [float("nan"), float("inf"), -1e30, 0.0])))
    elif kind == 3:
        attr = helper.make_attribute(name, _pick(rng, ["", "NOPE", "SAME_UPPER", "\x00\xff"]))
    elif kind == 4:
        attr = helper.make_attribute(name, helper.make_tensor("t", TensorProto.FLOAT, [2, 2], [1.0] * 4))
    else:
        attr = helper.make_attribute(name, helper.make_graph([], "empty", [], []))
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    node.attribute.append(attr)
    return _done(m, node.name, note=f"{name}")


def m_attribute_value(model, data, rng):
    """Structure-aware: change the value of an attribute the node already has (same type)."""
    m = _copy(model)
    candidates = [(n, a) for n in m.graph.node for a in n.attribute]
    if not candidates:
        return m_nonsense_attribute(model, data, rng)
    node, attr = candidates[int(rng.integers(len(candidates)))]
    if attr.type == onnx.AttributeProto.INT:
        attr.i = int(_pick(rng, _NONSENSE + [attr.i + 1, -attr.i]))
    elif attr.type == onnx.AttributeProto.INTS:
        values = list(attr.ints)
        if values and rng.random() < 0.5:
            values[int(rng.integers(len(values)))] = int(_pick(rng, _NONSENSE))
        else:
            values = values[:-1] if values and rng.random() < 0.5 else values + [1]
        attr.ClearField("ints")
        attr.ints.extend(values)
    elif attr.type == onnx.AttributeProto.FLOAT:
        attr.f = float(_pick(rng, [float("nan"), -attr.f, 0.0, 1e30]))
    elif attr.type == onnx.AttributeProto.STRING:
        attr.s = _pick(rng, [b"", b"NOPE", attr.s[::-1]])
    elif attr.type == onnx.AttributeProto.TENSOR:
        attr.t.dims.append(3)
    elif attr.type == onnx.AttributeProto.GRAPH:
        return _done(_mutate_subgraph(m, attr.g, rng), node.name, note=f"body of {node.name}")
    else:
        attr.type = onnx.AttributeProto.INT
    return _done(m, node.name, note=f"{attr.name}")


def _mutate_subgraph(m: onnx.ModelProto, g: onnx.GraphProto, rng: np.random.Generator) -> onnx.ModelProto:
    case = int(rng.integers(4))
    if case == 0 and g.node:
        g.node[int(rng.integers(len(g.node)))].op_type = "NoSuchOp"
    elif case == 1 and g.output:
        del g.output[-1]
    elif case == 2 and g.input:
        g.input.add().CopyFrom(g.input[0])
    elif g.node:
        g.node[int(rng.integers(len(g.node)))].input.append("fuzz_not_defined")
    return m


def m_subgraph(model, data, rng):
    """Structure-aware: mutate a Loop/If/Scan body, or add a nested If when the model has none."""
    m = _copy(model)
    bodies = [(n, a) for n in m.graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    if not bodies:
        return m_nested_if(model, data, rng)
    node, attr = bodies[int(rng.integers(len(bodies)))]
    return _done(_mutate_subgraph(m, attr.g, rng), node.name, note=f"{attr.name} of {node.name}")


def m_nested_if(model, data, rng):
    m = _copy(model)
    depth = int(rng.integers(1, 17))  # both branches hold the level below: 2^depth nodes in all
    value = helper.make_tensor("fz_leaf", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph([helper.make_node("Constant", [], ["fz_out0"], value=value, name="fz_leaf")], "leaf", [],
                              [helper.make_tensor_value_info("fz_out0", TensorProto.FLOAT, [1])])
    for k in range(1, depth + 1):
        node = helper.make_node("If", ["fuzz_if_cond"], [f"fz_out{k}"], then_branch=graph, else_branch=graph, name=f"fz_if{k}")
        graph = helper.make_graph([node], f"level{k}", [], [helper.make_tensor_value_info(f"fz_out{k}", TensorProto.FLOAT, [1])])
    cond = _first_input(m)
    m.graph.node.append(helper.make_node("ReduceSum", [cond.name], ["fuzz_sum"], keepdims=0, name="fuzz_sum"))
    m.graph.node.append(helper.make_node("Cast", ["fuzz_sum"], ["fuzz_if_cond"], to=TensorProto.BOOL, name="fuzz_cond"))
    m.graph.node.extend(graph.node)
    m.graph.output.append(helper.make_tensor_value_info(f"fz_out{depth}", TensorProto.FLOAT, [1]))
    return _done(m, f"fz_if{depth}", note=f"If nested {depth} deep")


def m_bad_opset(model, data, rng):
    m = _copy(model)
    case = int(rng.integers(5))
    if case == 0:
        for o in m.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = int(_pick(rng, [0, 1, 6, 99, 10000, -1]))
    elif case == 1:
        del m.opset_import[:]
    elif case == 2:
        m.opset_import.add(domain="", version=3)  # a second default domain
    elif case == 3:
        m.opset_import.add(domain="ai.onnx.ml", version=99)
    else:
        m.ir_version = int(_pick(rng, [0, 1, 3, 99, -5]))
    return _done(m, note=f"opset case {case}")


def m_raw_data_short(model, data, rng):
    m = _copy(model)
    inits = [t for t in m.graph.initializer if t.HasField("raw_data") and len(t.raw_data) > 1]
    t = _pick(rng, inits)
    if t is None:
        return m_dtype(model, data, rng)
    t.raw_data = t.raw_data[: int(rng.integers(len(t.raw_data)))]
    return _done(m, note=f"raw data of {t.name} shortened")


def m_dtype(model, data, rng):
    """Structure-aware: change an initializer's or the input's element type."""
    m = _copy(model)
    types = [TensorProto.FLOAT16, TensorProto.INT8, TensorProto.STRING, TensorProto.BOOL, TensorProto.DOUBLE,
             TensorProto.COMPLEX64, TensorProto.UNDEFINED, 999, TensorProto.INT4, TensorProto.FLOAT8E4M3FN]
    if m.graph.initializer and rng.random() < 0.6:
        t = m.graph.initializer[int(rng.integers(len(m.graph.initializer)))]
        t.data_type = int(_pick(rng, types))
        return _done(m, note=f"initializer {t.name} type {t.data_type}")
    v = _first_input(m)
    v.type.tensor_type.elem_type = int(_pick(rng, types))
    return _done(m, note=f"input {v.name} type")


def m_shape_values(model, data, rng):
    """Structure-aware: change an int64 constant (Reshape targets, axes, pads, slices)."""
    m = _copy(model)
    ints = [t for t in m.graph.initializer if t.data_type == TensorProto.INT64 and 0 < np.prod(t.dims or [1]) <= 16]
    t = _pick(rng, ints)
    if t is None:
        return m_attribute_value(model, data, rng)
    a = numpy_helper.to_array(t).copy()
    flat = a.reshape(-1)
    flat[int(rng.integers(flat.size))] = int(_pick(rng, [0, -1, -7, 10**6, 2**40, 3]))
    t.CopyFrom(numpy_helper.from_array(a, t.name))
    return _done(m, note=f"int constant {t.name}")


def m_outputs(model, data, rng):
    """Structure-aware: graph outputs renamed, duplicated, dropped or given a wrong type."""
    m = _copy(model)
    case = int(rng.integers(4))
    if case == 0:
        m.graph.output[0].name = "fuzz_not_produced"
    elif case == 1:
        m.graph.output.add().CopyFrom(m.graph.output[0])
    elif case == 2:
        del m.graph.output[:]
    else:
        m.graph.output[0].type.tensor_type.elem_type = TensorProto.INT64
    return _done(m, note=f"outputs case {case}")


def m_metadata(model, data, rng):
    m = _copy(model)
    m.doc_string = "\x00" * int(rng.integers(1, 10**5))
    m.producer_name = "\udcff".encode("utf-8", "surrogatepass").decode("utf-8", "replace") * 3
    m.model_version = int(_pick(rng, [-1, 2**62]))
    for k in range(int(rng.integers(1, 50))):
        m.metadata_props.add(key=f"k{k}", value="v" * int(rng.integers(0, 1000)))
    if rng.random() < 0.5:
        m.graph.name = ""
    return _done(m, note="metadata")


def m_input_type(model, data, rng):
    """Structure-aware: the input becomes a sequence, a map, an optional, or has no type at all."""
    m = _copy(model)
    v = _first_input(m)
    case = int(rng.integers(3))
    if case == 0:
        v.type.CopyFrom(helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, None)))
    elif case == 1:
        v.type.CopyFrom(helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, None)))
    else:
        v.ClearField("type")
    return _done(m, note=f"input type case {case}")


#: name -> mutation (model, its bytes, rng) -> Mutant
MUTATIONS: dict[str, Mutation] = {
    "truncate": m_truncate, "byte_flip": m_byte_flip, "bad_op_type": m_bad_op_type, "drop_initializer": m_drop_initializer,
    "drop_node": m_drop_node, "bad_input_dims": m_bad_input_dims, "external_traversal": m_external_traversal,
    "external_data": m_external_data, "huge_constant": m_huge_constant, "loop_2_62": m_loop, "cycle": m_cycle,
    "node_order": m_node_order, "nonsense_attribute": m_nonsense_attribute, "attribute_value": m_attribute_value,
    "bad_opset": m_bad_opset, "raw_data_short": m_raw_data_short, "nested_if": m_nested_if, "subgraph": m_subgraph,
    "dtype": m_dtype, "shape_values": m_shape_values, "outputs": m_outputs, "metadata": m_metadata,
    "input_type": m_input_type,
}


def mutate(seed: Path, mutation: str, rng: np.random.Generator, folder: Path) -> tuple[Path, Mutant]:
    """Write the mutant of ``seed`` by ``mutation`` as ``folder/model.onnx`` (plus its extra files)."""
    data = seed.read_bytes()
    model = onnx.load_from_string(data)
    onnx.external_data_helper.load_external_data_for_model(model, str(seed.parent))
    data = model.SerializeToString()
    mutant = MUTATIONS[mutation](model, data, rng)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(mutant.data)
    for name, content in (mutant.extra or {}).items():
        if content.startswith(b"@symlink:"):
            os.symlink(content[len(b"@symlink:"):].decode(), folder / name)
        else:
            (folder / name).write_bytes(content)
    return path, mutant


# -- running ------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """How loading one mutant ended."""

    outcome: str
    error: str = ""
    message: str = ""
    seconds: float = 0.0
    peak_mb: float = 0.0
    names_node: bool | None = None

    def to_dict(self) -> dict:
        return asdict(self)


_GENERIC = ("internal error", "unexpected error", "something went wrong")


def classify(exc: BaseException | None, path: str, node: str = "") -> tuple[str, bool | None]:
    """The outcome class of an exception raised by ``load(path)`` (None: loaded) and whether the
    message names ``node`` (None when no node is aimed at)."""
    from onnxxai.errors import OnnxxaiError

    if exc is None:
        return "parity", None
    message = str(exc)
    names = (node in message) if node else None
    if not isinstance(exc, OnnxxaiError):
        return "foreign", names
    if any(g in message.lower() for g in _GENERIC):
        return "generic", names
    if type(exc) is OnnxxaiError or path not in message:
        return "unnamed", names
    return "named", names


def _child(path: str, node: str, timeout: float, memory: int, conn) -> None:
    import resource

    soft = memory
    try:
        with open("/proc/self/statm") as f:
            soft += int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (soft, soft))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError):
        pass
    import torch

    torch.set_num_threads(1)
    from onnxxai.model import load

    start = time.perf_counter()
    exc: BaseException | None = None
    try:
        model = load(path, timeout=timeout)
        if not model.parity.ok:  # strict load: cannot happen, kept as a guard
            raise AssertionError("strict load returned a failing parity report")
    except BaseException as caught:  # noqa: BLE001 - every outcome is classified by the parent's rules
        exc = caught
    seconds = time.perf_counter() - start
    outcome, names = classify(exc, path, node)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    conn.send(Outcome(outcome, type(exc).__name__ if exc else "", str(exc)[:500] if exc else "", seconds, peak, names).to_dict())
    conn.close()


_CONTEXT = None


def _context():
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["onnxxai.model", "onnxxai.fuzz", "torch", "onnxruntime"])
    return _CONTEXT


def run_mutant(path: Path, *, node: str = "", timeout: float = 10.0, memory: int = 4 * 2**30,
               wall: float | None = None) -> Outcome:
    """Load ``path`` in a child process (forked from a clean fork server) with ``memory`` bytes of
    address space beyond what its imports take and ``timeout`` seconds for :func:`onnxxai.load`; the
    parent kills it after ``wall`` seconds (default: timeout + 30) and reports a hang."""
    ctx = _context()
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(str(path), node, timeout, memory, send), daemon=True)
    start = time.perf_counter()
    process.start()
    send.close()
    limit = wall if wall is not None else timeout + 30
    result = None
    if receive.poll(limit):
        try:
            result = receive.recv()
        except EOFError:
            result = None
    process.join(5 if result is not None else 0.1)
    elapsed = time.perf_counter() - start
    if process.is_alive():
        process.kill()
        process.join()
        if result is None:
            return Outcome("hang", seconds=elapsed)
    if result is None:
        return Outcome("crash", error=f"exit code {process.exitcode}", seconds=elapsed)
    return Outcome(**result)


def fuzz(seeds: Sequence[Path], count: int, *, seed: int = 0, workdir: Path, timeout: float = 10.0,
         memory: int = 4 * 2**30, mutations: Sequence[str] | None = None,
         report: Callable[[int, str, str, Outcome], None] | None = None) -> list[dict]:
    """``count`` mutants, mutations round-robin over seed models, their details from a seeded rng; each loaded
    by :func:`run_mutant`. Returns one record per mutant (seed, mutation, note, outcome fields)."""
    rng = np.random.default_rng(seed)
    names = list(mutations or MUTATIONS)
    records = []
    for k in range(count):
        mutation = names[k % len(names)]
        source = seeds[(k + k // len(names)) % len(seeds)]
        folder = workdir / f"m{k:05d}"
        try:
            path, mutant = mutate(source, mutation, rng, folder)
        except (ValueError, IndexError, StopIteration, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:
            records.append({"seed": source.name, "mutation": mutation, "note": f"not made: {exc}", "outcome": "skipped"})
            continue
        outcome = run_mutant(path, node=mutant.node, timeout=timeout, memory=memory)
        record = {"seed": source.name, "mutation": mutation, "note": mutant.note, "node": mutant.node, **outcome.to_dict()}
        records.append(record)
        if report is not None:
            report(k, source.name, mutation, outcome)
        shutil.rmtree(folder, ignore_errors=True)
    return records


def summarize(records: Sequence[dict]) -> dict:
    """Counts by outcome class (and by mutation), time per file and peak memory."""
    done = [r for r in records if r["outcome"] != "skipped"]
    by_outcome = {o: sum(r["outcome"] == o for r in done) for o in OUTCOMES}
    by_mutation: dict[str, dict[str, int]] = {}
    for r in done:
        by_mutation.setdefault(r["mutation"], {}).setdefault(r["outcome"], 0)
        by_mutation[r["mutation"]][r["outcome"]] += 1
    seconds = np.array([r["seconds"] for r in done]) if done else np.zeros(1)
    peaks = np.array([r["peak_mb"] for r in done if r.get("peak_mb")]) if done else np.zeros(1)
    aimed = [r for r in done if r["outcome"] == "named" and r.get("names_node") is not None]
    return {
        "mutants": len(done), "skipped": len(records) - len(done), "by_outcome": by_outcome,
        "bad": sum(v for k, v in by_outcome.items() if k not in GOOD), "by_mutation": by_mutation,
        "seconds_mean": float(seconds.mean()), "seconds_median": float(np.median(seconds)), "seconds_max": float(seconds.max()),
        "peak_mb_max": float(peaks.max()) if peaks.size else 0.0, "peak_mb_median": float(np.median(peaks)) if peaks.size else 0.0,
        "named_errors_naming_the_aimed_node": f"{sum(bool(r['names_node']) for r in aimed)} of {len(aimed)}",
    }


def dumps(summary: dict) -> str:
    return json.dumps(summary, indent=2)
