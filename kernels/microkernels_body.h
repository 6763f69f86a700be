/* Instantiated by simd_instantiate.h with FD_REAL (float/double), FD_NAME, FD_VBYTES (vector
 * size in bytes) and FD_TARGET (function attributes of this build). */

#define FD_ROWS 4  /* rows per tile of a batch: 4 rows x 2 vectors = 8 accumulators */
#define FD_WIDE 8  /* vectors per tile of a lone row: 8 independent accumulators hide FMA latency */
#define FD_VLEN (FD_VBYTES / (int)sizeof(FD_REAL))  /* elements per vector */
#define FD_LANES (2 * FD_VLEN)  /* columns per batch tile */
#ifndef FD_KC
#define FD_KC 32  /* k slice: the B strip a tile reads (FD_KC lines, far apart) stays in L1 */
#endif

/* A vector that may sit at any element-aligned address (GCC vector extension). */
typedef FD_REAL FD_NAME(vec) __attribute__((vector_size(FD_VBYTES), aligned(sizeof(FD_REAL))));

/* C[rows, nv vectors] += A[rows, k] @ B[k, nv vectors], accumulators in registers for the
 * whole k loop. Always inlined with constant rows and nv, so it becomes straight vector code. */
static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(tile)(
        int rows, int nv, ptrdiff_t k, const FD_REAL *A, ptrdiff_t a_rs, ptrdiff_t a_cs,
        const FD_REAL *B, ptrdiff_t ldb, FD_REAL *C, ptrdiff_t ldc)
{
    typedef FD_NAME(vec) vec;
    vec acc[FD_ROWS][FD_WIDE];
    for (int i = 0; i < rows; i++)
        for (int h = 0; h < nv; h++)
            acc[i][h] = *(const vec *)(C + i * ldc + h * FD_VLEN);
    for (ptrdiff_t p = 0; p < k; p++) {
        const FD_REAL *b = B + p * ldb;
        for (int i = 0; i < rows; i++) {
            FD_REAL a = A[i * a_rs + p * a_cs];
            for (int h = 0; h < nv; h++)
                acc[i][h] += a * *(const vec *)(b + h * FD_VLEN);
        }
    }
    for (int i = 0; i < rows; i++)
        for (int h = 0; h < nv; h++)
            *(vec *)(C + i * ldc + h * FD_VLEN) = acc[i][h];
}

/* Rows [0, m) of one k slice on a block of `nv` vectors of columns: 4-row tiles, then
 * single rows. Keeps `nv` a constant in each inlined tile. */
static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(rows_of_tiles)(
        int nv, ptrdiff_t m, ptrdiff_t kc, const FD_REAL *A, ptrdiff_t a_rs, ptrdiff_t a_cs,
        const FD_REAL *B, ptrdiff_t ldb, FD_REAL *C, ptrdiff_t ldc)
{
    ptrdiff_t i = 0;
    for (; i + FD_ROWS <= m; i += FD_ROWS)
        FD_NAME(tile)(FD_ROWS, nv, kc, A + i * a_rs, a_rs, a_cs, B, ldb, C + i * ldc, ldc);
    for (; i < m; i++)
        FD_NAME(tile)(1, nv, kc, A + i * a_rs, a_rs, a_cs, B, ldb, C + i * ldc, ldc);
}

/* The last (n mod FD_LANES) columns of one k slice for a batch of 4 rows or more: B's strip
 * and C's columns are copied into zero-padded blocks one or two vectors wide, so the same
 * vector tiles run on them (the copy costs about one row's worth of work). */
