"""The numba engine: the contract of ``fusedense._backends.interface`` over the jitted
kernels in ``fusedense._numba_kernels``.

This module is imported only when the numba backend is first used, so numba's import and the
loading of its compiled (cached) kernels never slow down ``import fusedense``. It only adapts
arguments so that each kernel sees one type signature per dtype — every extra signature is
extra compile time and extra cache to load: an absent array becomes an empty (0, 0) array of
the same dtype, ints and floats become Python ints and floats, flags Python bools — and
chooses between a kernel and its parallel variant by size (``_numba_kernels.jit``).
``dense_forward`` chooses its product path and activation in Python too
(``_numba_kernels.dense.dense_forward``), so that a first call compiles only what it runs.
"""
from __future__ import annotations

import functools
import threading
import weakref

import numba
import numpy as np

from .. import abi, reference, threads
from .._numba_kernels import activations, dense, embedding, losses, mlp, optimizers, quantized, sparse
from .._numba_kernels.jit import use_parallel
from . import epoch

NAME = "numba"

_ABSENT = {np.dtype(t): np.empty((0, 0), t) for t in (np.float32, np.float64)}
_NO_LABELS = np.empty(0, np.int64)
_NO_WEIGHTS = {np.dtype(t): np.empty(0, t) for t in (np.float32, np.float64)}


_workspaces = threading.local()  # per thread and dtype: concurrent calls never share one


def _workspace(dtype, size=0):
    """This thread's scratch array, grown to at least ``size`` elements and kept for the next
    calls: its size is bounded by the kernel's row blocks (mlp_forward: a few MB at most)."""
    scratch = getattr(_workspaces, dtype.char, None)  # not dtype.name: NumPy builds it in Python
    if scratch is None or scratch.size < size:
        scratch = np.empty(size, dtype)
        setattr(_workspaces, dtype.char, scratch)
    return scratch


def _or_absent(a, dtype):
    return _ABSENT[dtype] if a is None else a


_applied = threading.local()  # .n: the fusedense count this thread last gave numba


def _apply_num_threads(n):
    # numba cannot run more threads than its pool was started with (NUMBA_NUM_THREADS). The
    # BLAS that np.dot calls inside the kernels has a pool of its own (SciPy's OpenBLAS): at
    # its default, every core, one thread given by the user ran large products on two.
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    threads.set_blas_num_threads(n)
    _applied.n = n


#: threads the kernels' BLAS uses now (None if unknown); for tests and diagnostics
blas_num_threads = threads.blas_num_threads


threads.on_num_threads_change(_apply_num_threads)


class _WritableAlias:
    """Exposes a read-only array's memory as writable (``np.asarray`` of it is the alias). It
    holds only the address, not the array: :func:`_writable` keeps an alias no longer than its
    array lives."""

    def __init__(self, a):
        interface = dict(a.__array_interface__)
        interface["data"] = (interface["data"][0], False)
        self.__array_interface__ = interface


_ALIASES = {}  # id(read-only array) -> (weak reference to it, its writable alias)


def _writable(a):
    """A writable alias of read-only ``a``, made once per array: building one reads
    ``__array_interface__``, which for the layer record (a structured dtype) NumPy assembles in
    Python, ~30 µs, as long as the LM's whole Cython training step. The entry is dropped when
    ``a`` dies (its id may then name another array)."""
    entry = _ALIASES.get(id(a))
    if entry is None or entry[0]() is not a:
        key = id(a)
        entry = (weakref.ref(a, lambda _, key=key: _ALIASES.pop(key, None)), np.asarray(_WritableAlias(a)))
        _ALIASES[key] = entry
    return entry[1]


def _writable_inputs(args):
    """``args`` with each read-only array replaced by a writable alias of the same memory:
    numba types read-only arrays apart, and each read-only argument would compile the kernel
    again (a minute on this machine). The gate refuses read-only outputs, and the kernels never
    write their inputs. (A loop, not a generator: at batch 1 the generator cost 0.8 µs.)"""
    replaced = None
    for position, a in enumerate(args):
        if type(a) is np.ndarray and not a.flags.writeable:
            if replaced is None:
                replaced = list(args)
            replaced[position] = _writable(a)
    return args if replaced is None else replaced


def _entry_point(function):
    """Every kernel-interface function: numba's thread count is per calling thread, so before
    each call the calling thread gets fusedense's current count (set only when it changed:
    a thread-local read, not a call into numba); read-only inputs become writable aliases."""
    @functools.wraps(function)
    def call(*args):
        n = threads.get_num_threads()
        if getattr(_applied, "n", None) != n:
            _apply_num_threads(n)
        return function(*_writable_inputs(args))
    return call


