/* Instantiated by simd_instantiate.h with FD_REAL (float/double), FD_NAME, FD_VBYTES (vector
 * size in bytes) and FD_TARGET (function attributes of this build).
 *
 * Every element of C is its start value (0, the bias or C itself) plus the products
 * A[i,p] * B[p,j] added one by one in increasing p, whatever the tile that computes it: the
 * result of an element does not depend on the batch size, its row or its column. */

#include "tuning.h"  /* the blocking sizes: src/fusedense/tuning.py, the row of this vector width */
#if FD_VBYTES == 64
#define FD_TUNED(name) FD_TUNE_avx512_##name
#elif FD_VBYTES == 32
#define FD_TUNED(name) FD_TUNE_avx2_##name
#else
#define FD_TUNED(name) FD_TUNE_generic_##name
#endif

#define FD_VLEN (FD_VBYTES / (int)sizeof(FD_REAL))  /* elements per vector */
#define FD_LANES (2 * FD_VLEN)  /* columns of a batch tile */
/* rows of a batch tile: rows x 2 vectors of accumulators, about half the vector registers */
#define FD_ROWS FD_TUNED(TILE_ROWS)
/* k slice: a batch tile's B strip (FD_KC x FD_LANES) stays in L1 while the row tiles pass
 * over it; C is reloaded once per slice */
#define FD_KC FD_TUNED(KC)
#define FD_PACKED_KC FD_TUNED(PACKED_KC)  /* gemm_packed's k slice: C reloaded once per slice */
#define FD_WIDE 8  /* vectors of a lone row's tile: 8 independent accumulators hide FMA latency */
#define FD_KC_TRANSPOSED FD_TUNE_KC_TRANSPOSED
#define FD_PACKED_CHUNK_BYTES FD_TUNED(PACKED_CHUNK_BYTES)  /* gemm_packed's chunk of B */
#ifndef FD_STREAM_MIN_B_BYTES  /* (tests/gemm_paths.c sets both: every row through one path) */
/* gemm_nb streams rows instead of tiling them (see stream) over a B past L2: all rows from
 * FD_STREAM_ALL_MIN_B_BYTES, and the rows of 2- and 1-row tiles from FD_STREAM_MIN_B_BYTES
 * when their tiles do not span n (see tiled_rows) */
#define FD_STREAM_ALL_MIN_B_BYTES FD_TUNE_STREAM_ALL_MIN_B_BYTES
#define FD_STREAM_MIN_B_BYTES FD_TUNE_STREAM_MIN_B_BYTES
#endif

#ifndef FD_MICROKERNELS_ONCE
#define FD_MICROKERNELS_ONCE
enum fd_start { FD_FROM_ZERO, FD_FROM_BIAS, FD_FROM_C };  /* where accumulators start */
#endif

/* A vector that may sit at any element-aligned address (GCC vector extension). */
typedef FD_REAL FD_NAME(vec) __attribute__((vector_size(FD_VBYTES), aligned(sizeof(FD_REAL))));

/* One k slice of C (=|+=) A @ B, what every tile of the slice shares. A and B are either the
 * caller's matrices or packed copies (gemm_packed); both are addressed through group strides:
 * row i of A starts at A + (i / FD_ROWS) * a_gs + (i % FD_ROWS) * a_rs, the FD_LANES-wide strip
 * of B at column j (a multiple of FD_LANES) at B + (j / FD_LANES) * b_gs. */
typedef struct {
    ptrdiff_t kc;  /* steps of this slice */
    const FD_REAL *A;  /* A's first column of the slice */
    ptrdiff_t a_rs, a_cs, a_gs;
    const FD_REAL *B;  /* B's first row of the slice */
    ptrdiff_t ldb, b_gs;
    /* The last, partial vector of columns is read whole for steps before k_direct: its lanes
     * past C's last column read the elements that follow in B, which stay inside B and feed
     * only lanes that are never stored. Later steps (B's last rows: a whole-vector read would
     * pass B's end) read `tail`, a zero-padded copy of those rows, FD_LANES wide, starting at
     * the column of the partial tile. */
    ptrdiff_t k_direct;
    const FD_REAL *tail;
    /* packed operands (gemm_packed): A in groups of FD_ROWS rows (a_rs = 1, a_cs = FD_ROWS), B in
     * zero-padded strips (ldb = FD_LANES) */
    int packed;
    enum fd_start start;
    int relu;  /* store relu(C): the last slice, when the caller asked for it */
    const FD_REAL *bias;
    FD_REAL *C;
    ptrdiff_t ldc;
} FD_NAME(slice);

#if FD_VBYTES == 32 && defined(__x86_64__)
/* AVX2's masked loads and stores: lanes [0, cols) of a vector of this type set. */
static inline __attribute__((always_inline)) FD_TARGET __m256i FD_NAME(lane_mask)(int cols)
{
    if (sizeof(FD_REAL) == 4)
        return _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(cols), _mm256_setr_epi64x(0, 1, 2, 3));
}
#endif

/* The first `cols` elements of src (cols = FD_VLEN: the whole vector); other lanes 0. A partial
 * vector goes through a masked load where the ISA has one (AVX2, AVX-512): element by element,
 * the compiler keeps the vector in memory, and a tile's edge column ran at half speed. */
