# The pieces of layers.pyx that other kernel modules build on (embedding.pyx): whole-network
# forward, the training step's gradient pass, and their argument checks (the optimizer pass
# is optim.pxd's).
from libc.stdint cimport int64_t

from layer cimport Layer
from optim cimport Optimizer
from real cimport real


cdef int check_training(real tag, params, grads, opt_state, hyper, Optimizer* opt) except -1
cdef void* alloc_train_work(size_t work_bytes, Py_ssize_t L, void** kept) except NULL

cdef int forward_plan(Py_ssize_t B, const Layer* layers, Py_ssize_t L, size_t itemsize,
                      Py_ssize_t* block, bint* micro) noexcept nogil
cdef Py_ssize_t forward_scratch_size(int threads, Py_ssize_t block, const Layer* layers,
                                     Py_ssize_t L) noexcept nogil
cdef void network_forward(Py_ssize_t B, const real* x, const real* params, const Layer* layers,
                          Py_ssize_t L, real* out, real* scratch, Py_ssize_t block, bint micro,
                          int threads) noexcept nogil

cdef int network_threads(Py_ssize_t B, const Layer* layers, Py_ssize_t L,
                         size_t itemsize) noexcept nogil
cdef Py_ssize_t train_work_size(Py_ssize_t B, const Layer* layers, Py_ssize_t L) noexcept nogil
cdef bint layers_tile(const Layer* layers, Py_ssize_t L, Py_ssize_t start,
                      Py_ssize_t n_params) noexcept nogil
cdef double train_gradients(Py_ssize_t B, const real* x, const int64_t* labels,
                            const real* targets, real* params, real* grads,
                            const Layer* layers, Py_ssize_t L, int loss_id, real* work,
                            real** kept, int threads, real* dx, real* outputs,
                            const Optimizer* opt, real* first, real* second) noexcept nogil
