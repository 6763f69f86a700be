/* e^x and e^x - 1 for x <= 0, written so that GCC vectorizes loops calling them (no libm call,
 * no branch, no fast-math): Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, a Taylor polynomial
 * for e^r - 1 (degree 8 in float, 14 in double: within ~1 ulp), and 2^n built from its bits.
 * e^x = 2^n (1 + p); e^x - 1 = 2^n p + (2^n - 1), which keeps full relative precision near 0
 * (n = 0 there) where e^x - 1 would cancel. Below the smallest normal number e^x flushes to 0
 * (and e^x - 1 to -1); NaN stays NaN.
 * Used where only non-positive arguments occur: exp(-|z|) in sigmoid, exp(z - max) in softmax,
 * expm1(-2|z|) in tanh, expm1(z) for z <= 0 in elu. */
#ifndef FUSEDENSE_FASTEXP_H
#define FUSEDENSE_FASTEXP_H

#include <stdint.h>
#include <string.h>

/* Reduction shared by exp and expm1: returns e^r - 1 and sets *scale = 2^n; x below `lowest`
 * must be clamped there by the caller. Adding 1.5 * 2^23 (2^52 in double) rounds x / ln 2 to
 * the integer n and leaves n in the low mantissa bits, so 2^n comes from integer add and shift
 * alone (the constant's own bits shift out): no float-to-int conversion, which SSE2 lacks for
 * double. A NaN x gives a NaN polynomial, so the result is NaN whatever the scale. */
static inline float fd_reduce_f(float x, float *scale)
{
    float shifted = x * 1.44269504088896341f + 12582912.0f;
    float n = shifted - 12582912.0f;  /* round(x / ln 2) */
    float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  /* ln 2 in two parts */
    uint32_t bits;
    memcpy(&bits, &shifted, sizeof bits);
    bits = (bits + 127) << 23;
    memcpy(scale, &bits, sizeof *scale);
    return r * (1.0f + r * (1.0f / 2 + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120
           + r * (1.0f / 720 + r * (1.0f / 5040 + r * (1.0f / 40320))))))));
}

static inline double fd_reduce_d(double x, double *scale)
{
    double shifted = x * 1.4426950408889634074 + 6755399441055744.0;
    double n = shifted - 6755399441055744.0;
    double r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
    uint64_t bits;
    memcpy(&bits, &shifted, sizeof bits);
    bits = (bits + 1023) << 52;
    memcpy(scale, &bits, sizeof *scale);
    return r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120
           + r * (1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880
           + r * (1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600
           + r * (1.0 / 6227020800.0 + r * (1.0 / 87178291200.0))))))))))))));
}

#define FD_LOWEST_F (-87.33654f)            /* e^lowest = FLT_MIN */
#define FD_LOWEST_D (-708.3964185322641)    /* e^lowest = DBL_MIN */

static inline float fd_exp_nonpos_f(float x)
{
    float scale, p = fd_reduce_f(x < FD_LOWEST_F ? FD_LOWEST_F : x, &scale);
    return x < FD_LOWEST_F ? 0.0f : scale + p * scale;
}

static inline double fd_exp_nonpos_d(double x)
{
    double scale, p = fd_reduce_d(x < FD_LOWEST_D ? FD_LOWEST_D : x, &scale);
    return x < FD_LOWEST_D ? 0.0 : scale + p * scale;
}

static inline float fd_expm1_nonpos_f(float x)
{
    float scale, p = fd_reduce_f(x < FD_LOWEST_F ? FD_LOWEST_F : x, &scale);
    return x < FD_LOWEST_F ? -1.0f : p * scale + (scale - 1.0f);
}

static inline double fd_expm1_nonpos_d(double x)
{
    double scale, p = fd_reduce_d(x < FD_LOWEST_D ? FD_LOWEST_D : x, &scale);
    return x < FD_LOWEST_D ? -1.0 : p * scale + (scale - 1.0);
}

#endif
