/* Instantiated by microkernels.h with FD_REAL (float/double), FD_NAME and FD_LANES. */

#define FD_ROWS 4  /* rows per register tile: 4 x 2 vectors of accumulators */

/* One tile of C = A @ B (+ bias): rows x cols of C, with cols <= FD_LANES and rows <= FD_ROWS.
 * Always inlined with constant rows/cols where it matters, so the full tile becomes straight
 * vector code and the edges stay correct. */
static inline __attribute__((always_inline)) void FD_NAME(tile_nb)(
        int rows, int cols, ptrdiff_t k, const FD_REAL *A, ptrdiff_t a_rs, ptrdiff_t a_cs,
        const FD_REAL *B, ptrdiff_t ldb, const FD_REAL *bias, FD_REAL *C, ptrdiff_t ldc,
        int accumulate)
{
    FD_REAL acc[FD_ROWS][FD_LANES];
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            acc[i][j] = accumulate ? C[i * ldc + j] : bias ? bias[j] : 0;
    for (ptrdiff_t p = 0; p < k; p++) {
        const FD_REAL *b = B + p * ldb;
        for (int i = 0; i < rows; i++) {
            FD_REAL a = A[i * a_rs + p * a_cs];
            for (int j = 0; j < cols; j++)
                acc[i][j] += a * b[j];
        }
    }
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            C[i * ldc + j] = acc[i][j];
}

/* C (m x n, row stride ldc) = A @ B (+ bias, one per column) or C += A @ B when accumulate.
 * A is m x k with strides (a_rs, a_cs), so A may be a transposed view (x^T for dW = x^T dz);
 * B is k x n with unit column stride. Columns outermost: a strip of B (k x FD_LANES) stays
 * in L1/L2 while every row of A passes over it. C must not overlap A or B. */
FD_CLONES static void FD_NAME(gemm_nb)(
        ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const FD_REAL *A, ptrdiff_t a_rs, ptrdiff_t a_cs,
        const FD_REAL *B, ptrdiff_t ldb, const FD_REAL *bias, FD_REAL *C, ptrdiff_t ldc,
        int accumulate)
{
    for (ptrdiff_t j0 = 0; j0 < n; j0 += FD_LANES) {
        int cols = n - j0 < FD_LANES ? (int)(n - j0) : FD_LANES;
        const FD_REAL *bias_j = bias ? bias + j0 : NULL;
        ptrdiff_t i0 = 0;
        if (cols == FD_LANES) {
            for (; i0 + FD_ROWS <= m; i0 += FD_ROWS)
                FD_NAME(tile_nb)(FD_ROWS, FD_LANES, k, A + i0 * a_rs, a_rs, a_cs, B + j0, ldb,
                                 bias_j, C + i0 * ldc + j0, ldc, accumulate);
            for (; i0 < m; i0++)
                FD_NAME(tile_nb)(1, FD_LANES, k, A + i0 * a_rs, a_rs, a_cs, B + j0, ldb,
                                 bias_j, C + i0 * ldc + j0, ldc, accumulate);
        } else {
            for (; i0 < m; i0++)
                FD_NAME(tile_nb)(1, cols, k, A + i0 * a_rs, a_rs, a_cs, B + j0, ldb,
                                 bias_j, C + i0 * ldc + j0, ldc, accumulate);
        }
    }
}

/* C (m x n) = A @ Bᵀ with A m x k and B n x k, both row-major (dx = dz Wᵀ): dot products
 * along contiguous rows, FD_LANES partial sums added in a fixed order (deterministic). */
FD_CLONES static void FD_NAME(gemm_nt)(
        ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const FD_REAL *A, ptrdiff_t lda,
        const FD_REAL *B, ptrdiff_t ldb, FD_REAL *C, ptrdiff_t ldc)
{
    for (ptrdiff_t i = 0; i < m; i++) {
        const FD_REAL *a = A + i * lda;
        for (ptrdiff_t j = 0; j < n; j++) {
            const FD_REAL *b = B + j * ldb;
            FD_REAL part[FD_LANES] = {0};
            ptrdiff_t p = 0;
            for (; p + FD_LANES <= k; p += FD_LANES)
                for (int l = 0; l < FD_LANES; l++)
                    part[l] += a[p + l] * b[p + l];
            FD_REAL sum = 0;
            for (int l = 0; l < FD_LANES; l++)
                sum += part[l];
            for (; p < k; p++)
                sum += a[p] * b[p];
            C[i * ldc + j] = sum;
        }
    }
}

#undef FD_ROWS
