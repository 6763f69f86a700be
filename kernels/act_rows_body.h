/* Instantiated by simd_instantiate.h with FD_REAL, FD_NAME, FD_MATH, FD_FAST and FD_TARGET.
 * One switch on the activation id per row, then a plain loop per activation, so that every
 * activation but gelu_erf and softplus (libm's erf, log1p) vectorizes: the others are built on
 * fastexp.h's branch-free exp/expm1 of non-positive numbers, with selects instead of branches.
 * Stable forms are the registry's: exp() only of non-positive numbers, expm1 near zero.
 * No fast-math: NaN propagates, ±inf and −0.0 map as in NumPy. */

/* --- element-wise forms (also called one at a time from Cython: the generic build) --- */

static inline FD_TARGET FD_REAL FD_NAME(relu)(FD_REAL z)
{
    return z <= 0 ? 0 : z; /* NaN <= 0 is false: NaN passes through */
}

static inline FD_TARGET FD_REAL FD_NAME(sigmoid)(FD_REAL z)
{
    FD_REAL e = FD_FAST(fd_exp_nonpos)(z >= 0 ? -z : z);
    return z >= 0 ? 1 / (1 + e) : e / (1 + e);
}

/* tanh(z) = sign(z) · −m/(2 + m), m = e^(−2|z|) − 1: no cancellation near 0 (m ≈ −2|z|),
 * ±inf → ±1 (m flushes to −1), NaN → NaN, −0.0 → −0.0. */
static inline FD_TARGET FD_REAL FD_NAME(tanh)(FD_REAL z)
{
    FD_REAL m = FD_FAST(fd_expm1_nonpos)(-2 * FD_MATH(fabs)(z));
    return FD_MATH(copysign)(-m / (2 + m), z);
}

/* expm1 of min(z, 0) (so a NaN z stays NaN) computed unconditionally, then a select */
static inline FD_TARGET FD_REAL FD_NAME(elu)(FD_REAL z, FD_REAL alpha)
{
    FD_REAL m = FD_FAST(fd_expm1_nonpos)(z > 0 ? 0 : z);
    return z > 0 ? z : alpha * m;
}

static inline FD_TARGET FD_REAL FD_NAME(gelu_inner)(FD_REAL z)
{
    return (FD_REAL)FD_SQRT_2_OVER_PI * (z + (FD_REAL)FD_GELU_C * z * z * z);
}

static inline FD_TARGET FD_REAL FD_NAME(gelu)(FD_REAL z)
{
    return (FD_REAL)0.5 * z * (1 + FD_NAME(tanh)(FD_NAME(gelu_inner)(z)));
}

static inline FD_TARGET FD_REAL FD_NAME(d_gelu)(FD_REAL z)
{
    FD_REAL t = FD_NAME(tanh)(FD_NAME(gelu_inner)(z));
    return (FD_REAL)0.5 * (1 + t) + (FD_REAL)0.5 * z * (1 - t * t) * (FD_REAL)FD_SQRT_2_OVER_PI
           * (1 + 3 * (FD_REAL)FD_GELU_C * z * z);
}

static inline FD_TARGET FD_REAL FD_NAME(gelu_erf)(FD_REAL z)
{
    return (FD_REAL)0.5 * z * (1 + FD_MATH(erf)(z * (FD_REAL)FD_INV_SQRT_2));
}

static inline FD_TARGET FD_REAL FD_NAME(d_gelu_erf)(FD_REAL z)
{
    return (FD_REAL)0.5 * (1 + FD_MATH(erf)(z * (FD_REAL)FD_INV_SQRT_2))
           + z * (FD_REAL)FD_INV_SQRT_2PI * FD_FAST(fd_exp_nonpos)((FD_REAL)-0.5 * z * z);
}

static inline FD_TARGET FD_REAL FD_NAME(softplus)(FD_REAL z)
{
    return FD_NAME(relu)(z) + FD_MATH(log1p)(FD_FAST(fd_exp_nonpos)(z >= 0 ? -z : z));
}