static inline __attribute__((always_inline)) FD_TARGET FD_NAME(vec) FD_NAME(load)(
        const FD_REAL *src, int cols)
{
    typedef FD_NAME(vec) vec;
    if (cols == FD_VLEN)
        return *(const vec *)src;
#if FD_VBYTES == 64 && defined(__x86_64__)
    if (sizeof(FD_REAL) == 4)
        return (vec)_mm512_maskz_loadu_ps((__mmask16)((1u << cols) - 1), src);
    return (vec)_mm512_maskz_loadu_pd((__mmask8)((1u << cols) - 1), src);
#elif FD_VBYTES == 32 && defined(__x86_64__)
    if (sizeof(FD_REAL) == 4)
        return (vec)_mm256_maskload_ps((const float *)src, FD_NAME(lane_mask)(cols));
    return (vec)_mm256_maskload_pd((const double *)src, FD_NAME(lane_mask)(cols));
#else
    vec v = {0};
    for (int l = 0; l < cols; l++)
        v[l] = src[l];
    return v;
#endif
}

static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(store)(
        FD_REAL *dst, FD_NAME(vec) v, int cols)
{
    if (cols == FD_VLEN) {
        *(FD_NAME(vec) *)dst = v;
        return;
    }
#if FD_VBYTES == 64 && defined(__x86_64__)
    if (sizeof(FD_REAL) == 4)
        _mm512_mask_storeu_ps(dst, (__mmask16)((1u << cols) - 1), (__m512)v);
    else
        _mm512_mask_storeu_pd(dst, (__mmask8)((1u << cols) - 1), (__m512d)v);
#elif FD_VBYTES == 32 && defined(__x86_64__)
    if (sizeof(FD_REAL) == 4)
        _mm256_maskstore_ps((float *)dst, FD_NAME(lane_mask)(cols), (__m256)v);
    else
        _mm256_maskstore_pd((double *)dst, FD_NAME(lane_mask)(cols), (__m256d)v);
#else
    for (int l = 0; l < cols; l++)
        dst[l] = v[l];
#endif
}

/* relu(v) = v <= 0 ? 0 : v per lane, as act_rows_body.h's relu: NaN passes, -0 becomes 0. */
static inline __attribute__((always_inline)) FD_TARGET FD_NAME(vec) FD_NAME(relu_vec)(FD_NAME(vec) v)
{
    __typeof__(v <= v) nonpositive = v <= (FD_NAME(vec)){0};
    return (FD_NAME(vec))((__typeof__(nonpositive))v & ~nonpositive);
}

/* acc[rows][nv] += A[rows, 0:count] @ B[0:count, nv vectors]. */
static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(strided_steps)(
        int rows, int nv, FD_NAME(vec) acc[FD_ROWS][FD_WIDE], ptrdiff_t count, const FD_REAL *A,
        ptrdiff_t a_rs, ptrdiff_t a_cs, const FD_REAL *B, ptrdiff_t ldb)
{
    typedef FD_NAME(vec) vec;
    for (ptrdiff_t p = 0; p < count; p++) {
        const FD_REAL *b = B + p * ldb;
        for (int i = 0; i < rows; i++) {
            FD_REAL a = A[i * a_rs + p * a_cs];
            for (int h = 0; h < nv; h++)
                acc[i][h] += a * *(const vec *)(b + h * FD_VLEN);
        }
    }
}

/* The same; a transposed A (a_rs = 1: dW = xᵀ dz) gets its own copy of the loop, where a step's
 * `rows` elements of A sit at constant offsets (with a runtime a_rs the compiler keeps one
 * offset per row, spilled to the stack at 8 rows: 8 more loads per step). */
static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(steps)(
        int rows, int nv, FD_NAME(vec) acc[FD_ROWS][FD_WIDE], ptrdiff_t count, const FD_REAL *A,
        ptrdiff_t a_rs, ptrdiff_t a_cs, const FD_REAL *B, ptrdiff_t ldb)
{
    if (a_rs == 1)
        FD_NAME(strided_steps)(rows, nv, acc, count, A, 1, a_cs, B, ldb);
    else
        FD_NAME(strided_steps)(rows, nv, acc, count, A, a_rs, a_cs, B, ldb);
}

#if FD_VBYTES == 64
/* A narrow last vector: a tile of `full` (0 or 1) whole vectors and `cols` <= FD_VLEN / 2 more
 * columns keeps those in a half-width accumulator: a 10-wide float64 output layer (8 + 2), and
 * the last 4 columns of a 100-wide layer (a tile of its own). A 512-bit FMA costs Zen 4 two
 * 256-bit ones whatever its mask, so the live lanes of a masked full vector cost as much as a
 * whole one: with the half vector, 3 units a step instead of 4 (8 + 2), 1 instead of 2 (4).
 * The products and their order are the same (FMA, increasing p): the same bits. */
typedef FD_REAL FD_NAME(hvec) __attribute__((vector_size(FD_VBYTES / 2), aligned(sizeof(FD_REAL))));

/* acc[rows] (the whole vector, if full) and half[rows] (the next FD_VLEN / 2 columns) += A @ B
 * over count steps; B's rows are read full * FD_VLEN + FD_VLEN / 2 wide (inside B or its tail,
 * as tile's whole-vector reads). */
static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(narrow_steps)(
        int rows, int full, FD_NAME(vec) acc[FD_ROWS], FD_NAME(hvec) half[FD_ROWS], ptrdiff_t count,
        const FD_REAL *A, ptrdiff_t a_rs, ptrdiff_t a_cs, const FD_REAL *B, ptrdiff_t ldb)
{
    for (ptrdiff_t p = 0; p < count; p++) {
        const FD_REAL *b = B + p * ldb;
        FD_NAME(vec) whole = full ? *(const FD_NAME(vec) *)b : (FD_NAME(vec)){0};
        FD_NAME(hvec) rest = *(const FD_NAME(hvec) *)(b + full * FD_VLEN);
        for (int i = 0; i < rows; i++) {
            FD_REAL a = A[i * a_rs + p * a_cs];
            if (full)
                acc[i] += a * whole;
            half[i] += a * rest;
        }
    }
}

