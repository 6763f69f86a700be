/* Quantized layers and networks (fusedense.quantized): int8 and bf16 products with the scales,
 * bias and activation fused, over the byte buffer and record of fusedense.layout (QLAYER).
 *
 * Weights are packed in panels of FD_Q_PANEL output columns (layout.py): panel j0 holds, for each
 * group p of GROUP consecutive k, its nb columns side by side, each column's GROUP values in one
 * 32-bit lane — int8: 4 k per lane (what vpdpbusd reads), bf16: 2 k per lane (vdpbf16ps). A
 * panel is contiguous, so a batch-1 product streams the weights front to back.
 *
 * int8 encoding (no saturation anywhere): weights and activations are symmetric codes in
 * [-127, 127]; the exact sum acc = Σ_k q_x q_W fits int32 (the record limits fan_in).
 *  - AVX-512 VNNI: vpdpbusd multiplies UNSIGNED bytes by signed bytes, so the activations go in
 *    shifted, u = q_x + 128 in [1, 255], and the accumulators start from −128·Σ_k q_W (the
 *    column sums stored beside the weights): Σ u·q_W − 128·Σ q_W = Σ q_x q_W. vpdpbusd adds its
 *    four products into 32 bits without saturating; every partial sum is exact modulo 2³², so
 *    the result is exact because the final sum fits.
 *  - AVX2: vpmaddubsw SATURATES its pair sums at 16 bits, and (q_x + 128)·q_W pairs reach 64770:
 *    not usable as VNNI's encoding. The codes are multiplied as int16 instead: the row's codes
 *    stored as int16, the weights widened to int16 as they are loaded (vpmovsxbw, once for all
 *    the rows of a tile), vpmaddwd adds each pair of products into 32 bits (exact: |pair| ≤
 *    2·127²). (|q_x| times sign(q_x)·q_W with vpmaddubsw, the first form, needed a vpsignb per
 *    row and vector and ran no faster than float32 FMAs at batch >= 64; a lone row still uses it:
 *    fd_q_tile_s8_row_avx2. See docs/performance-notes.md.)
 *  - portable C: int32 multiply-adds.
 * The three give the same integers, and so does the reference (reference.quantized_dense_forward).
 *
 * bf16: the layer's input row is rounded to bf16 (nearest even) and every product of two bf16
 * values is exact in float32; the sums are float32: vdpbf16ps on AVX-512 BF16 (which treats
 * bf16 denormals as zero), else the weights widened to float32 in registers (a 16-bit shift) and
 * FMAs, even k then odd k. Paths differ only in the rounding of the float32 sums.
 *
 * Runtime dispatch as the float kernels (simd.h): int8 2 = AVX-512 VNNI, 1 = AVX2, 0 = portable;
 * bf16 3 = AVX-512 BF16, 2 = AVX-512F, 1 = AVX2 + FMA, 0 = portable. FUSEDENSE_SIMD caps them:
 * "generic" → 0, "avx2" → at most 1, "avx512" → no VNNI/BF16 instructions (int8 then runs AVX2).
 */
#ifndef FUSEDENSE_QUANTIZED_H
#define FUSEDENSE_QUANTIZED_H

#include <float.h>
#include <stdint.h>
#include "act_rows.h"

#if defined(__GNUC__) && defined(__x86_64__)
#define FD_Q_X86 1
#endif

#define FD_Q_PANEL 64          /* output columns per weight panel (layout.py: PANEL) */
#define FD_Q_TILE_ROWS 6       /* rows of the int8 tiles (AVX-512 6 x 4 vectors, AVX2 6 x 8 columns) */
#define FD_Q_BLOCK_ROWS (8 * FD_Q_TILE_ROWS)  /* rows carried through every layer before the next block */

enum { FD_QUANT_INT8 = 0, FD_QUANT_BF16 = 1 };

/* fusedense.layout.QLAYER, field for field (12 x 8 bytes) */
typedef struct {
    int64_t weights, scales, bias, colsum;  /* byte offsets into the buffer */
    int64_t fan_in, fan_out, k_pad, n_pad, activation, kind;
    double alpha, x_amax;
} fd_qlayer;

/* --- dispatch ---------------------------------------------------------------------------- */

static int fd_q_levels_detected = -1;  /* int8 level | bf16 level << 4 */

static __attribute__((noinline)) int fd_q_detect_levels(void)
{
    int int8 = 0, bf16 = 0;
#ifdef FD_Q_X86
    const char *cap = getenv("FUSEDENSE_SIMD");
    int avx2, avx512;
    __builtin_cpu_init();
    avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
             && __builtin_cpu_supports("avx512vl");
    int8 = avx512 && __builtin_cpu_supports("avx512vnni") ? 2 : avx2 ? 1 : 0;
    bf16 = avx512 && __builtin_cpu_supports("avx512bf16") ? 3 : avx512 ? 2 : avx2 ? 1 : 0;
    if (cap && strcmp(cap, "generic") == 0)
        int8 = bf16 = 0;
    else if (cap && strcmp(cap, "avx2") == 0) {
        int8 = int8 > 1 ? 1 : int8;
        bf16 = bf16 > 1 ? 1 : bf16;
    } else if (cap && strcmp(cap, "avx512") == 0) {
        int8 = int8 > 1 ? 1 : int8;
        bf16 = bf16 > 2 ? 2 : bf16;
    }
#endif
    __atomic_store_n(&fd_q_levels_detected, int8 | bf16 << 4, __ATOMIC_RELAXED);
    return int8 | bf16 << 4;
}

static inline int fd_q_levels(void)
{
    int levels = __atomic_load_n(&fd_q_levels_detected, __ATOMIC_RELAXED);
    return levels >= 0 ? levels : fd_q_detect_levels();
}

/* --- one panel of one layer: what every path's tiles share ---------------------------------- */

typedef struct {
    ptrdiff_t groups;       /* k groups (k_pad / GROUP) */
    const uint8_t *x;       /* the block's rows, quantized (int8 codes) or bf16 (uint16), k_pad each */
    ptrdiff_t ldx;          /* bytes per row of x */
    const float *sx;        /* int8: each row's scale */
    const uint8_t *w;       /* the panel */
    ptrdiff_t nb;           /* the panel's columns (a multiple of 16) */
    const int32_t *colsum;  /* these at the panel's first column */
    const float *sw, *bias;
    float *y;               /* output at the panel's first column; rows ldy apart */
    ptrdiff_t ldy, cols;    /* cols: the panel's columns that exist (the rest is padding) */
    int32_t *acc;           /* NULL, or integer sums at the panel's first column; rows ldacc apart */
    ptrdiff_t ldacc;
} fd_qpanel;

static inline uint32_t fd_q_load32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* the output of one row's (acc, column j) in float32, as every path computes it */
static inline float fd_q_dequantize(int32_t acc, float sx, float sw, float bias)
{
    return (float)acc * (sx * sw) + bias;
}

/* portable C: one row at a time, the panel's sums in a local array */
static void fd_q_panel_s8_generic(const fd_qpanel *P, ptrdiff_t m)
{
    int32_t acc[FD_Q_PANEL];
    for (ptrdiff_t i = 0; i < m; i++) {
        const int8_t *x = (const int8_t *)(P->x + i * P->ldx);
        memset(acc, 0, sizeof acc);
        for (ptrdiff_t p = 0; p < P->groups; p++) {
            int32_t a0 = x[4 * p], a1 = x[4 * p + 1], a2 = x[4 * p + 2], a3 = x[4 * p + 3];
            const int8_t *w = (const int8_t *)P->w + 4 * p * P->nb;
            if ((a0 | a1 | a2 | a3) == 0)
                continue;
            for (ptrdiff_t j = 0; j < P->nb; j++)
                acc[j] += a0 * w[4 * j] + a1 * w[4 * j + 1] + a2 * w[4 * j + 2] + a3 * w[4 * j + 3];
        }
        for (ptrdiff_t j = 0; j < P->cols; j++) {
            P->y[i * P->ldy + j] = fd_q_dequantize(acc[j], P->sx[i], P->sw[j], P->bias[j]);
            if (P->acc)
                P->acc[i * P->ldacc + j] = acc[j];
        }
    }
}

