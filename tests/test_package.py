"""Packaging: the compiled core is there, and a checkout that was never built says what to do."""

import shutil
import subprocess
import sys
from pathlib import Path

import dranspose_fast

PACKAGE = Path(dranspose_fast.__file__).parent


def test_every_extension_is_built_and_importable() -> None:
    import importlib

    for name in dranspose_fast._EXTENSIONS:
        assert importlib.import_module(f"dranspose_fast.{name}") is not None
    sources = {p.stem for p in (PACKAGE.parent / "_ext").glob("_*.pyx")}
    assert sources == set(dranspose_fast._EXTENSIONS)


def test_unbuilt_checkout_names_the_install_command(tmp_path: Path) -> None:
    copy = tmp_path / "dranspose_fast"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    # -S: without site-packages, so an editable install's finder cannot supply the modules
    proc = subprocess.run([sys.executable, "-S", "-c", "import dranspose_fast"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "is not built: run 'pip install .'" in proc.stderr


def test_importing_the_package_stays_light() -> None:
    code = ("import sys, dranspose_fast, dranspose_fast.event; "
            "print(sorted(m for m in ('numba', 'h5py', 'fastapi', 'redis') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=PACKAGE.parent)
    assert out.stdout.strip() == "[]", out.stderr
