/* Instantiated by simd_instantiate.h with FD_REAL (float/double), FD_NAME, FD_VBYTES (vector
 * size in bytes) and FD_TARGET (function attributes of this build).
 *
 * Every element of C is its start value (0, the bias or C itself) plus the products
 * A[i,p] * B[p,j] added one by one in increasing p, whatever the tile that computes it: the
 * result of an element does not depend on the batch size, its row or its column. */

#define FD_VLEN (FD_VBYTES / (int)sizeof(FD_REAL))  /* elements per vector */
#define FD_LANES (2 * FD_VLEN)  /* columns of a batch tile */
#if FD_VBYTES == 64
#define FD_ROWS 8  /* rows of a batch tile: 8 x 2 vectors = 16 accumulators of AVX-512's 32 registers */
#else
#define FD_ROWS 4  /* 4 x 2 vectors = 8 accumulators of 16 registers */
#endif
#define FD_WIDE 8  /* vectors of a lone row's tile: 8 independent accumulators hide FMA latency */
#ifndef FD_KC
/* k slice: a batch tile's B strip (FD_KC x FD_LANES, 16-32 KiB) stays in L1 while the row
 * tiles pass over it; C is reloaded once per slice */
#define FD_KC 256
/* with a transposed A (dW = xᵀ dz) every k step of a tile reads its own cache line of A, so
 * slices are shorter: those lines and the B strip fit L1 together (measured at 784x256x128:
 * 118 GFLOP/s with slices of 256, 124 with 128, 145 with 64) */
#define FD_KC_TRANSPOSED 64
#endif

#ifndef FD_MICROKERNELS_ONCE
#define FD_MICROKERNELS_ONCE
enum fd_start { FD_FROM_ZERO, FD_FROM_BIAS, FD_FROM_C };  /* where accumulators start */
#endif

/* A vector that may sit at any element-aligned address (GCC vector extension). */
typedef FD_REAL FD_NAME(vec) __attribute__((vector_size(FD_VBYTES), aligned(sizeof(FD_REAL))));

/* One k slice of C (=|+=) A @ B, what every tile of the slice shares. */
typedef struct {
    ptrdiff_t kc;  /* steps of this slice */
    const FD_REAL *A;  /* A's first column of the slice */
    ptrdiff_t a_rs, a_cs;
    const FD_REAL *B;  /* B's first row of the slice */
    ptrdiff_t ldb;
    /* The last, partial vector of columns is read whole for steps before k_direct: its lanes
     * past C's last column read the elements that follow in B, which stay inside B and feed
     * only lanes that are never stored. Later steps (B's last rows: a whole-vector read would
     * pass B's end) read `tail`, a zero-padded copy of those rows, FD_LANES wide, starting at
     * the column of the partial tile. */
    ptrdiff_t k_direct;
    const FD_REAL *tail;
    enum fd_start start;
    const FD_REAL *bias;
    FD_REAL *C;
    ptrdiff_t ldc;
} FD_NAME(slice);

/* The first `cols` elements of src (cols = FD_VLEN: the whole vector); other lanes 0. */
static inline __attribute__((always_inline)) FD_TARGET FD_NAME(vec) FD_NAME(load)(
        const FD_REAL *src, int cols)
{
    FD_NAME(vec) v = {0};
    if (cols == FD_VLEN)
        return *(const FD_NAME(vec) *)src;
    for (int l = 0; l < cols; l++)
        v[l] = src[l];
    return v;
}