static void fd_q_panel_bf16_generic(const fd_qpanel *P, ptrdiff_t m)
{
    float acc[FD_Q_PANEL];
    for (ptrdiff_t i = 0; i < m; i++) {
        const float *x = (const float *)(P->x + i * P->ldx);  /* bf16 values widened (fd_q_rows_bf16) */
        for (ptrdiff_t j = 0; j < P->nb; j++)
            acc[j] = 0;
        for (ptrdiff_t p = 0; p < P->groups; p++) {
            float x0 = x[2 * p], x1 = x[2 * p + 1];
            const uint32_t *w = (const uint32_t *)P->w + p * P->nb;
            for (ptrdiff_t j = 0; j < P->nb; j++) {
                uint32_t we_bits = w[j] << 16, wo_bits = w[j] & 0xFFFF0000u;
                float we, wo;
                memcpy(&we, &we_bits, 4);
                memcpy(&wo, &wo_bits, 4);
                acc[j] = (acc[j] + x0 * we) + x1 * wo;
            }
        }
        for (ptrdiff_t j = 0; j < P->cols; j++)
            P->y[i * P->ldy + j] = acc[j] + P->bias[j];
    }
}

#ifdef FD_Q_X86
/* A tile of R rows x NV vectors of columns (R and NV are constants at every call: the
 * accumulators stay in registers), starting at row i0 and vector jv of the panel. */
#define FD_Q_AVX2 __attribute__((target("avx2,fma")))
#define FD_Q_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
#define FD_Q_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))
#define FD_Q_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")))
#define FD_Q_INLINE static inline __attribute__((always_inline))

/* the columns [0, cols) of a 16-float vector; cols may be <= 0 (nothing) or >= 16 (all) */
FD_Q_INLINE FD_Q_AVX512 void fd_q_store16(float *dst, __m512 v, ptrdiff_t cols)
{
    if (cols >= 16)
        _mm512_storeu_ps(dst, v);
    else if (cols > 0)
        _mm512_mask_storeu_ps(dst, (__mmask16)((1u << cols) - 1), v);
}

FD_Q_INLINE FD_Q_AVX512 void fd_q_store16i(int32_t *dst, __m512i v, ptrdiff_t cols)
{
    if (cols >= 16)
        _mm512_storeu_si512(dst, v);
    else if (cols > 0)
        _mm512_mask_storeu_epi32(dst, (__mmask16)((1u << cols) - 1), v);
}

FD_Q_INLINE FD_Q_AVX2 __m256i fd_q_mask8(ptrdiff_t cols)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)cols), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

FD_Q_INLINE FD_Q_AVX2 void fd_q_store8(float *dst, __m256 v, ptrdiff_t cols)
{
    if (cols >= 8)
        _mm256_storeu_ps(dst, v);
    else if (cols > 0)
        _mm256_maskstore_ps(dst, fd_q_mask8(cols), v);
}

FD_Q_INLINE FD_Q_AVX2 void fd_q_store8i(int32_t *dst, __m256i v, ptrdiff_t cols)
{
    if (cols >= 8)
        _mm256_storeu_si256((__m256i *)dst, v);
    else if (cols > 0)
        _mm256_maskstore_epi32((int *)dst, fd_q_mask8(cols), v);
}

/* acc += the four u8 x s8 products of each lane, in place. (Inline assembly: with the intrinsic,
 * GCC 12 copied and spilled the 24 accumulators of a 6 x 4 tile at every step, at half speed.) */
#define FD_Q_DPBUSD(acc, u8, s8) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8))

/* int8, AVX-512 VNNI: u = q_x + 128 (stored so by fd_q_rows_s8_vnni) times q_W, from −128·Σ q_W */
FD_Q_INLINE FD_Q_VNNI void fd_q_tile_s8_vnni(const fd_qpanel *P, ptrdiff_t i0, const int R, const int NV)
{
    __m512i c[6][4];
    #pragma GCC unroll 8
    for (int v = 0; v < NV; v++) {
        __m512i start = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_loadu_si512(P->colsum + 16 * v));
        #pragma GCC unroll 8
        for (int r = 0; r < R; r++)
            c[r][v] = start;
    }
    const uint8_t *x = P->x + i0 * P->ldx;
    for (ptrdiff_t p = 0; p < P->groups; p++) {
        const uint8_t *w = P->w + 4 * p * P->nb;
        __m512i wv[4];
        #pragma GCC unroll 8
        for (int v = 0; v < NV; v++)
            wv[v] = _mm512_loadu_si512(w + 64 * v);
        #pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            __m512i xb = _mm512_set1_epi32((int)fd_q_load32(x + r * P->ldx + 4 * p));
            #pragma GCC unroll 8
            for (int v = 0; v < NV; v++)
                FD_Q_DPBUSD(c[r][v], xb, wv[v]);
        }
    }
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        __m512 sx = _mm512_set1_ps(P->sx[i0 + r]);
        #pragma GCC unroll 8
        for (int v = 0; v < NV; v++) {
            __m512 scale = _mm512_mul_ps(sx, _mm512_loadu_ps(P->sw + 16 * v));
            __m512 y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c[r][v]), scale, _mm512_loadu_ps(P->bias + 16 * v));
            fd_q_store16(P->y + (i0 + r) * P->ldy + 16 * v, y, P->cols - 16 * v);
            if (P->acc)
                fd_q_store16i(P->acc + (i0 + r) * P->ldacc + 16 * v, c[r][v], P->cols - 16 * v);
        }
    }
}

/* acc += t, in place (the asm keeps GCC from computing into a temporary and copying it back, or
 * spilling the accumulators, at every step, as it did with the intrinsic) */
#define FD_Q_PADDD(acc, t) __asm__("vpaddd %1, %0, %0" : "+x"(acc) : "x"(t))

/* int8, AVX2: the rows' codes as int16 (fd_q_rows_s8_avx2) times the weights widened to int16
 * (vpmovsxbw) with vpmaddwd, R rows x NC chunks of 4 columns from chunk c0 of the panel. A 16-byte
 * piece of a panel holds 4 columns x 4 k; widened, its 32-bit lanes are (column, k pair):
 * (c0: k0 k1) (c0: k2 k3) (c1: k0 k1) ..., so the row's 4 codes broadcast as one 64-bit value
 * (vpbroadcastq) line up with both pairs, and each column's sum is split over two adjacent lanes
 * until the epilogue adds them (vphaddd, then vpermq puts the columns in order). The rows of a
 * tile share each widened piece (NC 2). */
FD_Q_INLINE FD_Q_AVX2 void fd_q_tile_s16_avx2(const fd_qpanel *P, ptrdiff_t i0, ptrdiff_t c0, const int R,
                                              const int NC)
{
    __m256i acc[6][2];
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++)
        #pragma GCC unroll 8
        for (int c = 0; c < NC; c++)
            acc[r][c] = _mm256_setzero_si256();
    const int16_t *x = (const int16_t *)(P->x + i0 * P->ldx);
    const ptrdiff_t ldx = P->ldx / 2;
    for (ptrdiff_t p = 0; p < P->groups; p++) {
        const uint8_t *w = P->w + 4 * p * P->nb + 16 * c0;
        long long codes;
        __m256i wv[2];
        #pragma GCC unroll 8
        for (int c = 0; c < NC; c++)
            wv[c] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + 16 * c)));
        #pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            memcpy(&codes, x + r * ldx + 4 * p, 8);
            __m256i xb = _mm256_set1_epi64x(codes);
            #pragma GCC unroll 8
            for (int c = 0; c < NC; c++) {
                __m256i t = _mm256_madd_epi16(wv[c], xb);
                FD_Q_PADDD(acc[r][c], t);
            }
        }
    }
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
        __m256 sx = _mm256_set1_ps(P->sx[i0 + r]);
        #pragma GCC unroll 8
        for (int c = 0; c < NC; c += 2) {
            __m256i sums = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc[r][c], acc[r][c + 1]), 0xD8);
            ptrdiff_t j = 4 * (c0 + c);
            __m256 scale = _mm256_mul_ps(sx, _mm256_loadu_ps(P->sw + j));
            __m256 y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, _mm256_loadu_ps(P->bias + j));
            fd_q_store8(P->y + (i0 + r) * P->ldy + j, y, P->cols - j);
            if (P->acc)
                fd_q_store8i(P->acc + (i0 + r) * P->ldacc + j, sums, P->cols - j);
        }
    }
}