/* tile() for nv = full + 1 with cols <= FD_VLEN / 2 (see above). */
static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(narrow_tile)(
        int rows, int full, int cols, ptrdiff_t i, ptrdiff_t j, const FD_NAME(slice) *s)
{
    FD_NAME(vec) acc[FD_ROWS];
    FD_NAME(hvec) half[FD_ROWS];
    const FD_REAL *A = s->A + i / FD_ROWS * s->a_gs + i % FD_ROWS * s->a_rs;
    const FD_REAL *B = s->B + j / FD_LANES * s->b_gs + j % FD_LANES;
    FD_REAL *C = s->C + i * s->ldc + j;
    const int h0 = full * FD_VLEN;  /* the half vector's first column in the tile */
    for (int r = 0; r < rows; r++) {
        acc[r] = !full ? (FD_NAME(vec)){0}
               : s->start == FD_FROM_C ? FD_NAME(load)(C + r * s->ldc, FD_VLEN)
               : s->start == FD_FROM_BIAS ? FD_NAME(load)(s->bias + j, FD_VLEN) : (FD_NAME(vec)){0};
        half[r] = (FD_NAME(hvec)){0};
        for (int l = 0; l < cols; l++)  /* (once per tile and slice: scalar is fine) */
            half[r][l] = s->start == FD_FROM_C ? C[r * s->ldc + h0 + l]
                       : s->start == FD_FROM_BIAS ? s->bias[j + h0 + l] : 0;
    }
    if (s->packed) {
        FD_NAME(narrow_steps)(rows, full, acc, half, s->kc, A, 1, FD_ROWS, B, FD_LANES);
    } else {
        if (s->a_rs == 1)  /* constant offsets for a transposed A, as steps() */
            FD_NAME(narrow_steps)(rows, full, acc, half, s->k_direct, A, 1, s->a_cs, B, s->ldb);
        else
            FD_NAME(narrow_steps)(rows, full, acc, half, s->k_direct, A, s->a_rs, s->a_cs, B, s->ldb);
        if (s->k_direct < s->kc)
            FD_NAME(narrow_steps)(rows, full, acc, half, s->kc - s->k_direct, A + s->k_direct * s->a_cs,
                                  s->a_rs, s->a_cs, s->tail, FD_LANES);
    }
    for (int r = 0; r < rows; r++) {
        if (full)
            FD_NAME(store)(C + r * s->ldc, s->relu ? FD_NAME(relu_vec)(acc[r]) : acc[r], FD_VLEN);
        for (int l = 0; l < cols; l++) {  /* relu as relu_vec: NaN passes, -0 becomes 0 */
            FD_REAL v = half[r][l];
            C[r * s->ldc + h0 + l] = s->relu && v <= 0 ? 0 : v;
        }
    }
}
#endif

/* Rows [i, i + rows) x columns [j, j + (nv - 1) * FD_VLEN + cols) of one slice, accumulators
 * in registers for the whole slice. Always inlined with constant rows and nv (and cols when
 * the tile is whole), so it becomes straight vector code. */
static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(tile)(
        int rows, int nv, int cols, ptrdiff_t i, ptrdiff_t j, const FD_NAME(slice) *s)
{
#if FD_VBYTES == 64
    if (nv <= 2 && cols <= FD_VLEN / 2) {
        FD_NAME(narrow_tile)(rows, nv - 1, cols, i, j, s);
        return;
    }
#endif
    FD_NAME(vec) acc[FD_ROWS][FD_WIDE];
    const FD_REAL *A = s->A + i / FD_ROWS * s->a_gs + i % FD_ROWS * s->a_rs;
    const FD_REAL *B = s->B + j / FD_LANES * s->b_gs + j % FD_LANES;
    FD_REAL *C = s->C + i * s->ldc + j;
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < nv; h++) {
            int width = h == nv - 1 ? cols : FD_VLEN;
            acc[r][h] = s->start == FD_FROM_C ? FD_NAME(load)(C + r * s->ldc + h * FD_VLEN, width)
                      : s->start == FD_FROM_BIAS ? FD_NAME(load)(s->bias + j + h * FD_VLEN, width)
                      : (FD_NAME(vec)){0};
        }
    if (s->packed) {  /* constant strides; zero-padded strips: whole vectors are read */
        FD_NAME(strided_steps)(rows, nv, acc, s->kc, A, 1, FD_ROWS, B, FD_LANES);
    } else {
        ptrdiff_t k_direct = cols == FD_VLEN ? s->kc : s->k_direct;
        FD_NAME(steps)(rows, nv, acc, k_direct, A, s->a_rs, s->a_cs, B, s->ldb);
        if (k_direct < s->kc)
            FD_NAME(steps)(rows, nv, acc, s->kc - k_direct, A + k_direct * s->a_cs, s->a_rs,
                           s->a_cs, s->tail, FD_LANES);
    }
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < nv; h++)
            FD_NAME(store)(C + r * s->ldc + h * FD_VLEN,
                           s->relu ? FD_NAME(relu_vec)(acc[r][h]) : acc[r][h],
                           h == nv - 1 ? cols : FD_VLEN);
}

