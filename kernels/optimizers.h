/* Optimizer updates over a range of the flat parameter buffer (optimizers_body.h): plain
 * loops, auto-vectorized per ISA by simd_instantiate.h (AVX-512 does 16 floats per step), and
 * float Adam written with vectors on AVX-512 (a reciprocal estimate, see the body). */
#ifndef FUSEDENSE_OPTIMIZERS_H
#define FUSEDENSE_OPTIMIZERS_H

#include <float.h> /* FLT_MIN, DBL_MIN: adam_update flushes denormal moments */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h> /* the square root and reciprocal estimate of float Adam */
#endif

#include "simd.h"

#define FD_BODY "optimizers_body.h"
#define FD_BODY_ATTRIBUTES
#include "simd_instantiate.h"
#undef FD_BODY
#undef FD_BODY_ATTRIBUTES

#define FD_ENTRY_POINTS(T, t)                                                                  \
    static void FD_CAT2(sgd_update, t)(T *p, const T *g, T *v, ptrdiff_t n, T lr, T momentum,    \
                                       int nesterov, T weight_decay)                           \
    {                                                                                          \
        FD_PICK(sgd_update, t)(p, g, v, n, lr, momentum, nesterov, weight_decay);              \
    }                                                                                          \
    static void FD_CAT2(adam_update, t)(T *p, const T *g, T *m, T *v, ptrdiff_t n, T lr,         \
                                        T beta1, T beta2, T eps, T weight_decay, int decoupled,  \
                                        T correction1, T correction2)                          \
    {                                                                                          \
        FD_PICK(adam_update, t)(p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, decoupled, \
                                correction1, correction2);                                     \
    }                                                                                          \
    static void FD_CAT2(rmsprop_update, t)(T *p, const T *g, T *v, T *b, ptrdiff_t n, T lr,      \
                                           T rho, T momentum, T eps, T weight_decay)           \
    {                                                                                          \
        FD_PICK(rmsprop_update, t)(p, g, v, b, n, lr, rho, momentum, eps, weight_decay);        \
    }
FD_ENTRY_POINTS(float, f)
FD_ENTRY_POINTS(double, d)
#undef FD_ENTRY_POINTS

#endif