/* int8, AVX2, a lone row (batch 1: bound by the weights' bytes, not by the multiplies): NV
 * vectors of 8 columns from vector jv with vpmaddubsw, |q_x| times sign(q_x)·q_W (each pair sum
 * at most 2·127² = 32258: no saturation), vpmaddwd by ones into 32 bits. Fewer instructions per
 * weight byte than widening the weights (which the row tiles share, a lone row does not): the
 * FFN's batch-1 layer ran 1.4x slower widened. The row's int16 codes are narrowed per group. */
FD_Q_INLINE FD_Q_AVX2 void fd_q_tile_s8_row_avx2(const fd_qpanel *P, ptrdiff_t i0, ptrdiff_t jv, const int NV)
{
    __m256i c[8];
    const __m256i ones = _mm256_set1_epi16(1);
    #pragma GCC unroll 8
    for (int v = 0; v < NV; v++)
        c[v] = _mm256_setzero_si256();
    const int16_t *x = (const int16_t *)(P->x + i0 * P->ldx);
    for (ptrdiff_t p = 0; p < P->groups; p++) {
        const uint8_t *w = P->w + 4 * (p * P->nb + 8 * jv);
        __m128i codes = _mm_loadl_epi64((const __m128i *)(x + 4 * p));
        __m256i xb = _mm256_broadcastd_epi32(_mm_packs_epi16(codes, codes));
        __m256i ax = _mm256_sign_epi8(xb, xb);
        #pragma GCC unroll 8
        for (int v = 0; v < NV; v++) {
            __m256i pairs = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(w + 32 * v)), xb));
            FD_Q_PADDD(c[v], _mm256_madd_epi16(pairs, ones));
        }
    }
    __m256 sx = _mm256_set1_ps(P->sx[i0]);
    #pragma GCC unroll 8
    for (int v = 0; v < NV; v++) {
        ptrdiff_t j = 8 * (jv + v);
        __m256 scale = _mm256_mul_ps(sx, _mm256_loadu_ps(P->sw + j));
        __m256 y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c[v]), scale, _mm256_loadu_ps(P->bias + j));
        fd_q_store8(P->y + i0 * P->ldy + j, y, P->cols - j);
        if (P->acc)
            fd_q_store8i(P->acc + i0 * P->ldacc + j, c[v], P->cols - j);
    }
}

/* bf16, AVX-512: one k pair of row r into the accumulators, with vdpbf16ps (FD_Q_STEP_DPBF16),
 * or with the weights widened (even k: the low 16 bits shifted up; odd k: the high 16 bits) and
 * two FMAs (FD_Q_STEP_WIDEN). A macro per step, since a function holding vdpbf16ps could not be
 * inlined into the AVX-512F build. */
#define FD_Q_STEP_DPBF16                                                                         \
    {                                                                                            \
        __m512i xb = _mm512_set1_epi32((int)fd_q_load32(x + r * P->ldx + 4 * p));                \
        _Pragma("GCC unroll 8")                                                                  \
        for (int v = 0; v < NV; v++)                                                             \
            c[r][v] = _mm512_dpbf16_ps(c[r][v], (__m512bh)xb, (__m512bh)wv[v]);                  \
    }
/* even k into c, odd k into d: two chains of FMAs per accumulator, so that a lone row (batch 1)
 * is not held up by the FMA latency; every tile shape sums in this order, so a row's result does
 * not depend on the batch around it */
#define FD_Q_STEP_WIDEN                                                                          \
    {                                                                                            \
        const float *xf = (const float *)(x + r * P->ldx);                                       \
        __m512 x0 = _mm512_set1_ps(xf[2 * p]), x1 = _mm512_set1_ps(xf[2 * p + 1]);               \
        _Pragma("GCC unroll 8")                                                                  \
        for (int v = 0; v < NV; v++) {                                                           \
            c[r][v] = _mm512_fmadd_ps(x0, _mm512_castsi512_ps(_mm512_slli_epi32(wv[v], 16)), c[r][v]); \
            d[r][v] = _mm512_fmadd_ps(x1, _mm512_castsi512_ps(_mm512_and_si512(wv[v], high)), d[r][v]); \
        }                                                                                        \
    }
#define FD_Q_TILE_BF16_AVX512(name, target, STEP)                                          \
    FD_Q_INLINE target void name(const fd_qpanel *P, ptrdiff_t i0, const int R, const int NV)     \
    {                                                                                            \
        __m512 c[6][4], d[6][4];                                                                 \
        _Pragma("GCC unroll 8")                                                                  \
        for (int r = 0; r < R; r++)                                                              \
            _Pragma("GCC unroll 8")                                                              \
            for (int v = 0; v < NV; v++)                                                         \
                c[r][v] = d[r][v] = _mm512_setzero_ps();                                         \
        const __m512i high = _mm512_set1_epi32((int)0xFFFF0000u);                                \
        (void)high;                                                                              \
        const uint8_t *x = P->x + i0 * P->ldx;                                                   \
        for (ptrdiff_t p = 0; p < P->groups; p++) {                                              \
            const uint8_t *w = P->w + 4 * p * P->nb;                                             \
            __m512i wv[4];                                                                       \
            _Pragma("GCC unroll 8")                                                              \
            for (int v = 0; v < NV; v++)                                                         \
                wv[v] = _mm512_loadu_si512(w + 64 * v);                                          \
            _Pragma("GCC unroll 8")                                                              \
            for (int r = 0; r < R; r++)                                                          \
                STEP                                                                             \
        }                                                                                        \
        _Pragma("GCC unroll 8")                                                                  \
        for (int r = 0; r < R; r++)                                                              \
            _Pragma("GCC unroll 8")                                                              \
            for (int v = 0; v < NV; v++)                                                         \
                fd_q_store16(P->y + (i0 + r) * P->ldy + 16 * v,                                  \
                             _mm512_add_ps(_mm512_add_ps(c[r][v], d[r][v]), _mm512_loadu_ps(P->bias + 16 * v)), \
                             P->cols - 16 * v);                                                  \
    }
FD_Q_TILE_BF16_AVX512(fd_q_tile_bf16_dpbf16, FD_Q_BF16, FD_Q_STEP_DPBF16)  /* (d stays 0) */
FD_Q_TILE_BF16_AVX512(fd_q_tile_bf16_avx512, FD_Q_AVX512, FD_Q_STEP_WIDEN)
#undef FD_Q_TILE_BF16_AVX512
#undef FD_Q_STEP_DPBF16
#undef FD_Q_STEP_WIDEN

