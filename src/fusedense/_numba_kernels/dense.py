"""One dense layer: ``z = x @ W + b``, ``y = act(z)``, and its fused backward.

Products go through :func:`fusedense._numba_kernels.gemm.matmul` (BLAS for large ones,
register tiles for small ones). Everything around the products — bias, activation, its derivative, the bias
gradient — is one pass over each row while the row is still in cache.
"""
import functools

import numpy as np

from .activations import IDENTITY, activation_row, activation_vjp_row, row_or_empty
from .gemm import _py, matmul, product
from .jit import TUNING, inline_kernel, kernel

#: Forward row blocks hold about this many bytes of output: still in L2 when the epilogue
#: (bias + activation) runs over a block right after its GEMM, yet large, because each BLAS
#: call re-packs W and, on shared cores, waits for its threads to be scheduled.
GEMM_BLOCK_BYTES = TUNING["NUMBA_FORWARD_BLOCK_BYTES"]


@kernel
def gemm_rows(n_cols, itemsize):
    """Rows per forward GEMM block for outputs of n_cols columns."""
    return max(1, GEMM_BLOCK_BYTES // (n_cols * itemsize))


@inline_kernel
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


@functools.lru_cache(maxsize=None)
def epilogue(act_id):
    """A kernel ``(z, b, alpha, y)``: z += b, y = act(z) row by row, for this one activation:
    act_id is a constant in it, so the first call compiles that activation's loop only."""
    @kernel
    def bias_activation(z, b, alpha, y):
        _epilogue_rows(z, b, act_id, alpha, y, 0, z.shape[0])
    return bias_activation


def dense_forward(x, W, b, act_id, alpha, y, z):
    """The kernel-interface dense_forward from Python: each row block's product (the path
    chosen in Python, gemm.product) then its epilogue; ``z`` is ``y`` when the caller does not
    keep z. Two compiled calls a block, each compiling only what it runs: the first
    fd.dense on a cold cache compiles one product path and one activation."""
    n_rows = x.shape[0]
    bias_activation = epilogue(act_id)
    block = _GEMM_ROWS(y.shape[1], y.itemsize)
    if block >= n_rows:  # one block (every small batch): no views to make, ~1 µs at batch 1
        product(x, W, z)
        bias_activation(z, b, alpha, y)
        return
    for start in range(0, n_rows, block):
        rows = slice(start, min(n_rows, start + block))
        product(x[rows], W, z[rows])
        bias_activation(z[rows], b, alpha, y[rows])


_GEMM_ROWS = _py(gemm_rows)


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
def _bias_gradient(dz, db):
    """db = Σ_rows dz, rows added in order."""
    db[:] = 0.0
    for i in range(dz.shape[0]):
        _add_row(db, dz[i])


@functools.lru_cache(maxsize=None)
def derivative(act_id):
    """A kernel ``(dy, z, y, alpha, dz, db)``: dz = dy · act'(z) row by row and db = Σ_rows dz,
    for this one activation (a constant in it, as in :func:`epilogue`)."""
    @kernel
    def activation_vjp_rows(dy, z, y, alpha, dz, db):
        db[:] = 0.0
        for i in range(dy.shape[0]):  # each dz row is summed into db while still in cache
            activation_vjp_row(dy[i], row_or_empty(z, i), row_or_empty(y, i), act_id, alpha, dz[i])
            _add_row(db, dz[i])
    return activation_vjp_rows


def dense_backward_from_python(dy, x, W, z, y, act_id, alpha, dx, dW, db):
    """The kernel-interface dense_backward from Python (as :func:`dense_forward`): dz and db by
    one activation's kernel, then each product on the path gemm.product picks. The first
    fd.dense_grad on a cold cache compiles that activation and those paths, not the compiled
    dense_backward's every activation and product path (over a minute)."""
    if act_id == IDENTITY:
        dz = dy
        _bias_gradient(dy, db)
    else:
        dz = np.empty_like(dy)  # not in dy: the caller's array
        derivative(act_id)(dy, z, y, alpha, dz, db)
    product(x.T, dz, dW)
    if dx.shape[0] > 0:
        product(dz, W.T, dx)


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
