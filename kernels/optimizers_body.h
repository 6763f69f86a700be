/* Instantiated by simd_instantiate.h with FD_REAL, FD_NAME, FD_SQRT and FD_TARGET: plain loops
 * that GCC auto-vectorizes for the build's ISA. The arithmetic follows fusedense.reference step
 * by step (PyTorch semantics). */

/* g += wd·p; v = μ v + g; p −= lr · (g + μ v if nesterov else v); without momentum p −= lr·g */
static FD_TARGET void FD_NAME(sgd_update)(FD_REAL *p, const FD_REAL *g, FD_REAL *v, ptrdiff_t n,
                                          FD_REAL lr, FD_REAL momentum, int nesterov,
                                          FD_REAL weight_decay)
{
    if (momentum == 0) {
        for (ptrdiff_t i = 0; i < n; i++)
            p[i] -= lr * (g[i] + weight_decay * p[i]);
        return;
    }
    for (ptrdiff_t i = 0; i < n; i++) {
        FD_REAL gi = g[i] + weight_decay * p[i];
        FD_REAL vi = momentum * v[i] + gi;
        v[i] = vi;
        p[i] -= lr * (nesterov ? gi + momentum * vi : vi);
    }
}

/* Adam (L2 added to the gradient) or AdamW (decoupled: p −= lr·wd·p first);
 * corrections are 1 − β^step. One division and one square root per element (lr / c1 and 1 / c2
 * are taken once): those two, not memory, bound this loop. */
static FD_TARGET void FD_NAME(adam_update)(FD_REAL *p, const FD_REAL *g, FD_REAL *m, FD_REAL *v,
                                           ptrdiff_t n, FD_REAL lr, FD_REAL beta1, FD_REAL beta2,
                                           FD_REAL eps, FD_REAL weight_decay, int decoupled,
                                           FD_REAL correction1, FD_REAL correction2)
{
    FD_REAL keep1 = 1 - beta1, keep2 = 1 - beta2, decay = lr * weight_decay;
    FD_REAL step = lr / correction1, inverse2 = 1 / correction2;
    for (ptrdiff_t i = 0; i < n; i++) {
        FD_REAL pi = decoupled ? p[i] - decay * p[i] : p[i];
        FD_REAL gi = decoupled ? g[i] : g[i] + weight_decay * pi;
        FD_REAL mi = beta1 * m[i] + keep1 * gi;
        FD_REAL vi = beta2 * v[i] + keep2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step * mi / (FD_SQRT(vi * inverse2) + eps);
    }
}