/* Tiles of `rows` rows over rows [i0, i1) (a multiple of rows apart) at column j. */
static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(column_of_tiles)(
        int rows, int nv, int cols, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t j, const FD_NAME(slice) *s)
{
    for (ptrdiff_t i = i0; i < i1; i += rows)
        FD_NAME(tile)(rows, nv, cols, i, j, s);
}

/* Rows [i0, i1) x all n columns of one slice: blocks of nv vectors (each read from L1 by every
 * row tile), then halving blocks for what is left, the last vector partial. Every partial tile
 * thus starts at column n - n % FD_LANES, where the slice's tail was copied from. */
static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(panel)(
        int rows, int nv, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t n, const FD_NAME(slice) *s)
{
    ptrdiff_t j = 0;
    for (; j + nv * FD_VLEN <= n; j += nv * FD_VLEN)
        FD_NAME(column_of_tiles)(rows, nv, FD_VLEN, i0, i1, j, s);
    if (nv > 4 && j + 4 * FD_VLEN <= n) {
        FD_NAME(column_of_tiles)(rows, 4, FD_VLEN, i0, i1, j, s);
        j += 4 * FD_VLEN;
    }
    if (nv > 2 && j + 2 * FD_VLEN <= n) {
        FD_NAME(column_of_tiles)(rows, 2, FD_VLEN, i0, i1, j, s);
        j += 2 * FD_VLEN;
    }
    if (n - j > FD_VLEN)
        FD_NAME(column_of_tiles)(rows, 2, (int)(n - j - FD_VLEN), i0, i1, j, s);
    else if (n > j)
        FD_NAME(column_of_tiles)(rows, 1, (int)(n - j), i0, i1, j, s);
}

/* One compiled panel per row count (panel_FD_ROWS: the full tiles): with all of them inlined
 * into gemm_nb, the register allocator kept the edge tiles' strides and an accumulator on the
 * stack. */
#define FD_PANEL(rows, nv)                                                                     \
    static __attribute__((noinline)) FD_TARGET void FD_NAME(panel_##rows)(                      \
            ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t n, const FD_NAME(slice) *s)                    \
    {                                                                                          \
        FD_NAME(panel)(rows, nv, i0, i1, n, s);                                                \
    }
FD_PANEL(FD_ROWS, 2)
#if FD_ROWS > 4
FD_PANEL(4, 2)
#endif
FD_PANEL(2, 4)
FD_PANEL(1, FD_WIDE)
#undef FD_PANEL

/* --- streamed rows (fewer rows than a tile, a B larger than the caches) ---
 * A lone row's or 2-row tile reads B in column strips: with B's rows 4-16 KiB apart every k
 * step lands on a new page, and a B that does not fit in cache comes from memory at TLB and
 * prefetcher-miss speed. Streamed, B is read once, a few rows at a time front to
 * back (a few sequential streams), and each pass adds those steps to the few rows of C, which
 * stay in L1/L2. Every element still adds its products one by one in increasing p, from the
 * same start: the same bits as the tiles. */

/* c + a * b rounded once where the ISA has FMA, written out: the tiles get theirs from GCC's
 * contraction of `acc += a * b`, which GCC did not apply in a streamed pass (other bits than
 * the tiles). Without FMA (the SSE2 build) both are a multiply and an add. */
static inline __attribute__((always_inline)) FD_TARGET FD_NAME(vec) FD_NAME(fma)(
        FD_NAME(vec) c, FD_REAL a, FD_NAME(vec) b)
{
#if FD_VBYTES == 64 && defined(__x86_64__)
    if (sizeof(FD_REAL) == 4)
        return (FD_NAME(vec))_mm512_fmadd_ps(_mm512_set1_ps(a), (__m512)b, (__m512)c);
    return (FD_NAME(vec))_mm512_fmadd_pd(_mm512_set1_pd(a), (__m512d)b, (__m512d)c);
#elif FD_VBYTES == 32 && defined(__x86_64__)
    if (sizeof(FD_REAL) == 4)
        return (FD_NAME(vec))_mm256_fmadd_ps(_mm256_set1_ps(a), (__m256)b, (__m256)c);
    return (FD_NAME(vec))_mm256_fmadd_pd(_mm256_set1_pd(a), (__m256d)b, (__m256d)c);
#else
    return c + a * b;
#endif
}

#define FD_STREAM_ROWS 4  /* rows of C per pass */
/* steps of B per pass (FD_STREAMED below): 4; 8 for a lone row over a B of
 * FD_STREAM_DEEP_B_BYTES or more, which comes from memory more than from L3 and wants more rows
 * of B in flight (2-3 rows cannot take 8: their broadcasts of A would not fit the registers) */
#define FD_STREAM_MAX_STEPS 8
#ifndef FD_STREAM_DEEP_B_BYTES  /* (tests/gemm_paths.c sets it: every lone row 8 steps) */
#define FD_STREAM_DEEP_B_BYTES FD_TUNE_STREAM_DEEP_B_BYTES
#endif

/* Vector j of rows [0, rows) of C: the start (C, the bias or 0) plus A[r, 0:steps] @
 * B[0:steps, j's columns]; `cols` < FD_VLEN for the last, partial vector (masked reads of B:
 * they stay inside it). */
