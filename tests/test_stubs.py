"""The ``.pyi`` stubs say what the compiled modules hold: the same public names, and for every
function and method the same parameters (Cython embeds the signatures it compiled)."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dranspose_fast"
COMPILED = sorted(p.stem for p in PACKAGE.glob("_*.pyi") if not p.with_suffix(".py").exists())


def stub_names(tree: ast.Module) -> dict[str, ast.AST]:
    """Top-level names the stub defines (functions, classes, constants); imports excluded."""
    found: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            found[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found[node.target.id] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node
    return {name: node for name, node in found.items() if not name.startswith("_")
            and not (isinstance(node, ast.Assign | ast.AnnAssign) and _is_typevar(node))}


def _is_typevar(node: ast.Assign | ast.AnnAssign) -> bool:
    value = node.value
    return isinstance(value, ast.Call) and getattr(value.func, "id", "") in {"TypeVar", "NewType"}


def module_names(module: ModuleType) -> set[str]:
    """Public names the compiled module defines, not what it imported (``np``, ``MapError``)."""
    return {name for name, value in vars(module).items()
            if not name.startswith("_") and not isinstance(value, ModuleType)
            and getattr(value, "__module__", module.__name__) == module.__name__}


def parameters(node: ast.FunctionDef) -> list[str]:
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return [n for n in names if n not in {"self", "cls"}]


def compiled_parameters(obj: Any) -> list[str] | None:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None  # no embedded signature (e.g. a C slot wrapper)
    return [n for n in signature.parameters if n not in {"self", "cls"}]


@pytest.mark.parametrize("name", COMPILED)
def test_stub_matches_the_compiled_module(name: str) -> None:
    module = importlib.import_module(f"dranspose_fast.{name}")
    tree = ast.parse((PACKAGE / f"{name}.pyi").read_text())
    declared = stub_names(tree)
    assert set(declared) == module_names(module), f"{name}.pyi names differ from {name}.so"
    for attr, node in declared.items():
        value = getattr(module, attr)
        if isinstance(node, ast.FunctionDef):
            assert compiled_parameters(value) == parameters(node), f"{name}.{attr}"
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("__"):
                    assert hasattr(value, item.name), f"{name}.{attr}.{item.name} not compiled"
                    got = compiled_parameters(getattr(value, item.name))
                    if got is not None:
                        assert got == parameters(item), f"{name}.{attr}.{item.name}"


def test_every_compiled_module_has_a_stub() -> None:
    built = {p.name.split(".")[0] for p in PACKAGE.glob("_*.so")}
    assert built <= set(COMPILED), f"compiled modules without a .pyi: {built - set(COMPILED)}"
