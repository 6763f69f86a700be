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

/* Keras's RMSprop: p −= lr·wd·p (decoupled weight decay), then v = ρ v + (1 − ρ) g²,
 * s = lr·g/√(v + ε); with momentum μ: b = μ b + s, p −= b; without: p −= s. v and b below the
 * smallest normal number are flushed to zero, as Adam's moments (see below). */
static FD_TARGET void FD_NAME(rmsprop_update)(FD_REAL *p, const FD_REAL *g, FD_REAL *v, FD_REAL *b,
                                              ptrdiff_t n, FD_REAL lr, FD_REAL rho, FD_REAL momentum,
                                              FD_REAL eps, FD_REAL weight_decay)
{
    const FD_REAL keep = 1 - rho, decay = lr * weight_decay;
    const FD_REAL smallest = sizeof(FD_REAL) == sizeof(float) ? FLT_MIN : DBL_MIN;
    for (ptrdiff_t i = 0; i < n; i++) {
        FD_REAL pi = p[i] - decay * p[i];
        FD_REAL vi = rho * v[i] + keep * g[i] * g[i];
        vi = vi < smallest ? 0 : vi;
        v[i] = vi;
        FD_REAL si = lr * g[i] / FD_SQRT(vi + eps);
        if (momentum != 0) {
            si = momentum * b[i] + si;
            si = si < smallest && si > -smallest ? 0 : si;
            b[i] = si;
        }
        p[i] = pi - si;
    }
}

/* Adam (L2 added to the gradient) or AdamW (decoupled: p −= lr·wd·p first);
 * corrections are 1 − β^step, applied as PyTorch does (step size lr/c1, denominator √v/√c2 + ε).
 * (Dividing m and v by their corrections made the loop divide-bound: half of a 784-128-64-10
 * network's training step at batch 32.)
 * Moments below the smallest normal number are flushed to zero: a feature that stops occurring
 * (an image's always-blank border pixels) decays m by β1 every step into the denormal range, where
 * each multiplication costs ~100 cycles — training slowed down 2x after a few epochs. The flush
 * changes the update by less than lr·FLT_MIN/ε; NaN compares false and propagates. */
typedef struct {
    FD_REAL beta1, beta2, keep1, keep2, weight_decay, decay, step_size, inv_root2, eps, smallest;
    int decoupled;
} FD_NAME(adam_constants);

static inline __attribute__((always_inline)) FD_TARGET FD_NAME(adam_constants) FD_NAME(adam_setup)(
        FD_REAL lr, FD_REAL beta1, FD_REAL beta2, FD_REAL eps, FD_REAL weight_decay, int decoupled,
        FD_REAL correction1, FD_REAL correction2)
{
    FD_NAME(adam_constants) c = {beta1, beta2, 1 - beta1, 1 - beta2, weight_decay,
                                 lr * weight_decay, lr / correction1, 1 / FD_SQRT(correction2), eps,
                                 sizeof(FD_REAL) == sizeof(float) ? FLT_MIN : DBL_MIN, decoupled};
    return c;
}

/* The exact update of p[:n]: one division and one square root per element. */
static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(adam_exact)(
        const FD_NAME(adam_constants) *c, FD_REAL *p, const FD_REAL *g, FD_REAL *m, FD_REAL *v,
        ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        FD_REAL pi = c->decoupled ? p[i] - c->decay * p[i] : p[i];
        FD_REAL gi = c->decoupled ? g[i] : g[i] + c->weight_decay * pi;
        FD_REAL mi = c->beta1 * m[i] + c->keep1 * gi;
        FD_REAL vi = c->beta2 * v[i] + c->keep2 * gi * gi;
        mi = mi < c->smallest && mi > -c->smallest ? 0 : mi;
        vi = vi < c->smallest ? 0 : vi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - c->step_size * (mi / (FD_SQRT(vi) * c->inv_root2 + c->eps));
    }
}

#if FD_FLOAT && FD_VBYTES == 64
/* float on AVX-512: the exact loop waits on the divider (a square root and a division per
 * vector). Here 1/d comes from the 14-bit reciprocal estimate (one fast instruction) refined by
 * one Newton step, to about 1 ulp; the square root stays exact (an estimate there too was
 * slower again). AVX2 takes the exact loop: where a ymm division issues every ~3 cycles the
 * estimate's extra instructions cost more than the division.
 * d = +inf (v or g infinite) gives 1/d = 0, as the exact m/d gives 0 (NaN where m is infinite
 * too); a NaN d stays NaN; ε below FLT_MIN (where d could be 0) takes the exact loop. Every lane
 * depends only on its own element, not on where it sits in the buffer. */