static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(stream_vector)(
        int rows, int steps, int cols, enum fd_start start, int relu,
        const FD_REAL a[FD_STREAM_ROWS][FD_STREAM_MAX_STEPS], const FD_REAL *B, ptrdiff_t ldb,
        const FD_REAL *bias, FD_REAL *C, ptrdiff_t ldc)
{
    typedef FD_NAME(vec) vec;
    vec b[FD_STREAM_MAX_STEPS];
    for (int q = 0; q < steps; q++)
        b[q] = FD_NAME(load)(B + q * ldb, cols);
    for (int r = 0; r < rows; r++) {
        vec c = start == FD_FROM_C ? FD_NAME(load)(C + r * ldc, cols)
              : start == FD_FROM_BIAS ? FD_NAME(load)(bias, cols) : (vec){0};
        for (int q = 0; q < steps; q++)
            c = FD_NAME(fma)(c, a[r][q], b[q]);
        FD_NAME(store)(C + r * ldc, relu ? FD_NAME(relu_vec)(c) : c, cols);
    }
}

/* One pass over rows [0, rows) of C, all n columns: `steps` (at most FD_STREAM_MAX_STEPS)
 * steps of A and B. Inlined with constant arguments for the passes between the first and the last. */
static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(stream_pass)(
        int rows, int steps, enum fd_start start, int relu, ptrdiff_t n, const FD_REAL *A,
        ptrdiff_t a_rs, ptrdiff_t a_cs, const FD_REAL *B, ptrdiff_t ldb, const FD_REAL *bias,
        FD_REAL *C, ptrdiff_t ldc)
{
    FD_REAL a[FD_STREAM_ROWS][FD_STREAM_MAX_STEPS];
    for (int r = 0; r < rows; r++)
        for (int q = 0; q < steps; q++)
            a[r][q] = A[r * a_rs + q * a_cs];
    ptrdiff_t j = 0;
    for (; j + FD_VLEN <= n; j += FD_VLEN)
        FD_NAME(stream_vector)(rows, steps, FD_VLEN, start, relu, a, B + j, ldb,
                               start == FD_FROM_BIAS ? bias + j : NULL, C + j, ldc);
    if (j < n)
        FD_NAME(stream_vector)(rows, steps, (int)(n - j), start, relu, a, B + j, ldb,
                               start == FD_FROM_BIAS ? bias + j : NULL, C + j, ldc);
}

/* Rows [0, rows) of gemm_nb's product, streamed: a first pass of 1 to `steps` steps from the
 * start, whole passes, and a last one that applies the relu. */
static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(stream)(
        int rows, int steps, ptrdiff_t n, ptrdiff_t k, const FD_REAL *A, ptrdiff_t a_rs,
        ptrdiff_t a_cs, const FD_REAL *B, ptrdiff_t ldb, const FD_REAL *bias, FD_REAL *C,
        ptrdiff_t ldc, int accumulate, int relu)
{
    ptrdiff_t first = k > 0 ? (k - 1) % steps + 1 : 0;
    FD_NAME(stream_pass)(rows, (int)first, accumulate ? FD_FROM_C : bias ? FD_FROM_BIAS : FD_FROM_ZERO,
                         relu && first == k, n, A, a_rs, a_cs, B, ldb, bias, C, ldc);
    for (ptrdiff_t p = first; p < k - steps; p += steps)
        FD_NAME(stream_pass)(rows, steps, FD_FROM_C, 0, n, A + p * a_cs, a_rs, a_cs, B + p * ldb,
                             ldb, bias, C, ldc);
    if (first < k)
        FD_NAME(stream_pass)(rows, steps, FD_FROM_C, relu, n, A + (k - steps) * a_cs, a_rs, a_cs,
                             B + (k - steps) * ldb, ldb, bias, C, ldc);
}

#define FD_STREAMED(rows, steps)                                                               \
    static __attribute__((noinline)) FD_TARGET void FD_NAME(stream_##rows##_##steps)(           \
            ptrdiff_t n, ptrdiff_t k, const FD_REAL *A, ptrdiff_t a_rs, ptrdiff_t a_cs,          \
            const FD_REAL *B, ptrdiff_t ldb, const FD_REAL *bias, FD_REAL *C, ptrdiff_t ldc,     \
            int accumulate, int relu)                                                          \
    {                                                                                          \
        FD_NAME(stream)(rows, steps, n, k, A, a_rs, a_cs, B, ldb, bias, C, ldc, accumulate, relu); \
    }
FD_STREAMED(1, 4)
FD_STREAMED(2, 4)
FD_STREAMED(3, 4)
FD_STREAMED(4, 4)
FD_STREAMED(1, 8)
#undef FD_STREAMED

/* Rows [0, rows) of gemm_nb's product streamed, at most FD_STREAM_ROWS at a time. */
static FD_TARGET void FD_NAME(streamed_rows)(
        ptrdiff_t rows, ptrdiff_t n, ptrdiff_t k, const FD_REAL *A, ptrdiff_t a_rs, ptrdiff_t a_cs,
        const FD_REAL *B, ptrdiff_t ldb, const FD_REAL *bias, FD_REAL *C, ptrdiff_t ldc,
        int accumulate, int relu)
{
    static void (*const by_rows[FD_STREAM_ROWS])(
            ptrdiff_t, ptrdiff_t, const FD_REAL *, ptrdiff_t, ptrdiff_t, const FD_REAL *, ptrdiff_t,
            const FD_REAL *, FD_REAL *, ptrdiff_t, int, int) = {
        FD_NAME(stream_1_4), FD_NAME(stream_2_4), FD_NAME(stream_3_4), FD_NAME(stream_4_4)};
    int deep = k * n * (ptrdiff_t)sizeof(FD_REAL) >= FD_STREAM_DEEP_B_BYTES;
    for (ptrdiff_t i = 0; i < rows; i += FD_STREAM_ROWS) {
        ptrdiff_t chunk = rows - i < FD_STREAM_ROWS ? rows - i : FD_STREAM_ROWS;
        (chunk == 1 && deep ? FD_NAME(stream_1_8) : by_rows[chunk - 1])(
                n, k, A + i * a_rs, a_rs, a_cs, B, ldb, bias, C + i * ldc, ldc, accumulate, relu);
    }
}

