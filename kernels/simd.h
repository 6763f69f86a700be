/* Runtime ISA dispatch shared by the C kernels (microkernels.h, optimizers.h, act_rows.h).
 *
 * A kernel header defines FD_BODY (the file holding its one body), FD_BODY_ATTRIBUTES (extra
 * function attributes) and includes simd_instantiate.h, which compiles the body for float
 * (_f) and double (_d) and, on x86-64 with GCC, for three ISAs: generic x86-64 (SSE2), AVX2 +
 * FMA, AVX-512F. FD_PICK(name, t) then names the widest build the CPU runs (checked once).
 * So a plain source build is portable and fast; -march=native (FUSEDENSE_NATIVE=1) is not
 * needed. (GCC's target_clones("arch=haswell") is not used: its dispatcher checks the CPU
 * *model*, so newer CPUs with AVX2 would get the generic clone.)
 */
#ifndef FUSEDENSE_SIMD_H
#define FUSEDENSE_SIMD_H

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>  /* masked loads and stores of partial vectors */
#endif

#define FD_CAT3_(a, b, c) a##_##b##_##c
#define FD_CAT3(a, b, c) FD_CAT3_(a, b, c)
#define FD_CAT2_(a, b) a##_##b
#define FD_CAT2(a, b) FD_CAT2_(a, b)

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__AVX2__)
#define FD_RUNTIME_DISPATCH 1
/* 2: AVX-512F, 1: AVX2 + FMA, 0: neither. The environment variable FUSEDENSE_SIMD (generic,
 * avx2) caps it, so that tests can run every build on one machine. */
static int fd_simd_level_detected = -1;

static __attribute__((noinline)) int fd_detect_simd_level(void)
{
    const char *cap = getenv("FUSEDENSE_SIMD");
    int level;
    __builtin_cpu_init();
    level = __builtin_cpu_supports("avx512f") ? 2
          : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0;
    if (cap && strcmp(cap, "generic") == 0)
        level = 0;
    else if (cap && strcmp(cap, "avx2") == 0 && level > 1)
        level = 1;
    __atomic_store_n(&fd_simd_level_detected, level, __ATOMIC_RELAXED);
    return level;
}

/* inlined at every dispatch (act_rows dispatches once per row): one load and compare; atomic
 * (relaxed) because OpenMP tasks may be the first to ask, each storing the same value */
static inline int fd_simd_level(void)
{
    int level = __atomic_load_n(&fd_simd_level_detected, __ATOMIC_RELAXED);
    return level >= 0 ? level : fd_detect_simd_level();
}
#define FD_PICK(name, t) (fd_simd_level() == 2 ? FD_CAT3(name, t, avx512)                     \
                          : fd_simd_level() == 1 ? FD_CAT3(name, t, avx2) : FD_CAT3(name, t, generic))
#else
#define FD_PICK(name, t) FD_CAT3(name, t, generic)
#endif

#endif
