"""The one way onnxxai's converters enter onnx2torch's converter registry.

A family module declares each converter with the :func:`register` decorator; nothing reaches
onnx2torch's registry at import time. :func:`register_all` imports every family listed in
:data:`FAMILIES`, checks all declarations together and only then writes them, so the result does
not depend on which module was imported first.

Precedence, per registry key (domain, op type, opset version):

* ``register(op, versions)`` *adds* a converter where onnx2torch has none. Naming a version
  onnx2torch already converts is an error: say what should happen to its converter instead.
* ``register(op, versions, replaces=True)`` puts ours in place of onnx2torch's converter (and
  adds it for versions onnx2torch lacks).
* ``register(op, versions, extends=True)`` puts ``converter(node, graph, fallback)`` in front of
  onnx2torch's converter, which it receives as ``fallback`` for the cases it leaves alone.

At most one of our converters may claim a key (a second one is an error, as in onnx2torch's own
``add_converter``). :func:`overridden_upstream` lists every onnx2torch converter that is replaced
or extended. After our converters, :func:`register_all` aliases newer opset versions whose only
schema change is wider type support to the converter of the version before (see
:func:`type_only_aliases`).
"""

from __future__ import annotations

import functools
import importlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Union

from onnx import defs
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from onnxxai.errors import OnnxxaiError

__all__ = [
    "FAMILIES", "RegistrationError", "Since", "since", "register", "register_all", "Registered",
    "registered", "overridden_upstream", "type_only_aliases", "upstream_converter", "schema_versions",
]

#: Every converter family module of :mod:`onnxxai.convert`, imported by :func:`register_all`.
FAMILIES: tuple[str, ...] = (
    "activation", "arithmetic", "attention", "bitwise", "cast", "contrib_fused", "contrib_transformer",
    "control_flow", "conv", "detection",
    "indexing", "losses", "ml", "normalization", "pad", "pool", "qlinear", "quantize", "recurrent", "reduce",
    "sampling", "sequence", "shape", "signal", "split", "tensor_ops", "unary",
)

Mode = Literal["adds", "replaces", "extends"]


class RegistrationError(OnnxxaiError):
    """A converter declaration contradicts onnx2torch's registry or another of ours."""


@dataclass(frozen=True)
class Since:
    """Every schema version of an op from ``version`` on (read from onnx's schema history)."""

    version: int


def since(version: int) -> Since:
    """Versions spec for :func:`register`: every schema version of the op from ``version`` on.

    With a plain (adding) registration this means the versions onnx2torch has no converter for;
    with ``extends=True``, the versions it has; with ``replaces=True``, all of them.
    """
    return Since(int(version))


Versions = Union[Iterable[int], Since]


@dataclass(frozen=True)
class _Declaration:
    domain: str
    op: str
    versions: tuple[int, ...] | Since
    converter: Callable
    mode: Mode

    @property
    def origin(self) -> str:
        return f"{self.converter.__module__}.{self.converter.__qualname__}"


@dataclass(frozen=True)
class Registered:
    """One registry key holding a converter of ours: how it got there and what it overrode."""

    domain: str
    op: str
    version: int
    mode: Mode
    converter: str  #: module.qualname of our converter
    upstream: str | None  #: module.qualname of onnx2torch's converter replaced or extended, if any


_DECLARED: list[_Declaration] = []
_UPSTREAM: dict[OperationDescription, Callable] | None = None
_REGISTERED: tuple[Registered, ...] | None = None
_ALIASES: tuple[tuple[str, str, int, int], ...] = ()