/* gemm_nb's rows [0, result) go to the tiles, the rest is streamed (FD_STREAM_*). Under
 * FD_STREAM_ALL_MIN_B_BYTES only the rows of 2- and 1-row tiles are streamed (a 4-row tile
 * keeps pace with streaming there), and a lone row only past two of its tiles' widths (over two
 * strips its tiles keep pace). */
static inline FD_TARGET ptrdiff_t FD_NAME(tiled_rows)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k)
{
    ptrdiff_t b_bytes = k * n * (ptrdiff_t)sizeof(FD_REAL), few = m % FD_ROWS % 4;
    int spanned = n <= (few == 1 ? 2 : 1) * FD_WIDE * FD_VLEN;  /* by the few rows' tiles */
    return b_bytes >= FD_STREAM_ALL_MIN_B_BYTES ? 0
         : b_bytes >= FD_STREAM_MIN_B_BYTES && !spanned ? m - few
         : m;
}

/* C (m x n, row stride ldc) = A @ B (+ bias, one per column) or C += A @ B when accumulate;
 * then C = relu(C) when relu (the activation rides in the tiles' write-back: no pass over C).
 * A is m x k with strides (a_rs, a_cs), so A may be a transposed view (xᵀ for dW = xᵀ dz);
 * B is k x n with unit column stride. C must not overlap A or B.
 * Loops: k slices (FD_KC; FD_KC_TRANSPOSED) outermost; in each, FD_ROWS-row tiles two vectors
 * wide walk down each column strip; leftover rows (all of them at batch 1-5 on AVX2) take
 * wider tiles of 4, 2 and 1 rows; the bias is where the accumulators start, so it costs
 * nothing. Rows whose tiles would walk a large B in strips are streamed instead (tiled_rows). */
static FD_TARGET void FD_NAME(gemm_nb)(
        ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const FD_REAL *A, ptrdiff_t a_rs, ptrdiff_t a_cs,
        const FD_REAL *B, ptrdiff_t ldb, const FD_REAL *bias, FD_REAL *C, ptrdiff_t ldc,
        int accumulate, int relu)
{
    if (m <= 0 || n <= 0)
        return;
    ptrdiff_t m_panels = FD_NAME(tiled_rows)(m, n, k);
    if (m_panels < m)
        FD_NAME(streamed_rows)(m - m_panels, n, k, A + m_panels * a_rs, a_rs, a_cs, B, ldb, bias,
                               C + m_panels * ldc, ldc, accumulate, relu);
    if (m_panels == 0)
        return;
    /* B's last rows at the partial vector's columns, for the reads that would pass B's end:
     * that vector overhangs the last column by `over` < FD_VLEN elements, so it needs the
     * last ceil(over / ldb) rows (one unless B is narrower than a vector). */
    FD_REAL tail[(FD_VLEN - 1) * FD_LANES];
    ptrdiff_t j_tail = n - n % FD_LANES, tail_rows = 0;
    if (n % FD_VLEN) {
        ptrdiff_t over = FD_VLEN - n % FD_VLEN;
        tail_rows = (over + ldb - 1) / ldb < k ? (over + ldb - 1) / ldb : k;
        for (ptrdiff_t q = 0; q < tail_rows; q++)
            for (ptrdiff_t j = 0; j < FD_LANES; j++)
                tail[q * FD_LANES + j] = j_tail + j < n ? B[(k - tail_rows + q) * ldb + j_tail + j] : 0;
    }
    ptrdiff_t m_tiled = m_panels - m_panels % FD_ROWS, slice = a_cs == 1 ? FD_KC : FD_KC_TRANSPOSED;
    for (ptrdiff_t p0 = 0; p0 < k || p0 == 0; p0 += slice) {  /* one slice at least: k may be 0 */
        ptrdiff_t kc = k - p0 < slice ? k - p0 : slice;
        ptrdiff_t k_direct = k - tail_rows - p0;
        k_direct = k_direct < 0 ? 0 : k_direct > kc ? kc : k_direct;
        FD_NAME(slice) s = {
            .kc = kc, .A = A + p0 * a_cs, .a_rs = a_rs, .a_cs = a_cs, .a_gs = FD_ROWS * a_rs,
            .B = B + p0 * ldb, .ldb = ldb, .b_gs = FD_LANES,
            .k_direct = k_direct,
            .tail = k_direct < kc ? tail + (p0 + k_direct - (k - tail_rows)) * FD_LANES : NULL,
            .start = p0 > 0 || accumulate ? FD_FROM_C : bias ? FD_FROM_BIAS : FD_FROM_ZERO,
            .relu = relu && p0 + kc >= k, .bias = bias, .C = C, .ldc = ldc,
        };
        ptrdiff_t i = m_tiled;
        FD_NAME(panel_FD_ROWS)(0, i, n, &s);
#if FD_ROWS > 4
        if (m_panels - i >= 4) {
            FD_NAME(panel_4)(i, i + 4, n, &s);
            i += 4;
        }
#endif
        if (m_panels - i >= 2) {
            FD_NAME(panel_2)(i, i + 2, n, &s);
            i += 2;
        }
        if (m_panels - i == 1)
            FD_NAME(panel_1)(i, m_panels, n, &s);
    }
}

