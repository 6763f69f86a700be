"""One thread count for every pool fusedense drives: OpenMP (cython), numba, and BLAS."""
from __future__ import annotations

import ctypes
import glob
import os
from contextlib import contextmanager, nullcontext

#: How long idle pool threads spin before they sleep, for the pools the compiled kernels load:
#: GNU OpenMP (GOMP_SPINCOUNT, `pause`s) and SciPy's OpenBLAS (OPENBLAS_THREAD_TIMEOUT, 2^t
#: cycles). Their defaults, 300 000 pauses (~25 ms on this project's 2-core VM, where a pause
#: costs ~80 ns) and 2^28 cycles (~0.1 s), kept threads busy after every call, taking a core
#: from NumPy, PyTorch or the next process, and on a busy machine from our own late worker
#: (docs/performance-notes.md, "One pool"). These cover the gaps between the regions and
#: BLAS calls of one call (10 000 pauses: ~0.8 ms there, far less on bare metal; with 1000
#: the worker fell asleep between calls, and 2-thread dense batch 64 scaled 1.1-1.8x, not 1.8-1.9x).
QUIET_POOLS = {"GOMP_SPINCOUNT": "10000", "OPENBLAS_THREAD_TIMEOUT": "20"}


@contextmanager
def quiet_pools():
    """Inside, QUIET_POOLS's settings that the user has not made (OMP_WAIT_POLICY counts for
    GOMP_SPINCOUNT) are in the environment: load the kernels (and with them libgomp and SciPy's
    OpenBLAS, which read these once, when they load) inside. The environment is restored after,
    so that neither other libraries loaded later nor child processes inherit them."""
    user = set(os.environ) | ({"GOMP_SPINCOUNT"} if "OMP_WAIT_POLICY" in os.environ else set())
    added = {name: value for name, value in QUIET_POOLS.items() if name not in user}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


_num_threads = None  # None: not set, use the machine's cores
_listeners = []  # backends register a callback to apply a new count to their own pool


def _default_threads() -> int:
    env = os.environ.get("FUSEDENSE_NUM_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"FUSEDENSE_NUM_THREADS: expected a positive integer, got {env!r}") from None
        if 1 <= n <= max_threads():
            return n
        raise ValueError(f"FUSEDENSE_NUM_THREADS: expected an integer in [1, {max_threads()}], got {env!r}")
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def get_num_threads() -> int:
    """The number of threads fusedense kernels use."""
    global _num_threads
    if _num_threads is None:
        _num_threads = _default_threads()
    return _num_threads


def max_threads() -> int:
    """The largest thread count fusedense accepts: four per CPU of this machine. More threads
    than that only oversubscribe the cores, and every kernel sizes scratch per thread."""
    return 4 * (os.cpu_count() or 1)


def set_num_threads(n: int) -> int:
    """Sets the thread count for fusedense kernels (1 to ``max_threads()``); returns the previous
    count (to restore it). When it raises, nothing has changed."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"n: expected a positive integer, got {type(n).__name__} {n!r}")
    n = int(n.__index__())
    if not 1 <= n <= max_threads():
        raise ValueError(f"n: expected an integer in [1, {max_threads()}] (four per CPU), got {n}")
    previous = get_num_threads()
    _num_threads = n
    try:
        for apply in _listeners:
            apply(n)
    except BaseException:
        _num_threads = previous
        for apply in _listeners:
            apply(previous)
        raise
    return previous


def on_num_threads_change(apply) -> None:
    """Registers ``apply(n)``, called now and whenever the count changes."""
    _listeners.append(apply)
    apply(get_num_threads())


_UNKNOWN = object()
_scipy_blas = _UNKNOWN  # (set, get) of SciPy's OpenBLAS thread count, or None; found once


def _scipy_blas_threads():
    """(set, get) for the thread count of SciPy's bundled OpenBLAS (scipy.libs/): the library
    both compiled engines' BLAS calls go to (the Cython kernels through scipy.linalg.cython_blas,
    numba's np.dot through the same module). None when SciPy links another BLAS (then its own
    environment variables govern it). Imports SciPy: called by an engine when it loads, never
    by ``import fusedense``."""
    global _scipy_blas
    if _scipy_blas is not _UNKNOWN:
        return _scipy_blas
    import scipy

    _scipy_blas = None
    pattern = os.path.join(os.path.dirname(scipy.__file__), os.pardir, "scipy.libs", "*openblas*")
    for path in sorted(glob.glob(pattern)):
        try:
            lib = ctypes.CDLL(path)  # already loaded by the kernels: this returns the same copy
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            setter = getattr(lib, prefix + "_set_num_threads", None)
            getter = getattr(lib, prefix + "_get_num_threads", None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                _scipy_blas = setter, getter
                return _scipy_blas
    return _scipy_blas


def set_blas_num_threads(n):
    """Gives the engines' BLAS (SciPy's OpenBLAS) ``n`` threads: an engine calls this whenever
    fusedense's count changes, so that a product that goes to BLAS honours it too."""
    pool = _scipy_blas_threads()
    if pool is not None:
        pool[0](n)


def blas_num_threads():
    """Threads the engines' BLAS uses now (None if unknown); for tests and diagnostics."""
    pool = _scipy_blas_threads()
    return None if pool is None else pool[1]()


def _blas_limit(n):
    """Caps the BLAS/OpenMP pools already loaded by NumPy and others (threadpoolctl, if present)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return threadpool_limits(n)


@contextmanager
def threads_limited(n):
    """fusedense's kernels and the BLAS/OpenMP pools already loaded run on ``n`` threads inside
    (a busy 2-core machine punishes pools that fight each other); both counts are restored after."""
    previous = set_num_threads(n)
    try:
        with _blas_limit(n):
            yield
    finally:
        set_num_threads(previous)
