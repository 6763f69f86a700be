# Matrix products for the layer kernels, row-major throughout: BLAS (the one SciPy ships,
# through scipy.linalg.cython_blas) for large shapes, the register-blocked micro-kernels of
# microkernels.h for small ones where a BLAS call costs more than the arithmetic.
from libc.stdlib cimport free, malloc
from scipy.linalg.cython_blas cimport dgemm, sgemm

from real cimport real
from tuning cimport (BLAS_MIN_ROWS, BLAS_MIN_WORK, NARROW_COLUMNS, NARROW_PASS_ROWS,
                    PACKED_MIN_B_BYTES, PACKED_MIN_ROWS)

cdef extern from "microkernels.h" nogil:
    void gemm_nb_f(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float* A, Py_ssize_t a_rs,
                   Py_ssize_t a_cs, const float* B, Py_ssize_t ldb, const float* bias, float* C,
                   Py_ssize_t ldc, int accumulate, int relu)
    void gemm_nb_d(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const double* A, Py_ssize_t a_rs,
                   Py_ssize_t a_cs, const double* B, Py_ssize_t ldb, const double* bias, double* C,
                   Py_ssize_t ldc, int accumulate, int relu)
    bint gemm_packed_f(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float* A, Py_ssize_t lda,
                       const float* B, Py_ssize_t ldb, const float* bias, float* C, Py_ssize_t ldc,
                       int accumulate, int relu)
    bint gemm_packed_d(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const double* A, Py_ssize_t lda,
                       const double* B, Py_ssize_t ldb, const double* bias, double* C,
                       Py_ssize_t ldc, int accumulate, int relu)
    void gemm_nt_f(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float* A, Py_ssize_t lda,
                   const float* B, Py_ssize_t ldb, float* C, Py_ssize_t ldc)
    void gemm_nt_d(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const double* A, Py_ssize_t lda,
                   const double* B, Py_ssize_t ldb, double* C, Py_ssize_t ldc)

cdef inline bint worth_blas(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """BLAS pays off once a product has BLAS_MIN_WORK multiply-adds and rows to share out;
    below, the micro-kernels match single-thread BLAS and wake no BLAS thread pool."""
    return m >= BLAS_MIN_ROWS and n >= BLAS_MIN_ROWS and m * n * k >= BLAS_MIN_WORK


cdef inline bint worth_packing(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, size_t itemsize) noexcept nogil:
    """Whether a product packs its operands (packed_gemm_nb): a B that does not fit L2 beside A
    and C would be read from memory by every row tile, while packed each strip of B is read
    from memory once; with few rows the copy costs more than it saves."""
    return m >= PACKED_MIN_ROWS and k * n * itemsize >= PACKED_MIN_B_BYTES


cdef inline void blas_gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                           const real* A, Py_ssize_t lda, const real* B, Py_ssize_t ldb,
                           real beta, real* C, Py_ssize_t ldc) noexcept nogil:
    """C := op(A) @ op(B) + beta * C, row-major (C is m x n). BLAS is column-major, where a
    row-major C is Cᵀ, so it computes Cᵀ = op(B)ᵀ op(A)ᵀ: the operands swap, the flags stay.
    With beta = 0 BLAS never reads C."""
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'T' if trans_a else b'N'
    cdef int m_ = <int>n, n_ = <int>m, k_ = <int>k, lda_ = <int>ldb, ldb_ = <int>lda, ldc_ = <int>ldc
    cdef real one = 1
    if real is float:
        sgemm(&ta, &tb, &m_, &n_, &k_, &one, <float*>B, &lda_, <float*>A, &ldb_, &beta, C, &ldc_)
    else:
        dgemm(&ta, &tb, &m_, &n_, &k_, &one, <double*>B, &lda_, <double*>A, &ldb_, &beta, C, &ldc_)


cdef inline void micro_gemm_nb(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const real* A,
                               Py_ssize_t a_rs, Py_ssize_t a_cs, const real* B, Py_ssize_t ldb,
                               const real* bias, real* C, Py_ssize_t ldc, bint accumulate,
                               bint relu=False) noexcept nogil:
    """C := A @ B + bias (C += A @ B when accumulate); A has strides (a_rs, a_cs). Then
    C := relu(C) when relu (applied as the tiles are written back)."""
    if real is float:
        gemm_nb_f(m, n, k, A, a_rs, a_cs, B, ldb, bias, C, ldc, accumulate, relu)
    else:
        gemm_nb_d(m, n, k, A, a_rs, a_cs, B, ldb, bias, C, ldc, accumulate, relu)


