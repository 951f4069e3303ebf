"""Register onnx2torch's converter for newer opset versions whose only change is wider type support.

Two schema versions are treated as the same operator when their inputs, outputs and attributes
(names, optionality, defaults) are identical; the differences are then only in type constraints
(bf16, float8, int4, ...), which do not change how a float32 graph computes. Versions with any
other change are not aliased: they need a converter of their own (see the sibling modules).
"""

from __future__ import annotations

from collections import defaultdict

from onnx import defs
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, add_converter

__all__ = ["register_type_only_aliases", "signature"]


def signature(schema: defs.OpSchema) -> tuple:
    """Inputs, outputs and attributes of a schema, without type constraints."""
    inputs = tuple((i.name, int(i.option)) for i in schema.inputs)
    outputs = tuple((o.name, int(o.option)) for o in schema.outputs)
    attrs = tuple(sorted((name, str(a.default_value), bool(a.required)) for name, a in schema.attributes.items()))
    return inputs, outputs, attrs


def register_type_only_aliases() -> list[tuple[str, str, int, int]]:
    """Alias every registered (domain, op) to newer type-only versions; return (domain, op, new, from)."""
    registered: dict[tuple[str, str], set[int]] = defaultdict(set)
    for desc in list(_CONVERTER_REGISTRY):
        registered[(desc.domain, desc.operation_type)].add(desc.version)
    history: dict[tuple[str, str], dict[int, defs.OpSchema]] = defaultdict(dict)
    for schema in defs.get_all_schemas_with_history():
        history[(schema.domain, schema.name)][schema.since_version] = schema
    added = []
    for (domain, op), versions in registered.items():
        schemas = history.get((domain, op), {})
        for version in sorted(v for v in schemas if v > max(versions)):
            base = max(v for v in versions if v < version)
            if base not in schemas or signature(schemas[base]) != signature(schemas[version]):
                break  # a real change: every later version needs its own converter
            converter = _CONVERTER_REGISTRY[_desc(domain, op, base)]
            add_converter(operation_type=op, version=version, domain=domain)(converter)
            versions.add(version)
            added.append((domain, op, version, base))
    return added


def _desc(domain: str, op: str, version: int):
    return next(d for d in _CONVERTER_REGISTRY if (d.domain, d.operation_type, d.version) == (domain, op, version))
