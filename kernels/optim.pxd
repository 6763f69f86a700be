# Optimizer updates over a range of the flat parameter buffer, one pass each, shared by
# optim.pyx (sgd_step, adam_step) and by the fused training step in layers.pyx.
# The arithmetic follows fusedense.reference step by step (PyTorch semantics).
from act cimport r_sqrt
from real cimport real


cdef inline void sgd_update(real* p, const real* g, real* v, Py_ssize_t n, real lr, real momentum,
                            bint nesterov, real weight_decay) noexcept nogil:
    """g += wd·p; v = μ v + g; p −= lr · (g + μ v if nesterov else v); without momentum p −= lr·g."""
    cdef Py_ssize_t i
    cdef real gi, vi
    if momentum == 0:
        for i in range(n):
            p[i] -= lr * (g[i] + weight_decay * p[i])
        return
    for i in range(n):
        gi = g[i] + weight_decay * p[i]
        vi = momentum * v[i] + gi
        v[i] = vi
        p[i] -= lr * (gi + momentum * vi if nesterov else vi)


cdef inline void adam_update(real* p, const real* g, real* m, real* v, Py_ssize_t n, real lr,
                             real beta1, real beta2, real eps, real weight_decay, bint decoupled,
                             real correction1, real correction2) noexcept nogil:
    """Adam (L2 in the gradient) or AdamW (decoupled: p −= lr·wd·p first); corrections are
    1 − β^step, computed once in double by the caller."""
    cdef Py_ssize_t i
    cdef real gi, mi, vi
    cdef real keep1 = 1 - beta1, keep2 = 1 - beta2
    for i in range(n):
        if decoupled:
            p[i] -= lr * weight_decay * p[i]
            gi = g[i]
        else:
            gi = g[i] + weight_decay * p[i]
        mi = beta1 * m[i] + keep1 * gi
        vi = beta2 * v[i] + keep2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= lr * (mi / correction1) / (r_sqrt(vi / correction2) + eps)
