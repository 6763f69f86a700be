"""Dense layers and whole networks: dense_forward, dense_backward, mlp_forward,
softmax_xent and the fused training step mlp_train_step.

Every product goes through gemm.matmul-style dispatch: BLAS for large shapes (its own
threads), register-blocked micro-kernels for small ones (one thread, no temporaries). The
epilogue (bias, activation) runs on row blocks right after the product wrote them, while
they are still in cache. No OpenMP region is ever open while BLAS runs: the two thread pools
would spin against each other (a batch-1 call once took 17 ms instead of 20 µs that way).
"""
cimport numpy as cnp
from libc.math cimport log as log_d
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from abi cimport *
from act cimport act_backward_row, act_forward_row, needs_z, r_exp, r_log, r_log1p, relu, sigmoid
from arrays cimport buffer, dim, is_float32, optional_buffer, typenum
from gemm cimport blas_gemm, matmul, micro_gemm_nb, worth_blas
from optim cimport adam_update, sgd_update
from real cimport real

cnp.import_array()

# Rows per block between a product and its epilogue: the block of output stays in L2 (BLAS)
# or L1 (micro-kernels). BLAS blocks are larger because each call re-packs W.
cdef enum:
    BLAS_BLOCK_BYTES = 1 << 21
    MICRO_BLOCK_BYTES = 1 << 15
    # mlp_forward carries this many rows through every layer before starting the next rows
    NETWORK_BLOCK_ROWS = 256


def set_num_threads(int n):
    """No OpenMP here (see the module docstring); BLAS threads are set by the backend."""


# --- one layer ------------------------------------------------------------------------------

cdef void finish_rows(real* y, real* z, Py_ssize_t rows, Py_ssize_t n, const real* bias,
                      int act, real alpha) noexcept nogil:
    """The epilogue on a block that holds x@W (+ b when bias is NULL): adds bias, keeps z when
    asked, applies the activation in place."""
    cdef Py_ssize_t r, j
    cdef real* row
    for r in range(rows):
        row = y + r * n
        if bias != NULL:
            for j in range(n):
                row[j] += bias[j]
        if z != NULL:
            memcpy(z + r * n, row, n * sizeof(real))
        act_forward_row(act, alpha, row, row, n)


cdef void layer_forward(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, const real* x, const real* W,
                        const real* b, int act, real alpha, real* y, real* z) noexcept nogil:
    """y = act(x @ W + b) for m rows (x m x k, W k x n); z = x @ W + b too unless z is NULL.
    y must not overlap x."""
    cdef bint blas = worth_blas(m, n, k)
    cdef Py_ssize_t block = max(1, (BLAS_BLOCK_BYTES if blas else MICRO_BLOCK_BYTES) // (n * sizeof(real)))
    cdef Py_ssize_t r0 = 0, rows
    while r0 < m:
        rows = min(block, m - r0)
        if blas:
            blas_gemm(False, False, rows, n, k, x + r0 * k, k, W, n, 0, y + r0 * n, n)
        else:  # the micro-kernel starts its accumulators at b: the bias costs nothing
            micro_gemm_nb(rows, n, k, x + r0 * k, k, 1, W, n, b, y + r0 * n, n, False)
        finish_rows(y + r0 * n, NULL if z == NULL else z + r0 * n, rows, n,
                    b if blas else NULL, act, alpha)
        r0 += block


cdef void layer_backward(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, const real* dy, const real* x,
                         const real* W, const real* z, const real* y, int act, real alpha,
                         real* dz, real* dx, real* dW, real* db) noexcept nogil:
    """dz = dy · act'(z or y), db = Σ_rows dz, dW = xᵀ dz, dx = dz Wᵀ (skipped when dx is NULL).
    dz (m x n scratch) may be dy. db sums rows in order: deterministic."""
    cdef Py_ssize_t r, j
    cdef real* dz_row
    memset(db, 0, n * sizeof(real))
    for r in range(m):
        dz_row = dz + r * n
        act_backward_row(act, alpha, dy + r * n, NULL if z == NULL else z + r * n,
                         NULL if y == NULL else y + r * n, dz_row, n)
        for j in range(n):
            db[j] += dz_row[j]
    matmul(True, False, k, n, m, x, k, dz, n, dW, n)
    if dx != NULL:
        matmul(False, True, m, k, n, dz, n, W, n, dx, k)


cdef int _dense_forward(real tag, x, W, b, int act, double alpha, y, z) except -1:
    cdef Py_ssize_t m = dim(x, 0, "x"), k = dim(W, 0, "W"), n = dim(W, 1, "W")
    cdef int t = typenum(tag)
    cdef const real* xp = <real*>buffer(x, "x", t, m, k)
    cdef const real* Wp = <real*>buffer(W, "W", t, k, n)
    cdef const real* bp = <real*>buffer(b, "b", t, -1, n)
    cdef real* yp = <real*>buffer(y, "y", t, m, n, True)
    cdef real* zp = <real*>optional_buffer(z, "z", t, m, n, True)
    with nogil:
        layer_forward(m, k, n, xp, Wp, bp, act, <real>alpha, yp, zp)
    return 0


cdef int _dense_backward(real tag, dy, x, W, z, y, int act, double alpha, dx, dW, db) except -1:
    cdef Py_ssize_t m = dim(x, 0, "x"), k = dim(W, 0, "W"), n = dim(W, 1, "W")
    cdef int t = typenum(tag)
    cdef const real* dyp = <real*>buffer(dy, "dy", t, m, n)
    cdef const real* xp = <real*>buffer(x, "x", t, m, k)
    cdef const real* Wp = <real*>buffer(W, "W", t, k, n)
    cdef const real* zp = <real*>optional_buffer(z, "z", t, m, n)
    cdef const real* yp = <real*>optional_buffer(y, "y", t, m, n)
    cdef real* dxp = <real*>optional_buffer(dx, "dx", t, m, k, True)
    cdef real* dWp = <real*>buffer(dW, "dW", t, k, n, True)
    cdef real* dbp = <real*>buffer(db, "db", t, -1, n, True)
    if zp == NULL and (yp == NULL or needs_z(act)):
        raise ValueError(f"z: activation id {act} needs z to compute its derivative")
    cdef real* dz = <real*>malloc(m * n * sizeof(real))
    if dz == NULL:
        raise MemoryError()
    with nogil:
        layer_backward(m, k, n, dyp, xp, Wp, zp, yp, act, <real>alpha, dz, dxp, dWp, dbp)
    free(dz)
    return 0


cdef int check_act(int act) except -1:
    if not 0 <= act < N_ACTIVATIONS:
        raise ValueError(f"act_id: unknown activation id {act}")
    return 0


def dense_forward(x, W, b, int act_id, double alpha, y, z=None):
    """y = act(x @ W + b); z = x @ W + b as well unless z is None."""
    check_act(act_id)
    if is_float32(x):
        _dense_forward(<float>0, x, W, b, act_id, alpha, y, z)
    else:
        _dense_forward(<double>0, x, W, b, act_id, alpha, y, z)


def dense_backward(dy, x, W, z, y, int act_id, double alpha, dx, dW, db):
    """dW = xᵀ dz, db = Σ dz, dx = dz Wᵀ (dx None: skipped) with dz = dy · act'(z or y)."""
    check_act(act_id)
    if is_float32(x):
        _dense_backward(<float>0, dy, x, W, z, y, act_id, alpha, dx, dW, db)
    else:
        _dense_backward(<double>0, dy, x, W, z, y, act_id, alpha, dx, dW, db)