static FD_TARGET void FD_NAME(edge_columns)(
        ptrdiff_t m, int cols, ptrdiff_t kc, const FD_REAL *A, ptrdiff_t a_rs, ptrdiff_t a_cs,
        const FD_REAL *B, ptrdiff_t ldb, FD_REAL *C, ptrdiff_t ldc)
{
    enum { C_ROWS = 16 };  /* rows of C padded at a time */
    FD_REAL B_pad[FD_KC * FD_LANES], C_pad[C_ROWS * FD_LANES];
    int nv = cols <= FD_VLEN ? 1 : 2, width = nv * FD_VLEN;
    for (ptrdiff_t p = 0; p < kc; p++)
        for (int j = 0; j < width; j++)
            B_pad[p * width + j] = j < cols ? B[p * ldb + j] : 0;
    for (ptrdiff_t i0 = 0; i0 < m; i0 += C_ROWS) {
        ptrdiff_t rows = m - i0 < C_ROWS ? m - i0 : C_ROWS;
        for (ptrdiff_t i = 0; i < rows; i++)
            for (int j = 0; j < width; j++)
                C_pad[i * width + j] = j < cols ? C[(i0 + i) * ldc + j] : 0;
        if (nv == 1)
            FD_NAME(rows_of_tiles)(1, rows, kc, A + i0 * a_rs, a_rs, a_cs, B_pad, width, C_pad, width);
        else
            FD_NAME(rows_of_tiles)(2, rows, kc, A + i0 * a_rs, a_rs, a_cs, B_pad, width, C_pad, width);
        for (ptrdiff_t i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++)
                C[(i0 + i) * ldc + j] = C_pad[i * width + j];
    }
}

/* C (m x n, row stride ldc) = A @ B (+ bias, one per column) or C += A @ B when accumulate.
 * A is m x k with strides (a_rs, a_cs), so A may be a transposed view (xᵀ for dW = xᵀ dz);
 * B is k x n with unit column stride. C must not overlap A or B.
 * Loops: k slices (FD_KC) outermost; in each, column strips of B stay in L1 while the 4-row
 * tiles pass over them; leftover rows (all of them at batch 1-3) use wide single-row tiles;
 * leftover columns go through edge_columns. */
static FD_TARGET void FD_NAME(gemm_nb)(
        ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const FD_REAL *A, ptrdiff_t a_rs, ptrdiff_t a_cs,
        const FD_REAL *B, ptrdiff_t ldb, const FD_REAL *bias, FD_REAL *C, ptrdiff_t ldc,
        int accumulate)
{
    ptrdiff_t m_tiled = m - m % FD_ROWS, n_tiled = n - n % FD_LANES;
    if (!accumulate)
        for (ptrdiff_t i = 0; i < m; i++)
            for (ptrdiff_t j = 0; j < n; j++)
                C[i * ldc + j] = bias ? bias[j] : 0;
    for (ptrdiff_t p0 = 0; p0 < k; p0 += FD_KC) {
        ptrdiff_t kc = k - p0 < FD_KC ? k - p0 : FD_KC;
        const FD_REAL *A_p = A + p0 * a_cs, *B_p = B + p0 * ldb;
        for (ptrdiff_t j0 = 0; j0 < n_tiled; j0 += FD_LANES)
            FD_NAME(rows_of_tiles)(2, m_tiled, kc, A_p, a_rs, a_cs, B_p + j0, ldb, C + j0, ldc);
        for (ptrdiff_t i = m_tiled; i < m; i++) {
            ptrdiff_t j0 = 0;
            for (; j0 + FD_WIDE * FD_VLEN <= n_tiled; j0 += FD_WIDE * FD_VLEN)
                FD_NAME(tile)(1, FD_WIDE, kc, A_p + i * a_rs, a_rs, a_cs, B_p + j0, ldb,
                              C + i * ldc + j0, ldc);
            for (; j0 < n_tiled; j0 += FD_LANES)
                FD_NAME(tile)(1, 2, kc, A_p + i * a_rs, a_rs, a_cs, B_p + j0, ldb,
                              C + i * ldc + j0, ldc);
        }
        if (n_tiled < n && m >= FD_ROWS)
            FD_NAME(edge_columns)(m, (int)(n - n_tiled), kc, A_p, a_rs, a_cs, B_p + n_tiled, ldb,
                                  C + n_tiled, ldc);
        else if (n_tiled < n)  /* a few rows: padding would cost more than these scalar loops */
            for (ptrdiff_t i = 0; i < m; i++)
                for (ptrdiff_t p = 0; p < kc; p++)
                    for (ptrdiff_t j = n_tiled; j < n; j++)
                        C[i * ldc + j] += A_p[i * a_rs + p * a_cs] * B_p[p * ldb + j];
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