/* bf16, AVX2: as FD_Q_STEP_WIDEN (even k into c, odd k into d), 2 rows x 2 vectors */
FD_Q_INLINE FD_Q_AVX2 void fd_q_tile_bf16_avx2(const fd_qpanel *P, ptrdiff_t i0, ptrdiff_t jv, const int R,
                                               const int NV)
{
    __m256 c[3][4], d[3][4];
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++)
        #pragma GCC unroll 8
        for (int v = 0; v < NV; v++)
            c[r][v] = d[r][v] = _mm256_setzero_ps();
    const __m256i high = _mm256_set1_epi32((int)0xFFFF0000u);
    const uint8_t *x = P->x + i0 * P->ldx;
    for (ptrdiff_t p = 0; p < P->groups; p++) {
        const uint8_t *w = P->w + 4 * (p * P->nb + 8 * jv);
        __m256 we[4], wo[4];
        #pragma GCC unroll 8
        for (int v = 0; v < NV; v++) {
            __m256i wv = _mm256_loadu_si256((const __m256i *)(w + 32 * v));
            we[v] = _mm256_castsi256_ps(_mm256_slli_epi32(wv, 16));
            wo[v] = _mm256_castsi256_ps(_mm256_and_si256(wv, high));
        }
        #pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const float *xf = (const float *)(x + r * P->ldx);
            __m256 x0 = _mm256_set1_ps(xf[2 * p]), x1 = _mm256_set1_ps(xf[2 * p + 1]);
            #pragma GCC unroll 8
            for (int v = 0; v < NV; v++) {
                c[r][v] = _mm256_fmadd_ps(x0, we[v], c[r][v]);
                d[r][v] = _mm256_fmadd_ps(x1, wo[v], d[r][v]);
            }
        }
    }
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++)
        #pragma GCC unroll 8
        for (int v = 0; v < NV; v++) {
            ptrdiff_t j = 8 * (jv + v);
            fd_q_store8(P->y + (i0 + r) * P->ldy + j,
                        _mm256_add_ps(_mm256_add_ps(c[r][v], d[r][v]), _mm256_loadu_ps(P->bias + j)), P->cols - j);
        }
}

/* The panels: rows in tiles of ROWS, every tile shape a case of its own so that R and NV are
 * constants in each. AVX-512 (32 registers): 6 rows x 4 vectors = 24 accumulators, 3 x 4 x 2
 * for bf16 widened (two chains); AVX2 (16 registers): int8 6 rows x 8 columns of int16 products
 * (fd_q_panel_s16_avx2), bf16 2 rows x 2 vectors x 2 chains. */
#define FD_Q_CASES_6x4(CALL)                                                                     \
    switch (R * 4 + NV - 1) {                                                                    \
    case 4: CALL(1, 1); break; case 5: CALL(1, 2); break; case 6: CALL(1, 3); break;              \
    case 7: CALL(1, 4); break; case 8: CALL(2, 1); break; case 9: CALL(2, 2); break;              \
    case 10: CALL(2, 3); break; case 11: CALL(2, 4); break; case 12: CALL(3, 1); break;           \
    case 13: CALL(3, 2); break; case 14: CALL(3, 3); break; case 15: CALL(3, 4); break;           \
    case 16: CALL(4, 1); break; case 17: CALL(4, 2); break; case 18: CALL(4, 3); break;           \
    case 19: CALL(4, 4); break; case 20: CALL(5, 1); break; case 21: CALL(5, 2); break;           \
    case 22: CALL(5, 3); break; case 23: CALL(5, 4); break; case 24: CALL(6, 1); break;           \
    case 25: CALL(6, 2); break; case 26: CALL(6, 3); break; case 27: CALL(6, 4); break;           \
    }

#define FD_Q_PANEL_AVX512(name, target, tile, ROWS)                                              \
    static target void name(const fd_qpanel *P, ptrdiff_t m)                                     \
    {                                                                                            \
        const int NV = (int)(P->nb / 16);                                                        \
        for (ptrdiff_t i0 = 0; i0 < m; i0 += ROWS) {                                             \
            const int R = m - i0 < ROWS ? (int)(m - i0) : ROWS;                                  \
            FD_Q_CASES_6x4(tile)                                                                 \
        }                                                                                        \
    }
#define FD_Q_TILE_S8_VNNI(r, v) fd_q_tile_s8_vnni(P, i0, r, v)
#define FD_Q_TILE_BF16_WIDEN(r, v) fd_q_tile_bf16_avx512(P, i0, r, v)
#define FD_Q_TILE_BF16_DPBF16(r, v) fd_q_tile_bf16_dpbf16(P, i0, r, v)
FD_Q_PANEL_AVX512(fd_q_panel_s8_vnni, FD_Q_VNNI, FD_Q_TILE_S8_VNNI, 6)
FD_Q_PANEL_AVX512(fd_q_panel_bf16_avx512, FD_Q_AVX512, FD_Q_TILE_BF16_WIDEN, 3)
FD_Q_PANEL_AVX512(fd_q_panel_bf16_dpbf16, FD_Q_BF16, FD_Q_TILE_BF16_DPBF16, 6)
#undef FD_Q_PANEL_AVX512
#undef FD_Q_TILE_S8_VNNI
#undef FD_Q_TILE_BF16_WIDEN
#undef FD_Q_TILE_BF16_DPBF16
#undef FD_Q_CASES_6x4

/* bf16, AVX2: tiles of ROWS rows x 2 vectors (16 columns; nb is a multiple of 16). A lone row
 * (batch 1, or the last row of a batch) takes WIDE vectors at a time instead: 2 vectors read a
 * quarter of each 256-byte step of a 64-column panel, and four passes over a panel streamed from
 * memory at a quarter of the bandwidth. (Each output's sums are the same whatever the tile: the
 * same two chains.) */
#define FD_Q_PANEL_AVX2(name, tile, ROWS, WIDE)                                                  \
    static FD_Q_AVX2 void name(const fd_qpanel *P, ptrdiff_t m)                                  \
    {                                                                                            \
        const ptrdiff_t vectors = P->nb / 8;                                                     \
        for (ptrdiff_t i0 = 0; i0 < m; i0 += ROWS) {                                             \
            ptrdiff_t R = m - i0 < ROWS ? m - i0 : ROWS;                                         \
            for (ptrdiff_t jv = 0; jv < vectors;) {                                              \
                ptrdiff_t left = vectors - jv;                                                   \
                if (R == 1 && left >= WIDE) { tile(P, i0, jv, 1, WIDE); jv += WIDE; continue; }   \
                if (R == 1 && left >= 4) { tile(P, i0, jv, 1, 4); jv += 4; continue; }           \
                if (R == 3) tile(P, i0, jv, 3, 2);                                               \
                else if (R == 2) tile(P, i0, jv, 2, 2);                                          \
                else tile(P, i0, jv, 1, 2);                                                      \
                jv += 2;                                                                         \
            }                                                                                    \
        }                                                                                        \
    }
FD_Q_PANEL_AVX2(fd_q_panel_bf16_avx2, fd_q_tile_bf16_avx2, 2, 4)
#undef FD_Q_PANEL_AVX2

/* int8, AVX2: tiles of 6 rows x 8 columns (12 accumulators, 2 widened weight vectors, the
 * broadcast codes: 15 of the 16 registers); a lone row (fd_q_tile_s8_row_avx2) takes the whole
 * panel a step (8 vectors: each 256-byte step of the panel read once, front to back). */
static FD_Q_AVX2 void fd_q_panel_s16_avx2(const fd_qpanel *P, ptrdiff_t m)
{
    const ptrdiff_t chunks = P->nb / 4;  /* a multiple of 4 */
    for (ptrdiff_t i0 = 0; i0 < m; i0 += 6) {
        const ptrdiff_t R = m - i0 < 6 ? m - i0 : 6;
        if (R == 1) {
            switch (P->nb / 8) {
            case 8: fd_q_tile_s8_row_avx2(P, i0, 0, 8); break;
            case 6: fd_q_tile_s8_row_avx2(P, i0, 0, 6); break;
            case 4: fd_q_tile_s8_row_avx2(P, i0, 0, 4); break;
            default: fd_q_tile_s8_row_avx2(P, i0, 0, 2); break;
            }
            continue;
        }
        for (ptrdiff_t c = 0; c < chunks;) {
            switch (R) {
            case 6: fd_q_tile_s16_avx2(P, i0, c, 6, 2); break;
            case 5: fd_q_tile_s16_avx2(P, i0, c, 5, 2); break;
            case 4: fd_q_tile_s16_avx2(P, i0, c, 4, 2); break;
            case 3: fd_q_tile_s16_avx2(P, i0, c, 3, 2); break;
            default: fd_q_tile_s16_avx2(P, i0, c, 2, 2); break;
            }
            c += 2;
        }
    }
}
#endif /* FD_Q_X86 */

