"""One dense layer: ``z = x @ W + b``, ``y = act(z)``, and its fused backward.

The GEMMs go through ``np.dot`` (numba calls the BLAS that SciPy ships, which runs its own
threads); everything around them — bias, activation, its derivative, the bias gradient — is
one pass over each row while that row is still in cache. On this kind of machine BLAS was as
fast as hand-written numba loops even at batch 1 (the 784×128 weights are streamed from L2
either way) and much faster from batch 4 on, so there is a single path for every batch size.
"""
import numpy as np
from numba import prange

from .activations import IDENTITY, activation_row, activation_vjp_row, row_or_empty
from .jit import kernel, parallel_kernel, rows_per_block

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


@parallel_kernel
def dense_rows(x, W, b, act_id, alpha, z, y):
    """z = x @ W + b, y = act(z) for all rows of x (y may be z: activation in place)."""
    np.dot(x, W, z)
    n_rows = z.shape[0]
    rows = rows_per_block(n_rows, z.shape[1])
    n_blocks = (n_rows + rows - 1) // rows
    if n_blocks == 1:
        _epilogue_rows(z, b, act_id, alpha, y, 0, n_rows)
    else:
        for block in prange(n_blocks):
            _epilogue_rows(z, b, act_id, alpha, y, block * rows, min(n_rows, (block + 1) * rows))


@kernel
def dense_forward(x, W, b, act_id, alpha, y, z):
    """The kernel-interface dense_forward; ``z`` is ``y`` when the caller does not keep z."""
    n_rows = x.shape[0]
    block = gemm_rows(y.shape[1], y.itemsize)
    for start in range(0, n_rows, block):
        stop = min(n_rows, start + block)
        dense_rows(x[start:stop], W, b, act_id, alpha, z[start:stop], y[start:stop])


@kernel
def _vjp_rows(dy, z, y, act_id, alpha, dz, db_partial, start, stop):
    """dz = dy · act'(z) for rows [start, stop), and their column sums into db_partial."""
    for j in range(db_partial.size):
        db_partial[j] = 0.0
    for i in range(start, stop):
        dz_i = dz[i]
        if act_id == IDENTITY:
            dz_i = dy[i]  # dz is dy: no copy
        else:
            activation_vjp_row(dy[i], row_or_empty(z, i), row_or_empty(y, i), act_id, alpha, dz_i)
        for j in range(dz_i.size):
            db_partial[j] += dz_i[j]


@parallel_kernel
def dense_backward(dy, x, W, z, y, act_id, alpha, dx, dW, db):
    """dz = dy · act'(z); dW = xᵀ dz; db = Σ_rows dz; dx = dz Wᵀ (skipped when dx is (0, 0)).
    ``z`` or ``y`` may be (0, 0) when absent.

    The bias gradient is summed race-free and deterministically: each row block writes its
    own partial column sums, which are then added in block order. dW and dx are BLAS GEMMs
    (each output element is written by one thread).
    """
    n_rows, n_out = dy.shape
    dz = dy if act_id == IDENTITY else np.empty_like(dy)
    rows = rows_per_block(n_rows, n_out)
    n_blocks = (n_rows + rows - 1) // rows
    db_partials = np.empty((n_blocks, n_out), dtype=db.dtype)
    if n_blocks == 1:
        _vjp_rows(dy, z, y, act_id, alpha, dz, db_partials[0], 0, n_rows)
    else:
        for block in prange(n_blocks):
            _vjp_rows(dy, z, y, act_id, alpha, dz, db_partials[block], block * rows,
                      min(n_rows, (block + 1) * rows))
    db[:] = db_partials[0]
    for block in range(1, n_blocks):
        db += db_partials[block]
    np.dot(x.T, dz, dW)
    if dx.shape[0] > 0:
        np.dot(dz, W.T, dx)

