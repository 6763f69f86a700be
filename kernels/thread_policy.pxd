# How many OpenMP threads each kernel loop uses: the one place that decides it, for every
# kernel module (activations, optim, layers, embedding). BLAS threads are the backend's.
cdef extern from *:
    """
    #ifndef FD_THREAD_POLICY
    #define FD_THREAD_POLICY
    /* fusedense.set_num_threads's count; each extension module has its own copy, which the
       backend sets through the module's set_num_threads */
    static int fd_num_threads = 1;
    static inline void fd_set_num_threads(int n) { fd_num_threads = n > 1 ? n : 1; }
    #endif
    """
    int fd_num_threads
    void fd_set_num_threads(int n) noexcept nogil
from tuning cimport (PACKED_MAX_ROWS, PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_WORK, SPLIT_COLUMNS,
                    SPLIT_MIN_WORK, TRAIN_PARALLEL_MIN_WORK)


cdef inline bint in_parallel(int threads, Py_ssize_t tasks) noexcept nogil:
    """Whether a loop of `tasks` runs over `threads` OpenMP threads. If not, it runs as a plain
    loop outside any OpenMP region (each prange has a `for` twin): a prange kept on one thread
    by its `if` still opens a region, which costs about a microsecond once a thread pool exists."""
    return threads > 1 and tasks > 1


cdef inline int elementwise_threads(int threads, Py_ssize_t elements) noexcept nogil:
    """Threads for an element-wise pass over `elements`, at most `threads`: a short pass takes
    less time than waking the threads."""
    return threads if elements >= PARALLEL_MIN_ELEMENTS else 1


cdef inline int network_threads_for(Py_ssize_t work, bint training) noexcept nogil:
    """Threads for a whole-network call (training: a training step) on the micro-kernel path of
    `work` multiply-adds (batch x Σ W sizes): each parallel region ends in a barrier, which a
    descheduled thread on a busy machine holds for a scheduler time slice."""
    return fd_num_threads if work >= (TRAIN_PARALLEL_MIN_WORK if training else PARALLEL_MIN_WORK) else 1


cdef inline bint single_threaded() noexcept nogil:
    """The packed micro-kernels beat BLAS only when BLAS would run on one thread too."""
    return fd_num_threads == 1


cdef inline int column_slices(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n) noexcept nogil:
    """Slices of output columns that a layer's product of m x k by k x n is split into over
    the OpenMP threads; 1: not split. Batches up to PACKED_MAX_ROWS, where every thread would
    otherwise read all of W: with slices of W of their own, a batch-1 product draws on every
    core's memory bandwidth and a mid-batch one on every core's FMA units, with no BLAS pool
    involved. Larger batches go to BLAS on its own threads. One slice per thread, the same
    thread every call (a static schedule): its slice of W stays in that core's L2 and L3
    between calls. Slices taken dynamically moved between cores from call to call: the FFN's
    batch-1 call took 1.3x the one-thread time, its W no longer in the caches it was read
    into (docs/performance-notes.md). Fixed slices for a given thread count: the same bits at
    every call."""
    if fd_num_threads == 1 or m > PACKED_MAX_ROWS or m * k * n < SPLIT_MIN_WORK:
        return 1
    return <int>max(1, min(fd_num_threads, n // SPLIT_COLUMNS))


cdef inline Py_ssize_t slice_start(Py_ssize_t i, Py_ssize_t slices, Py_ssize_t n) noexcept nogil:
    """First column of slice i of n columns in `slices` near-equal slices (i = slices: n), on
    multiples of SPLIT_COLUMNS."""
    if i >= slices:
        return n
    return (n // SPLIT_COLUMNS) * i // slices * SPLIT_COLUMNS
