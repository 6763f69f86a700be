/* gemm_nb of each ISA build, for tests/test_microkernels_streamed.py (loaded through ctypes).
 * Built three times: as the package builds it, and with FD_STREAM_MIN_B_BYTES /
 * FD_STREAM_ALL_MIN_B_BYTES (and FD_STREAM_DEEP_B_BYTES) set so that every row is tiled or
 * every row streamed. */
#include "microkernels.h"

#define EXPORT __attribute__((visibility("default")))

/* the thresholds this build uses (gemm_nb's choice of path: tiled_rows below) */
EXPORT const long long stream_min_b_bytes = FD_STREAM_MIN_B_BYTES;
EXPORT const long long stream_all_min_b_bytes = FD_STREAM_ALL_MIN_B_BYTES;

/* 0: the SSE2 build, 1: AVX2 + FMA, 2: AVX-512F; whether this CPU runs it */
EXPORT int isa_runs(int isa)
{
#ifdef FD_RUNTIME_DISPATCH
    __builtin_cpu_init();
    return isa == 0 || (isa == 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
           || (isa == 2 && __builtin_cpu_supports("avx512f"));
#else
    return isa == 0;
#endif
}

#ifdef FD_RUNTIME_DISPATCH
#define BY_ISA(name, t, ...)                                                                   \
    (isa == 2 ? FD_CAT3(name, t, avx512)(__VA_ARGS__)                                          \
     : isa == 1 ? FD_CAT3(name, t, avx2)(__VA_ARGS__) : FD_CAT3(name, t, generic)(__VA_ARGS__))
#else
#define BY_ISA(name, t, ...) FD_CAT3(name, t, generic)(__VA_ARGS__)
#endif

#define GEMM_NB(T, t)                                                                          \
    EXPORT void FD_CAT2(isa_gemm_nb, t)(int isa, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,          \
                                        const T *A, ptrdiff_t a_rs, ptrdiff_t a_cs, const T *B,  \
                                        ptrdiff_t ldb, const T *bias, T *C, ptrdiff_t ldc,       \
                                        int accumulate, int relu)                                \
    {                                                                                          \
        BY_ISA(gemm_nb, t, m, n, k, A, a_rs, a_cs, B, ldb, bias, C, ldc, accumulate, relu);    \
    }
GEMM_NB(float, f)
GEMM_NB(double, d)

#define TILED_ROWS(t)                                                                          \
    EXPORT ptrdiff_t FD_CAT2(isa_tiled_rows, t)(int isa, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k) \
    {                                                                                          \
        return BY_ISA(tiled_rows, t, m, n, k);                                                 \
    }
TILED_ROWS(f)
TILED_ROWS(d)
