"""Read an ONNX model safely: decode, refuse tensors over the memory budget or with truncated data,
confine external data to the model's folder, run the checker, refuse nodes that would allocate more
than the memory budget (:mod:`onnxxai.proto.limits`)."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from onnxxai.errors import ExternalDataError, ModelFileError
from onnxxai.proto import limits, locate

__all__ = ["read_model"]


def read_model(source: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Return a checked copy of the model and a short description of where it came from.

    A path is decoded without following external data first; every external location is then
    checked to lie inside the model's own folder (no absolute paths, no ``..`` escapes, no
    symlinks pointing out) and to exist, and only then loaded. A ModelProto is copied so
    that nothing we do later touches the caller's object.
    """
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        label = f"<ModelProto {model.graph.name or 'unnamed'}>"
        if any(external_data_helper.uses_external_data(t) for t in _all_tensors(model)):
            raise ExternalDataError(
                f"{label}: the ModelProto refers to external data; pass the file path instead so the "
                "data can be read from the model's folder"
            )
        limits.check_tensors(model, label)
    else:
        path = Path(source)
        label = str(path)
        if not path.is_file():
            raise ModelFileError(f"{label}: no such file")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise ModelFileError(f"{label}: not a readable ONNX model ({exc.__class__.__name__}: {exc})") from exc
        limits.check_tensors(model, label)  # declared sizes and truncated data, before external data is read
        _load_confined_external_data(model, path, label)
    if not model.graph.node:
        raise ModelFileError(f"{label}: the graph has no nodes (empty or not an ONNX model)")
    try:
        if model.ByteSize() > onnx.checker.MAXIMUM_PROTOBUF and not isinstance(source, onnx.ModelProto):
            onnx.checker.check_model(str(source))  # protobuf cannot serialize > 2 GB: check the file
        else:
            onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        text = str(exc)
        where = locate.checker_location(model, text)  # the node first: the checker prints it on later lines
        where = f" at {where}" if where else ""
        raise ModelFileError(f"{label}: fails the ONNX checker{where}: {locate.one_line(text) or exc.__class__.__name__}") from exc
    _check_value_types(model, label)
    limits.check_allocations(model, label, _probe_dims(model))
    return model, label


def _check_value_types(model: onnx.ModelProto, label: str) -> None:
    """ModelFileError naming a graph input or output whose element type ONNX does not define."""
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for value in values:
            elem = value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else 0
            if elem and elem not in _KNOWN_TYPES:
                raise ModelFileError(f"{label}: graph {kind} {value.name!r} has element type {elem}, which ONNX does not define")


#: element types this onnx knows a numpy type for
_KNOWN_TYPES = frozenset(onnx.mapping.TENSOR_TYPE_MAP) if hasattr(onnx, "mapping") else frozenset(
    t for t in onnx.TensorProto.DataType.values() if t)


def _probe_dims(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """The shapes probes give the graph's inputs (:func:`onnxxai.proto.specs.probe_shape`)."""
    from onnxxai.proto.specs import graph_input_specs, probe_shape

    return {s.name: probe_shape(s) for s in graph_input_specs(model)}


def _all_tensors(model: onnx.ModelProto):
    yield from external_data_helper._get_all_tensors(model)  # noqa: SLF001 (walks subgraphs and attributes too)


def _load_confined_external_data(model: onnx.ModelProto, path: Path, label: str) -> None:
    base = path.resolve().parent
    for tensor in _all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        if not location:
            raise ExternalDataError(f"{label}: tensor {tensor.name!r} uses external data but names no location")
        if os.path.isabs(location) or Path(location).drive:
            raise ExternalDataError(
                f"{label}: tensor {tensor.name!r} reads external data from absolute path {location!r}; "
                "only files inside the model's folder are read"
            )
        target = (base / location).resolve()
        if os.path.commonpath([base, target]) != str(base):
            raise ExternalDataError(
                f"{label}: tensor {tensor.name!r} reads external data from {location!r}, which escapes the "
                f"model's folder {base}; only files inside it are read"
            )
        if not target.is_file():
            raise ExternalDataError(
                f"{label}: external data file {location!r} for tensor {tensor.name!r} is missing "
                f"(looked in {base}); keep it beside the model"
            )
        offset, length = int(info.get("offset", 0) or 0), info.get("length")
        size = target.stat().st_size
        if length is not None and offset + int(length) > size:
            raise ExternalDataError(
                f"{label}: external data for tensor {tensor.name!r} needs bytes {offset}..{offset + int(length)} "
                f"of {location!r}, which has only {size} (truncated?)"
            )
    try:
        external_data_helper.load_external_data_for_model(model, str(base))
    except (OSError, ValueError) as exc:
        raise ExternalDataError(f"{label}: cannot read external data: {exc}") from exc