@_entry_point
def activation_forward(z, act_id, alpha, y):
    kernel = (activations.activation_forward_parallel if use_parallel(z.size)
              else activations.activation_forward)
    kernel(z, int(act_id), float(alpha), y)


@_entry_point
def activation_backward(dy, z, y, act_id, alpha, dz):
    kernel = (activations.activation_backward_parallel if use_parallel(dy.size)
              else activations.activation_backward)
    kernel(dy, _or_absent(z, dy.dtype), _or_absent(y, dy.dtype), int(act_id), float(alpha), dz)


@_entry_point
def dense_forward(x, W, b, act_id, alpha, y, z):
    # without z to keep, the pre-activation is computed in y and activated in place
    dense.dense_forward(x, W, b, int(act_id), float(alpha), y, y if z is None else z)


@_entry_point
def dense_backward(dy, x, W, z, y, act_id, alpha, dx, dW, db):
    absent = _ABSENT[dy.dtype]
    dense.dense_backward_from_python(dy, x, W, _or_absent(z, dy.dtype), _or_absent(y, dy.dtype), int(act_id),
                                     float(alpha), absent if dx is None else dx, dW, db)


@_entry_point
def mlp_forward(x, params, layers, out):
    _network_forward(x, params, layers, out)


def _network_forward(x, params, layers, out):
    needed = mlp.mlp_forward(x, params, layers, out, _workspace(out.dtype))
    if needed:  # the first call at this size: grow this thread's workspace and run
        mlp.mlp_forward(x, params, layers, out, _workspace(out.dtype, needed))


def _labels_and_targets(loss_id, targets, dtype):
    """The kernels' (labels, targets) pair: the one the loss does not read is an empty array,
    so that every loss shares one signature per dtype."""
    if loss_id == abi.LOSS_SPARSE_XENT:
        return targets, _ABSENT[dtype]
    return _NO_LABELS, targets


@_entry_point
def loss(loss_id, outputs, targets, grad):
    kernel = (losses.loss_and_gradient_parallel if use_parallel(outputs.size)
              else losses.loss_and_gradient)
    labels, targets = _labels_and_targets(loss_id, targets, outputs.dtype)
    return kernel(int(loss_id), outputs, outputs, labels, targets, _NO_WEIGHTS[outputs.dtype],
                  _or_absent(grad, outputs.dtype))


@_entry_point
def sgd_step(params, grads, velocity, lr, momentum, nesterov, weight_decay):
    kernel = optimizers.sgd_step_parallel if use_parallel(params.size) else optimizers.sgd_step
    kernel(params, grads, velocity, float(lr), float(momentum), bool(nesterov), float(weight_decay))


