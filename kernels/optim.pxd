# Optimizer updates over a range of the flat parameter buffer, one pass each (optimizers.h),
# and the one chunked loop that runs them over a whole buffer; shared by optim.pyx (sgd_step,
# adam_step), the fused training step (train.pxd).
from cython.parallel cimport prange

from abi cimport OPT_RMSPROP, OPT_SGD
from thread_policy cimport elementwise_threads, in_parallel
from tuning cimport OPTIMIZER_CHUNK
from real cimport real

cdef extern from "optimizers.h" nogil:
    void sgd_update_f(float* p, const float* g, float* v, Py_ssize_t n, float lr, float momentum,
                      int nesterov, float weight_decay)
    void sgd_update_d(double* p, const double* g, double* v, Py_ssize_t n, double lr,
                      double momentum, int nesterov, double weight_decay)
    void adam_update_f(float* p, const float* g, float* m, float* v, Py_ssize_t n, float lr,
                       float beta1, float beta2, float eps, float weight_decay, int decoupled,
                       float correction1, float correction2)
    void adam_update_d(double* p, const double* g, double* m, double* v, Py_ssize_t n, double lr,
                       double beta1, double beta2, double eps, double weight_decay, int decoupled,
                       double correction1, double correction2)
    void rmsprop_update_f(float* p, const float* g, float* v, float* b, Py_ssize_t n, float lr, float rho,
                          float momentum, float eps, float weight_decay)
    void rmsprop_update_d(double* p, const double* g, double* v, double* b, Py_ssize_t n, double lr,
                          double rho, double momentum, double eps, double weight_decay)


# An optimizer step: OPT_SGD (lr, beta1 = momentum, weight_decay, nesterov), OPT_ADAM
# (corrections = 1 − β^step, computed once in double) or OPT_RMSPROP (beta1 = momentum, beta2 = ρ).
cdef struct Optimizer:
    int kind
    double lr, beta1, beta2, eps, weight_decay, correction1, correction2
    bint nesterov, decoupled


cdef inline void sgd_update(real* p, const real* g, real* v, Py_ssize_t n, real lr, real momentum,
                            bint nesterov, real weight_decay) noexcept nogil:
    """PyTorch SGD on p[:n]: g += wd·p; v = μ v + g; p −= lr · (g + μ v if nesterov else v)."""
    if real is float:
        sgd_update_f(p, g, v, n, lr, momentum, nesterov, weight_decay)
    else:
        sgd_update_d(p, g, v, n, lr, momentum, nesterov, weight_decay)


cdef inline void adam_update(real* p, const real* g, real* m, real* v, Py_ssize_t n, real lr,
                             real beta1, real beta2, real eps, real weight_decay, bint decoupled,
                             real correction1, real correction2) noexcept nogil:
    """Adam / AdamW on p[:n]; corrections are 1 − β^step, computed once in double by the caller."""
    if real is float:
        adam_update_f(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, decoupled,
                      correction1, correction2)
    else:
        adam_update_d(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, decoupled,
                      correction1, correction2)


cdef inline void rmsprop_update(real* p, const real* g, real* v, real* b, Py_ssize_t n, real lr, real rho,
                                real momentum, real eps, real weight_decay) noexcept nogil:
    """Keras's RMSprop on p[:n] (optimizers_body.h): v the mean square, b the momentum buffer."""
    if real is float:
        rmsprop_update_f(p, g, v, b, n, lr, rho, momentum, eps, weight_decay)
    else:
        rmsprop_update_d(p, g, v, b, n, lr, rho, momentum, eps, weight_decay)


cdef inline void optimizer_update(const Optimizer* opt, real* params, const real* grads,
                                  real* first, real* second, Py_ssize_t start,
                                  Py_ssize_t n) noexcept nogil:
    """The step on params[start:start+n]. first: SGD's velocity (NULL without momentum) or
    Adam's m or RMSprop's mean square; second: Adam's v or RMSprop's momentum buffer; all indexed
    like params."""
    if opt.kind == OPT_SGD:
        sgd_update(params + start, grads + start, NULL if first == NULL else first + start, n,
                   <real>opt.lr, <real>opt.beta1, opt.nesterov, <real>opt.weight_decay)
    elif opt.kind == OPT_RMSPROP:
        rmsprop_update(params + start, grads + start, first + start, second + start, n, <real>opt.lr,
                       <real>opt.beta2, <real>opt.beta1, <real>opt.eps, <real>opt.weight_decay)
    else:
        adam_update(params + start, grads + start, first + start, second + start, n,
                    <real>opt.lr, <real>opt.beta1, <real>opt.beta2, <real>opt.eps,
                    <real>opt.weight_decay, opt.decoupled, <real>opt.correction1,
                    <real>opt.correction2)


cdef inline void optimizer_pass(const Optimizer* opt, real* params, const real* grads,
                                real* first, real* second, Py_ssize_t start, Py_ssize_t end,
                                int threads) noexcept nogil:
    """The step on params[start:end] (arguments as optimizer_update), in chunks shared over
    OpenMP threads. Each element's update depends on that element alone: the same result for
    any thread count."""
    cdef Py_ssize_t c, chunks = (end - start + OPTIMIZER_CHUNK - 1) // OPTIMIZER_CHUNK
    if in_parallel(elementwise_threads(threads, end - start), chunks):
        for c in prange(chunks, nogil=True, schedule="static", num_threads=threads):
            optimizer_update(opt, params, grads, first, second, start + c * OPTIMIZER_CHUNK,
                             min(OPTIMIZER_CHUNK, end - start - c * OPTIMIZER_CHUNK))
    else:
        for c in range(chunks):
            optimizer_update(opt, params, grads, first, second, start + c * OPTIMIZER_CHUNK,
                             min(OPTIMIZER_CHUNK, end - start - c * OPTIMIZER_CHUNK))
