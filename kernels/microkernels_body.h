/* Instantiated by microkernels.h with FD_REAL (float/double), FD_NAME, FD_VBYTES (vector
 * size in bytes) and FD_TARGET (function attributes of this build). */

#define FD_ROWS 4  /* rows per register tile: 4 rows x 2 vectors = 8 accumulators */
#define FD_VLEN (FD_VBYTES / (int)sizeof(FD_REAL))  /* elements per vector */
#define FD_LANES (2 * FD_VLEN)  /* columns per register tile */

/* A vector that may sit at any element-aligned address (GCC vector extension). */
typedef FD_REAL FD_NAME(vec) __attribute__((vector_size(FD_VBYTES), aligned(sizeof(FD_REAL))));

/* Full-width tile of C = A @ B (+ bias): `rows` (<= FD_ROWS) x FD_LANES, accumulators held
 * in registers across the whole k loop. Always inlined with a constant `rows`. */
static inline __attribute__((always_inline)) FD_TARGET void FD_NAME(tile_full)(
        int rows, ptrdiff_t k, const FD_REAL *A, ptrdiff_t a_rs, ptrdiff_t a_cs,
        const FD_REAL *B, ptrdiff_t ldb, const FD_REAL *bias, FD_REAL *C, ptrdiff_t ldc,
        int accumulate)
{
    typedef FD_NAME(vec) vec;
    vec acc[FD_ROWS][2];
    for (int i = 0; i < rows; i++)
        for (int h = 0; h < 2; h++)
            acc[i][h] = accumulate ? *(const vec *)(C + i * ldc + h * FD_VLEN)
                      : bias ? *(const vec *)(bias + h * FD_VLEN) : (vec){0};
    for (ptrdiff_t p = 0; p < k; p++) {
        vec b0 = *(const vec *)(B + p * ldb), b1 = *(const vec *)(B + p * ldb + FD_VLEN);
        for (int i = 0; i < rows; i++) {
            FD_REAL a = A[i * a_rs + p * a_cs];
            acc[i][0] += a * b0;
            acc[i][1] += a * b1;
        }
    }
    for (int i = 0; i < rows; i++)
        for (int h = 0; h < 2; h++)
            *(vec *)(C + i * ldc + h * FD_VLEN) = acc[i][h];
}

/* Edge tile (fewer than FD_LANES columns left): one row, plain loops. */
static inline FD_TARGET void FD_NAME(tile_edge)(
        int cols, ptrdiff_t k, const FD_REAL *A, ptrdiff_t a_cs, const FD_REAL *B, ptrdiff_t ldb,
        const FD_REAL *bias, FD_REAL *C, int accumulate)
{
    FD_REAL acc[FD_LANES];
    for (int j = 0; j < cols; j++)
        acc[j] = accumulate ? C[j] : bias ? bias[j] : 0;
    for (ptrdiff_t p = 0; p < k; p++) {
        FD_REAL a = A[p * a_cs];
        for (int j = 0; j < cols; j++)
            acc[j] += a * B[p * ldb + j];
    }
    for (int j = 0; j < cols; j++)
        C[j] = acc[j];
}

/* C (m x n, row stride ldc) = A @ B (+ bias, one per column) or C += A @ B when accumulate.
 * A is m x k with strides (a_rs, a_cs), so A may be a transposed view (x^T for dW = x^T dz);
 * B is k x n with unit column stride. C must not overlap A or B.
 * Blocking: k in slices of FD_KC so that the strip of B a column tile reads (FD_KC rows,
 * one cache line each, a large power-of-two stride apart) stays in L1 while every row tile
 * of A passes over it; C tiles are re-read once per slice, which is cheap. */
#ifndef FD_KC
#define FD_KC 32
#endif
static FD_TARGET void FD_NAME(gemm_nb)(
        ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const FD_REAL *A, ptrdiff_t a_rs, ptrdiff_t a_cs,
        const FD_REAL *B, ptrdiff_t ldb, const FD_REAL *bias, FD_REAL *C, ptrdiff_t ldc,
        int accumulate)
{
    for (ptrdiff_t p0 = 0; p0 < k || p0 == 0; p0 += FD_KC) {
        ptrdiff_t kc = k - p0 < FD_KC ? k - p0 : FD_KC;
        const FD_REAL *A_p = A + p0 * a_cs, *B_p = B + p0 * ldb;
        int acc = accumulate || p0 > 0;  /* later slices add to what the first one wrote */
        for (ptrdiff_t j0 = 0; j0 < n; j0 += FD_LANES) {
            int cols = n - j0 < FD_LANES ? (int)(n - j0) : FD_LANES;
            const FD_REAL *bias_j = bias ? bias + j0 : NULL;
            ptrdiff_t i0 = 0;
            if (cols == FD_LANES) {
                for (; i0 + FD_ROWS <= m; i0 += FD_ROWS)
                    FD_NAME(tile_full)(FD_ROWS, kc, A_p + i0 * a_rs, a_rs, a_cs, B_p + j0, ldb,
                                       bias_j, C + i0 * ldc + j0, ldc, acc);
                for (; i0 < m; i0++)
                    FD_NAME(tile_full)(1, kc, A_p + i0 * a_rs, a_rs, a_cs, B_p + j0, ldb,
                                       bias_j, C + i0 * ldc + j0, ldc, acc);
            } else {
                for (; i0 < m; i0++)
                    FD_NAME(tile_edge)(cols, kc, A_p + i0 * a_rs, a_cs, B_p + j0, ldb,
                                       bias_j, C + i0 * ldc + j0, acc);
            }
        }
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
#undef FD_VLEN
#undef FD_LANES