def register(op: str, versions: Versions, *, domain: str = "", replaces: bool = False,
             extends: bool = False) -> Callable[[Callable], Callable]:
    """Declare the decorated function as the converter of ``op`` at ``versions``.

    ``versions`` is an iterable of opset versions or :func:`since` ``(n)``. ``replaces`` and
    ``extends`` declare what happens to onnx2torch's converter at those versions (see the module
    docstring). The function is returned unchanged; it reaches onnx2torch at :func:`register_all`.
    """
    if replaces and extends:
        raise RegistrationError(f"{op}: a converter either replaces or extends onnx2torch's, not both")
    if _REGISTERED is not None:
        raise RegistrationError(f"{op}: register_all() already ran; list the family module in registry.FAMILIES")
    mode: Mode = "replaces" if replaces else "extends" if extends else "adds"
    spec = versions if isinstance(versions, Since) else tuple(sorted(int(v) for v in versions))
    if not isinstance(spec, Since) and not spec:
        raise RegistrationError(f"{op}: no versions given")
    if isinstance(spec, Since) and domain:
        raise RegistrationError(f"{domain}::{op}: since() reads the default domain's schemas; list the versions")

    def decorate(converter: Callable) -> Callable:
        _DECLARED.append(_Declaration(domain, op, spec, converter, mode))
        return converter

    return decorate


def schema_versions(op_type: str, domain: str = "", since: int = 1) -> list[int]:  # noqa: A002 - reads as the spec says
    """Every opset version at which ``op_type``'s schema changed, from ``since`` on."""
    return sorted(v for v in _schema_history().get((domain, op_type), ()) if v >= since)


@functools.lru_cache(maxsize=1)
def _schema_history() -> dict[tuple[str, str], frozenset[int]]:
    """(domain, op type) -> the versions its schema changed at: onnx's schema list read once (it was
    read once per declaration, a third of a second of every process's first conversion)."""
    history: dict[tuple[str, str], set[int]] = defaultdict(set)
    for schema in defs.get_all_schemas_with_history():
        history[(schema.domain, schema.name)].add(schema.since_version)
    return {key: frozenset(versions) for key, versions in history.items()}


def _name(converter: Callable) -> str:
    return f"{converter.__module__}.{converter.__qualname__}"


def _resolve(decl: _Declaration, upstream: dict[OperationDescription, Callable]) -> list[int]:
    """The versions a declaration claims, checked against onnx2torch's own converters."""
    label = f"{decl.domain + '::' if decl.domain else ''}{decl.op} ({decl.origin})"
    has = {v for (d, o, v) in upstream if d == decl.domain and o == decl.op}
    if isinstance(decl.versions, Since):
        every = schema_versions(decl.op, since=decl.versions.version)
        chosen = {"adds": [v for v in every if v not in has], "extends": [v for v in every if v in has],
                  "replaces": every}[decl.mode]
        if not chosen:
            raise RegistrationError(f"{label}: since({decl.versions.version}) {decl.mode} no version")
        return chosen
    chosen = list(decl.versions)
    if decl.mode == "adds" and has & set(chosen):
        raise RegistrationError(f"{label}: onnx2torch already converts version(s) {sorted(has & set(chosen))}; "
                                "declare replaces=True or extends=True")
    if decl.mode == "extends" and set(chosen) - has:
        raise RegistrationError(f"{label}: onnx2torch has no converter to extend at version(s) {sorted(set(chosen) - has)}")
    if decl.mode == "replaces" and not has & set(chosen):
        raise RegistrationError(f"{label}: replaces=True but onnx2torch converts none of versions {chosen}")
    return chosen


