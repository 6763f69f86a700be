"""The njit options, defined once: every function is decorated with :data:`kernel`, or with
:data:`parallel_kernel` when it has ``prange`` loops.

- ``cache=True``: compiled code is written to numba's cache, so a second process loads it
  instead of recompiling (NUMBA_CACHE_DIR chooses where). Numba checks only the entry point's
  own source file for staleness: after editing a helper in another file, clear the cache.
- ``parallel``: only explicit ``prange`` loops run in parallel. Numba's automatic
  parallelisation of array expressions and allocations is off, so a kernel launches threads
  exactly where its code says so — and never on the small-shape serial paths.
- ``fastmath={"contract"}``: lets LLVM fuse a*b+c into one FMA (one rounding instead of two,
  so results are at least as accurate as NumPy's). Deliberately NOT ``nnan``/``ninf`` (NaN and
  inf must propagate as in NumPy), nor ``reassoc``: the hot loops are written so that they
  vectorise without reordering sums (they accumulate across rows into a vector of columns).
- ``error_model="numpy"``: division by zero gives inf/NaN like NumPy instead of raising.
- ``nogil=True``: kernels release the GIL.
"""
import numba

_COMMON = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
_PRANGE_ONLY = {"prange": True, "comprehension": False, "reduction": False, "setitem": False,
                "inplace_binop": False, "numpy": False, "stencil": False, "fusion": False}

kernel = numba.njit(**_COMMON)
parallel_kernel = numba.njit(parallel=_PRANGE_ONLY, **_COMMON)