typedef void (*fd_q_panel_fn)(const fd_qpanel *, ptrdiff_t);

static fd_q_panel_fn fd_q_panel_function(int kind)
{
    int levels = fd_q_levels();
#ifdef FD_Q_X86
    if (kind == FD_QUANT_INT8) {
        switch (levels & 15) {
        case 2: return fd_q_panel_s8_vnni;
        case 1: return fd_q_panel_s16_avx2;
        }
        return fd_q_panel_s8_generic;
    }
    switch (levels >> 4) {
    case 3: return fd_q_panel_bf16_dpbf16;
    case 2: return fd_q_panel_bf16_avx512;
    case 1: return fd_q_panel_bf16_avx2;
    }
    return fd_q_panel_bf16_generic;
#else
    (void)levels;
    return kind == FD_QUANT_INT8 ? fd_q_panel_s8_generic : fd_q_panel_bf16_generic;
#endif
}

/* --- a layer's input rows: int8 codes or bf16 ------------------------------------------------ */

/* Codes of m rows of x (k floats, rows ldx apart) into q (k_pad per row, the padding 0; int8,
 * or with `wide` int16 for the AVX2 product) and their scales: reference.quantize_rows_int8, in
 * the same float32 operations.
 * The largest |x| is found as the largest integer of the bit patterns with the sign cleared:
 * for non-negative floats the integer order is the float order, and ±inf and NaN lie above every
 * finite number, so one integer maximum (a reduction GCC vectorizes, unlike a float maximum
 * that has to keep NaN's order) gives both amax and whether the row is finite. */
static inline __attribute__((always_inline)) uint32_t fd_q_top_bits(const float *row, ptrdiff_t from, ptrdiff_t k,
                                                                   uint32_t top)
{
    const uint32_t *bits = (const uint32_t *)row;
    for (ptrdiff_t j = from; j < k; j++) {
        uint32_t a = bits[j] & 0x7FFFFFFFu;
        top = a > top ? a : top;
    }
    return top;
}

/* 127 / amax for a row whose largest |x| has the bit pattern `top` (0 for a row of zeros and
 * for a non-finite row, whose values the callers then read as 0); *scale = amax / 127, NaN for a
 * non-finite row; *bad: whether it is one */
static inline __attribute__((always_inline)) float fd_q_row_inverse(uint32_t top, float x_amax, float *scale,
                                                                    int *bad)
{
    float amax;
    *bad = top >= 0x7F800000u;
    memcpy(&amax, &top, 4);
    if (x_amax > 0)
        amax = x_amax;
    *scale = *bad ? NAN : amax / 127.0f;
    return amax > 0 && !*bad ? 127.0f / amax : 0.0f;
}

static inline __attribute__((always_inline)) float fd_q_code(float v, float inv)
{
    float t = rintf(v * inv);
    return t < -127.0f ? -127.0f : t > 127.0f ? 127.0f : t;
}

static inline __attribute__((always_inline)) void fd_q_rows_s8_body(
        ptrdiff_t m, ptrdiff_t k, ptrdiff_t k_pad, const float *x, ptrdiff_t ldx, float x_amax,
        void *q, float *sx, const int wide)
{
    for (ptrdiff_t i = 0; i < m; i++) {
        const float *row = x + i * ldx;
        int8_t *qrow = (int8_t *)q + i * k_pad;
        int16_t *wrow = (int16_t *)q + i * k_pad;
        int bad;
        float inv = fd_q_row_inverse(fd_q_top_bits(row, 0, k, 0), x_amax, sx + i, &bad);
        for (ptrdiff_t j = 0; j < k; j++) {
            float t = fd_q_code(bad ? 0.0f : row[j], inv);
            if (wide)
                wrow[j] = (int16_t)t;
            else
                qrow[j] = (int8_t)t;
        }
        for (ptrdiff_t j = k; j < k_pad; j++) {
            if (wide)
                wrow[j] = 0;
            else
                qrow[j] = 0;
        }
    }
}

/* m rows of x rounded to bf16 (nearest even; NaN stays a quiet NaN), k_pad per row, padding 0:
 * as bf16 bit patterns (uint16, for vdpbf16ps), or with `wide` as the float32 values (uint32
 * bits, for the paths that broadcast them into FMAs) */
static inline __attribute__((always_inline)) void fd_q_rows_bf16_body(
        ptrdiff_t m, ptrdiff_t k, ptrdiff_t k_pad, const float *x, ptrdiff_t ldx, void *xb, const int wide)
{
    for (ptrdiff_t i = 0; i < m; i++) {
        const uint32_t *row = (const uint32_t *)(x + i * ldx);
        uint16_t *brow = (uint16_t *)xb + i * k_pad;
        uint32_t *wrow = (uint32_t *)xb + i * k_pad;
        for (ptrdiff_t j = 0; j < k; j++) {
            uint32_t u = row[j];
            uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
            int nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
            uint32_t bits = nan ? (u >> 16) | 0x40u : rounded;
            if (wide)
                wrow[j] = bits << 16;
            else
                brow[j] = (uint16_t)bits;
        }
        for (ptrdiff_t j = k; j < k_pad; j++) {
            if (wide)
                wrow[j] = 0;
            else
                brow[j] = 0;
        }
    }
}

static void fd_q_rows_s8_generic(ptrdiff_t m, ptrdiff_t k, ptrdiff_t k_pad, const float *x, ptrdiff_t ldx,
                                 float x_amax, int8_t *q, float *sx)
{
    fd_q_rows_s8_body(m, k, k_pad, x, ldx, x_amax, q, sx, 0);
}

static void fd_q_rows_bf16_generic(ptrdiff_t m, ptrdiff_t k, ptrdiff_t k_pad, const float *x, ptrdiff_t ldx,
                                   void *xb)
{
    fd_q_rows_bf16_body(m, k, k_pad, x, ldx, xb, 1);
}

#ifdef FD_Q_X86
/* fd_q_rows_s8_body for the VNNI path, written out in AVX-512: GCC's vectorization of the body
 * narrowed each vector of codes through mask registers, at a third of the product's time. Same
 * operations in the same precision (a product, round to nearest even, clamp), so the same codes. */
static FD_Q_AVX512 void fd_q_rows_s8_vnni(ptrdiff_t m, ptrdiff_t k, ptrdiff_t k_pad, const float *x,
                                          ptrdiff_t ldx, float x_amax, int8_t *q, float *sx)
{
    const __m512i magnitude = _mm512_set1_epi32(0x7FFFFFFF);
    const __m512 low = _mm512_set1_ps(-127.0f), high = _mm512_set1_ps(127.0f);
    const __m128i shift = _mm_set1_epi8((char)0x80);
    for (ptrdiff_t i = 0; i < m; i++) {
        const float *row = x + i * ldx;
        int8_t *qrow = q + i * k_pad;
        __m512i top = _mm512_setzero_si512();
        ptrdiff_t j;
        for (j = 0; j + 16 <= k; j += 16)
            top = _mm512_max_epu32(top, _mm512_and_si512(_mm512_loadu_si512(row + j), magnitude));
        if (j < k)
            top = _mm512_max_epu32(top, _mm512_and_si512(
                _mm512_maskz_loadu_epi32((__mmask16)((1u << (k - j)) - 1), row + j), magnitude));
        uint32_t top_bits = (uint32_t)_mm512_reduce_max_epu32(top);
        int bad = top_bits >= 0x7F800000u;
        float amax;
        memcpy(&amax, &top_bits, 4);
        if (x_amax > 0)
            amax = x_amax;
        __m512 inv = _mm512_set1_ps(amax > 0 && !bad ? 127.0f / amax : 0.0f);
        for (j = 0; j < k_pad; j += 16) {
            __mmask16 live = k - j >= 16 ? (__mmask16)0xFFFF : k > j ? (__mmask16)((1u << (k - j)) - 1) : 0;
            __m512 v = bad ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(live, row + j);  /* padding: 0 */
            v = _mm512_roundscale_ps(_mm512_mul_ps(v, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v = _mm512_min_ps(_mm512_max_ps(v, low), high);
            __m128i codes = _mm_xor_si128(_mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)), shift);
            __mmask16 store = k_pad - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (k_pad - j)) - 1);
            _mm_mask_storeu_epi8(qrow + j, store, codes);
        }
        sx[i] = bad ? NAN : amax / 127.0f;
    }
}

