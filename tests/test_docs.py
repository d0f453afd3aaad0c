"""The code of the user docs runs: every block of ``docs/writing-classes.md``.

A block fenced as ```` ```python file=NAME ```` is written to a scratch folder; every other
```` ```python ```` block is executed, in order and in one namespace per page, in that folder,
which holds a link to the checkout's ``examples/`` (the docs' paths are relative to a
checkout's root) and is first on ``sys.path``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["docs/writing-classes.md"]
FENCE = re.compile(r"^```python(?: file=(\S+))?\n(.*?)^```$", re.M | re.S)


def blocks(page: str) -> list[tuple[str | None, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer((ROOT / page).read_text())]


@pytest.fixture
def in_scratch(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    sys.path.insert(0, str(tmp_path))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(cwd)
        sys.path.remove(str(tmp_path))


@pytest.mark.parametrize("page", PAGES)
def test_every_block_of_the_page_runs(page: str, in_scratch: Path) -> None:
    found = blocks(page)
    assert any(name for name, _ in found) and any(not name for name, _ in found), page
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for name, code in found:
        if name:
            (in_scratch / name).write_text(code)
            sys.modules.pop(Path(name).stem, None)
        else:
            exec(compile(code, f"{page} block", "exec"), namespace)
