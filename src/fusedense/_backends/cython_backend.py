"""The cython backend: the compiled kernels of fusedense._kernels (built from kernels/*.pyx).

Thin on purpose: each function forwards to one compiled function. The only logic here is
the thread count, which this module applies to the kernels' OpenMP regions and to the BLAS
that SciPy ships (the one scipy.linalg.cython_blas calls; NumPy's own BLAS is left alone).
"""
from __future__ import annotations

import os

from .. import abi, threads

with threads.quiet_pools():  # libgomp and SciPy's OpenBLAS load with the kernels
    from .._kernels import activations as _activations
    from .._kernels import embedding as _embedding
    from .._kernels import layers as _layers
    from .._kernels import optim as _optim
    from .._kernels import quantized as _quantized
    from .._kernels import sparse as _sparse

NAME = "cython"

_MODULES = (_activations, _embedding, _layers, _optim, _quantized, _sparse)


def activation_forward(z, act_id, alpha, y):
    _activations.activation_forward(z, act_id, alpha, y)


def activation_backward(dy, z, y, act_id, alpha, dz):
    _activations.activation_backward(dy, z, y, act_id, alpha, dz)


def dense_forward(x, W, b, act_id, alpha, y, z):
    _layers.dense_forward(x, W, b, act_id, alpha, y, z)


def dense_backward(dy, x, W, z, y, act_id, alpha, dx, dW, db):
    _layers.dense_backward(dy, x, W, z, y, act_id, alpha, dx, dW, db)


def mlp_forward(x, params, layers, out):
    _layers.mlp_forward(x, params, layers, out)


def loss(loss_id, outputs, targets, grad):
    return _layers.loss(loss_id, outputs, targets, grad)


def sgd_step(params, grads, velocity, lr, momentum, nesterov, weight_decay):
    _optim.sgd_step(params, grads, velocity, lr, momentum, nesterov, weight_decay)


def adam_step(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    _optim.adam_step(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled)


def mlp_gradient(x, targets, params, grads, layers, loss_id, sample_weight):
    return _layers.mlp_gradient(x, targets, params, grads, layers, loss_id, sample_weight)


def mlp_train_step(x, targets, params, grads, opt_state, layers, loss_id, hyper, outputs, sample_weight):
    return _layers.mlp_train_step(x, targets, params, grads, opt_state, layers, loss_id, hyper, outputs,
                                  sample_weight)


def mlp_train_epoch(x, targets, order, batch_size, params, grads, opt_state, layers, loss_id, hyper, sample_weight,
                    batch_losses, outputs, penalty_over_weight, epsilon_on_sqrt_v):
    return _layers.mlp_train_epoch(x, targets, order, batch_size, params, grads, opt_state, layers, loss_id,
                                   hyper, sample_weight, batch_losses, outputs, penalty_over_weight,
                                   epsilon_on_sqrt_v)


def embedding_forward(tokens, params, layers, vocab_size, out):
    _embedding.embedding_forward(tokens, params, layers, vocab_size, out)


def embedding_train_step(tokens, labels, params, grads, opt_state, layers, hyper, vocab_size, outputs):
    return _embedding.embedding_train_step(tokens, labels, params, grads, opt_state, layers, hyper,
                                           vocab_size, outputs)


def embedding_generate(params, layers, vocab_size, context, uniforms, temperature, boundary, tokens, lengths):
    _embedding.embedding_generate(params, layers, vocab_size, context, uniforms, temperature, boundary,
                                  tokens, lengths)


def quantized_dense_forward(x, qbuffer, qlayers, layer, y, acc):
    _quantized.quantized_dense_forward(x, qbuffer, qlayers, layer, y, acc)


def quantized_mlp_forward(x, qbuffer, qlayers, out):
    _quantized.quantized_mlp_forward(x, qbuffer, qlayers, out)


def quantized_embedding_generate(embeddings, qbuffer, qlayers, context, uniforms, temperature, boundary, tokens,
                                 lengths):
    _quantized.quantized_embedding_generate(embeddings, qbuffer, qlayers, context, uniforms, temperature, boundary,
                                            tokens, lengths)


def sparse_dense_forward(indptr, indices, values, W, b, act_id, alpha, y, z):
    _sparse.sparse_dense_forward(indptr, indices, values, W, b, act_id, alpha, y, z)


def sparse_mlp_forward(indptr, indices, values, params, layers, out):
    _sparse.sparse_mlp_forward(indptr, indices, values, params, layers, out)


def sparse_dense_backward(dy, indptr, indices, values, z, y, act_id, alpha, rows, dW_rows, db):
    _sparse.sparse_dense_backward(dy, indptr, indices, values, z, y, act_id, alpha, rows, dW_rows, db)


def sparse_train_step(indptr, indices, values, targets, params, grads, opt_state, layers, loss_id, hyper,
                      outputs, sample_weight):
    labels = targets if loss_id == abi.LOSS_SPARSE_XENT else None
    return _sparse.sparse_train_step(indptr, indices, values, labels, targets, params, grads, opt_state, layers,
                                     loss_id, hyper, outputs, sample_weight)


def quantized_sparse_forward(indptr, indices, values, table, scales, b, act_id, alpha, y):
    _quantized.quantized_sparse_forward(indptr, indices, values, table, scales, b, act_id, alpha, y)


#: threads the kernels' BLAS uses now (None if unknown); for tests and diagnostics
blas_num_threads = threads.blas_num_threads


_forked = False  # True in a child forked from this process (see _after_fork_in_child)


def _apply_num_threads(n):
    for module in _MODULES:
        module.set_num_threads(1 if _forked else n)
    threads.set_blas_num_threads(n)  # OpenBLAS restarts its own threads after fork


def _after_fork_in_child():
    """A forked child runs the kernels' OpenMP loops on one thread. GNU OpenMP's pool does not
    survive fork: the child inherits a pool whose threads do not exist, and its first parallel
    region would wait for them forever. One thread opens no region (thread_policy.in_parallel,
    column_slices); BLAS (OpenBLAS re-creates its threads after fork) keeps the count."""
    global _forked
    _forked = True
    _apply_num_threads(threads.get_num_threads())


threads.on_num_threads_change(_apply_num_threads)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
