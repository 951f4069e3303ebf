"""The converter registry: every override of onnx2torch is declared and listed, a second claim on a
key is refused, and the registry ends the same whatever order the families are imported in."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription

import onnxxai.convert
from onnxxai.convert import registry
from onnxxai.convert.registry import RegistrationError, overridden_upstream, register, register_all, since

_DUMP = """
import json
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY
from onnxxai.convert.registry import register_all
register_all()

def name(f):
    code = getattr(f, "__code__", None)
    return f"{f.__module__}.{f.__qualname__}:{code.co_firstlineno if code else ''}"

print(json.dumps(sorted([k.domain, k.operation_type, k.version, name(f)] for k, f in _CONVERTER_REGISTRY.items())))
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])


def test_families_list_every_family_module() -> None:
    package = Path(onnxxai.convert.__file__).parent
    modules = {p.stem for p in package.glob("*.py")} - {"__init__", "_util", "registry", "pipeline"}
    assert set(registry.FAMILIES) == modules


def test_replaced_and_extended_upstream_converters_are_listed() -> None:
    register_all()
    overridden = {(r.op, r.version): r for r in overridden_upstream()}
    for version in (9, 13):
        assert overridden[("Cast", version)].mode == "replaces"
    for version in (10, 11, 13):
        assert overridden[("Resize", version)].mode == "replaces"
    assert overridden[("Conv", 11)].mode == "extends"
    assert all(r.upstream and r.upstream.startswith("onnx2torch.") for r in overridden.values())
    # what is listed is what the registry holds
    for r in overridden.values():
        converter = _CONVERTER_REGISTRY[OperationDescription(r.domain, r.op, r.version)]
        assert f"{converter.__module__}" == r.converter.rsplit(".", 1)[0]


def test_registration_after_register_all_is_refused() -> None:
    register_all()
    with pytest.raises(RegistrationError, match="register_all"):
        register("Gelu", (20,))


def test_registry_is_independent_of_import_order() -> None:
    direct = _run(_DUMP)
    assert direct.returncode == 0, direct.stderr
    reversed_order = _run(
        "import importlib\n"
        "from onnxxai.convert.registry import FAMILIES\n"
        "for family in reversed(FAMILIES):\n"
        "    importlib.import_module(f'onnxxai.convert.{family}')\n" + _DUMP
    )
    assert reversed_order.returncode == 0, reversed_order.stderr
    assert json.loads(reversed_order.stdout) == json.loads(direct.stdout)


@pytest.mark.parametrize(("declaration", "message"), [
    ('register("Gelu", (20,))(lambda node, graph: None)', "claimed twice"),  # activation.py has Gelu-20
    ('register("Relu", (14,))(lambda node, graph: None)', "declare replaces=True or extends=True"),  # onnx2torch's
    ('register("Gelu", (20,), extends=True)(lambda node, graph, fallback: None)', "no converter to extend"),
    ('register("Upsample", (7,), replaces=True)(lambda node, graph: None)', "converts none of versions"),
    ('register("Relu", since(6))(lambda node, graph: None)', "adds no version"),
])
def test_conflicting_declarations_are_refused(declaration: str, message: str) -> None:
    done = _run(f"""
        from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY
        from onnxxai.convert.registry import RegistrationError, register, register_all, since
        before = dict(_CONVERTER_REGISTRY)
        {declaration}
        try:
            register_all()
        except RegistrationError as exc:
            assert dict(_CONVERTER_REGISTRY) == before, "a refused registration must leave onnx2torch's registry alone"
            print("REFUSED", exc)
    """)
    assert done.returncode == 0, done.stderr
    assert "REFUSED" in done.stdout and message in done.stdout, done.stdout


def test_since_resolves_against_schema_history() -> None:
    assert since(9) == registry.Since(9)
    assert registry.schema_versions("Cast")[:2] == [1, 6]
