"""Build the compiled core: every ``_ext/_<name>.pyx`` becomes ``dranspose_fast._<name>``.

Knobs (environment):
  DRANSPOSE_FAST_DEBUG=1     -O0 -g, no C optimisation (for gdb / valgrind)
  DRANSPOSE_FAST_ANNOTATE=1  write Cython's HTML annotation next to each .pyx
  DRANSPOSE_FAST_ONLY=_name  build just that extension (development of one kernel)
"""

import os
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
DEBUG = os.environ.get("DRANSPOSE_FAST_DEBUG") == "1"
ONLY = os.environ.get("DRANSPOSE_FAST_ONLY")

compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]

extensions = [
    Extension(
        f"dranspose_fast.{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        include_dirs=[numpy.get_include(), "_ext"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
    )
    for pyx in sorted((HERE / "_ext").glob("_*.pyx"))
    if ONLY is None or pyx.stem == ONLY
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        annotate=os.environ.get("DRANSPOSE_FAST_ANNOTATE") == "1",
        compiler_directives={"embedsignature": True},
    )
)
