"""sgd_step and adam_step: one fused pass over the flat parameter buffer, in place.
Element-wise and independent, so large buffers are split across OpenMP threads with
identical results for any thread count."""
cimport numpy as cnp
from libc.math cimport pow

from abi cimport OPT_ADAM, OPT_SGD
from arrays cimport buffer, dim, is_float32, typenum
from optim cimport Optimizer, optimizer_pass
from real cimport real
from thread_policy cimport fd_num_threads, fd_set_num_threads

cnp.import_array()


def set_num_threads(int n):
    fd_set_num_threads(n)


def get_num_threads():
    return fd_num_threads


cdef int _sgd(real tag, params, grads, velocity, double lr, double momentum, bint nesterov,
              double weight_decay) except -1:
    cdef Py_ssize_t n = dim(params, 0, "params")
    cdef int t = typenum(tag)
    cdef real* p = <real*>buffer(params, "params", t, -1, n, True)
    cdef const real* g = <real*>buffer(grads, "grads", t, -1, n)
    cdef real* v = <real*>buffer(velocity, "velocity", t, -1,
                                 n if momentum != 0 else dim(velocity, 0, "velocity"), True)
    cdef Optimizer opt
    opt.kind, opt.lr, opt.beta1, opt.nesterov, opt.weight_decay = OPT_SGD, lr, momentum, nesterov, weight_decay
    with nogil:
        optimizer_pass(&opt, p, g, v if momentum != 0 else NULL, NULL, 0, n, fd_num_threads)
    return 0


cdef int _adam(real tag, params, grads, m, v, long step, double lr, double beta1, double beta2,
               double eps, double weight_decay, bint decoupled) except -1:
    cdef Py_ssize_t n = dim(params, 0, "params")
    cdef int t = typenum(tag)
    cdef real* p = <real*>buffer(params, "params", t, -1, n, True)
    cdef const real* g = <real*>buffer(grads, "grads", t, -1, n)
    cdef real* mp = <real*>buffer(m, "m", t, -1, n, True)
    cdef real* vp = <real*>buffer(v, "v", t, -1, n, True)
    cdef Optimizer opt
    opt.kind, opt.lr, opt.beta1, opt.beta2, opt.eps = OPT_ADAM, lr, beta1, beta2, eps
    opt.weight_decay, opt.decoupled = weight_decay, decoupled
    opt.correction1, opt.correction2 = 1 - pow(beta1, step), 1 - pow(beta2, step)
    with nogil:
        optimizer_pass(&opt, p, g, mp, vp, 0, n, fd_num_threads)
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
