"""The njit options, defined once: every function is decorated with :data:`kernel`, with
:data:`parallel_kernel` when it has ``prange`` loops, or with :data:`inline_kernel`.

- ``cache=True``: compiled code is written to numba's cache, so a second process loads it
  instead of recompiling (NUMBA_CACHE_DIR chooses where). Numba checks only the entry point's
  own source file for staleness: after editing a helper in another file, clear the cache.
- ``parallel`` (parallel_kernel only): only explicit ``prange`` loops run in parallel. Numba's
  automatic parallelisation of array expressions and allocations is off, so a kernel launches
  threads exactly where its code says so.
- ``fastmath={"contract"}``: lets LLVM fuse a*b+c into one FMA (one rounding instead of two,
  so results are at least as accurate as NumPy's). Deliberately NOT ``nnan``/``ninf`` (NaN and
  inf must propagate as in NumPy), nor ``reassoc``: the hot loops are written so that they
  vectorise without reordering sums (they accumulate across rows into a vector of columns).
- ``error_model="numpy"``: division by zero gives inf/NaN like NumPy instead of raising.
- ``nogil=True``: kernels release the GIL.

The tuning constants come from ``fusedense.tuning``, the row of the instruction set LLVM
compiles for (:data:`ISA`).
"""
import numba
from llvmlite import binding as llvm

from .. import tuning


def _target_isa():
    """The tuning row for the CPU LLVM compiles for: the host, or NUMBA_CPU_FEATURES when set
    (as numba itself does, so a cache built for another CPU gets that CPU's constants)."""
    if numba.config.CPU_FEATURES:
        features = {f[1:] for f in numba.config.CPU_FEATURES.split(",") if f.startswith("+")}
    else:
        features = {name for name, on in llvm.get_host_cpu_features().items() if on}
    if "avx512f" in features:
        return "avx512"
    if {"avx2", "fma"} <= features:
        return "avx2"
    return "generic"


ISA = _target_isa()
TUNING = tuning.table(ISA)
#: bytes of one vector register of ISA
VECTOR_BYTES = {"avx512": 64, "avx2": 32, "generic": 16}[ISA]

_COMMON = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
_PRANGE_ONLY = {"prange": True, "comprehension": False, "reduction": False, "setitem": False,
                "inplace_binop": False, "numpy": False, "stencil": False, "fusion": False}

kernel = numba.njit(**_COMMON)
#: inlined into its callers by numba, so that arguments that are constants at a call site
#: (a tile's shape) are constants in the loops LLVM unrolls
inline_kernel = numba.njit(inline="always", **_COMMON)
parallel_kernel = numba.njit(parallel=_PRANGE_ONLY, **_COMMON)

#: The parallel policy. The element-wise kernels (activations, losses, optimizers) have a
#: ``*_parallel`` variant that splits the work into blocks of at least PARALLEL_MIN_ELEMENTS;
#: the backend calls it only for two blocks or more (:func:`use_parallel`). Everything else —
#: one layer, a network, a training step — is compiled serial and gets its parallelism from
#: the BLAS inside large products: on shared cores a parallel region waits until all its
#: threads are scheduled (docs/performance-notes.md, "Numba engine").
PARALLEL_MIN_ELEMENTS = TUNING["PARALLEL_MIN_ELEMENTS"]


def use_parallel(n_elements):
    """Whether the backend should call a kernel's parallel variant (two blocks or more)."""
    return n_elements >= 2 * PARALLEL_MIN_ELEMENTS


@kernel
def rows_per_block(n_rows, n_cols):
    """Rows per parallel block of an (n_rows, n_cols) pass: at least PARALLEL_MIN_ELEMENTS
    elements each."""
    rows = max(1, PARALLEL_MIN_ELEMENTS // max(1, n_cols))
    return min(rows, n_rows)
