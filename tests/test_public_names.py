"""``__all__`` on every user-facing module says exactly what a user may rely on.

The names of a module come in three kinds:

* listed in ``__all__``: the user's names (dranspose 0.2's names that exist here, and this
  package's documented additions);
* a plain name outside ``__all__``: the package's own, used by another module of the package
  (``event.make_stream_data``, a role's hooks for another role) but not promised to users;
* ``_``-prefixed: private to its module (``tests/test_architecture.py`` checks that no other
  module takes one).

So a name *defined* in a user-facing module is in its ``__all__``, used by another module of
the package, or private; every 0.2 name that ``docs/compatibility.md`` marks ``present`` for the
module is in ``__all__``; and everything ``__all__`` lists exists.  A module's ``logger`` is
exempt (0.2 defines one in most modules; it is nobody's API).
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from tests.import_graph import PACKAGE, ROOT, modules

MODULES = modules()
DOC = ROOT / "docs" / "compatibility.md"

#: The user-facing modules: the base models, the roles' faces, 0.2's module families, ops.
TOP = ["event", "parameters", "protocol", "errors", "distributed", "debug_worker", "dump",
       "controller", "ingester", "worker", "reducer", "replay", "mapping",
       "data", "middlewares", "ingesters", "helpers", "ops"]
FAMILIES = ("data", "middlewares", "ingesters", "helpers", "ops")
USER_FACING = sorted(
    {f"{PACKAGE}.{m}" for m in TOP}
    | {m for m in MODULES
       if m.split(".")[1:2] and m.split(".")[1] in FAMILIES and m.count(".") == 2
       and not m.rsplit(".", 1)[1].startswith("_")}
)
#: Names a module provides on first access (module ``__getattr__``) and keeps out of ``__all__``
#: so that ``from m import *`` does not build them.
LAZY = {f"{PACKAGE}.controller": {"app"}}  # the ASGI app, built from the environment
EXEMPT = {"logger"}


def defined(path: Path) -> set[str]:
    """Names a module defines at top level (``def``, ``class``, assignment, also inside
    top-level ``if``/``try``)."""
    names: set[str] = set()

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(node, ast.If):
                walk(node.body)
                walk(node.orelse)
            elif isinstance(node, ast.Try):
                for part in (node.body, node.orelse, node.finalbody,
                             *[h.body for h in node.handlers]):
                    walk(part)

    walk(ast.parse(path.read_text()).body)
    return names - {"__all__"}


def used_elsewhere() -> dict[str, set[str]]:
    """Module -> the names other modules of the package import from it."""
    used: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, path in MODULES.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = mod.split(".")[: None if is_package else -1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source in used and source != mod:
                used[source].update(a.name for a in node.names)
    return used


USED = used_elsewhere()


def present_02() -> dict[str, set[str]]:
    """Our module -> the 0.2 names docs/compatibility.md marks ``present`` for it."""
    found: dict[str, set[str]] = {}
    module = ""
    for line in DOC.read_text().splitlines():
        if m := re.match(r"^### `dranspose((?:\.\w+)*)`", line):
            module = PACKAGE + m.group(1)
        elif module and (m := re.match(r"^\| `(\w+)` \| present \|", line)):
            found.setdefault(module, set()).add(m.group(1))
    return found


PRESENT = present_02()


def test_the_lists_are_read() -> None:
    assert f"{PACKAGE}.data.stream1" in USER_FACING and f"{PACKAGE}.ops.binned" in USER_FACING
    assert "StreamData" in PRESENT[f"{PACKAGE}.event"]


@pytest.mark.parametrize("name", USER_FACING)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    listed = getattr(module, "__all__", None)
    assert isinstance(listed, list), f"{name} has no __all__ list"
    assert len(listed) == len(set(listed)), f"{name}.__all__ repeats a name"
    assert not [n for n in listed if n.startswith("_")], f"{name}.__all__ lists a private name"
    absent = [n for n in listed if n not in vars(module)]
    assert not absent, f"{name}.__all__ lists names the module does not have: {absent}"
    lazy = LAZY.get(name, set())
    missing = sorted(PRESENT.get(name, set()) - set(listed) - lazy - EXEMPT)
    assert not missing, f"0.2's names missing from {name}.__all__: {missing}"
    loose = sorted(n for n in defined(MODULES[name]) - set(listed) - USED[name] - EXEMPT
                   if not n.startswith("_"))
    assert not loose, (
        f"{name} defines {loose}: list them in __all__ (the user's), or prefix them with _ "
        "(the module's own)"
    )


#: The roles' faces (and 0.2's top-level modules that gather names from other modules).
FACES = [f"{PACKAGE}.{m}" for m in ("controller", "ingester", "worker", "reducer", "replay",
                                    "mapping", "distributed")]


def _face_imports(path: Path) -> dict[str, str]:
    """Name -> the package module a face takes it from (``from m import name``)."""
    found: dict[str, str] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
            for alias in node.names:
                found[alias.asname or alias.name] = node.module or ""
    return found


@pytest.mark.parametrize("name", FACES)
def test_a_face_lists_only_its_modules_user_names(name: str) -> None:
    """A face gathers the user's names of its modules: every name its ``__all__`` takes from
    another module is 0.2's or listed in that module's ``__all__`` (when it has one: else the
    face decides); a role's hooks for another role (``worker.run_pool_worker`` for the replay
    pool) are re-exported outside ``__all__``."""
    listed = importlib.import_module(name).__all__
    wrong = []
    for entry, source in sorted(_face_imports(MODULES[name]).items()):
        if entry not in listed or entry in PRESENT.get(name, set()):
            continue
        theirs = getattr(importlib.import_module(source), "__all__", None)
        if theirs is not None and entry not in theirs:  # a module without __all__: its face
            wrong.append(f"{entry} (from {source})")
    assert not wrong, (
        f"{name}.__all__ lists names that are not the user's: {wrong}; keep them out of "
        "__all__ (re-export as `from m import X as X`) or list them in their module's __all__"
    )
