# One dense layer over a block of rows: the forward (product, bias, activation) and the
# backward (activation derivative, dW, db, dx), the pair every network kernel is built from.
# A .pxd of inline functions, like gemm.pxd: each kernel module compiles its own copy, so
# splitting layers.pyx by job adds no extension module (no import time, no calls between modules).
from cython.parallel cimport prange

from abi cimport ACT_IDENTITY, ACT_LOG_SOFTMAX, ACT_RELU, ACT_SOFTMAX
from act cimport act_backward_rows, bias_act_forward_row
from gemm cimport blas_gemm, matmul, micro_gemm_nb, packed_gemm_nb, worth_blas, worth_packing
from real cimport real
from thread_policy cimport column_slices, single_threaded, slice_start
from tuning cimport BLAS_BLOCK_BYTES, MICRO_BLOCK_BYTES, PACKED_MAX_ROWS


cdef inline void finish_rows(real* y, real* z, Py_ssize_t rows, Py_ssize_t n, Py_ssize_t ld,
                             const real* bias, int act, real alpha) noexcept nogil:
    """The epilogue on a block that holds x@W (+ b when bias is NULL), rows ld apart: adds bias,
    keeps z when asked, applies the activation in place (bias and activation in one pass when z
    is not kept)."""
    cdef Py_ssize_t r
    for r in range(rows):
        if z != NULL:
            bias_act_forward_row(ACT_IDENTITY, alpha, y + r * ld, bias, z + r * ld, n)
            bias_act_forward_row(act, alpha, z + r * ld, NULL, y + r * ld, n)
        else:
            bias_act_forward_row(act, alpha, y + r * ld, bias, y + r * ld, n)


cdef inline void forward_columns(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, Py_ssize_t ld,
                                 const real* x, const real* W, const real* b, int act, real alpha,
                                 real* y, real* z, bint blas, bint pack_operands) noexcept nogil:
    """layer_forward on n columns of W, y and z, whose rows are ld apart (a slice of a wider
    layer, or all of it with ld = n), by BLAS, the packed micro-kernels or the in-place ones."""
    # the micro-kernels apply a relu as they write y back; z, when kept, is the pre-activation
    cdef bint relu_in_product = not blas and act == ACT_RELU and z == NULL
    cdef Py_ssize_t block = m if pack_operands else max(
        1, (BLAS_BLOCK_BYTES if blas else MICRO_BLOCK_BYTES) // (n * sizeof(real)))
    cdef Py_ssize_t r0 = 0, rows
    while r0 < m:
        rows = min(block, m - r0)
        if blas:
            blas_gemm(False, False, rows, n, k, x + r0 * k, k, W, ld, 0, y + r0 * ld, ld)
        elif pack_operands:  # the micro-kernels start their accumulators at b: the bias costs nothing
            packed_gemm_nb(rows, n, k, x + r0 * k, k, W, ld, b, y + r0 * ld, ld, relu_in_product)
        else:
            micro_gemm_nb(rows, n, k, x + r0 * k, k, 1, W, ld, b, y + r0 * ld, ld, False, relu_in_product)
        if not relu_in_product:
            finish_rows(y + r0 * ld, NULL if z == NULL else z + r0 * ld, rows, n, ld,
                        b if blas else NULL, act, alpha)
        r0 += block


cdef inline void layer_forward(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, const real* x, const real* W,
                               const real* b, int act, real alpha, real* y, real* z,
                               bint allow_blas=True) noexcept nogil:
    """y = act(x @ W + b) for m rows (x m x k, W k x n); z = x @ W + b too unless z is NULL.
    y must not overlap x. allow_blas=False inside OpenMP regions. The epilogue follows the
    product block by block: L1-sized blocks after the micro-kernels, large ones after BLAS (each
    call re-packs all of W), one block on the packed path (each block would pack W again).
    With several threads, a large product of a small or mid batch is split over output columns
    (thread_policy.column_slices): each thread packs and streams its own slice of W, and BLAS's
    pool stays asleep; a large batch goes to BLAS and its threads."""
    # (inside OpenMP regions, allow_blas=False, every W is under MICRO_MAX_WEIGHT_BYTES: never packed)
    cdef bint packable = allow_blas and m <= PACKED_MAX_ROWS and worth_packing(m, n, k, sizeof(real))
    cdef int slices = column_slices(m, k, n) if allow_blas else 1
    cdef bint pack_operands = packable and (slices > 1 or single_threaded())
    cdef bint blas = allow_blas and slices == 1 and not pack_operands and worth_blas(m, n, k)
    # softmax and log_softmax need whole rows: the slices leave z = x@W + b in y, finished after
    cdef bint row_wise = act == ACT_SOFTMAX or act == ACT_LOG_SOFTMAX
    cdef Py_ssize_t i, c0, c1
    if slices == 1:
        forward_columns(m, k, n, n, x, W, b, act, alpha, y, z, blas, pack_operands)
        return
    for i in prange(slices, nogil=True, schedule="static", num_threads=slices):
        c0 = slice_start(i, slices, n)
        c1 = slice_start(i + 1, slices, n)
        forward_columns(m, k, c1 - c0, n, x, W + c0, b + c0, ACT_IDENTITY if row_wise else act, alpha,
                        y + c0, NULL if z == NULL or row_wise else z + c0, False, pack_operands)
    if row_wise:
        finish_rows(y, z, m, n, n, NULL, act, alpha)


cdef inline void column_sums(const real* a, Py_ssize_t rows, Py_ssize_t n, real* out) noexcept nogil:
    """out = Σ_rows a, rows added in order (deterministic): the product 1ᵀ a through the
    micro-kernels (a row of ones: one `one` read at strides 0), whose FMAs add 1·a exactly.
    They run in the CPU's widest vectors, where a loop here is compiled for SSE2."""
    cdef real one = 1
    micro_gemm_nb(1, n, rows, &one, 0, 0, a, n, NULL, out, n, False)


cdef inline void layer_backward(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, const real* dy, const real* x,
                                const real* W, const real* z, const real* y, int act, real alpha,
                                real* dz, real* dx, real* dW, real* db) noexcept nogil:
    """dz = dy · act'(z or y), db = Σ_rows dz, dW = xᵀ dz, dx = dz Wᵀ (skipped when dx is NULL).
    dz (m x n scratch) may be dy. db sums rows in order: deterministic."""
    act_backward_rows(act, alpha, m, n, dy, z, y, dz)
    column_sums(dz, m, n, db)
    matmul(True, False, k, n, m, x, k, dz, n, dW, n)
    if dx != NULL:
        matmul(False, True, m, k, n, dz, n, W, n, dx, k)