/* --- the packed path (large B): GotoBLAS-style copies so the inner loops read contiguous memory ---
 * Read in place, a tile's B strip has its rows ldb apart: with ldb a multiple of 4 KiB (a width
 * of 1024 floats) all rows of the strip fall in the same L1 sets and each sits on its own page,
 * so the strip does not stay in L1 and every step misses the TLB. Copied once per k slice and column chunk
 * into strips of FD_LANES columns (kc x FD_LANES, contiguous) the strip stays in L1 across the
 * row tiles; A, copied per k slice into groups of FD_ROWS rows (a step's FD_ROWS elements side
 * by side), streams from L2. The arithmetic is the same products in the same order, so the
 * packed path gives the same bits as the in-place one. */

#define FD_PACK_B_ROWS 16  /* rows of B that pack_b copies into every strip before moving on */

/* B[0:kc, 0:nc] as strips of FD_LANES columns, strip s at dst + s * kc * FD_LANES (row stride
 * FD_LANES), zeros past column nc: whole-vector reads of the last strip stay in dst.
 * FD_PACK_B_ROWS rows at a time, strip by strip: the reads are that many sequential streams
 * along B's rows, and each strip receives a contiguous run of writes. (Row by row, a row's
 * writes went to every strip, kc * FD_LANES elements apart: 32 KiB on AVX-512, one L1 set.) */
static FD_TARGET void FD_NAME(pack_b)(ptrdiff_t kc, ptrdiff_t nc, const FD_REAL *B, ptrdiff_t ldb,
                                      FD_REAL *dst)
{
    typedef FD_NAME(vec) vec;
    ptrdiff_t whole = nc - nc % FD_LANES;
    for (ptrdiff_t p0 = 0; p0 < kc; p0 += FD_PACK_B_ROWS) {
        ptrdiff_t p1 = kc - p0 < FD_PACK_B_ROWS ? kc : p0 + FD_PACK_B_ROWS;
        for (ptrdiff_t j = 0; j < whole; j += FD_LANES) {
            FD_REAL *out = dst + j * kc;
            for (ptrdiff_t p = p0; p < p1; p++) {
                *(vec *)(out + p * FD_LANES) = *(const vec *)(B + p * ldb + j);
                *(vec *)(out + p * FD_LANES + FD_VLEN) = *(const vec *)(B + p * ldb + j + FD_VLEN);
            }
        }
        if (whole < nc)
            for (ptrdiff_t p = p0; p < p1; p++)
                for (ptrdiff_t l = 0; l < FD_LANES; l++)
                    dst[whole * kc + p * FD_LANES + l] = whole + l < nc ? B[p * ldb + whole + l] : 0;
    }
}
#undef FD_PACK_B_ROWS

/* A[0:m, 0:kc] (row-major, row stride lda) as groups of FD_ROWS rows, group g at
 * dst + g * kc * FD_ROWS holding A[g * FD_ROWS + r, p] at p * FD_ROWS + r; rows past m are 0. */
static FD_TARGET void FD_NAME(pack_a)(ptrdiff_t m, ptrdiff_t kc, const FD_REAL *A, ptrdiff_t lda,
                                      FD_REAL *dst)
{
    for (ptrdiff_t g = 0; g < m; g += FD_ROWS)
        for (int r = 0; r < FD_ROWS; r++) {
            FD_REAL *out = dst + g * kc + r;
            if (g + r < m)
                for (ptrdiff_t p = 0; p < kc; p++)
                    out[p * FD_ROWS] = A[(g + r) * lda + p];
            else
                for (ptrdiff_t p = 0; p < kc; p++)
                    out[p * FD_ROWS] = 0;
        }
}

/* One k slice x column chunk of packed operands: strip by strip, every row tile of the strip
 * (leftover rows in tiles of 4, 2, 1 rows, all two vectors wide) while the strip is in L1. */
static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(packed_strips)(
        ptrdiff_t m, const FD_NAME(slice) *s, int nv, int cols, ptrdiff_t j)
{
    ptrdiff_t m_tiled = m - m % FD_ROWS, i = m_tiled;
    FD_NAME(column_of_tiles)(FD_ROWS, nv, cols, 0, m_tiled, j, s);
    if (FD_ROWS > 4 && m - i >= 4) {
        FD_NAME(tile)(4, nv, cols, i, j, s);
        i += 4;
    }
    if (m - i >= 2) {
        FD_NAME(tile)(2, nv, cols, i, j, s);
        i += 2;
    }
    if (m - i == 1)
        FD_NAME(tile)(1, nv, cols, i, j, s);
}

/* Asks for rows [r0, r1) x columns [0, nc) of B (row stride ldb) to be brought into L2, one
 * request per cache line: gemm_packed spreads the next chunk of B over the strips of the
 * current one, so that pack_b reads it from cache instead of waiting on memory. */
static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(prefetch_rows)(
        const FD_REAL *B, ptrdiff_t ldb, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t nc)
{
    const ptrdiff_t line = 64 / (ptrdiff_t)sizeof(FD_REAL);
    for (ptrdiff_t r = r0; r < r1; r++)
        for (ptrdiff_t c = 0; c < nc; c += line)
            __builtin_prefetch(B + r * ldb + c, 0, 2);
}

/* gemm_nb for a row-major A (a_cs = 1) through packed copies (see above); returns 0 without
 * touching C when the copies' memory cannot be had, so the caller can take the in-place path. */
