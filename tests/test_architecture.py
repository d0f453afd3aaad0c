"""The package's layers, read from its import graph (``tests/import_graph.py``).

* no import cycles (a deferred or ``TYPE_CHECKING`` import counts);
* the shared runtime (``dranspose_fast.runtime``) and the user-facing base modules (``errors``,
  ``event``, ``parameters``, ``protocol``) reach no role, not even through another module;
* a role (``controller``, ``ingester``, ``worker``, ``reducer``, ``replay``, ``mapping``) is
  used from outside only through its face (the package's ``__init__``), and only along the
  edges in ``ALLOWED``; every other module (``api``, ``helpers``, ``data``, ``middlewares``,
  ``ops``, ``dump``, ...) uses no role at all;
* no module (nor a script under ``bench/`` or ``examples/``) takes a ``_``-prefixed name from
  another module of the package: a helper used across modules has a plain name.
"""

from __future__ import annotations

import pytest

from tests.import_graph import PACKAGE, cycles, graph, private_imports

#: The role subpackages.
ROLES = frozenset({"controller", "ingester", "worker", "reducer", "replay", "mapping"})
#: Modules outside a role's package that count as the role's own: the built-in ingesters
#: (``dranspose_fast.ingesters.*``, 0.2's paths) are ingester classes.
MEMBERS = {"ingesters": "ingester"}
#: Which roles a group may use (through their faces). A group is a role, or a top-level module
#: that composes roles; any other module may use none.
ALLOWED: dict[str, frozenset[str]] = {
    "controller": frozenset({"mapping"}),  # binds the map's constraints to workers
    "replay": frozenset({"worker", "mapping"}),  # the pool's worker processes; map dispatch
    "ingester": frozenset(),
    "worker": frozenset(),
    "reducer": frozenset(),
    "mapping": frozenset(),
    "debug_worker": frozenset({"worker"}),  # a Worker that keeps what it saw
    "cli": ROLES,  # starts every role
    "local": ROLES,  # starts every role (as processes)
}
#: The shared base: reaches no role.
BASE_MODULES = ("errors", "event", "parameters", "protocol")

EDGES = graph()


def _rel(module: str) -> list[str]:
    return module.split(".")[1:] if module != PACKAGE else []


def group(module: str) -> str | None:
    """The role (or composing module) ``module`` belongs to; ``None`` for the rest."""
    parts = _rel(module)
    if not parts:
        return None
    head = MEMBERS.get(parts[0], parts[0])
    return head if head in ROLES or head in ALLOWED else None


def role(module: str) -> str | None:
    g = group(module)
    return g if g in ROLES else None


def is_face(module: str) -> bool:
    parts = _rel(module)
    return len(parts) == 1 or (bool(parts) and parts[0] in MEMBERS)


def test_the_graph_sees_the_package() -> None:
    assert {f"{PACKAGE}.{r}" for r in ROLES} <= set(EDGES)
    assert f"{PACKAGE}.runtime.service" in EDGES
    assert f"{PACKAGE}.controller.engine" in EDGES[f"{PACKAGE}.controller"]


def test_no_import_cycles() -> None:
    found = cycles(EDGES)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def _reach(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in EDGES[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


BASE = sorted(m for m in EDGES if _rel(m)[:1] == ["runtime"] or _rel(m) in
              [[b] for b in BASE_MODULES])


@pytest.mark.parametrize("module", BASE)
def test_the_base_reaches_no_role(module: str) -> None:
    upward = sorted(m for m in _reach(module) if group(m) is not None)
    assert not upward, f"{module} imports (directly or not) {upward}"


def test_roles_use_each_other_only_through_their_faces_and_allowed_edges() -> None:
    wrong = []
    for src, targets in sorted(EDGES.items()):
        mine = group(src)
        for dst in sorted(targets):
            theirs = role(dst)
            if theirs is None or theirs == mine:
                continue
            if mine is None or theirs not in ALLOWED[mine]:
                wrong.append(f"{src} -> {dst}: {mine or 'a shared module'} may not use {theirs}")
            elif not is_face(dst):
                wrong.append(f"{src} -> {dst}: past the face of {theirs} ({PACKAGE}.{theirs})")
    assert not wrong, "\n".join(wrong)


def test_every_allowed_edge_is_used() -> None:
    """The list is the design, not a wish list: an edge nobody uses any more goes."""
    used = {(group(s), role(d)) for s, ts in EDGES.items() for d in ts}
    unused = sorted((g, r) for g, rs in ALLOWED.items() for r in rs
                    if g not in ("cli", "local") and (g, r) not in used)
    assert not unused, f"allowed but unused: {unused}"


def test_no_module_uses_another_modules_private_names() -> None:
    found = private_imports()
    assert not found, "private names used across modules (give them a plain name):\n" + \
        "\n".join(found)