@_entry_point
def adam_step(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    kernel = optimizers.adam_step_parallel if use_parallel(params.size) else optimizers.adam_step
    kernel(params, grads, m, v, float(step), float(lr), float(beta1), float(beta2), float(eps),
           float(weight_decay), bool(decoupled))


@_entry_point
def mlp_gradient(x, targets, params, grads, layers, loss_id, sample_weight):
    labels, targets = _labels_and_targets(loss_id, targets, params.dtype)
    return mlp.mlp_gradient(x, labels, targets, _weights(sample_weight, params.dtype), params, grads, layers,
                            int(loss_id))


@_entry_point
def mlp_train_step(x, targets, params, grads, opt_state, layers, loss_id, hyper, outputs, sample_weight):
    labels, targets = _labels_and_targets(loss_id, targets, params.dtype)
    return mlp.mlp_train_step(x, labels, targets, _weights(sample_weight, params.dtype), params, grads,
                              opt_state, layers, int(loss_id), hyper, _or_absent(outputs, params.dtype))


def _weights(sample_weight, dtype):
    """The rows' weights, or an empty array (one signature per dtype either way)."""
    return _NO_WEIGHTS[dtype] if sample_weight is None else sample_weight


@_entry_point
def mlp_train_epoch(x, targets, order, batch_size, params, grads, opt_state, layers, loss_id, hyper, sample_weight,
                    batch_losses, outputs, penalty_over_weight, epsilon_on_sqrt_v):
    return epoch.train_epoch(mlp_train_step, x, targets, order, batch_size, params, grads, opt_state, layers, loss_id,
                                             hyper, sample_weight, batch_losses, outputs, penalty_over_weight,
                             epsilon_on_sqrt_v)


@_entry_point
def embedding_forward(tokens, params, layers, vocab_size, out):
    needed = embedding.embedding_forward(tokens, params, layers, int(vocab_size), out,
                                         _workspace(out.dtype))
    if needed:  # the first call at this size (as mlp_forward)
        embedding.embedding_forward(tokens, params, layers, int(vocab_size), out,
                                    _workspace(out.dtype, needed))


@_entry_point
def embedding_train_step(tokens, labels, params, grads, opt_state, layers, hyper, vocab_size, outputs):
    return embedding.embedding_train_step(tokens, labels, params, grads, opt_state, layers,
                                          abi.LOSS_SPARSE_XENT, hyper, int(vocab_size),
                                          _or_absent(outputs, params.dtype))


@_entry_point
def embedding_generate(params, layers, vocab_size, context, uniforms, temperature, boundary, tokens,
                       lengths):
    args = (params, layers, int(vocab_size), int(context), uniforms, float(temperature),
            int(boundary), tokens, lengths)
    needed = embedding.embedding_generate(*args, _workspace(params.dtype))
    if needed:  # the first call at this size (as mlp_forward)
        embedding.embedding_generate(*args, _workspace(params.dtype, needed))


_NO_ACC = np.empty((0, 0), np.int32)


@_entry_point
def quantized_dense_forward(x, qbuffer, qlayers, layer, y, acc):
    quantized.quantized_dense_forward(x, qbuffer, qlayers, int(layer), y, _NO_ACC if acc is None else acc)


@_entry_point
def quantized_mlp_forward(x, qbuffer, qlayers, out):
    quantized.quantized_mlp_forward(x, qbuffer, qlayers, out)


@_entry_point
def quantized_embedding_generate(embeddings, qbuffer, qlayers, context, uniforms, temperature, boundary, tokens,
                                 lengths):
    # the sampling loop in Python (reference.generate_with) around the jitted quantized network:
    # numba is the fallback engine, and one compiled loop per network kind would double its cold start
    def next_logits(ctx):
        out = np.empty((len(ctx), qlayers[-1]["fan_out"]), np.float32)
        quantized.quantized_mlp_forward(np.ascontiguousarray(embeddings[ctx].reshape(len(ctx), -1)), qbuffer,
                                        qlayers, out)
        return out
    tokens[...], lengths[...] = reference.generate_with(next_logits, int(context), uniforms, float(temperature),
                                                        int(boundary))


@_entry_point
def sparse_dense_forward(indptr, indices, values, W, b, act_id, alpha, y, z):
    sparse.sparse_dense_forward(indptr, indices, values, W, b, int(act_id), float(alpha), y, y if z is None else z)


@_entry_point
def sparse_mlp_forward(indptr, indices, values, params, layers, out):
    # two compiled calls the other paths compile anyway (no kernel of its own to compile)
    (W0, b0), = reference.layer_views(params, layers[:1])
    first = layers[0]
    h = out if len(layers) == 1 else np.empty((out.shape[0], W0.shape[1]), out.dtype)
    sparse.sparse_dense_forward(indptr, indices, values, W0, b0, int(first["activation"]), float(first["alpha"]), h, h)
    if len(layers) > 1:
        _network_forward(h, params, layers[1:], out)


@_entry_point
def sparse_dense_backward(dy, indptr, indices, values, z, y, act_id, alpha, rows, dW_rows, db):
    sparse.sparse_dense_backward(dy, indptr, indices, values, _or_absent(z, dy.dtype), _or_absent(y, dy.dtype),
                                 int(act_id), float(alpha), rows, dW_rows, db)


@_entry_point
def sparse_train_step(indptr, indices, values, targets, params, grads, opt_state, layers, loss_id, hyper,
                      outputs, sample_weight):
    labels, targets = _labels_and_targets(loss_id, targets, params.dtype)
    upper, base = _upper_layers(layers)
    return sparse.sparse_train_step(indptr, indices, values, labels, targets, _weights(sample_weight, params.dtype),
                                    params, grads, opt_state, layers, upper, base, int(loss_id), hyper,
                                    _or_absent(outputs, params.dtype))


@_entry_point
def quantized_sparse_forward(indptr, indices, values, table, scales, b, act_id, alpha, y):
    quantized.quantized_sparse_forward(indptr, indices, values, table, scales, b, int(act_id), float(alpha),
                                       table.dtype == np.uint16, y)


_UPPER = {}  # id(record) -> (weak reference, upper record, base), one entry per live record


def _upper_layers(layers):
    """(layers[1:] with offsets relative to layers[1]'s, that offset): the dense layers above a
    sparse first layer as a network of their own over params[base:] (see sparse_train_step)."""
    entry = _UPPER.get(id(layers))
    if entry is None or entry[0]() is not layers:
        upper = layers[1:].copy()
        base = int(upper[0]["offset"])
        upper["offset"] -= base
        upper.flags.writeable = False
        entry = (weakref.ref(layers), upper, base)
        _UPPER[id(layers)] = entry
        weakref.finalize(layers, _UPPER.pop, id(layers), None)
    return entry[1], entry[2]
