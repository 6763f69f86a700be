"""One dense layer: ``z = x @ W + b``, ``y = act(z)``, and its fused backward.

Products go through :func:`matmul`: BLAS (``np.dot``, the BLAS SciPy ships, with its own
threads) for large ones, loops LLVM vectorises for small ones. A BLAS call wakes BLAS's thread
pool, and on shared cores waiting for those threads cost milliseconds per call (the seed MLP's
batch-32 training step spent most of its time there), so shapes below BLAS_MIN_WORK never
call it. Everything around the products — bias, activation, its derivative, the bias
gradient — is one pass over each row while the row is still in cache.
"""
import numpy as np

from .activations import IDENTITY, activation_row, activation_vjp_row, row_or_empty
from .jit import kernel

#: Products of fewer multiply-adds (or with fewer than BLAS_MIN_ROWS rows or columns) use
#: the loops (the same thresholds as the Cython kernels).
BLAS_MIN_WORK = 1 << 23
BLAS_MIN_ROWS = 8


@kernel
def worth_blas(m, n, k):
    return m >= BLAS_MIN_ROWS and n >= BLAS_MIN_ROWS and m * n * k >= BLAS_MIN_WORK


@kernel
def _loop_matmul_row(a, b, out, i):
    """out[i] = a[i] @ b, summed in exactly the order of :func:`_loop_matmul`'s four-row
    blocks (two k at a time), so a row's result does not depend on its position in a batch."""
    out_i = out[i]
    out_i[:] = 0.0
    depth = a.shape[1]
    for k in range(0, depth - 1, 2):
        a0, a1, b0, b1 = a[i, k], a[i, k + 1], b[k], b[k + 1]
        for j in range(out_i.size):
            out_i[j] += a0 * b0[j] + a1 * b1[j]
    if depth % 2:
        a0, b0 = a[i, depth - 1], b[depth - 1]
        for j in range(out_i.size):
            out_i[j] += a0 * b0[j]


@kernel
def _loop_matmul(a, b, out):
    """out = a @ b for C-contiguous b and out (a may be any layout: its elements are read one
    at a time). The loops over a row of out vectorise. Four rows at a time share each load of
    b (1.2x faster than row by row at the seed MLP's batch 32); sums run in a fixed order."""
    m, depth = a.shape
    i = 0
    while i + 4 <= m:
        o0, o1, o2, o3 = out[i], out[i + 1], out[i + 2], out[i + 3]
        o0[:] = 0.0
        o1[:] = 0.0
        o2[:] = 0.0
        o3[:] = 0.0
        for k in range(0, depth - 1, 2):  # two k at a time: 8 multiply-adds per pass over j
            b0, b1 = b[k], b[k + 1]
            a00, a01, a10, a11 = a[i, k], a[i, k + 1], a[i + 1, k], a[i + 1, k + 1]
            a20, a21, a30, a31 = a[i + 2, k], a[i + 2, k + 1], a[i + 3, k], a[i + 3, k + 1]
            for j in range(o0.size):
                w0, w1 = b0[j], b1[j]
                o0[j] += a00 * w0 + a01 * w1
                o1[j] += a10 * w0 + a11 * w1
                o2[j] += a20 * w0 + a21 * w1
                o3[j] += a30 * w0 + a31 * w1
        if depth % 2:
            k = depth - 1
            b0 = b[k]
            a00, a10, a20, a30 = a[i, k], a[i + 1, k], a[i + 2, k], a[i + 3, k]
            for j in range(o0.size):
                w0 = b0[j]
                o0[j] += a00 * w0
                o1[j] += a10 * w0
                o2[j] += a20 * w0
                o3[j] += a30 * w0
        i += 4
    for row in range(i, m):
        _loop_matmul_row(a, b, out, row)


@kernel
def matmul(a, b, out):
    """out = a @ b (a, b C- or F-contiguous, out C-contiguous): BLAS when the product is
    large, else the loops (on a C-ordered copy of b if b is transposed)."""
    m, depth = a.shape
    if worth_blas(m, b.shape[1], depth):
        np.dot(a, b, out)
    else:
        _loop_matmul(a, np.ascontiguousarray(b), out)


#: Forward row blocks hold about this many bytes of output: still in L2 when the epilogue
#: (bias + activation) runs over a block right after its GEMM, yet large, because each BLAS
#: call re-packs W and, on shared cores, waits for its threads to be scheduled (256-row
#: blocks made the seed MLP at batch 1024 several times slower than one call per layer).
GEMM_BLOCK_BYTES = 1 << 21


@kernel
def gemm_rows(n_cols, itemsize):
    """Rows per forward GEMM block for outputs of n_cols columns."""
    return max(1, GEMM_BLOCK_BYTES // (n_cols * itemsize))


@kernel
def _epilogue_rows(z, b, act_id, alpha, y, start, stop):
    for i in range(start, stop):
        z_i = z[i]
        for j in range(z_i.size):
            z_i[j] += b[j]
        activation_row(z_i, act_id, alpha, y[i])


@kernel
def dense_rows(x, W, b, act_id, alpha, z, y):
    """z = x @ W + b, y = act(z) for all rows of x (y may be z: activation in place)."""
    matmul(x, W, z)
    _epilogue_rows(z, b, act_id, alpha, y, 0, z.shape[0])


@kernel
def dense_forward(x, W, b, act_id, alpha, y, z):
    """The kernel-interface dense_forward; ``z`` is ``y`` when the caller does not keep z."""
    n_rows = x.shape[0]
    block = gemm_rows(y.shape[1], y.itemsize)
    for start in range(0, n_rows, block):
        stop = min(n_rows, start + block)
        dense_rows(x[start:stop], W, b, act_id, alpha, z[start:stop], y[start:stop])


@kernel
def _add_row(total, row):
    for j in range(row.size):
        total[j] += row[j]


@kernel
def _backward_products(dz, x, W, dx, dW):
    """dW = xᵀ dz; dx = dz Wᵀ (skipped when dx is (0, 0))."""
    matmul(x.T, dz, dW)
    if dx.shape[0] > 0:
        matmul(dz, W.T, dx)


@kernel
def dense_backward(dy, x, W, z, y, act_id, alpha, dx, dW, db):
    """dz = dy · act'(z); dW = xᵀ dz; db = Σ_rows dz; dx = dz Wᵀ (skipped when dx is (0, 0)).
    ``z`` or ``y`` may be (0, 0) when absent.

    Serial apart from the BLAS inside large products: the element-wise part is B × fan_out
    against the products' B × fan_in × fan_out (see the parallel policy in jit.py). Each
    output element is written once, so there is no reduction race; db adds rows in order.
    """
    db[:] = 0.0
    if act_id == IDENTITY:  # dz is dy; not one variable for both: dy may be read-only, dz not
        for i in range(dy.shape[0]):
            _add_row(db, dy[i])
        _backward_products(dy, x, W, dx, dW)
        return
    dz = np.empty_like(dy)
    for i in range(dy.shape[0]):  # each dz row is summed into db while still in cache
        activation_vjp_row(dy[i], row_or_empty(z, i), row_or_empty(y, i), act_id, alpha, dz[i])
        _add_row(db, dz[i])
    _backward_products(dz, x, W, dx, dW)
