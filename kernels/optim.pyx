"""sgd_step and adam_step: one fused pass over the flat parameter buffer, in place.
Element-wise and independent, so large buffers are split across OpenMP threads with
identical results for any thread count."""
cimport numpy as cnp
from libc.math cimport pow
from cython.parallel cimport prange

from arrays cimport buffer, dim, is_float32, typenum
from optim cimport adam_update, sgd_update
from real cimport real

cnp.import_array()

cdef int n_threads = 1
cdef Py_ssize_t PARALLEL_MIN_ELEMENTS = 1 << 16
cdef Py_ssize_t CHUNK = 1 << 13


def set_num_threads(int n):
    global n_threads
    n_threads = max(n, 1)


def get_num_threads():
    return n_threads


cdef int _sgd(real tag, params, grads, velocity, double lr, double momentum, bint nesterov,
              double weight_decay) except -1:
    cdef Py_ssize_t n = dim(params, 0, "params"), c, start
    cdef int t = typenum(tag)
    cdef real* p = <real*>buffer(params, "params", t, -1, n, True)
    cdef const real* g = <real*>buffer(grads, "grads", t, -1, n)
    cdef real* v = <real*>buffer(velocity, "velocity", t, -1, n if momentum != 0 else dim(velocity, 0, "velocity"), True)
    for c in prange((n + CHUNK - 1) // CHUNK, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1 and n >= PARALLEL_MIN_ELEMENTS):
        start = c * CHUNK
        sgd_update(p + start, g + start, v + start if momentum != 0 else v, min(CHUNK, n - start),
                   <real>lr, <real>momentum, nesterov, <real>weight_decay)
    return 0


cdef int _adam(real tag, params, grads, m, v, long step, double lr, double beta1, double beta2,
               double eps, double weight_decay, bint decoupled) except -1:
    cdef Py_ssize_t n = dim(params, 0, "params"), c, start
    cdef int t = typenum(tag)
    cdef real* p = <real*>buffer(params, "params", t, -1, n, True)
    cdef const real* g = <real*>buffer(grads, "grads", t, -1, n)
    cdef real* mp = <real*>buffer(m, "m", t, -1, n, True)
    cdef real* vp = <real*>buffer(v, "v", t, -1, n, True)
    cdef real correction1 = <real>(1 - pow(beta1, step)), correction2 = <real>(1 - pow(beta2, step))
    for c in prange((n + CHUNK - 1) // CHUNK, nogil=True, schedule="static", num_threads=n_threads,
                    use_threads_if=n_threads > 1 and n >= PARALLEL_MIN_ELEMENTS):
        start = c * CHUNK
        adam_update(p + start, g + start, mp + start, vp + start, min(CHUNK, n - start), <real>lr,
                    <real>beta1, <real>beta2, <real>eps, <real>weight_decay, decoupled,
                    correction1, correction2)
    return 0


def sgd_step(params, grads, velocity, double lr, double momentum, bint nesterov, double weight_decay):
    """PyTorch SGD in place; velocity is read and written only when momentum != 0."""
    if is_float32(params):
        _sgd(<float>0, params, grads, velocity, lr, momentum, nesterov, weight_decay)
    else:
        _sgd(<double>0, params, grads, velocity, lr, momentum, nesterov, weight_decay)


def adam_step(params, grads, m, v, long step, double lr, double beta1, double beta2, double eps,
              double weight_decay, bint decoupled):
    """Adam / AdamW (decoupled) in place; step counts from 1."""
    if is_float32(params):
        _adam(<float>0, params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled)
    else:
        _adam(<double>0, params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled)
