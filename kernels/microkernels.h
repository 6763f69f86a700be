/* Small-matrix products for shapes where a BLAS call costs more than the arithmetic
 * (batch 1-64, widths up to ~1024): register-blocked tiles written with GCC vector
 * extensions, so no fast-math or auto-vectorizer luck is needed.
 *
 * microkernels_body.h holds the one body. It is instantiated for float (_f) and double (_d)
 * and, on x86-64, three times per type: 16-byte vectors for any x86-64 (SSE2), 32-byte
 * vectors compiled for AVX2 + FMA, 64-byte vectors for AVX-512F. The public functions
 * (gemm_nb_f, ...) pick the widest build the CPU runs, once, at the first call; so a plain
 * source build is portable and fast, and FUSEDENSE_NATIVE=1 (-march=native) is not needed.
 * (GCC's target_clones("arch=haswell") is not used: its dispatcher checks the CPU *model*,
 * so newer CPUs with AVX2 would get the generic clone.)
 */
#ifndef FUSEDENSE_MICROKERNELS_H
#define FUSEDENSE_MICROKERNELS_H

#include <stddef.h>

#define FD_CAT3_(a, b, c) a##_##b##_##c
#define FD_CAT3(a, b, c) FD_CAT3_(a, b, c)
#define FD_CAT2_(a, b) a##_##b
#define FD_CAT2(a, b) FD_CAT2_(a, b)

#if defined(__GNUC__) && !defined(__clang__)
/* the auto-vectorizer would re-vectorize the k loop of the explicit tiles across the wrong axis */
#define FD_NO_AUTOVEC __attribute__((optimize("no-tree-vectorize")))
#else
#define FD_NO_AUTOVEC
#endif

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__AVX2__)
#define FD_RUNTIME_DISPATCH 1
/* 2: AVX-512F, 1: AVX2 + FMA, 0: neither (checked once) */
static int fd_simd_level(void)
{
    static int level = -1;
    if (level < 0) {
        __builtin_cpu_init();
        level = __builtin_cpu_supports("avx512f") ? 2
              : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0;
    }
    return level;
}
#endif

/* instantiate the body: FD_REAL, FD_T (type suffix), FD_ISA (build suffix), FD_VBYTES, FD_TARGET */
#define FD_NAME(name) FD_CAT3(name, FD_T, FD_ISA)

#define FD_ISA generic
#define FD_TARGET FD_NO_AUTOVEC
#ifdef __AVX2__
#define FD_VBYTES 32
#else
#define FD_VBYTES 16
#endif
#define FD_REAL float
#define FD_T f
#include "microkernels_body.h"
#undef FD_REAL
#undef FD_T
#define FD_REAL double
#define FD_T d
#include "microkernels_body.h"
#undef FD_REAL
#undef FD_T
#undef FD_ISA
#undef FD_TARGET
#undef FD_VBYTES

#ifdef FD_RUNTIME_DISPATCH
#define FD_ISA avx2
#define FD_TARGET __attribute__((target("avx2,fma"))) FD_NO_AUTOVEC
#define FD_VBYTES 32
#define FD_REAL float
#define FD_T f
#include "microkernels_body.h"
#undef FD_REAL
#undef FD_T
#define FD_REAL double
#define FD_T d
#include "microkernels_body.h"
#undef FD_REAL
#undef FD_T
#undef FD_ISA
#undef FD_TARGET
#undef FD_VBYTES

#define FD_ISA avx512
#define FD_TARGET __attribute__((target("avx512f,avx2,fma"))) FD_NO_AUTOVEC
#define FD_VBYTES 64
#define FD_REAL float
#define FD_T f
#include "microkernels_body.h"
#undef FD_REAL
#undef FD_T
#define FD_REAL double
#define FD_T d
#include "microkernels_body.h"
#undef FD_REAL
#undef FD_T
#undef FD_ISA
#undef FD_TARGET
#undef FD_VBYTES
#endif

#undef FD_NAME

/* the entry points: the widest build the CPU supports */
#ifdef FD_RUNTIME_DISPATCH
#define FD_PICK(name, t) (fd_simd_level() == 2 ? FD_CAT3(name, t, avx512)                     \
                          : fd_simd_level() == 1 ? FD_CAT3(name, t, avx2) : FD_CAT3(name, t, generic))
#else
#define FD_PICK(name, t) FD_CAT3(name, t, generic)
#endif

#define FD_ENTRY_POINTS(T, t)                                                                  \
    static void FD_CAT2(gemm_nb, t)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const T *A,            \
                                    ptrdiff_t a_rs, ptrdiff_t a_cs, const T *B, ptrdiff_t ldb,   \
                                    const T *bias, T *C, ptrdiff_t ldc, int accumulate)          \
    {                                                                                          \
        FD_PICK(gemm_nb, t)(m, n, k, A, a_rs, a_cs, B, ldb, bias, C, ldc, accumulate);         \
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
