"""A sparse (CSR) input in front of a network, as kernels/sparse.pyx: the first layer is a
gather-sum of W's rows, its backward a scatter-add into a compact block of the batch's
distinct rows, and the training step's optimizer touches only those rows of W (and of its
state). Indices are in range (the gate checks them), possibly unsorted or repeated."""
import math

import numpy as np

from .. import abi
from .activations import activation_row, activation_vjp_row
from .jit import kernel
from .mlp import layer_params, loss_and_gradients
from .optimizers import adam_step, sgd_step


@kernel
def sparse_forward(indptr, indices, values, W, b, act_id, alpha, z, y):
    """z = X W + b, y = act(z), row by row (z may be y)."""
    n = W.shape[1]
    for i in range(indptr.size - 1):
        zi = z[i]
        for c in range(n):
            zi[c] = b[c]
        for k in range(indptr[i], indptr[i + 1]):
            v = values[k]
            w = W[indices[k]]
            for c in range(n):
                zi[c] += v * w[c]
        activation_row(zi, act_id, alpha, y[i])


@kernel
def scatter_rows(indptr, indices, values, dz, rows, dW_rows):
    """dW_rows[r] = Σ values[k] · dz[row of k] over the non-zeros in column rows[r], in order."""
    dW_rows[:, :] = 0.0
    n = dz.shape[1]
    slots = np.searchsorted(rows, indices)
    for i in range(indptr.size - 1):
        for k in range(indptr[i], indptr[i + 1]):
            v = values[k]
            out = dW_rows[slots[k]]
            for c in range(n):
                out[c] += v * dz[i, c]


@kernel
def sparse_dense_forward(indptr, indices, values, W, b, act_id, alpha, y, z):
    sparse_forward(indptr, indices, values, W, b, act_id, alpha, z, y)


@kernel
def sparse_dense_backward(dy, indptr, indices, values, z, y, act_id, alpha, rows, dW_rows, db):
    """dz = dy · act'(z), db = Σ dz, dW_rows = W's gradient at ``rows`` only; z/y may be (0, 0)."""
    dz = np.empty_like(dy)
    empty = dy[0, :0]
    for i in range(dy.shape[0]):
        activation_vjp_row(dy[i], z[i] if z.shape[0] else empty, y[i] if y.shape[0] else empty,
                           act_id, alpha, dz[i])
    db[:] = 0.0
    for i in range(dz.shape[0]):  # rows in order, as the other engines
        for c in range(dz.shape[1]):
            db[c] += dz[i, c]
    scatter_rows(indptr, indices, values, dz, rows, dW_rows)


@kernel
def adagrad_step(params, grads, accum, lr, eps, weight_decay):
    """PyTorch's Adagrad: g += wd·p; G += g²; p −= lr · g / (√G + eps), in the buffer's dtype."""
    real = params.dtype.type
    lr_, eps_, wd = real(lr), real(eps), real(weight_decay)
    for j in range(params.size):
        g = grads[j] + wd * params[j]
        accum[j] += g * g
        params[j] -= lr_ * g / (math.sqrt(accum[j]) + eps_)


@kernel
def update_span(params, grads, first, second, hyper):
    """The optimizer of ``hyper`` on params (a span or a row) with its gradient and state."""
    kind = hyper[abi.H_OPTIMIZER]
    if kind == abi.OPT_ADAGRAD:
        adagrad_step(params, grads, first, hyper[abi.H_LR], hyper[abi.H_EPS], hyper[abi.H_WEIGHT_DECAY])
    elif kind == abi.OPT_SGD:
        sgd_step(params, grads, first, hyper[abi.H_LR], hyper[abi.H_BETA1], hyper[abi.H_NESTEROV] != 0.0,
                 hyper[abi.H_WEIGHT_DECAY])
    else:
        adam_step(params, grads, first, second, hyper[abi.H_STEP], hyper[abi.H_LR], hyper[abi.H_BETA1],
                  hyper[abi.H_BETA2], hyper[abi.H_EPS], hyper[abi.H_WEIGHT_DECAY], hyper[abi.H_DECOUPLED] != 0.0)


@kernel
def sparse_train_step(indptr, indices, values, labels, targets, weights, params, grads, opt_state, layers, upper,
                      base, loss_id, hyper, outputs):
    """Forward through the sparse first layer and the dense ones, loss, backward, then the
    optimizer: every dense layer and b0 whole, W0 only at the batch's distinct rows (lazy).
    ``upper``: layers[1:] with offsets relative to ``base`` (layers[1]'s offset), so that the
    dense layers' pass sees only params[base:] (mlp.loss_and_gradients zeroes grads when the
    layers do not cover the buffer: here that would be the whole table, every step).
    ``weights``: the rows' sample weights, or empty. Transactional; returns the loss."""
    B = indptr.size - 1
    W0, b0 = layer_params(params, layers, 0)
    n = W0.shape[1]
    act0, alpha0 = layers[0]["activation"], layers[0]["alpha"]
    z0 = np.empty((B, n), params.dtype)
    h0 = np.empty((B, n), params.dtype)
    sparse_forward(indptr, indices, values, W0, b0, act0, alpha0, z0, h0)
    dh0 = np.empty((B, n), params.dtype)
    loss = loss_and_gradients(h0, labels, targets, weights, params[base:], grads[base:], upper, loss_id, dh0,
                              outputs, hyper[abi.H_PENALTY_SCALE],
                              np.int64(0))  # (the gate refuses dropout on sparse input)
    if not np.isfinite(loss):
        return loss
    _, db0 = layer_params(grads, layers, 0)
    db0[:] = 0.0
    for i in range(B):
        activation_vjp_row(dh0[i], z0[i], h0[i], act0, alpha0, dh0[i])
        for c in range(n):
            db0[c] += dh0[i, c]
    rows = np.unique(indices)
    dW_rows = np.empty((rows.size, n), params.dtype)
    scatter_rows(indptr, indices, values, dh0, rows, dW_rows)
    first = opt_state[0]
    second = opt_state[1] if opt_state.shape[0] > 1 else opt_state[0]
    for layer in range(upper.size):
        start = base + upper[layer]["offset"]
        stop = start + (upper[layer]["fan_in"] + 1) * upper[layer]["fan_out"]
        update_span(params[start:stop], grads[start:stop], first[start:stop], second[start:stop], hyper)
    start = layers[0]["offset"] + W0.size  # b0
    update_span(params[start:start + n], grads[start:start + n], first[start:start + n],
                second[start:start + n], hyper)
    for r in range(rows.size):  # the lazy step: the touched rows of W0 and of its state only
        start = layers[0]["offset"] + rows[r] * n
        update_span(params[start:start + n], dW_rows[r], first[start:start + n], second[start:start + n], hyper)
    hyper[abi.H_APPLIED] = hyper[abi.H_STEP]
    return loss