static FD_Q_AVX512 void fd_q_rows_bf16_avx512(ptrdiff_t m, ptrdiff_t k, ptrdiff_t k_pad, const float *x,
                                              ptrdiff_t ldx, void *xb, const int wide)
{
    fd_q_rows_bf16_body(m, k, k_pad, x, ldx, xb, wide);
}

/* fd_q_rows_s8_body with int16 codes, what the AVX2 product multiplies (fd_q_tile_s16_avx2),
 * written out in AVX2: GCC's vectorization of the body took ~0.5 ns a value (25 µs of a 160 µs
 * 64 x 784 -> 128 layer). Same operations in the same precision (a product, round to nearest
 * even, clamp), so the same codes; the last k % 16 values go through the body's scalar steps. */
static FD_Q_AVX2 void fd_q_rows_s8_avx2(ptrdiff_t m, ptrdiff_t k, ptrdiff_t k_pad, const float *x,
                                        ptrdiff_t ldx, float x_amax, int16_t *q, float *sx)
{
    const __m256i magnitude = _mm256_set1_epi32(0x7FFFFFFF);
    const __m256 low = _mm256_set1_ps(-127.0f), high = _mm256_set1_ps(127.0f);
    for (ptrdiff_t i = 0; i < m; i++) {
        const float *row = x + i * ldx;
        int16_t *qrow = q + i * k_pad;
        __m256i top8 = _mm256_setzero_si256();
        ptrdiff_t j;
        for (j = 0; j + 8 <= k; j += 8)
            top8 = _mm256_max_epu32(top8, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(row + j)), magnitude));
        __m128i top4 = _mm_max_epu32(_mm256_castsi256_si128(top8), _mm256_extracti128_si256(top8, 1));
        top4 = _mm_max_epu32(top4, _mm_shuffle_epi32(top4, 0x4E));
        top4 = _mm_max_epu32(top4, _mm_shuffle_epi32(top4, 0xB1));
        int bad;
        float inv = fd_q_row_inverse(fd_q_top_bits(row, j, k, (uint32_t)_mm_cvtsi128_si32(top4)), x_amax, sx + i, &bad);
        const __m256 vinv = _mm256_set1_ps(inv);
        for (j = 0; !bad && j + 16 <= k; j += 16) {
            __m256 v0 = _mm256_mul_ps(_mm256_loadu_ps(row + j), vinv);
            __m256 v1 = _mm256_mul_ps(_mm256_loadu_ps(row + j + 8), vinv);
            v0 = _mm256_round_ps(v0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v1 = _mm256_round_ps(v1, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v0 = _mm256_min_ps(_mm256_max_ps(v0, low), high);
            v1 = _mm256_min_ps(_mm256_max_ps(v1, low), high);
            /* packs interleaves the two vectors' 128-bit halves; vpermq puts them back in order */
            __m256i codes = _mm256_packs_epi32(_mm256_cvtps_epi32(v0), _mm256_cvtps_epi32(v1));
            _mm256_storeu_si256((__m256i *)(qrow + j), _mm256_permute4x64_epi64(codes, 0xD8));
        }
        for (j = bad ? 0 : j; j < k; j++)
            qrow[j] = (int16_t)fd_q_code(bad ? 0.0f : row[j], inv);
        for (; j < k_pad; j++)
            qrow[j] = 0;
    }
}

static FD_Q_AVX2 void fd_q_rows_bf16_avx2(ptrdiff_t m, ptrdiff_t k, ptrdiff_t k_pad, const float *x,
                                          ptrdiff_t ldx, void *xb)
{
    fd_q_rows_bf16_body(m, k, k_pad, x, ldx, xb, 1);
}
#endif

/* --- one layer over a block of rows -------------------------------------------------------- */

/* Layer L over m rows of x (fan_in floats, rows ldx apart) into y (fan_out floats, rows ldy
 * apart); acc: NULL or the int8 sums (fan_out per row, rows ldacc apart). scratch: m · 4 · k_pad
 * bytes; sx: m floats. */
static void fd_q_layer_rows(const fd_qlayer *L, const uint8_t *buffer, ptrdiff_t m, const float *x,
                            ptrdiff_t ldx, float *y, ptrdiff_t ldy, int32_t *acc, ptrdiff_t ldacc,
                            uint8_t *scratch, float *sx)
{
    const int kind = (int)L->kind, levels = fd_q_levels();
    const int simd = kind == FD_QUANT_INT8 ? (levels & 15) : levels >> 4;
    const ptrdiff_t k = L->fan_in, n = L->fan_out, k_pad = L->k_pad, n_pad = L->n_pad;
    const ptrdiff_t width = kind == FD_QUANT_INT8 ? 1 : 2;  /* bytes per weight */
    /* bytes per value of the converted rows: int8 codes (int16 on AVX2), bf16 (vdpbf16ps) or
     * bf16 widened */
    const ptrdiff_t x_width = kind == FD_QUANT_INT8 ? (simd == 1 ? 2 : 1) : simd == 3 ? 2 : 4;
    const int rowwise = L->activation == ACT_SOFTMAX || L->activation == ACT_LOG_SOFTMAX;
    fd_q_panel_fn panel = fd_q_panel_function(kind);

    if (kind == FD_QUANT_INT8) {
#ifdef FD_Q_X86
        if (simd == 2) fd_q_rows_s8_vnni(m, k, k_pad, x, ldx, (float)L->x_amax, (int8_t *)scratch, sx);
        else if (simd == 1) fd_q_rows_s8_avx2(m, k, k_pad, x, ldx, (float)L->x_amax, (int16_t *)scratch, sx);
        else
#endif
        fd_q_rows_s8_generic(m, k, k_pad, x, ldx, (float)L->x_amax, (int8_t *)scratch, sx);
    } else {
#ifdef FD_Q_X86
        if (simd >= 2) fd_q_rows_bf16_avx512(m, k, k_pad, x, ldx, scratch, simd == 2);
        else if (simd == 1) fd_q_rows_bf16_avx2(m, k, k_pad, x, ldx, scratch);
        else
#endif
        fd_q_rows_bf16_generic(m, k, k_pad, x, ldx, scratch);
    }

    fd_qpanel P;
    P.groups = kind == FD_QUANT_INT8 ? k_pad / 4 : k_pad / 2;
    P.x = scratch;
    P.ldx = k_pad * x_width;
    P.sx = sx;
    P.ldy = ldy;
    P.ldacc = ldacc;
    for (ptrdiff_t j0 = 0; j0 < n_pad; j0 += FD_Q_PANEL) {
        P.nb = n_pad - j0 < FD_Q_PANEL ? n_pad - j0 : FD_Q_PANEL;
        P.w = buffer + L->weights + j0 * k_pad * width;  /* the panels before hold 64 columns each */
        P.colsum = (const int32_t *)(buffer + L->colsum) + j0;
        P.sw = (const float *)(buffer + L->scales) + j0;
        P.bias = (const float *)(buffer + L->bias) + j0;
        P.y = y + j0;
        P.cols = n - j0 < P.nb ? n - j0 : P.nb;
        P.acc = acc ? acc + j0 : NULL;
        panel(&P, m);
        if (!rowwise && L->activation != ACT_IDENTITY)  /* while the panel's outputs are in L1 */
            for (ptrdiff_t i = 0; i < m; i++)
                act_forward_row_f((int)L->activation, (float)L->alpha, y + i * ldy + j0, NULL,
                                  y + i * ldy + j0, P.cols);
    }
    if (rowwise)
        for (ptrdiff_t i = 0; i < m; i++)
            act_forward_row_f((int)L->activation, (float)L->alpha, y + i * ldy, NULL, y + i * ldy, n);
}