def _extended(converter: Callable, fallback: Callable, version: int) -> Callable:
    def extended(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        return converter(node, graph, fallback)

    extended.__name__ = extended.__qualname__ = f"{converter.__name__}_v{version}"
    extended.__module__ = converter.__module__
    extended.__doc__ = converter.__doc__
    return extended


def register_all() -> None:
    """Import every family, check every declaration, then write them into onnx2torch's registry
    followed by the type-only version aliases (idempotent). RegistrationError on a conflict."""
    global _UPSTREAM, _REGISTERED, _ALIASES
    if _REGISTERED is not None:
        return
    for family in FAMILIES:
        importlib.import_module(f"onnxxai.convert.{family}")
    upstream = dict(_CONVERTER_REGISTRY)
    claims: dict[OperationDescription, _Declaration] = {}
    for decl in _DECLARED:
        for version in _resolve(decl, upstream):
            key = OperationDescription(domain=decl.domain, operation_type=decl.op, version=version)
            if key in claims:
                raise RegistrationError(f"{decl.domain + '::' if decl.domain else ''}{decl.op}-{version} is claimed twice: "
                                        f"by {claims[key].origin} and by {decl.origin}")
            claims[key] = decl
    entries = []
    for key in sorted(claims):
        decl = claims[key]
        before = upstream.get(key)
        converter = _extended(decl.converter, before, key.version) if decl.mode == "extends" else decl.converter
        _CONVERTER_REGISTRY[key] = converter
        mode: Mode = "adds" if before is None else decl.mode
        entries.append(Registered(key.domain, key.operation_type, key.version, mode, decl.origin,
                                  None if before is None else _name(before)))
    _UPSTREAM, _REGISTERED = upstream, tuple(entries)
    _ALIASES = tuple(_register_type_only_aliases())


def registered() -> tuple[Registered, ...]:
    """Every registry key holding one of our converters (after :func:`register_all`)."""
    register_all()
    assert _REGISTERED is not None
    return _REGISTERED


def overridden_upstream() -> list[Registered]:
    """Every onnx2torch converter that ours replace or extend, in key order."""
    return [r for r in registered() if r.upstream is not None]


def type_only_aliases() -> tuple[tuple[str, str, int, int], ...]:
    """(domain, op, new version, version whose converter it reuses) for every type-only alias."""
    register_all()
    return _ALIASES


def upstream_converter(op: str, version: int, domain: str = "") -> Callable:
    """onnx2torch's own converter for ``op``-``version`` (as it was before ours were registered)."""
    register_all()
    assert _UPSTREAM is not None
    return _UPSTREAM[OperationDescription(domain=domain, operation_type=op, version=version)]


def signature(schema: defs.OpSchema) -> tuple:
    """Inputs, outputs and attributes of a schema, without type constraints."""
    inputs = tuple((i.name, int(i.option)) for i in schema.inputs)
    outputs = tuple((o.name, int(o.option)) for o in schema.outputs)
    attrs = tuple(sorted((name, str(a.default_value), bool(a.required)) for name, a in schema.attributes.items()))
    return inputs, outputs, attrs


def _register_type_only_aliases() -> list[tuple[str, str, int, int]]:
    """Alias every registered (domain, op) to its newer versions whose schema differs only in type
    constraints (bf16, float8, int4, ...: no change to how a float32 graph computes), stopping at
    the first version with any other change; return (domain, op, new, from)."""
    versions_of: dict[tuple[str, str], set[int]] = defaultdict(set)
    for desc in _CONVERTER_REGISTRY:
        versions_of[(desc.domain, desc.operation_type)].add(desc.version)
    history: dict[tuple[str, str], dict[int, defs.OpSchema]] = defaultdict(dict)
    for schema in defs.get_all_schemas_with_history():
        history[(schema.domain, schema.name)][schema.since_version] = schema
    added = []
    for (domain, op), versions in versions_of.items():
        schemas = history.get((domain, op), {})
        for version in sorted(v for v in schemas if v > max(versions)):
            base = max(v for v in versions if v < version)
            if base not in schemas or signature(schemas[base]) != signature(schemas[version]):
                break  # a real change: every later version needs its own converter
            converter = _CONVERTER_REGISTRY[OperationDescription(domain=domain, operation_type=op, version=base)]
            _CONVERTER_REGISTRY[OperationDescription(domain=domain, operation_type=op, version=version)] = converter
            versions.add(version)
            added.append((domain, op, version, base))
    return added
