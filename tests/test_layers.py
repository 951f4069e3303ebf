"""The package's import structure: every import statement (module level or inside a function) goes to
the importing module's own layer or a lower one, and no modules import each other in a circle.

Layers, lowest first (a new module must be placed in one, or this test fails):

    0 errors, explanation, selectors   1 proto   2 convert   3 parity   4 graph   5 model
    6 analyzers, methods, blackbox, dispatch   7 diagnostics, heatmap, preprocess, metrics   8 cli, audit, testing   9 onnxxai/__init__ (public names)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import onnxxai

PACKAGE = Path(onnxxai.__file__).parent

LAYERS: dict[str, int] = {
    "onnxxai.errors": 0, "onnxxai.explanation": 0, "onnxxai.selectors": 0,
    "onnxxai.proto": 1,
    "onnxxai.convert": 2,
    "onnxxai.parity": 3, "onnxxai.runtime": 3,
    "onnxxai.graph": 4,
    "onnxxai.model": 5,
    "onnxxai.analyzers": 6, "onnxxai.methods": 6, "onnxxai.blackbox": 6, "onnxxai.dispatch": 6,
    "onnxxai.diagnostics": 7, "onnxxai.heatmap": 7, "onnxxai.preprocess": 7, "onnxxai.metrics": 7, "onnxxai.sheet": 7, "onnxxai.text": 7,
    "onnxxai.cli": 8, "onnxxai.audit": 8, "onnxxai.testing": 8, "onnxxai.fuzz": 8, "onnxxai.dataset": 8,
    "onnxxai": 9,
}


def layer_of(module: str) -> int:
    """The layer of ``module``: that of the longest prefix listed in LAYERS."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            if prefix == "onnxxai" and module != "onnxxai":
                break  # only the package's own __init__ sits on top; other modules must be listed
            return LAYERS[prefix]
    raise AssertionError(f"module {module} has no layer: add it (or its package) to LAYERS in {__file__}")


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package at ``root``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imports_of(module: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(imported package module, line) for every import statement in ``path``, resolved to the most
    specific module of the package it names (``from a.b import c`` names ``a.b.c`` when that is a
    module). Imports inside ``if TYPE_CHECKING:`` blocks are included: they are dependencies too."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in known else stem for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in known and target != module:
                found.append((target, node.lineno))
    return found


def violations(edges: dict[str, list[tuple[str, int]]]) -> list[str]:
    """Upward imports and import cycles in a module graph ``module -> [(imported, line)]``."""
    problems = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)}) at line {line}"
        for module, targets in edges.items() for target, line in targets
        if layer_of(target) > layer_of(module)
    ]
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles({m: {t for t, _ in ts} for m, ts in edges.items()})]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component) + [sorted(component)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_upward_import_and_no_cycle():
    modules = module_names(PACKAGE)
    known = set(modules)
    edges = {m: imports_of(m, p, known) for m, p in modules.items()}
    assert sum(len(v) for v in edges.values()) > 50  # the walk really reads the package's imports
    problems = violations(edges)
    assert not problems, "\n".join(problems)


def test_checker_finds_upward_imports_and_cycles(tmp_path):
    """The checker itself: a synthetic package with one upward import and one circle is reported."""
    root = tmp_path / "onnxxai"
    (root / "convert").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "errors.py").write_text("def f():\n    from onnxxai.model import load\n")  # upward, inside a function
    (root / "model.py").write_text("from onnxxai.convert import pipeline\n")
    (root / "convert" / "__init__.py").write_text("")
    (root / "convert" / "pipeline.py").write_text("from . import family\n")
    (root / "convert" / "family.py").write_text("from onnxxai.convert.pipeline import convert\n")
    modules = module_names(root)
    known = set(modules)
    problems = violations({m: imports_of(m, p, known) for m, p in modules.items()})
    assert any("onnxxai.errors (layer 0) imports onnxxai.model (layer 5)" in p for p in problems), problems
    assert any(p.startswith("import cycle: onnxxai.convert.family -> onnxxai.convert.pipeline") for p in problems), problems
    assert len(problems) == 2, problems


def test_unlisted_module_has_no_layer():
    with pytest.raises(AssertionError, match="has no layer"):
        layer_of("onnxxai.somewhere_new")