typedef float FD_NAME(adam_vec) __attribute__((vector_size(FD_VBYTES), aligned(sizeof(float))));
typedef int FD_NAME(adam_bits) __attribute__((vector_size(FD_VBYTES)));
#define FD_ADAM_VLEN (FD_VBYTES / (int)sizeof(float))

#define FD_ADAM_SQRT(x) (FD_NAME(adam_vec))_mm512_sqrt_ps((__m512)(x))
#define FD_ADAM_RECIPROCAL_ESTIMATE(x) (FD_NAME(adam_vec))_mm512_rcp14_ps((__m512)(x))

/* x with its zero and denormal lanes set to +0 (the exponent bits are 0 exactly there; NaN and
 * infinities keep theirs). */
static inline __attribute__((always_inline)) FD_TARGET FD_NAME(adam_vec) FD_NAME(adam_flush)(
        FD_NAME(adam_vec) x)
{
    FD_NAME(adam_bits) bits = (FD_NAME(adam_bits))x;
    return (FD_NAME(adam_vec))(bits & ((bits & 0x7f800000) != 0));
}

/* The update of FD_ADAM_VLEN elements at p, g, m, v. */
static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(adam_vector)(
        const FD_NAME(adam_constants) *c, float *p, const float *g, float *m, float *v)
{
    typedef FD_NAME(adam_vec) vec;
    vec pi = *(vec *)p, gi = *(const vec *)g;
    if (c->decoupled)
        pi = pi - c->decay * pi;
    else
        gi = gi + c->weight_decay * pi;
    vec mi = FD_NAME(adam_flush)(c->beta1 * *(vec *)m + c->keep1 * gi);
    vec vi = FD_NAME(adam_flush)(c->beta2 * *(vec *)v + c->keep2 * gi * gi);
    vec d = FD_ADAM_SQRT(vi) * c->inv_root2 + c->eps;
    /* q ≈ 1/d, then one Newton step in correction form, q += q·(1 − d·q) (the FMA computes the
     * small correction nearly exactly); q = 0 where d = +inf (the step gives NaN there) */
    vec q = FD_ADAM_RECIPROCAL_ESTIMATE(d);
    q = q + q * (1.0f - d * q);
    q = (vec)((FD_NAME(adam_bits))q & (d != (vec){0} + INFINITY));
    *(vec *)m = mi;
    *(vec *)v = vi;
    *(vec *)p = pi - c->step_size * (mi * q);
}
#undef FD_ADAM_SQRT
#undef FD_ADAM_RECIPROCAL_ESTIMATE
#endif

static FD_TARGET void FD_NAME(adam_update)(FD_REAL *p, const FD_REAL *g, FD_REAL *m, FD_REAL *v,
                                           ptrdiff_t n, FD_REAL lr, FD_REAL beta1, FD_REAL beta2,
                                           FD_REAL eps, FD_REAL weight_decay, int decoupled,
                                           FD_REAL correction1, FD_REAL correction2)
{
    FD_NAME(adam_constants) c = FD_NAME(adam_setup)(lr, beta1, beta2, eps, weight_decay, decoupled,
                                                    correction1, correction2);
#if FD_FLOAT && FD_VBYTES == 64
    ptrdiff_t i = 0;
    if (!(eps >= FLT_MIN)) {
        FD_NAME(adam_exact)(&c, p, g, m, v, n);
        return;
    }
    for (; i + FD_ADAM_VLEN <= n; i += FD_ADAM_VLEN)
        FD_NAME(adam_vector)(&c, p + i, g + i, m + i, v + i);
    if (i < n) {  /* the last elements, in a zero-padded vector */
        float tail[4][FD_ADAM_VLEN] = {{0}};
        size_t bytes = (size_t)(n - i) * sizeof(float);
        memcpy(tail[0], p + i, bytes);
        memcpy(tail[1], g + i, bytes);
        memcpy(tail[2], m + i, bytes);
        memcpy(tail[3], v + i, bytes);
        FD_NAME(adam_vector)(&c, tail[0], tail[1], tail[2], tail[3]);
        memcpy(p + i, tail[0], bytes);
        memcpy(m + i, tail[2], bytes);
        memcpy(v + i, tail[3], bytes);
    }
#else
    FD_NAME(adam_exact)(&c, p, g, m, v, n);
#endif
}
#undef FD_ADAM_VLEN
