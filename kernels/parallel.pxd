# When a kernel loop is shared over OpenMP threads: the one rule for every module's loops.

cdef inline bint in_parallel(int threads, Py_ssize_t tasks) noexcept nogil:
    """Whether a loop of `tasks` runs over `threads` OpenMP threads. If not, it runs as a plain
    loop outside any OpenMP region (each prange has a `for` twin): a prange that its `if`
    keeps on one thread still opens a region, ~0.9 µs that libgomp ends with a futex wake once
    a thread pool exists (measured on an AMD EPYC: 11% of a batch-1 MLP forward, 30% of a
    batch-1 training step of a 64-100-10 network)."""
    return threads > 1 and tasks > 1
