/* Register-only loops: how many int8 multiply-adds per ns the AVX2 instruction mixes of
 * kernels/quantized.h can issue on this CPU (docs/performance-notes.md, "int8 on AVX2 at batch
 * >= 2"). 8 independent accumulators per loop, the kernel's proportions: 4 rows x 2 vectors.
 *
 *   gcc -O2 bench/avx2_int8_rates.c -o /tmp/avx2_int8_rates && /tmp/avx2_int8_rates
 *
 * sign:   vpsignb, vpmaddubsw, vpmaddwd (by ones), vpaddd per 32 multiply-adds (any signs)
 * u8:     vpmaddubsw, vpmaddwd, vpaddd (only when every activation code is >= 0)
 * int16:  vpmaddwd, vpaddd per 16 multiply-adds (weights widened once per tile: not counted) */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define N 50000000L
#define ACC(c, t) __asm__ volatile("vpaddd %1, %0, %0" : "+x"(c) : "x"(t))

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

#define LOOP(name, macs, STEP)                                                                     \
    __attribute__((target("avx2,fma"), noinline)) static void name(void)                          \
    {                                                                                              \
        __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0; \
        __m256i w0 = _mm256_set1_epi8(3), w1 = _mm256_set1_epi8(-2), ones = _mm256_set1_epi16(1);  \
        __m256i x0 = _mm256_set1_epi8(1), x1 = _mm256_set1_epi8(2), x2 = _mm256_set1_epi8(3), x3 = _mm256_set1_epi8(5); \
        (void)ones;                                                                                \
        double start = now();                                                                      \
        for (long i = 0; i < N; i++) {                                                             \
            STEP(c0, x0, w0) STEP(c1, x0, w1) STEP(c2, x1, w0) STEP(c3, x1, w1)                    \
            STEP(c4, x2, w0) STEP(c5, x2, w1) STEP(c6, x3, w0) STEP(c7, x3, w1)                    \
            __asm__ volatile("" : "+x"(w0), "+x"(w1));                                             \
        }                                                                                          \
        double s = (now() - start) / N;                                                            \
        printf("%-6s %.2f ns per step, %.0f multiply-adds/ns\n", #name, s * 1e9, macs / s * 1e-9); \
        __asm__ volatile("" ::"x"(c0), "x"(c1), "x"(c2), "x"(c3), "x"(c4), "x"(c5), "x"(c6), "x"(c7)); \
    }
#define SIGN(c, x, w) { __m256i t = _mm256_madd_epi16(_mm256_maddubs_epi16(x, _mm256_sign_epi8(w, x)), ones); ACC(c, t); }
#define U8(c, x, w) { __m256i t = _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), ones); ACC(c, t); }
#define S16(c, x, w) { __m256i t = _mm256_madd_epi16(w, x); ACC(c, t); }
LOOP(sign, 256, SIGN)
LOOP(u8, 256, U8)
LOOP(int16, 128, S16)

int main(void)
{
    for (int round = 0; round < 2; round++) {
        sign();
        u8();
        int16();
    }
    return 0;
}