static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(store)(
        FD_REAL *dst, FD_NAME(vec) v, int cols)
{
    if (cols == FD_VLEN) {
        *(FD_NAME(vec) *)dst = v;
        return;
    }
    for (int l = 0; l < cols; l++)
        dst[l] = v[l];
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

/* Rows [i, i + rows) x columns [j, j + (nv - 1) * FD_VLEN + cols) of one slice, accumulators
 * in registers for the whole slice. Always inlined with constant rows and nv (and cols when
 * the tile is whole), so it becomes straight vector code. */
static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(tile)(
        int rows, int nv, int cols, ptrdiff_t i, ptrdiff_t j, const FD_NAME(slice) *s)
{
    FD_NAME(vec) acc[FD_ROWS][FD_WIDE];
    const FD_REAL *A = s->A + i * s->a_rs;
    FD_REAL *C = s->C + i * s->ldc + j;
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < nv; h++) {
            int width = h == nv - 1 ? cols : FD_VLEN;
            acc[r][h] = s->start == FD_FROM_C ? FD_NAME(load)(C + r * s->ldc + h * FD_VLEN, width)
                      : s->start == FD_FROM_BIAS ? FD_NAME(load)(s->bias + j + h * FD_VLEN, width)
                      : (FD_NAME(vec)){0};
        }
    ptrdiff_t k_direct = cols == FD_VLEN ? s->kc : s->k_direct;
    FD_NAME(steps)(rows, nv, acc, k_direct, A, s->a_rs, s->a_cs, s->B + j, s->ldb);
    if (k_direct < s->kc)
        FD_NAME(steps)(rows, nv, acc, s->kc - k_direct, A + k_direct * s->a_cs, s->a_rs, s->a_cs,
                       s->tail, FD_LANES);
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < nv; h++)
            FD_NAME(store)(C + r * s->ldc + h * FD_VLEN, acc[r][h], h == nv - 1 ? cols : FD_VLEN);
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

/* C (m x n, row stride ldc) = A @ B (+ bias, one per column) or C += A @ B when accumulate.
 * A is m x k with strides (a_rs, a_cs), so A may be a transposed view (xᵀ for dW = xᵀ dz);
 * B is k x n with unit column stride. C must not overlap A or B.
 * Loops: k slices (FD_KC; FD_KC_TRANSPOSED) outermost; in each, FD_ROWS-row tiles two vectors
 * wide walk down each column strip; leftover rows (all of them at batch 1-3) take wider tiles
 * of 4, 2 and 1 rows; the bias is where the accumulators start, so it costs nothing. */
static FD_TARGET void FD_NAME(gemm_nb)(
        ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const FD_REAL *A, ptrdiff_t a_rs, ptrdiff_t a_cs,
        const FD_REAL *B, ptrdiff_t ldb, const FD_REAL *bias, FD_REAL *C, ptrdiff_t ldc,
        int accumulate)
{
    if (m <= 0 || n <= 0)
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
    ptrdiff_t m_tiled = m - m % FD_ROWS, slice = a_cs == 1 ? FD_KC : FD_KC_TRANSPOSED;
    for (ptrdiff_t p0 = 0; p0 < k || p0 == 0; p0 += slice) {  /* one slice at least: k may be 0 */
        ptrdiff_t kc = k - p0 < slice ? k - p0 : slice;
        ptrdiff_t k_direct = k - tail_rows - p0;
        k_direct = k_direct < 0 ? 0 : k_direct > kc ? kc : k_direct;
        FD_NAME(slice) s = {
            .kc = kc, .A = A + p0 * a_cs, .a_rs = a_rs, .a_cs = a_cs, .B = B + p0 * ldb, .ldb = ldb,
            .k_direct = k_direct,
            .tail = k_direct < kc ? tail + (p0 + k_direct - (k - tail_rows)) * FD_LANES : NULL,
            .start = p0 > 0 || accumulate ? FD_FROM_C : bias ? FD_FROM_BIAS : FD_FROM_ZERO,
            .bias = bias, .C = C, .ldc = ldc,
        };
        ptrdiff_t i = m_tiled;
        FD_NAME(panel)(FD_ROWS, 2, 0, i, n, &s);
        if (FD_ROWS > 4 && m - i >= 4) {
            FD_NAME(panel)(4, 2, i, i + 4, n, &s);
            i += 4;
        }
        if (m - i >= 2) {
            FD_NAME(panel)(2, 4, i, i + 2, n, &s);
            i += 2;
        }
        if (m - i == 1)
            FD_NAME(panel)(1, FD_WIDE, i, m, n, &s);
    }
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

#undef FD_ROWS
#undef FD_WIDE
#undef FD_VLEN
#undef FD_LANES