/* --- rows --- */

/* e[j] = e^(z[j] − top) for top ≥ every z[j] (softmax and cross-entropy rows; e may be z) */
static FD_TARGET void FD_NAME(exp_shifted_row)(const FD_REAL *z, FD_REAL top, FD_REAL *e,
                                               ptrdiff_t n)
{
    for (ptrdiff_t j = 0; j < n; j++)
        e[j] = FD_FAST(fd_exp_nonpos)(z[j] - top);
}

/* y = softmax(z) or log_softmax(z) over n entries (y may be z) */
static FD_TARGET void FD_NAME(softmax_row)(const FD_REAL *z, FD_REAL *y, ptrdiff_t n,
                                           int log_output)
{
    FD_REAL top = z[0], total = 0;
    for (ptrdiff_t j = 1; j < n; j++)
        top = z[j] > top ? z[j] : top;
    if (log_output) {
        for (ptrdiff_t j = 0; j < n; j++)
            total += FD_FAST(fd_exp_nonpos)(z[j] - top);
        total = FD_MATH(log)(total);
        for (ptrdiff_t j = 0; j < n; j++)
            y[j] = z[j] - top - total;
    } else { /* separate loops: the exp loop vectorizes, the in-order sum cannot */
        FD_NAME(exp_shifted_row)(z, top, y, n);
        for (ptrdiff_t j = 0; j < n; j++)
            total += y[j];
        for (ptrdiff_t j = 0; j < n; j++)
            y[j] = y[j] / total;
    }
}

/* y[j] = F(z[j] + bias[j]) (bias may be NULL) for j < n: the bias add rides in the
 * activation's loop. Reads z[j] before writing y[j], so y may be z. */
#define FD_EACH(F)                                                                             \
    do {                                                                                       \
        if (bias)                                                                              \
            for (ptrdiff_t j = 0; j < n; j++) {                                                \
                FD_REAL v = z[j] + bias[j];                                                    \
                y[j] = F;                                                                      \
            }                                                                                  \
        else                                                                                   \
            for (ptrdiff_t j = 0; j < n; j++) {                                                \
                FD_REAL v = z[j];                                                              \
                y[j] = F;                                                                      \
            }                                                                                  \
    } while (0)

/* y = act(z + bias) over one row of n entries; bias may be NULL, y may be z (in place) */
static FD_TARGET void FD_NAME(act_forward_row)(int act, FD_REAL alpha, const FD_REAL *z,
                                               const FD_REAL *bias, FD_REAL *y, ptrdiff_t n)
{
    switch (act) {
    case ACT_IDENTITY:
        if (bias || y != z)
            FD_EACH(v);
        break;
    case ACT_RELU: FD_EACH(FD_NAME(relu)(v)); break;
    case ACT_LEAKY_RELU: FD_EACH(v > 0 ? v : alpha * v); break;
    case ACT_ELU: FD_EACH(FD_NAME(elu)(v, alpha)); break;
    case ACT_SIGMOID: FD_EACH(FD_NAME(sigmoid)(v)); break;
    case ACT_TANH: FD_EACH(FD_NAME(tanh)(v)); break;
    case ACT_GELU: FD_EACH(FD_NAME(gelu)(v)); break;
    case ACT_GELU_ERF: FD_EACH(FD_NAME(gelu_erf)(v)); break;
    case ACT_SILU: FD_EACH(v * FD_NAME(sigmoid)(v)); break;
    case ACT_SOFTPLUS: FD_EACH(FD_NAME(softplus)(v)); break;
    case ACT_SOFTMAX:
    case ACT_LOG_SOFTMAX:
        if (bias) {
            FD_EACH(v);
            z = y;
        }
        FD_NAME(softmax_row)(z, y, n, act == ACT_LOG_SOFTMAX);
        break;
    }
}
#undef FD_EACH

