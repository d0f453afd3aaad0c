"""The package's import graph, read from the source (AST), for the architecture tests.

Every ``import`` and ``from ... import`` of a ``dranspose_fast`` module counts: at module level,
inside a function (a deferred import is still a dependency) and under ``if TYPE_CHECKING:``
(two modules that need each other's types are one design, whatever the interpreter sees).
``from pkg import name`` counts as an import of ``pkg.name`` when that is a module, else of
``pkg``.

    python tests/import_graph.py        # prints every cycle
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "dranspose_fast"


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package by dotted name (packages by their ``__init__``; compiled
    modules by their ``.pyi`` stub)."""
    found: dict[str, Path] = {}
    paths = sorted((root / PACKAGE).rglob("*.py"))
    stubs = sorted((root / PACKAGE).rglob("*.pyi"))
    paths += [p for p in stubs if not p.with_suffix(".py").exists()]
    for path in paths:
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module → the package modules it imports."""
    mods = modules(root)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        for node in _imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve(mod, is_package, node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in mods else base)
            for target in targets:
                while target and target not in mods:  # import a.b.c of a package: a.b.c's owner
                    target = target.rpartition(".")[0]
                if target and target != mod:
                    edges[mod].add(target)
    return edges


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_imports(root: Path = ROOT, extra: tuple[str, ...] = ("bench", "examples")) -> list[str]:
    """``file: module._name`` for every ``_``-prefixed name a file takes from another module of
    the package: ``from m import _x`` or ``m._x`` on an imported package module.  A private
    *module* (``from dranspose_fast import _batch``, the compiled kernels) is a module, not a
    name, and is fine.  Covers the package and the scripts under ``extra``."""
    mods = modules(root)
    files: list[tuple[str, Path]] = [(m, p) for m, p in mods.items() if p.suffix == ".py"]
    for folder in extra:
        files += [(f"{folder}.{p.stem}", p) for p in sorted((root / folder).rglob("*.py"))]
    found: list[str] = []
    for mod, path in files:
        tree = ast.parse(path.read_text(), str(path))
        where = str(path.relative_to(root))
        alias: dict[str, str] = {}  # local name -> package module
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in mods:
                        alias[a.asname or a.name.partition(".")[0]] = (
                            a.name if a.asname else a.name.partition(".")[0])
                continue
            base = _resolve(mod, path.name == "__init__.py", node)
            if base not in mods or base == mod:
                continue
            for a in node.names:
                if f"{base}.{a.name}" in mods:
                    alias[a.asname or a.name] = f"{base}.{a.name}"
                elif _is_private(a.name):
                    found.append(f"{where}: {base}.{a.name}")
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
                continue
            parts, value = [], node.value
            while isinstance(value, ast.Attribute):
                parts.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in alias:
                target = ".".join([alias[value.id], *reversed(parts)])
                if target in mods and target != mod and f"{target}.{node.attr}" not in mods:
                    found.append(f"{where}: {target}.{node.attr}")
    return sorted(set(found))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
                found.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


if __name__ == "__main__":
    for cycle in cycles(graph()):
        print(" <-> ".join(cycle))
