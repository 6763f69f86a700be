/* Activations on one row of a batch, forward and backward: the compiled twin of
 * src/fusedense/activations.py, used by every Cython kernel through act.pxd. Plain loops
 * (act_rows_body.h) that GCC auto-vectorizes, compiled per ISA by simd_instantiate.h: with
 * AVX-512 a tanh row runs 16 floats per step where the module's baseline SSE2 ran 4. */
#ifndef FUSEDENSE_ACT_ROWS_H
#define FUSEDENSE_ACT_ROWS_H

#include "abi.h"
#include "fastexp.h"
#include "simd.h"

/* the registry's constants, in double; the float builds round them once */
#define FD_SQRT_2_OVER_PI 0.79788456080286535588
#define FD_GELU_C 0.044715
#define FD_INV_SQRT_2 0.70710678118654752440
#define FD_INV_SQRT_2PI 0.39894228040143267794

#define FD_BODY "act_rows_body.h"
#define FD_BODY_ATTRIBUTES
#include "simd_instantiate.h"
#undef FD_BODY
#undef FD_BODY_ATTRIBUTES

#define FD_ENTRY_POINTS(T, t)                                                                  \
    static void FD_CAT2(act_forward_row, t)(int act, T alpha, const T *z, const T *bias, T *y,   \
                                            ptrdiff_t n)                                       \
    {                                                                                          \
        FD_PICK(act_forward_row, t)(act, alpha, z, bias, y, n);                                \
    }                                                                                          \
    static void FD_CAT2(act_backward_row, t)(int act, T alpha, const T *dy, const T *z,          \
                                             const T *y, T *dz, ptrdiff_t n)                   \
    {                                                                                          \
        FD_PICK(act_backward_row, t)(act, alpha, dy, z, y, dz, n);                             \
    }                                                                                          \
    static void FD_CAT2(exp_shifted_row, t)(const T *z, T top, T *e, ptrdiff_t n)               \
    {                                                                                          \
        FD_PICK(exp_shifted_row, t)(z, top, e, n);                                             \
    }
FD_ENTRY_POINTS(float, f)
FD_ENTRY_POINTS(double, d)
#undef FD_ENTRY_POINTS

#endif
