"""Losses fused with their gradients (equations in ``fusedense.reference``).

Cross-entropy losses read the last layer's pre-activation (the logits), so their gradient is
the gradient w.r.t. the logits; mean squared error reads the network's output instead. Rows
run in parallel blocks when large; each block returns its own partial loss sum and the sums
are added in block order, so the loss is the same whatever the thread count.
"""
import math

import numpy as np
from numba import prange

from .. import abi
from .activations import row_max, row_or_empty, sigmoid
from .fastexp import exp_nonpos, exp_nonpos_of
from .jit import kernel, parallel_kernel, rows_per_block

SPARSE_XENT = abi.LOSS_SPARSE_XENT
CATEGORICAL_XENT = abi.LOSS_CATEGORICAL_XENT
BINARY_XENT = abi.LOSS_BINARY_XENT
MSE = abi.LOSS_MSE


@kernel
def _log_sum_exp(z, top):
    total = 0.0
    for j in range(z.size):
        total += exp_nonpos(np.float64(z[j]) - top)
    return math.log(total)


@kernel
def _loss_row(loss_id, logits, out, label, target, grad, scale):
    """One row's loss (not yet averaged); writes its gradient, times ``scale``, unless
    ``grad`` is empty. ``label`` is used by SPARSE_XENT, ``target`` (a row) by the others."""
    n = logits.size
    want_grad = grad.size == n
    loss = 0.0
    if loss_id == SPARSE_XENT or loss_id == CATEGORICAL_XENT:
        top = row_max(logits)
        if want_grad:  # e^(z - top) into grad first: a loop that vectorises, then its sum
            for j in range(n):  # in the logits' precision, as Cython's kernels
                grad[j] = exp_nonpos_of(logits[j] - top)
            total = 0.0
            for j in range(n):
                total += grad[j]
            lse = math.log(total)
        else:
            lse = _log_sum_exp(logits, top)
        if loss_id == SPARSE_XENT:  # −log p[label]; grad (p − onehot)/B
            loss = lse - (logits[label] - top)
            if want_grad:
                p_scale = scale / total
                for j in range(n):
                    grad[j] *= p_scale
                grad[label] -= scale
        else:  # −Σ t log p; grad (p Σt − t)/B
            target_sum = 0.0
            for j in range(n):
                loss -= target[j] * ((logits[j] - top) - lse)
                target_sum += target[j]
            if want_grad:
                p_scale = target_sum / total
                for j in range(n):
                    grad[j] = (grad[j] * p_scale - target[j]) * scale
    elif loss_id == BINARY_XENT:  # log(1 + e^z) − z t, without overflow; grad (σ(z) − t)/size
        for j in range(n):
            z = logits[j]
            loss += (z if z > 0 else 0.0) - z * target[j] + math.log1p(math.exp(-abs(z)))
            if want_grad:
                grad[j] = (sigmoid(z) - target[j]) * scale
    else:  # MSE on the output: (y − t)²; grad 2 (y − t)/size
        for j in range(n):
            diff = out[j] - target[j]
            loss += diff * diff
            if want_grad:
                grad[j] = 2.0 * diff * scale
    return loss


@kernel
def _sparse_xent_rows(logits, labels, weights, grad, scale, start, stop):
    """_loss_rows for SPARSE_XENT with its gradient: _loss_row's arithmetic, each row's sum and
    rounding unchanged, but the exponentials in one pass over the rows' whole block of grad
    (contiguous): per row, a vector loop over 27 logits ran 16 lanes and then 11 scalar
    exponentials; over the block only its last few are scalar (the LM's loss took 8.4 µs at
    batch 64, the Cython engine's 3.8)."""
    n = logits.shape[1]
    shifted_label = np.empty(stop - start)  # z[label] − max, each row's
    for i in range(start, stop):  # grad = z − max (its exponential below)
        z, g = logits[i], grad[i]
        top = row_max(z)
        for j in range(n):
            g[j] = z[j] - top
        shifted_label[i - start] = g[labels[i]]
    block = grad[start:stop].reshape(-1)
    for t in range(block.size):
        block[t] = exp_nonpos_of(block[t])
    total = 0.0
    for i in range(start, stop):
        g = grad[i]
        weight = np.float64(weights[i]) if weights.size > 0 else 1.0
        row_total = 0.0
        for j in range(n):
            row_total += g[j]
        row_scale = scale * weight
        p_scale = row_scale / row_total
        for j in range(n):
            g[j] *= p_scale
        g[labels[i]] -= row_scale
        total += weight * (math.log(row_total) - shifted_label[i - start])
    return total


@kernel
def _loss_rows(loss_id, logits, out, labels, targets, weights, grad, scale, start, stop):
    """Rows start..stop: the sum of their losses, each times its weight (1 when ``weights`` is
    empty), and their gradients times ``scale`` and the weight."""
    if loss_id == SPARSE_XENT and grad.shape[0] == logits.shape[0] and stop > start:
        return _sparse_xent_rows(logits, labels, weights, grad, scale, start, stop)
    total = 0.0
    for i in range(start, stop):
        label = labels[i] if labels.size > 0 else 0
        weight = np.float64(weights[i]) if weights.size > 0 else 1.0
        total += weight * _loss_row(loss_id, logits[i], out[i], label, row_or_empty(targets, i),
                                    row_or_empty(grad, i), scale * weight)
    return total


@kernel
def _count(loss_id, logits):
    """What the loss is averaged over: rows (cross-entropies) or all elements (binary, MSE)."""
    if loss_id == SPARSE_XENT or loss_id == CATEGORICAL_XENT:
        return logits.shape[0]
    return logits.size


@kernel
def loss_and_gradient(loss_id, logits, out, labels, targets, weights, grad):
    """The mean loss, and its gradient into ``grad`` unless it is (0, 0). Absent
    ``labels``/``targets``/``weights`` (the rows' sample weights) are empty."""
    count = _count(loss_id, logits)
    return _loss_rows(loss_id, logits, out, labels, targets, weights, grad, 1.0 / count, 0,
                      logits.shape[0]) / count


@parallel_kernel
def loss_and_gradient_parallel(loss_id, logits, out, labels, targets, weights, grad):
    """loss_and_gradient in parallel blocks of rows; each block's partial sum is kept apart
    and they are added in block order, so the loss does not depend on the thread count."""
    n_rows = logits.shape[0]
    count = _count(loss_id, logits)
    rows = rows_per_block(n_rows, logits.shape[1])
    n_blocks = (n_rows + rows - 1) // rows
    partial = np.empty(n_blocks)
    for block in prange(n_blocks):
        partial[block] = _loss_rows(loss_id, logits, out, labels, targets, weights, grad, 1.0 / count,
                                    block * rows, min(n_rows, (block + 1) * rows))
    total = 0.0
    for block in range(n_blocks):
        total += partial[block]
    return total / count