cdef inline void packed_gemm_nb(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const real* A,
                                Py_ssize_t lda, const real* B, Py_ssize_t ldb, const real* bias,
                                real* C, Py_ssize_t ldc, bint relu=False) noexcept nogil:
    """C := A @ B + bias (A row-major), then relu(C) when relu, through packed copies of A
    and B; the same bits as micro_gemm_nb, which it falls back to when the copies' memory
    cannot be had."""
    cdef bint done
    if real is float:
        done = gemm_packed_f(m, n, k, A, lda, B, ldb, bias, C, ldc, False, relu)
    else:
        done = gemm_packed_d(m, n, k, A, lda, B, ldb, bias, C, ldc, False, relu)
    if not done:
        micro_gemm_nb(m, n, k, A, lda, 1, B, ldb, bias, C, ldc, False, relu)


cdef inline void micro_gemm_nt(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const real* A,
                               Py_ssize_t lda, const real* B, Py_ssize_t ldb, real* C,
                               Py_ssize_t ldc) noexcept nogil:
    """C := A @ Bᵀ (B is n x k, row-major)."""
    if real is float:
        gemm_nt_f(m, n, k, A, lda, B, ldb, C, ldc)
    else:
        gemm_nt_d(m, n, k, A, lda, B, ldb, C, ldc)


cdef inline void transpose(Py_ssize_t rows, Py_ssize_t cols, const real* src, Py_ssize_t lds,
                           real* dst) noexcept nogil:
    """dst (cols x rows, row-major) := srcᵀ (src rows x cols, row stride lds). In 4 x 4 tiles
    with fixed bounds, which the compiler turns into vector loads, shuffles and stores (about
    twice as fast as the element loop at 30 x 200 or 200 x 27); the edges element by element."""
    cdef Py_ssize_t rows4 = rows - rows % 4, cols4 = cols - cols % 4, r0, c0, r, c
    cdef int i, j
    for r0 in range(0, rows4, 4):
        for c0 in range(0, cols4, 4):
            for j in range(4):
                for i in range(4):
                    dst[(c0 + j) * rows + r0 + i] = src[(r0 + i) * lds + c0 + j]
    for r in range(rows):
        for c in range(cols4 if r < rows4 else 0, cols):
            dst[c * rows + r] = src[r * lds + c]


cdef inline void micro_gemm_abt(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const real* A,
                                Py_ssize_t lda, const real* B, Py_ssize_t ldb, real* C,
                                Py_ssize_t ldc) noexcept nogil:
    """C := A @ Bᵀ. From 4 rows on, Bᵀ is copied out once (n·k moves against m·n·k
    multiply-adds) so the register-tiled kernel runs; fewer rows take the dot-product kernel."""
    cdef real* Bt = NULL
    if m >= 4:
        Bt = <real*>malloc(n * k * sizeof(real))
    if Bt == NULL:
        micro_gemm_nt(m, n, k, A, lda, B, ldb, C, ldc)
        return
    transpose(n, k, B, ldb, Bt)
    micro_gemm_nb(m, n, k, A, lda, 1, Bt, n, NULL, C, ldc, False)
    free(Bt)


cdef inline void micro_gemm_atb(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const real* A,
                                Py_ssize_t lda, const real* B, Py_ssize_t ldb,
                                real* C) noexcept nogil:
    """C (m x n, contiguous) := Aᵀ @ B with A k x m (row stride lda): dW = xᵀ dz. A narrow C
    (an output layer's dW: 10 classes) would leave most lanes of the tiles' vectors empty (10 of
    AVX2's 16); it is made as Cᵀ = Bᵀ A, vectors along C's rows, NARROW_PASS_ROWS rows at a
    time, and transposed. Every element is the same products added in the same order
    (a·b = b·a exactly): the same bits either way."""
    cdef real transposed[NARROW_COLUMNS * NARROW_PASS_ROWS]
    cdef Py_ssize_t i0 = 0, rows
    if n >= NARROW_COLUMNS:
        micro_gemm_nb(m, n, k, A, 1, lda, B, ldb, NULL, C, n, False)
        return
    while i0 < m:
        rows = m - i0 if m - i0 < NARROW_PASS_ROWS else NARROW_PASS_ROWS
        micro_gemm_nb(n, rows, k, B, 1, ldb, A + i0, lda, NULL, transposed, rows, False)
        transpose(n, rows, transposed, rows, C + i0 * n)
        i0 += rows


cdef inline void matmul(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                        const real* A, Py_ssize_t lda, const real* B, Py_ssize_t ldb,
                        real* C, Py_ssize_t ldc) noexcept nogil:
    """C := op(A) @ op(B) (row-major, C m x n), by BLAS or a micro-kernel depending on size.
    Transposes supported: A@B, Aᵀ@B (C contiguous), A@Bᵀ (the three a dense layer needs)."""
    if worth_blas(m, n, k):
        blas_gemm(trans_a, trans_b, m, n, k, A, lda, B, ldb, 0, C, ldc)
    elif trans_b:
        micro_gemm_abt(m, n, k, A, lda, B, ldb, C, ldc)
    elif trans_a:
        micro_gemm_atb(m, n, k, A, lda, B, ldb, C)
    else:
        micro_gemm_nb(m, n, k, A, lda, 1, B, ldb, NULL, C, ldc, False)
