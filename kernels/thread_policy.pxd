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
from tuning cimport PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_WORK


cdef inline bint in_parallel(int threads, Py_ssize_t tasks) noexcept nogil:
    """Whether a loop of `tasks` runs over `threads` OpenMP threads. If not, it runs as a plain
    loop outside any OpenMP region (each prange has a `for` twin): a prange kept on one thread
    by its `if` still opens a region, which costs about a microsecond once a thread pool exists."""
    return threads > 1 and tasks > 1


cdef inline int elementwise_threads(int threads, Py_ssize_t elements) noexcept nogil:
    """Threads for an element-wise pass over `elements`, at most `threads`: a short pass takes
    less time than waking the threads."""
    return threads if elements >= PARALLEL_MIN_ELEMENTS else 1


cdef inline int network_threads_for(Py_ssize_t work) noexcept nogil:
    """Threads for a whole-network call on the micro-kernel path of `work` multiply-adds (batch
    x Σ W sizes): each parallel region ends in a barrier, which a descheduled thread on a busy
    machine holds for a scheduler time slice."""
    return fd_num_threads if work >= PARALLEL_MIN_WORK else 1


cdef inline bint single_threaded() noexcept nogil:
    """The packed micro-kernels beat BLAS only when BLAS would run on one thread too."""
    return fd_num_threads == 1