static FD_TARGET int FD_NAME(gemm_packed)(
        ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const FD_REAL *A, ptrdiff_t lda,
        const FD_REAL *B, ptrdiff_t ldb, const FD_REAL *bias, FD_REAL *C, ptrdiff_t ldc,
        int accumulate, int relu)
{
    ptrdiff_t kc_max = k < FD_PACKED_KC ? (k > 0 ? k : 1) : FD_PACKED_KC;
    ptrdiff_t nc_max = FD_PACKED_CHUNK_BYTES / ((ptrdiff_t)sizeof(FD_REAL) * FD_PACKED_KC);
    nc_max -= nc_max % FD_LANES;  /* whole strips: a chunk's last strip is the only partial one */
    nc_max = n < nc_max ? n + (FD_LANES - n % FD_LANES) % FD_LANES : nc_max;
    ptrdiff_t m_groups = m + (FD_ROWS - m % FD_ROWS) % FD_ROWS;
    FD_REAL *packed_a = malloc(sizeof(FD_REAL) * m_groups * kc_max);
    FD_REAL *packed_b = malloc(sizeof(FD_REAL) * kc_max * nc_max);
    if (packed_a == NULL || packed_b == NULL) {
        free(packed_a);
        free(packed_b);
        return 0;
    }
    for (ptrdiff_t p0 = 0; p0 < k || p0 == 0; p0 += FD_PACKED_KC) {  /* one slice at least */
        ptrdiff_t kc = k - p0 < FD_PACKED_KC ? k - p0 : FD_PACKED_KC;
        FD_NAME(pack_a)(m, kc, A + p0, lda, packed_a);
        for (ptrdiff_t j0 = 0; j0 < n; j0 += nc_max) {
            ptrdiff_t nc = n - j0 < nc_max ? n - j0 : nc_max;
            FD_NAME(pack_b)(kc, nc, B + p0 * ldb + j0, ldb, packed_b);
            FD_NAME(slice) s = {
                .kc = kc, .A = packed_a, .a_rs = 1, .a_cs = FD_ROWS, .a_gs = FD_ROWS * kc,
                .B = packed_b, .ldb = FD_LANES, .b_gs = FD_LANES * kc, .k_direct = kc, .tail = NULL,
                .packed = 1,
                .start = p0 > 0 || accumulate ? FD_FROM_C : bias ? FD_FROM_BIAS : FD_FROM_ZERO,
                .relu = relu && p0 + kc >= k, .bias = bias ? bias + j0 : NULL, .C = C + j0, .ldc = ldc,
            };
            /* the chunk of B that pack_b copies next (this slice's next columns, else the next
             * slice's first ones) is fetched a few rows per strip while the strips compute */
            const FD_REAL *next = NULL;
            ptrdiff_t next_kc = 0, next_nc = 0;
            if (j0 + nc < n) {
                next = B + p0 * ldb + j0 + nc;
                next_kc = kc;
                next_nc = n - j0 - nc < nc_max ? n - j0 - nc : nc_max;
            } else if (p0 + kc < k) {
                next = B + (p0 + kc) * ldb;
                next_kc = k - p0 - kc < FD_PACKED_KC ? k - p0 - kc : FD_PACKED_KC;
                next_nc = n < nc_max ? n : nc_max;
            }
            ptrdiff_t strips = (nc + FD_LANES - 1) / FD_LANES, j = 0;
            for (ptrdiff_t t = 0; j + FD_LANES <= nc; j += FD_LANES, t++) {
                if (next)
                    FD_NAME(prefetch_rows)(next, ldb, t * next_kc / strips, (t + 1) * next_kc / strips, next_nc);
                FD_NAME(packed_strips)(m, &s, 2, FD_VLEN, j);
            }
            if (nc - j > FD_VLEN)
                FD_NAME(packed_strips)(m, &s, 2, (int)(nc - j - FD_VLEN), j);
            else if (nc > j)
                FD_NAME(packed_strips)(m, &s, 1, (int)(nc - j), j);
        }
    }
    free(packed_a);
    free(packed_b);
    return 1;
}

/* C (m x n) = A @ Bᵀ with A m x k and B n x k, both row-major (dx = dz Wᵀ): dot products
 * along contiguous rows, 2 vectors of partial sums added in a fixed order (deterministic). */
static FD_TARGET void FD_NAME(gemm_nt)(
        ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const FD_REAL *A, ptrdiff_t lda,
        const FD_REAL *B, ptrdiff_t ldb, FD_REAL *C, ptrdiff_t ldc)
{
    typedef FD_NAME(vec) vec;
    for (ptrdiff_t i = 0; i < m; i++) {
        const FD_REAL *a = A + i * lda;
        for (ptrdiff_t j = 0; j < n; j++) {
            const FD_REAL *b = B + j * ldb;
            vec part0 = {0}, part1 = {0};
            ptrdiff_t p = 0;
            for (; p + FD_LANES <= k; p += FD_LANES) {
                part0 += *(const vec *)(a + p) * *(const vec *)(b + p);
                part1 += *(const vec *)(a + p + FD_VLEN) * *(const vec *)(b + p + FD_VLEN);
            }
            vec part = part0 + part1;
            FD_REAL sum = 0;
            for (int l = 0; l < FD_VLEN; l++)
                sum += part[l];
            for (; p < k; p++)
                sum += a[p] * b[p];
            C[i * ldc + j] = sum;
        }
    }
}

#undef FD_TUNED
#undef FD_ROWS
#undef FD_KC
#undef FD_PACKED_KC
#undef FD_KC_TRANSPOSED
#undef FD_PACKED_CHUNK_BYTES
#undef FD_WIDE
#undef FD_VLEN
#undef FD_LANES
