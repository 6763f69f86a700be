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
 * corrections are 1 − β^step, applied as PyTorch does (step size lr/c1, denominator √v/√c2 + ε):
 * one division and one square root per element. (Dividing m and v by their corrections made the
 * loop divide-bound: half of a 784-128-64-10 network's training step at batch 32.)
 * Moments below the smallest normal number are flushed to zero: a feature that stops occurring
 * (an image's always-blank border pixels) decays m by β1 every step into the denormal range, where
 * each multiplication costs ~100 cycles — training slowed down 2x after a few epochs. The flush
 * changes the update by less than lr·FLT_MIN/ε; NaN compares false and propagates. */
static FD_TARGET void FD_NAME(adam_update)(FD_REAL *p, const FD_REAL *g, FD_REAL *m, FD_REAL *v,
                                           ptrdiff_t n, FD_REAL lr, FD_REAL beta1, FD_REAL beta2,
                                           FD_REAL eps, FD_REAL weight_decay, int decoupled,
                                           FD_REAL correction1, FD_REAL correction2)
{
    FD_REAL keep1 = 1 - beta1, keep2 = 1 - beta2, decay = lr * weight_decay;
    FD_REAL step_size = lr / correction1, inv_root2 = 1 / FD_SQRT(correction2);
    const FD_REAL smallest = sizeof(FD_REAL) == sizeof(float) ? FLT_MIN : DBL_MIN;
    for (ptrdiff_t i = 0; i < n; i++) {
        FD_REAL pi = decoupled ? p[i] - decay * p[i] : p[i];
        FD_REAL gi = decoupled ? g[i] : g[i] + weight_decay * pi;
        FD_REAL mi = beta1 * m[i] + keep1 * gi;
        FD_REAL vi = beta2 * v[i] + keep2 * gi * gi;
        mi = mi < smallest && mi > -smallest ? 0 : mi;
        vi = vi < smallest ? 0 : vi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * (mi / (FD_SQRT(vi) * inv_root2 + eps));
    }
}
