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

#: The parallel policy. A block of fewer elements runs on one thread. On an idle machine waking
#: the pool costs a few µs, but when the cores are shared (measured here: load 8 on 2 cores)
#: a parallel region waits until all its threads are scheduled, and the pool's threads compete
#: with the BLAS threads of the GEMMs around it: a 2-thread Adam over the seed MLP's 109k
#: parameters made its training step 10x slower than a serial one. So parallel blocks carry
#: at least 2^17 elements (~100 µs of Adam or softmax work).
PARALLEL_MIN_ELEMENTS = 1 << 17


@kernel
def rows_per_block(n_rows, n_cols):
    """Rows per parallel block of an (n_rows, n_cols) pass: at least PARALLEL_MIN_ELEMENTS
    elements each, so a small array is one block and runs serially (no pool wake-up)."""
    rows = max(1, PARALLEL_MIN_ELEMENTS // max(1, n_cols))
    return min(rows, n_rows)