/* bytes of scratch fd_q_layer_rows needs for m rows of the widest layer */
static ptrdiff_t fd_q_scratch_bytes(const fd_qlayer *layers, ptrdiff_t n_layers, ptrdiff_t m)
{
    ptrdiff_t widest = 4;
    for (ptrdiff_t l = 0; l < n_layers; l++)
        if (4 * layers[l].k_pad > widest)
            widest = 4 * layers[l].k_pad;
    return m * widest;
}

/* Layer `layer` over all B rows, FD_Q_BLOCK_ROWS at a time. Returns -1 when out of memory. */
static int fd_q_dense_forward(const fd_qlayer *layers, ptrdiff_t n_layers, ptrdiff_t layer,
                              const uint8_t *buffer, ptrdiff_t B, const float *x, float *y, int32_t *acc)
{
    const fd_qlayer *L = layers + layer;
    ptrdiff_t rows = B < FD_Q_BLOCK_ROWS ? B : FD_Q_BLOCK_ROWS;
    uint8_t *scratch = malloc(fd_q_scratch_bytes(layers, n_layers, rows) + rows * sizeof(float));
    if (!scratch)
        return -1;
    float *sx = (float *)(scratch + fd_q_scratch_bytes(layers, n_layers, rows));
    for (ptrdiff_t i0 = 0; i0 < B; i0 += rows) {
        ptrdiff_t m = B - i0 < rows ? B - i0 : rows;
        fd_q_layer_rows(L, buffer, m, x + i0 * L->fan_in, L->fan_in, y + i0 * L->fan_out, L->fan_out,
                        acc ? acc + i0 * L->fan_out : NULL, L->fan_out, scratch, sx);
    }
    free(scratch);
    return 0;
}

/* One block of m rows (from row i0) through every layer; hidden: 2 · rows · widest floats, q and
 * sx: fd_q_layer_rows's scratch. */
static void fd_q_block_forward(const fd_qlayer *layers, ptrdiff_t n_layers, const uint8_t *buffer,
                               ptrdiff_t i0, ptrdiff_t m, const float *x, float *out, float *hidden,
                               ptrdiff_t rows, ptrdiff_t widest, uint8_t *q, float *sx)
{
    ptrdiff_t n_in = layers[0].fan_in, n_out = layers[n_layers - 1].fan_out, ldh = n_in;
    const float *h = x + i0 * n_in;
    for (ptrdiff_t l = 0; l < n_layers; l++) {
        int last = l == n_layers - 1;
        float *dst = last ? out + i0 * n_out : hidden + (l % 2) * rows * widest;
        ptrdiff_t ld = last ? n_out : layers[l].n_pad;
        fd_q_layer_rows(layers + l, buffer, m, h, ldh, dst, ld, NULL, 0, q, sx);
        h = dst;
        ldh = ld;
    }
}

/* Blocks of rows for fd_q_mlp_forward: at most FD_Q_BLOCK_ROWS each, a multiple of `threads`
 * of them while each keeps a tile of rows, and all of one size but the last. With 48-row blocks
 * batch 64 was one block of 48 and one of 16, and the second thread idled three quarters of
 * the call. */
static ptrdiff_t fd_q_rows_per_block(ptrdiff_t B, int threads)
{
    ptrdiff_t n_blocks = (B + FD_Q_BLOCK_ROWS - 1) / FD_Q_BLOCK_ROWS;
    ptrdiff_t most = (B + FD_Q_TILE_ROWS - 1) / FD_Q_TILE_ROWS;  /* blocks that still hold a tile */
    if (threads > 1) {
        n_blocks = (n_blocks + threads - 1) / threads * threads;
        n_blocks = n_blocks < most ? n_blocks : most;
    }
    return (B + n_blocks - 1) / n_blocks;
}

/* Every layer, one block of rows at a time (the block's activations stay in cache from one
 * layer to the next); the blocks spread over `threads` OpenMP threads when there are several
 * (one thread: no parallel region at all, it costs a microsecond). Returns -1 when out of memory. */
static int fd_q_mlp_forward(const fd_qlayer *layers, ptrdiff_t n_layers, const uint8_t *buffer, ptrdiff_t B,
                            const float *x, float *out, int threads)
{
    ptrdiff_t rows = fd_q_rows_per_block(B, threads), n_blocks = (B + rows - 1) / rows;
    ptrdiff_t widest = 16, scratch = fd_q_scratch_bytes(layers, n_layers, rows);
    int failed = 0;
    for (ptrdiff_t l = 0; l < n_layers; l++)
        widest = layers[l].n_pad > widest ? layers[l].n_pad : widest;
    /* per thread: two blocks of hidden activations, then the quantized rows and their scales */
    size_t bytes = (size_t)(2 * rows * widest) * sizeof(float) + (size_t)scratch + rows * sizeof(float);
    if (threads > n_blocks)
        threads = (int)n_blocks;
    if (threads <= 1) {
        float *hidden = malloc(bytes);
        if (!hidden)
            return -1;
        uint8_t *q = (uint8_t *)(hidden + 2 * rows * widest);
        for (ptrdiff_t b = 0; b < n_blocks; b++) {
            ptrdiff_t m = B - b * rows < rows ? B - b * rows : rows;
            fd_q_block_forward(layers, n_layers, buffer, b * rows, m, x, out, hidden, rows, widest, q,
                               (float *)(q + scratch));
        }
        free(hidden);
        return 0;
    }
    #pragma omp parallel num_threads(threads) reduction(|: failed)
    {
        float *hidden = malloc(bytes);
        uint8_t *q = hidden ? (uint8_t *)(hidden + 2 * rows * widest) : NULL;
        #pragma omp for schedule(static)
        for (ptrdiff_t b = 0; b < n_blocks; b++) {
            ptrdiff_t m = B - b * rows < rows ? B - b * rows : rows;
            if (!hidden)
                failed = 1;
            else
                fd_q_block_forward(layers, n_layers, buffer, b * rows, m, x, out, hidden, rows, widest, q,
                                   (float *)(q + scratch));
        }
        free(hidden);
    }
    return failed ? -1 : 0;
}

/* --- sampling from a quantized language model ------------------------------------------------ */

/* reference.sample_tokens for one row, in double: the compiled twin of embedding.pyx's sample_row
 * (the same exp, fastexp.h's, and the running sum in NumPy's order) */
static ptrdiff_t fd_q_sample_row(const float *logits, ptrdiff_t n, double temperature, double u, double *cdf)
{
    ptrdiff_t best = 0;
    double top = logits[0], threshold;
    for (ptrdiff_t j = 1; j < n; j++)
        if (logits[j] > top) {
            best = j;
            top = logits[j];
        }
    if (temperature == 0)
        return best;
    for (ptrdiff_t j = 0; j < n; j++)
        cdf[j] = fd_exp_nonpos_d(((double)logits[j] - top) / temperature);
    for (ptrdiff_t j = 1; j < n; j++)
        cdf[j] += cdf[j - 1];
    threshold = u * cdf[n - 1];
    for (ptrdiff_t j = 0; j < n; j++)
        if (!(cdf[j] < threshold))
            return j;
    return n - 1;
}

/* reference.embedding_generate over a quantized network: each step gathers the running rows'
 * table rows (table: vocab x dim float32), runs every layer (fd_q_block_forward) and samples;
 * the running rows stay packed at the front (a finished row is dropped by moving the later ones
 * up), rows[r] being the sequence number of running row r. Returns -1 when out of memory. */
