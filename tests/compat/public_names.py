"""Print every public name of every dranspose 0.2 module as JSON (run under the 0.2 venv).

A public name is one listed in the module's ``__all__`` or one *defined* in the module: a
top-level ``def``/``class`` or an assignment target (also inside top-level ``if``/``try``
blocks, except ``if __name__ == "__main__"``), not starting with ``_``.  Imported names are
not the module's own.  The source is read, not imported, so modules with import-time side
effects (apps, sockets) cost nothing.  Private modules (``_x``) are skipped.

Usage: ``$DRANSPOSE02_PYTHON tests/compat/public_names.py`` prints
``{"version": "0.2.0", "modules": {"dranspose.x": ["Name", ...], ...}}``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import sys
from pathlib import Path


def _is_main_guard(node: ast.If) -> bool:
    test = node.test
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
    )


def _targets(node: ast.expr) -> list[str]:
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]


def _defined(body: list[ast.stmt]) -> tuple[set[str], list[str] | None]:
    """(names defined at top level, ``__all__`` if it is a literal list/tuple)."""
    names: set[str] = set()
    dunder_all: list[str] | None = None
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names.update(_targets(target))
                if isinstance(target, ast.Name) and target.id == "__all__":
                    dunder_all = list(ast.literal_eval(node.value))
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            names.update(_targets(node.target))
        elif isinstance(node, ast.If) and not _is_main_guard(node):
            for part in (node.body, node.orelse):
                sub, _ = _defined(part)
                names |= sub
        elif isinstance(node, ast.Try):
            for part in (node.body, node.orelse, node.finalbody,
                         *[h.body for h in node.handlers]):
                sub, _ = _defined(part)
                names |= sub
    return names, dunder_all


def public_names(package: str = "dranspose") -> dict[str, list[str]]:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{package} is not installed in {sys.executable}")
    root = Path(spec.origin).parent
    out: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts):
            continue  # private modules are not surface
        module = ".".join((package, *parts))
        names, dunder_all = _defined(ast.parse(path.read_text(), str(path)).body)
        public = {n for n in names if not n.startswith("_") and n != "__all__"}
        if dunder_all is not None:
            public |= set(dunder_all)
        out[module] = sorted(public)
    return out


def main() -> None:
    print(json.dumps({"version": importlib.metadata.version("dranspose"),
                      "modules": public_names()}, indent=1))


if __name__ == "__main__":
    main()