/* dz = dy · ∂y/∂z over one row. Uses y (which may be NULL) where the registry's from_output
 * allows, else z. dz may be dy (in place) except for softmax/log_softmax without y, which use
 * dz as scratch for y; dz is never z or y. */
static FD_TARGET void FD_NAME(act_backward_row)(int act, FD_REAL alpha, const FD_REAL *dy,
                                                const FD_REAL *z, const FD_REAL *y, FD_REAL *dz,
                                                ptrdiff_t n)
{
    const FD_REAL *src = y ? y : z; /* the from_output activations read either */
    FD_REAL t = 0;
    switch (act) {
    case ACT_IDENTITY:
        if (dz != dy)
            memcpy(dz, dy, n * sizeof(FD_REAL));
        break;
    case ACT_RELU:
        for (ptrdiff_t j = 0; j < n; j++)
            dz[j] = dy[j] * (src[j] > 0 ? 1 : 0);
        break;
    case ACT_LEAKY_RELU:
        for (ptrdiff_t j = 0; j < n; j++)
            dz[j] = dy[j] * (src[j] > 0 ? 1 : alpha);
        break;
    case ACT_ELU: /* below zero: d/dz alpha (e^z − 1) = y + alpha */
        for (ptrdiff_t j = 0; j < n; j++) {
            FD_REAL s = y ? y[j] : FD_NAME(elu)(z[j], alpha);
            dz[j] = dy[j] * (s > 0 ? 1 : s + alpha);
        }
        break;
    case ACT_SIGMOID:
        if (y)
            for (ptrdiff_t j = 0; j < n; j++)
                dz[j] = dy[j] * (y[j] * (1 - y[j]));
        else
            for (ptrdiff_t j = 0; j < n; j++) {
                FD_REAL s = FD_NAME(sigmoid)(z[j]);
                dz[j] = dy[j] * (s * (1 - s));
            }
        break;
    case ACT_TANH:
        if (y)
            for (ptrdiff_t j = 0; j < n; j++)
                dz[j] = dy[j] * (1 - y[j] * y[j]);
        else
            for (ptrdiff_t j = 0; j < n; j++) {
                FD_REAL s = FD_NAME(tanh)(z[j]);
                dz[j] = dy[j] * (1 - s * s);
            }
        break;
    case ACT_GELU:
        for (ptrdiff_t j = 0; j < n; j++)
            dz[j] = dy[j] * FD_NAME(d_gelu)(z[j]);
        break;
    case ACT_GELU_ERF:
        for (ptrdiff_t j = 0; j < n; j++)
            dz[j] = dy[j] * FD_NAME(d_gelu_erf)(z[j]);
        break;
    case ACT_SILU:
        for (ptrdiff_t j = 0; j < n; j++) {
            FD_REAL s = FD_NAME(sigmoid)(z[j]);
            dz[j] = dy[j] * (s * (1 + z[j] * (1 - s)));
        }
        break;
    case ACT_SOFTPLUS:
        for (ptrdiff_t j = 0; j < n; j++)
            dz[j] = dy[j] * FD_NAME(sigmoid)(z[j]);
        break;
    case ACT_SOFTMAX: /* dz = y · (dy − Σ dy·y) */
        if (!y) {
            FD_NAME(softmax_row)(z, dz, n, 0); /* dz holds y until it is overwritten below */
            y = dz;
        }
        for (ptrdiff_t j = 0; j < n; j++)
            t += dy[j] * y[j];
        for (ptrdiff_t j = 0; j < n; j++)
            dz[j] = y[j] * (dy[j] - t);
        break;
    case ACT_LOG_SOFTMAX: /* dz = dy − e^y · Σ dy */
        for (ptrdiff_t j = 0; j < n; j++)
            t += dy[j];
        if (!y) {
            FD_NAME(softmax_row)(z, dz, n, 1);
            y = dz;
        }
        for (ptrdiff_t j = 0; j < n; j++)
            dz[j] = dy[j] - FD_FAST(fd_exp_nonpos)(y[j]) * t;
        break;
    }
}
