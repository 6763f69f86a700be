/* e^x for x <= 0, written so that GCC vectorizes loops calling it (no libm call, no branch,
 * no fast-math): Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, a Taylor polynomial for
 * e^r (degree 7 in float, 13 in double: within ~1 ulp), and 2^n built from its bits.
 * Results below the smallest normal number flush to 0; NaN stays NaN.
 * Used where only non-positive arguments occur: exp(-|z|) in sigmoid and in tanh for GELU,
 * exp(z - max) in softmax. */
#ifndef FUSEDENSE_FASTEXP_H
#define FUSEDENSE_FASTEXP_H

#include <stdint.h>
#include <string.h>

static inline float fd_exp_nonpos_f(float x)
{
    const float lowest = -87.33654f;  /* e^lowest = FLT_MIN */
    int flush = x < lowest;
    x = flush ? lowest : x;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  /* round(x / ln 2) */
    float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  /* ln 2 in two parts */
    float p = 1.0f + r * (1.0f + r * (1.0f / 2 + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120
              + r * (1.0f / 720 + r * (1.0f / 5040)))))));
    int32_t bits = ((int32_t)(n == n ? n : 0) + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return flush ? 0.0f : p * scale;
}

static inline double fd_exp_nonpos_d(double x)
{
    const double lowest = -708.3964185322641;  /* e^lowest = DBL_MIN */
    int flush = x < lowest;
    x = flush ? lowest : x;
    double n = (x * 1.4426950408889634074 + 6755399441055744.0) - 6755399441055744.0;
    double r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
    double p = 1.0 + r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120
               + r * (1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880
               + r * (1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600
               + r * (1.0 / 6227020800.0)))))))))))));
    int64_t bits = ((int64_t)(n == n ? n : 0) + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return flush ? 0.0 : p * scale;
}

#endif
