"""The numpy backend: the reference equations behind the common kernel interface."""
from __future__ import annotations

import numpy as np

from .. import abi, reference
from ..activations import BY_ID, activation_vjp
from . import epoch

NAME = "numpy"


def activation_forward(z, act_id, alpha, y):
    y[...] = BY_ID[act_id].forward(z, alpha)


def activation_backward(dy, z, y, act_id, alpha, dz):
    dz[...] = activation_vjp(BY_ID[act_id], dy, z, y, alpha)


def dense_forward(x, W, b, act_id, alpha, y, z):
    y_ref, z_ref = reference.dense_forward(x, W, b, BY_ID[act_id], alpha)
    y[...] = y_ref
    if z is not None:
        z[...] = z_ref


def dense_backward(dy, x, W, z, y, act_id, alpha, dx, dW, db):
    dx_ref, dW[...], db[...] = reference.dense_backward(dy, x, W, z, y, BY_ID[act_id], alpha,
                                                        need_dx=dx is not None)
    if dx is not None:
        dx[...] = dx_ref


def mlp_forward(x, params, layers, out):
    out[...] = reference.mlp_forward(x, params, layers)


def loss(loss_id, outputs, targets, grad):
    value, gradient = reference.loss_and_gradient(loss_id, outputs, targets)
    if grad is not None:
        grad[...] = gradient
    return float(value)


def sgd_step(params, grads, velocity, lr, momentum, nesterov, weight_decay):
    reference.sgd_step(params, grads, velocity, lr, momentum, nesterov, weight_decay)


def adam_step(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    reference.adam_step(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled)


def mlp_gradient(x, targets, params, grads, layers, loss_id, sample_weight):
    return _gradient(x, targets, params, grads, layers, loss_id, sample_weight, 1.0, 0)


def _gradient(x, targets, params, grads, layers, loss_id, sample_weight, penalty_scale, step):
    value, grads[...] = reference.mlp_loss_and_grad(x, targets, params, layers, loss_id,
                                                    sample_weight=sample_weight, penalty_scale=penalty_scale,
                                                    step=step)
    return float(value)


def mlp_train_step(x, targets, params, grads, opt_state, layers, loss_id, hyper, outputs, sample_weight):
    step = int(hyper[abi.H_STEP])  # the dropout masks' step
    if outputs is not None:  # the oracle spends a second forward pass on them: it stays simple
        outputs[...] = reference.mlp_forward(x, params, layers, step=step)
    value = _gradient(x, targets, params, grads, layers, loss_id, sample_weight, hyper[abi.H_PENALTY_SCALE], step)
    return _update(value, params, grads, opt_state, hyper)


def mlp_train_epoch(x, targets, order, batch_size, params, grads, opt_state, layers, loss_id, hyper, sample_weight,
                    batch_losses, outputs, penalty_over_weight, epsilon_on_sqrt_v):
    return epoch.train_epoch(mlp_train_step, x, targets, order, batch_size, params, grads, opt_state, layers, loss_id,
                                             hyper, sample_weight, batch_losses, outputs, penalty_over_weight,
                             epsilon_on_sqrt_v)


def embedding_forward(tokens, params, layers, vocab_size, out):
    out[...] = reference.embedding_forward(tokens, params, layers, vocab_size)


def embedding_train_step(tokens, labels, params, grads, opt_state, layers, hyper, vocab_size, outputs):
    step = int(hyper[abi.H_STEP])
    if outputs is not None:  # a second forward pass, as in mlp_train_step
        outputs[...] = reference.mlp_forward(reference.embed(tokens, params, layers, vocab_size), params, layers,
                                             step=step)
    value, grads[...] = reference.embedding_loss_and_grad(tokens, labels, params, layers, vocab_size,
                                                          hyper[abi.H_PENALTY_SCALE], step)
    return _update(value, params, grads, opt_state, hyper)


def _update(loss, params, grads, opt_state, hyper):
    """The optimizer step of a training step, applied only for a finite loss (the contract)."""
    if np.isfinite(loss):
        reference.optimizer_step(params, grads, opt_state, hyper)
        hyper[abi.H_APPLIED] = hyper[abi.H_STEP]
    return float(loss)


def embedding_generate(params, layers, vocab_size, context, uniforms, temperature, boundary, tokens, lengths):
    tokens[...], lengths[...] = reference.embedding_generate(params, layers, vocab_size, context, uniforms,
                                                             temperature, boundary)


def quantized_dense_forward(x, qbuffer, qlayers, layer, y, acc):
    y_ref, acc_ref = reference.quantized_dense_forward(x, qbuffer, qlayers, layer)
    y[...] = y_ref
    if acc is not None:
        acc[...] = acc_ref


def quantized_mlp_forward(x, qbuffer, qlayers, out):
    out[...] = reference.quantized_mlp_forward(x, qbuffer, qlayers)


def quantized_embedding_generate(embeddings, qbuffer, qlayers, context, uniforms, temperature, boundary, tokens,
                                 lengths):
    tokens[...], lengths[...] = reference.quantized_embedding_generate(embeddings, qbuffer, qlayers, context,
                                                                       uniforms, temperature, boundary)


def sparse_dense_forward(indptr, indices, values, W, b, act_id, alpha, y, z):
    y_ref, z_ref = reference.sparse_dense_forward(indptr, indices, values, W, b, BY_ID[act_id], alpha)
    y[...] = y_ref
    if z is not None:
        z[...] = z_ref


def sparse_mlp_forward(indptr, indices, values, params, layers, out):
    out[...] = reference.sparse_mlp_forward(indptr, indices, values, params, layers)


def sparse_dense_backward(dy, indptr, indices, values, z, y, act_id, alpha, rows, dW_rows, db):
    dW_rows[...], db[...] = reference.sparse_dense_backward(dy, indptr, indices, values, z, y, BY_ID[act_id],
                                                            alpha, rows)


def sparse_train_step(indptr, indices, values, targets, params, grads, opt_state, layers, loss_id, hyper,
                      outputs, sample_weight):
    if outputs is not None:  # a second forward pass, as in mlp_train_step
        outputs[...] = reference.sparse_mlp_forward(indptr, indices, values, params, layers)
    loss, grads_ref, _, _ = reference.sparse_train_step(indptr, indices, values, targets, params, layers,
                                                        opt_state, loss_id, hyper, sample_weight)
    first = layers[0]
    w_end = int(first["offset"] + first["fan_in"] * first["fan_out"])
    grads[:first["offset"]] = grads_ref[:first["offset"]]
    grads[w_end:] = grads_ref[w_end:]  # the W0 region is not written (the contract)
    if np.isfinite(loss):
        hyper[abi.H_APPLIED] = hyper[abi.H_STEP]
    return float(loss)


def quantized_sparse_forward(indptr, indices, values, table, scales, b, act_id, alpha, y):
    y[...] = reference.quantized_sparse_forward(indptr, indices, values, table, scales, b, BY_ID[act_id], alpha)