static int fd_q_generate(const fd_qlayer *layers, ptrdiff_t n_layers, const uint8_t *buffer, const float *table,
                         ptrdiff_t dim, ptrdiff_t context, const double *uniforms, ptrdiff_t n, ptrdiff_t max_len,
                         double temperature, int64_t boundary, int64_t *tokens, int64_t *lengths)
{
    ptrdiff_t vocab = layers[n_layers - 1].fan_out, running = n, width = context * dim;
    /* the network's scratch once for every step (fd_q_mlp_forward would allocate it per step) */
    ptrdiff_t block = n < FD_Q_BLOCK_ROWS ? n : FD_Q_BLOCK_ROWS, widest = 16;
    ptrdiff_t scratch = fd_q_scratch_bytes(layers, n_layers, block);
    for (ptrdiff_t l = 0; l < n_layers; l++)
        widest = layers[l].n_pad > widest ? layers[l].n_pad : widest;
    float *hidden = malloc((size_t)(2 * block * widest) * sizeof(float) + (size_t)scratch + block * sizeof(float));
    float *x = malloc((size_t)(n * width + n * vocab) * sizeof(float));
    double *cdf = malloc((size_t)vocab * sizeof(double));
    ptrdiff_t *rows = malloc((size_t)n * sizeof(ptrdiff_t));
    int64_t *ctx = malloc((size_t)(n * context) * sizeof(int64_t));
    int failed = !hidden || !x || !cdf || !rows || !ctx;
    float *logits = x ? x + n * width : NULL;
    uint8_t *q = hidden ? (uint8_t *)(hidden + 2 * block * widest) : NULL;
    for (ptrdiff_t r = 0; !failed && r < n; r++) {
        rows[r] = r;
        lengths[r] = max_len;
    }
    for (ptrdiff_t i = 0; !failed && i < n * context; i++)
        ctx[i] = boundary;
    for (ptrdiff_t i = 0; !failed && i < n * max_len; i++)
        tokens[i] = boundary;
    for (ptrdiff_t t = 0; !failed && t < max_len && running; t++) {
        ptrdiff_t kept = 0;
        for (ptrdiff_t r = 0; r < running; r++)
            for (ptrdiff_t p = 0; p < context; p++)
                memcpy(x + r * width + p * dim, table + ctx[r * context + p] * dim, (size_t)dim * sizeof(float));
        for (ptrdiff_t i0 = 0; i0 < running; i0 += block)
            fd_q_block_forward(layers, n_layers, buffer, i0, running - i0 < block ? running - i0 : block, x, logits,
                               hidden, block, widest, q, (float *)(q + scratch));
        for (ptrdiff_t r = 0; r < running; r++) {
            ptrdiff_t row = rows[r];
            int64_t token = fd_q_sample_row(logits + r * vocab, vocab, temperature, uniforms[row * max_len + t], cdf);
            if (token == boundary) {
                lengths[row] = t;
                continue;
            }
            tokens[row * max_len + t] = token;
            rows[kept] = row;
            for (ptrdiff_t p = 0; p < context - 1; p++)  /* kept <= r: row `kept` is done with, or is r */
                ctx[kept * context + p] = ctx[r * context + p + 1];
            ctx[kept * context + context - 1] = token;
            kept++;
        }
        running = kept;
    }
    free(hidden);
    free(x);
    free(cdf);
    free(rows);
    free(ctx);
    return failed ? -1 : 0;
}

/* --- the sparse first layer: a gather-sum of quantized table rows --------------------------- */

/* Row i of y = act((Σ_k values[k] · T[indices[k]]) · scales + bias) over row i's non-zeros, T a
 * row-major table of n columns: int8 codes, or bf16 bit patterns (bf16 != 0). Each table row is
 * widened to float32 as it is read (int8: exact; bf16: a 16-bit shift, exact) and added in the
 * non-zeros' order (the Numba engine's order); the loops over n vectorize. The table is read
 * only at the rows X names: a 2^20-row int8 table streams a quarter of float32's bytes. */
static inline __attribute__((always_inline)) void fd_q_sparse_row_body(
        ptrdiff_t i, const int64_t *indptr, const int64_t *indices, const float *values, const void *table,
        int bf16, const float *scales, const float *bias, ptrdiff_t n, float *y)
{
    float *yi = y + i * n;
    for (ptrdiff_t c = 0; c < n; c++)
        yi[c] = 0;
    for (int64_t k = indptr[i]; k < indptr[i + 1]; k++) {
        const float v = values[k];
        if (bf16) {
            const uint16_t *t = (const uint16_t *)table + indices[k] * n;
            for (ptrdiff_t c = 0; c < n; c++) {
                uint32_t bits = (uint32_t)t[c] << 16;
                float w;
                memcpy(&w, &bits, 4);
                yi[c] += v * w;
            }
        } else {
            const int8_t *t = (const int8_t *)table + indices[k] * n;
            for (ptrdiff_t c = 0; c < n; c++)
                yi[c] += v * (float)t[c];
        }
    }
    for (ptrdiff_t c = 0; c < n; c++)
        yi[c] = yi[c] * scales[c] + bias[c];
}

typedef void (*fd_q_sparse_row_fn)(ptrdiff_t, const int64_t *, const int64_t *, const float *, const void *, int,
                                   const float *, const float *, ptrdiff_t, float *);

static void fd_q_sparse_row_generic(ptrdiff_t i, const int64_t *indptr, const int64_t *indices, const float *values,
                                    const void *table, int bf16, const float *scales, const float *bias, ptrdiff_t n,
                                    float *y)
{
    fd_q_sparse_row_body(i, indptr, indices, values, table, bf16, scales, bias, n, y);
}

#ifdef FD_Q_X86
static FD_Q_AVX2 void fd_q_sparse_row_avx2(ptrdiff_t i, const int64_t *indptr, const int64_t *indices,
                                           const float *values, const void *table, int bf16, const float *scales,
                                           const float *bias, ptrdiff_t n, float *y)
{
    fd_q_sparse_row_body(i, indptr, indices, values, table, bf16, scales, bias, n, y);
}

static FD_Q_AVX512 void fd_q_sparse_row_avx512(ptrdiff_t i, const int64_t *indptr, const int64_t *indices,
                                               const float *values, const void *table, int bf16,
                                               const float *scales, const float *bias, ptrdiff_t n, float *y)
{
    fd_q_sparse_row_body(i, indptr, indices, values, table, bf16, scales, bias, n, y);
}
#endif

/* the sparse first layer over B rows (rows shared over `threads` OpenMP threads: each row of y
 * has one writer, so the result does not depend on the count); the build follows the bf16
 * level (no VNNI or BF16 instruction is needed: AVX-512F, AVX2 or portable) */
static void fd_q_sparse_forward(ptrdiff_t B, const int64_t *indptr, const int64_t *indices, const float *values,
                                const void *table, int bf16, const float *scales, const float *bias, ptrdiff_t n,
                                int act, float alpha, float *y, int threads)
{
    fd_q_sparse_row_fn row = fd_q_sparse_row_generic;
#ifdef FD_Q_X86
    int level = fd_q_levels() >> 4;
    row = level >= 2 ? fd_q_sparse_row_avx512 : level == 1 ? fd_q_sparse_row_avx2 : fd_q_sparse_row_generic;
#endif
    if (threads > B)
        threads = (int)B;
    if (threads <= 1) {
        for (ptrdiff_t i = 0; i < B; i++) {
            row(i, indptr, indices, values, table, bf16, scales, bias, n, y);
            act_forward_row_f(act, alpha, y + i * n, NULL, y + i * n, n);
        }
        return;
    }
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (ptrdiff_t i = 0; i < B; i++) {
        row(i, indptr, indices, values, table, bf16, scales, bias, n, y);
        act_forward_row_f(act, alpha, y + i * n, NULL, y + i * n, n);
    }
}

/* the paths the dispatch picks, for tests and reports */
static const char *fd_q_int8_path(void)
{
    static const char *names[] = {"generic", "avx2", "avx512_vnni"};
    return names[fd_q_levels() & 15];
}

static const char *fd_q_bf16_path(void)
{
    static const char *names[] = {"generic", "avx2", "avx512", "avx512_bf16"};
    return names[fd_q_levels() >> 4];
}

#endif
