"""The one place tests find and run dranspose 0.2.0 (its own venv, ``DRANSPOSE02_PYTHON``).

Without the venv a comparison with 0.2 skips, except under ``CI=true``: there the venv is built
(or reused) by ``tests/compat/setup_dr02_venv.sh`` and a venv that cannot be had fails the test,
so CI never passes by skipping the comparisons.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUP_DR02 = ROOT / "tests" / "compat" / "setup_dr02_venv.sh"

_found: str | None = None  # the probe costs a process start: done once per test session


def _ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def dr02_python() -> str:
    """The python of a venv with dranspose 0.2.0.

    Returns
    -------
    str
        Its path.  Skips the calling test without one, but fails it under ``CI=true`` (where,
        without ``DRANSPOSE02_PYTHON``, the venv is first built by ``setup_dr02_venv.sh``).
    """
    global _found
    python = os.environ.get("DRANSPOSE02_PYTHON", "")
    if _found is not None and _found == (python or _found):
        return _found
    if not python and _ci():
        built = subprocess.run(["bash", str(SETUP_DR02)], capture_output=True, text=True,
                               check=False, timeout=900)
        if built.returncode != 0:
            pytest.fail(f"CI=true and the dranspose 0.2 venv cannot be built:\n"
                        f"{built.stderr[-2000:]}")
        python = built.stdout.strip().splitlines()[-1]
    problem = None
    if not python:
        problem = "DRANSPOSE02_PYTHON is not set (see tests/compat/setup_dr02_venv.sh)"
    elif not os.access(python, os.X_OK):
        problem = f"DRANSPOSE02_PYTHON={python!r} is not an executable"
    else:
        probe = subprocess.run(
            [python, "-c", "import importlib.metadata as m; print(m.version('dranspose'))"],
            capture_output=True, text=True, check=False)
        if probe.stdout.strip() != "0.2.0":
            problem = f"{python} has no dranspose 0.2.0: {probe.stderr.strip()[-300:]}"
    if problem is not None:
        if _ci():
            pytest.fail(f"CI=true: {problem}")
        pytest.skip(problem)
    _found = python
    return python


def dr02_python_or_none() -> str | None:
    """Like `dr02_python`, but None where that would skip (for an optional 0.2 cross-check)."""
    try:
        return dr02_python()
    except pytest.skip.Exception:
        return None


def _argv(script: str | Path, args: tuple[str | Path, ...]) -> list[str]:
    head = [str(script)] if isinstance(script, Path) else ["-c", script]
    return [dr02_python(), *head, *map(str, args)]


def run_dr02_raw(script: str | Path, *args: str | Path, stdin: str | bytes | None = None,
                 timeout: float = 300.0, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> bytes:
    """Run a script under 0.2's python; fail the test if it fails.

    Parameters
    ----------
    script
        A file (`Path`) or the code itself (`str`, run with ``-c``).
    *args
        Its command line arguments.
    stdin
        Its input, if any.
    timeout, cwd, env
        As for `subprocess.run`.

    Returns
    -------
    bytes
        What it wrote to stdout.
    """
    data = stdin.encode() if isinstance(stdin, str) else stdin
    res = subprocess.run(_argv(script, args), input=data, capture_output=True, check=False,
                         timeout=timeout, cwd=cwd, env=env)
    assert res.returncode == 0, res.stderr.decode(errors="replace")[-3000:]
    return res.stdout


def run_dr02(script: str | Path, *args: str | Path, stdin: str | bytes | None = None,
             timeout: float = 300.0) -> Any:
    """`run_dr02_raw`, reading its stdout as JSON (the whole, or else its last line)."""
    out = run_dr02_raw(script, *args, stdin=stdin, timeout=timeout).decode()
    try:
        return json.loads(out)
    except ValueError:
        return json.loads(out.strip().splitlines()[-1])


def spawn_dr02(script: str | Path, *args: str | Path) -> subprocess.Popen[bytes]:
    """Start a script under 0.2's python (one that waits for input sent next); see `dr02_output`."""
    return subprocess.Popen(_argv(script, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def dr02_output(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> bytes:
    """The stdout of a `spawn_dr02` process once it ends; fails the test if it failed."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    return out


_INGEST_UNTIL_QUIET = '''
import asyncio, json, sys, zmq.asyncio
from dranspose.ingesters.{module} import {ingester}, {settings}
async def main():
    ing = {ingester}({settings}(upstream_url=sys.argv[1], ingester_streams=["s"]))
    ing.ctx = zmq.asyncio.Context()
    gen = ing.run_source("s").__aiter__()
    out = []
    while True:
        try:
            data = await asyncio.wait_for(gen.__anext__(), float(sys.argv[2]))
        except asyncio.TimeoutError:
            break
        out.append([data.typ, [bytes(f.bytes).hex() for f in data.frames]])
    print(json.dumps(out))
asyncio.run(main())
'''


def ingest_until_quiet(module: str, ingester: str, settings: str) -> str:
    """A script for 0.2's python: drive 0.2's own ``run_source`` of ``ingester`` (in
    ``dranspose.ingesters.<module>``) on the upstream ``argv[1]`` and print every event message
    it yields (typ, frames as hex) once nothing came for ``argv[2]`` seconds."""
    return _INGEST_UNTIL_QUIET.format(module=module, ingester=ingester, settings=settings)
