# Optimizer updates over a range of the flat parameter buffer, one pass each (optimizers.h),
# shared by optim.pyx (sgd_step, adam_step) and the fused training step in layers.pyx.
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
