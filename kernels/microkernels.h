/* Register-blocked matrix products written with GCC vector extensions (microkernels_body.h),
 * compiled per type and ISA by simd_instantiate.h: gemm_nb reads its operands in place (small
 * shapes, where a BLAS call costs more than the arithmetic), gemm_packed copies them first
 * (a large B at batch 16-256, single-threaded: faster than SciPy's OpenBLAS there). */
#ifndef FUSEDENSE_MICROKERNELS_H
#define FUSEDENSE_MICROKERNELS_H

#include "simd.h"

#define FD_BODY "microkernels_body.h"
#if defined(__GNUC__) && !defined(__clang__)
/* the auto-vectorizer would re-vectorize the k loop of the explicit tiles across the wrong axis */
#define FD_BODY_ATTRIBUTES __attribute__((optimize("no-tree-vectorize")))
#else
#define FD_BODY_ATTRIBUTES
#endif
#include "simd_instantiate.h"
#undef FD_BODY
#undef FD_BODY_ATTRIBUTES

#define FD_ENTRY_POINTS(T, t)                                                                  \
    static void FD_CAT2(gemm_nb, t)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const T *A,            \
                                    ptrdiff_t a_rs, ptrdiff_t a_cs, const T *B, ptrdiff_t ldb,   \
                                    const T *bias, T *C, ptrdiff_t ldc, int accumulate,          \
                                    int relu)                                                    \
    {                                                                                          \
        FD_PICK(gemm_nb, t)(m, n, k, A, a_rs, a_cs, B, ldb, bias, C, ldc, accumulate, relu);   \
    }                                                                                          \
    static int FD_CAT2(gemm_packed, t)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const T *A,        \
                                       ptrdiff_t lda, const T *B, ptrdiff_t ldb, const T *bias,  \
                                       T *C, ptrdiff_t ldc, int accumulate, int relu)            \
    {                                                                                          \
        return FD_PICK(gemm_packed, t)(m, n, k, A, lda, B, ldb, bias, C, ldc, accumulate, relu); \
    }                                                                                          \
    static void FD_CAT2(gemm_nt, t)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const T *A,            \
                                    ptrdiff_t lda, const T *B, ptrdiff_t ldb, T *C, ptrdiff_t ldc) \
    {                                                                                          \
        FD_PICK(gemm_nt, t)(m, n, k, A, lda, B, ldb, C, ldc);                                  \
    }
FD_ENTRY_POINTS(float, f)
FD_ENTRY_POINTS(double, d)
#undef FD_ENTRY_POINTS

#endif
