"""Builds the compiled kernels: kernels/*.pyx → fusedense._kernels.<name> (OpenMP on).

Environment switches:
  FUSEDENSE_NATIVE=1       add -march=native (fastest on the build machine, not portable)
  FUSEDENSE_DEBUG=1        Cython bounds/wraparound checks on, -O2 -g (for tests and sanitizers)
  FUSEDENSE_SANITIZE=1     build with AddressSanitizer + UndefinedBehaviorSanitizer
"""
import glob
import os
import runpy

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FUSEDENSE_DEBUG") == "1"
# -fno-math-errno / -fno-trapping-math: results unchanged (no fast-math: NaN/inf and rounding
# stay IEEE), but libm calls need not set errno and branches on floats may be if-converted,
# which lets GCC vectorize the activation loops.
# (-O2 even for debugging: the micro-kernels' tiles get their FMAs from GCC's contraction of
# `acc += a * b`, which -O1 does not do, while the streamed rows write theirs out; at -O1 the two
# paths gave different bits and the tests that compare them failed.)
compile_args = ["-fopenmp", "-O2" if DEBUG else "-O3", "-fno-math-errno", "-fno-trapping-math"]
link_args = ["-fopenmp"]
if DEBUG:
    compile_args.append("-g")
if os.environ.get("FUSEDENSE_NATIVE") == "1":
    compile_args.append("-march=native")
if os.environ.get("FUSEDENSE_SANITIZE") == "1":
    sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    compile_args += sanitize
    link_args += sanitize

# The tuning table (src/fusedense/tuning.py, read by the Numba engine too) as a C header in the
# build tree; run by path, since the package cannot be imported before it is built.
GENERATED = os.path.join("build", "generated")
os.makedirs(GENERATED, exist_ok=True)
header = runpy.run_path(os.path.join("src", "fusedense", "tuning.py"))["c_header"]()
header_path = os.path.join(GENERATED, "tuning.h")
if not os.path.exists(header_path) or open(header_path).read() != header:  # keep its mtime otherwise
    with open(header_path, "w") as f:
        f.write(header)

extensions = [
    Extension(
        f"fusedense._kernels.{os.path.splitext(os.path.basename(path))[0]}",
        [path],
        include_dirs=[np.get_include(), "kernels", GENERATED],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for path in sorted(glob.glob("kernels/*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        build_dir="build/cython",  # generated C stays out of kernels/
        include_path=["kernels"],  # the shared .pxd helpers
        compiler_directives={
            "language_level": 3,
            "boundscheck": DEBUG,
            "wraparound": DEBUG,
            "initializedcheck": DEBUG,
            "cdivision": True,
        },
    ),
)
