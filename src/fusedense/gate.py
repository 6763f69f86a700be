"""The gate: the one place where Python hands work to an engine.

Every front (the functional API, ``MLP``/``EmbeddingMLP``, ``Sequential``, the estimators, the
optimizer helpers) reaches an engine only through a :class:`Gate`, which ``fusedense._backends.load``
returns. Each method checks what ``_backends/interface.py`` promises the engine — dtypes, shapes,
contiguity, writeable and separate outputs, index ranges, the layer record against ``params``,
the optimizer state against ``hyper`` — and then makes exactly one engine call. Engines never
check again, so a check written here holds for all three, and an argument that passes it
cannot make compiled code read or write out of bounds. The errors are raised here, before
any engine runs, so they are the same whatever the engine.

The checks take arrays the fronts already converted (``fusedense.validation`` turns
array-likes into arrays with friendly messages); they are written to cost well under a
microsecond each, because a batch-1 forward pass costs a few. One guarantee is the fronts' own:
a forward pass's output never overlaps its inputs (the functional API computes into scratch when
``out=`` aliases an input, the models allocate their outputs), so the forward paths — the
hottest — do not pay an overlap test; in-place training buffers are tested here.
"""
from __future__ import annotations

import weakref

import numpy as np

from . import abi
from .activations import BY_ID
from .layout import QUANT_INT8, layer_record, quantized_record

__all__ = ["Gate", "checked_record", "checked_quantized_record"]

#: Records built by ``checked_record``, by id: (weak reference, n_params, n_inputs, n_outputs,
#: the first layer's offset, whether any layer has a dropout rate > 0).
#: The gate accepts only these, so a record cannot be forged or edited past its check; the sizes
#: are kept here because reading a field of a structured array costs a microsecond.
_RECORDS: dict = {}


def checked_record(layout, alphas, n_params, name="layout", penalties=None, dropout=None,
                   seeds=None) -> np.ndarray:
    """``layout.layer_record`` registered with the gate (the only way to make a record it accepts)."""
    record = layer_record(layout, alphas, n_params, name, penalties, dropout, seeds)
    key = id(record)
    _RECORDS[key] = (weakref.ref(record), n_params, int(record[0]["fan_in"]), int(record[-1]["fan_out"]),
                     int(record[0]["offset"]), bool((record["dropout"] > 0).any()))
    weakref.finalize(record, _RECORDS.pop, key, None)
    return record


def _record(layers):
    """(n_params, n_inputs, n_outputs) of a registered record; TypeError for anything else."""
    entry = _RECORDS.get(id(layers))
    if entry is None or entry[0]() is not layers:
        raise TypeError("layers: expected a layer record from fusedense.gate.checked_record, got "
                        + (f"an array of dtype {layers.dtype}" if isinstance(layers, np.ndarray)
                           else type(layers).__name__))
    return entry[1:4]


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
MAX_STEP = 2 ** 53  # Adam's step travels as a float64 (hyper) and a C long: exact and in range up to here
_F32 = np.dtype(np.float32)
_U8 = np.dtype(np.uint8)
_TABLE_DTYPES = (np.dtype(np.int8), np.dtype(np.uint16))  # a quantized sparse layer's table: int8 or bf16

#: Quantized records built by ``checked_quantized_record``, by id: (weak reference, n_bytes,
#: n_inputs, n_outputs, kind).
_QRECORDS: dict = {}


def checked_quantized_record(rows, n_bytes, name="qlayers") -> np.ndarray:
    """``layout.quantized_record`` registered with the gate (the only record its quantized
    functions accept)."""
    record = quantized_record(rows, n_bytes, name)
    key = id(record)
    _QRECORDS[key] = (weakref.ref(record), int(n_bytes), int(record[0]["fan_in"]), int(record[-1]["fan_out"]),
                      int(record[0]["kind"]))
    weakref.finalize(record, _QRECORDS.pop, key, None)
    return record


def _quantized(qbuffer, qlayers):
    """(n_inputs, n_outputs, kind) of a registered quantized record over ``qbuffer``."""
    entry = _QRECORDS.get(id(qlayers))
    if entry is None or entry[0]() is not qlayers:
        raise TypeError("qlayers: expected a quantized record from fusedense.gate.checked_quantized_record, got "
                        + (f"an array of dtype {qlayers.dtype}" if isinstance(qlayers, np.ndarray)
                           else type(qlayers).__name__))
    _array("qbuffer", qbuffer, _U8, (None,))
    if qbuffer.shape[0] < entry[1]:
        raise ValueError(f"qbuffer: the record needs {entry[1]} bytes, got an array of {qbuffer.shape[0]}")
    return entry[2:]


def _fail_array(name, a, expected):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected {expected}, got {type(a).__name__}")
    raise ValueError(f"{name}: expected {expected}, got an array of shape {a.shape} and dtype {a.dtype}"
                     + ("" if a.flags.c_contiguous else " (not C-contiguous)"))


def _array(name, a, dtype, shape):
    """``a`` must be a C-contiguous ndarray of ``dtype`` and ``shape`` (None entries: any size)."""
    if type(a) is np.ndarray and a.dtype == dtype and a.flags.c_contiguous and a.ndim == len(shape):
        for got, want in zip(a.shape, shape):
            if want is not None and got != want:
                break
        else:
            return a
    wanted = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
    _fail_array(name, a, f"a C-contiguous {dtype} array of shape {wanted}")


def _output(name, a, dtype, shape, *inputs):
    _array(name, a, dtype, shape)
    if not a.flags.writeable:
        raise ValueError(f"{name}: the array is read-only; pass a writeable array")
    for other_name, other in inputs:
        if other is not None and np.may_share_memory(a, other):
            raise ValueError(f"{name}: shares memory with {other_name}; pass a separate array")
    return a


def _float_dtype(name, a):
    if type(a) is not np.ndarray:
        raise TypeError(f"{name}: expected a numpy array, got {type(a).__name__}")
    if a.dtype not in _FLOATS:
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {a.dtype}")
    return a.dtype


def _rows(name, a, dtype, n_cols):
    _array(name, a, dtype, (None, n_cols))
    if a.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one row, got shape {a.shape}")
    return a.shape[0]


def _activation(act_id, alpha):
    if not isinstance(act_id, (int, np.integer)) or not 0 <= act_id < len(BY_ID):
        raise ValueError(f"activation: expected an activation id in [0, {len(BY_ID)}), got {act_id!r}")
    if not (alpha >= 0 and alpha < np.inf):  # (also false for NaN)
        raise ValueError(f"alpha: expected a finite number >= 0, got {alpha!r}")


def _derivative_inputs(z, y, act_id, alpha, dtype, shape):
    """z and y (either may be None) of ``shape``, and that the activation's derivative can be
    computed from the ones given."""
    for name, a in (("z", z), ("y", y)):
        if a is not None:
            _array(name, a, dtype, shape)
    _activation(act_id, alpha)
    act = BY_ID[act_id]
    if z is None and (y is None or not act.from_output):
        needs = "z" if not act.from_output else "z or y"
        raise ValueError(f"{needs}: activation {act.name!r} needs {needs} to compute its derivative, got none")


def _network(params, layers):
    """(dtype, n_inputs, n_outputs) after checking that ``layers`` is a registered record that
    fits ``params``, a C-contiguous 1-D float array."""
    n_params, n_inputs, n_outputs = _record(layers)
    if (type(params) is not np.ndarray or params.dtype not in _FLOATS or params.ndim != 1
            or not params.flags.c_contiguous):
        _float_dtype("params", params)
        _fail_array("params", params, "a C-contiguous 1-D float array")
    if params.shape[0] < n_params:
        raise ValueError(f"params: the layout needs {n_params} parameters, got an array of {params.shape[0]}")
    return params.dtype, n_inputs, n_outputs


def _batch_rows(name, x, dtype, n_cols):
    """Rows of a (B >= 1, n_cols) C-contiguous array of ``dtype``: the hot path's one check."""
    if (type(x) is not np.ndarray or x.dtype != dtype or x.ndim != 2 or x.shape[1] != n_cols
            or not x.shape[0] or not x.flags.c_contiguous):
        return _rows(name, x, dtype, n_cols)  # raises the detailed error
    return x.shape[0]


def _fresh_output(name, out, dtype, shape, *inputs):
    """An output of exactly ``shape``: the hot path's check, the detailed one on failure."""
    if (type(out) is not np.ndarray or out.dtype != dtype or out.shape != shape
            or not out.flags.c_contiguous or not out.flags.writeable):
        return _output(name, out, dtype, shape, *inputs)
    for other_name, other in inputs:
        if np.may_share_memory(out, other):
            raise ValueError(f"{name}: shares memory with {other_name}; pass a separate array")
    return out


def _outside(ids, n):
    """Whether int64 ``ids`` holds a value outside [0, n): one reduction (the cost of a small
    batch's check is the reduction's call), the ids read as unsigned so that a negative one is
    larger than any n."""
    return bool(ids.size) and ids.view(np.uint64).max() >= n


def _labels(name, labels, n_rows, n_classes):
    _array(name, labels, np.dtype(np.int64), (n_rows,))
    if _outside(labels, n_classes):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise ValueError(f"{name}: labels must lie in [0, {n_classes}), got {bad}")


def _targets(name, targets, loss_id, dtype, n_rows, n_out):
    if loss_id == abi.LOSS_SPARSE_XENT:
        _labels(name, targets, n_rows, n_out)
    elif loss_id in (abi.LOSS_CATEGORICAL_XENT, abi.LOSS_BINARY_XENT, abi.LOSS_MSE):
        _array(name, targets, dtype, (n_rows, n_out))
    else:
        raise ValueError(f"loss: expected a loss id in [0, 4), got {loss_id!r}")


def _sampling(n_outputs, vocab_size, uniforms, temperature, boundary, tokens, lengths):
    """The arguments of a sampling loop (embedding_generate and its quantized twin)."""
    if n_outputs != vocab_size:
        raise ValueError(f"generate: the output layer has {n_outputs} units; sampling feeds each token "
                         f"back as input, so it needs one unit per vocabulary token ({vocab_size})")
    n = _rows("uniforms", uniforms, np.dtype(np.float64), None)
    if not 0 <= boundary < vocab_size:
        raise ValueError(f"boundary: expected a token id in [0, {vocab_size}), got {boundary!r}")
    if not (temperature >= 0 and temperature < np.inf):
        raise ValueError(f"temperature: expected a finite number >= 0, got {temperature!r}")
    _output("tokens", tokens, np.dtype(np.int64), uniforms.shape)
    _output("lengths", lengths, np.dtype(np.int64), (n,), ("tokens", tokens))


def _dropout_step(layers, hyper):
    """A record with dropout draws its masks from the step count hyper[H_STEP]: it must be a
    whole number in [1, 2**53] (the kernels read it as an unsigned 64-bit integer)."""
    if _RECORDS[id(layers)][5]:
        step = hyper[abi.H_STEP]
        if not (1 <= step <= MAX_STEP and step == int(step)):
            raise ValueError(f"step: dropout draws its mask from the 1-based step count, an integer in "
                             f"[1, 2**53], got {step!r}")


def _optimizer(opt_state, hyper, params, adagrad=False):
    """opt_state against the optimizer of ``hyper``; OPT_ADAGRAD only where ``adagrad`` (the
    sparse training step)."""
    _array("hyper", hyper, np.dtype(np.float64), (abi.N_HYPER,))
    scale = hyper[abi.H_PENALTY_SCALE]
    if not (scale >= 0 and scale < np.inf):
        raise ValueError(f"hyper[H_PENALTY_SCALE]: expected a finite number >= 0 (the factor of the layers' "
                         f"kernel penalties), got {scale!r}")
    optimizer = hyper[abi.H_OPTIMIZER]
    if optimizer == abi.OPT_SGD or (adagrad and optimizer == abi.OPT_ADAGRAD):
        rows = 1
    elif optimizer == abi.OPT_RMSPROP:
        if adagrad:  # the sparse step's lazy row updates
            raise ValueError("optimizer: training on sparse input (a sparse first layer, updated lazily row by "
                             "row) takes SGD, Adam or Adagrad, not RMSprop (Keras's default in compile): "
                             "compile with optimizer='adam', for instance")
        rows = 2
    elif optimizer == abi.OPT_ADAM:
        rows = 2
        if not 1 <= hyper[abi.H_STEP] <= MAX_STEP:
            raise ValueError(f"step: Adam's step count must be in [1, 2**53], got {hyper[abi.H_STEP]!r}")
    else:
        raise ValueError(f"hyper: unknown optimizer code {optimizer!r}")
    _output("opt_state", opt_state, params.dtype, (rows, params.shape[0]), ("params", params))


_INT64 = np.dtype(np.int64)


def _weights(sample_weight, dtype, n_rows):
    if sample_weight is not None:
        _array("sample_weight", sample_weight, dtype, (n_rows,))
        if not (np.isfinite(sample_weight).all() and (sample_weight >= 0).all()):
            raise ValueError("sample_weight: expected finite weights >= 0")


def _order(order, n_rows):
    """The rows an epoch visits: int64 (m >= 1,) indices in [0, n_rows) (the kernels gather x's
    rows by them, so every one is checked); returns m."""
    _array("order", order, _INT64, (None,))
    if not order.shape[0]:
        raise ValueError("order: expected at least one row index, got an empty array")
    if _outside(order, n_rows):
        bad = order.min() if order.min() < 0 else order.max()
        raise ValueError(f"order: expected row indices in [0, {n_rows}) (the rows of x), got {bad}")
    return order.shape[0]


def _csr(indptr, indices, values, dtype, n_features):
    """Rows B >= 1 of a CSR batch given as its three arrays (the fronts convert SciPy matrices
    with fusedense.sparse.as_csr): indptr int64 (B+1,) from 0 to nnz, never decreasing;
    indices int64 (nnz,) in [0, n_features) (unsorted and repeated are fine: the gather-sum adds
    them up); values (nnz,) of ``dtype`` (NaN propagates as in NumPy). These bounds are what
    keep the kernels' loads inside W, so every one is checked here."""
    _array("X.indptr", indptr, _INT64, (None,))
    B = indptr.shape[0] - 1
    if B < 1:
        raise ValueError(f"X.indptr: expected B+1 >= 2 entries (at least one row), got {indptr.shape[0]}")
    _array("X.indices", indices, _INT64, (None,))
    nnz = indices.shape[0]
    _array("X.data", values, dtype, (nnz,))
    if indptr[0] != 0 or indptr[-1] != nnz:
        raise ValueError(f"X.indptr: expected to run from 0 to nnz = {nnz} (len(indices)), got "
                         f"{indptr[0]} to {indptr[-1]}")
    if B > 1 and (indptr[1:] < indptr[:-1]).any():
        raise ValueError("X.indptr: expected non-decreasing row offsets, got a decreasing step")
    if _outside(indices, n_features):
        raise ValueError(f"X.indices: column indices must lie in [0, {n_features}) (the first layer's "
                         f"fan_in), got values in [{indices.min()}, {indices.max()}]")
    return B


class Gate:
    """An engine behind the checks of its contract (see the module docstring)."""

    def __init__(self, engine):
        self.engine = engine
        self.NAME = engine.NAME

    def __repr__(self):
        return f"<fusedense engine {self.NAME!r}>"

    def activation_forward(self, z, act_id, alpha, y):
        dtype = _float_dtype("z", z)
        _rows("z", z, dtype, None)
        _activation(act_id, alpha)
        _output("y", y, dtype, z.shape, ("z", z))
        self.engine.activation_forward(z, act_id, alpha, y)

    def activation_backward(self, dy, z, y, act_id, alpha, dz):
        dtype = _float_dtype("dy", dy)
        _rows("dy", dy, dtype, None)
        _activation(act_id, alpha)
        for name, a in (("z", z), ("y", y)):
            if a is not None:
                _array(name, a, dtype, dy.shape)
        act = BY_ID[act_id]
        if z is None and (y is None or not act.from_output):
            needs = "z" if not act.from_output else "z or y"
            raise ValueError(f"{needs}: activation {act.name!r} needs {needs} to compute its derivative, got none")
        _output("dz", dz, dtype, dy.shape, ("dy", dy), ("z", z), ("y", y))
        self.engine.activation_backward(dy, z, y, act_id, alpha, dz)

    def dense_forward(self, x, W, b, act_id, alpha, y, z=None):
        dtype = _float_dtype("W", W)
        _array("W", W, dtype, (None, None))
        k, n = W.shape
        if k == 0 or n == 0:
            raise ValueError(f"W: expected a non-empty array, got shape {W.shape}")
        B = _rows("x", x, dtype, k)
        _array("b", b, dtype, (n,))
        _activation(act_id, alpha)
        _output("y", y, dtype, (B, n))
        if z is not None:
            _output("z", z, dtype, (B, n), ("y", y))
        self.engine.dense_forward(x, W, b, act_id, alpha, y, z)

    def dense_backward(self, dy, x, W, z, y, act_id, alpha, dx, dW, db):
        dtype = _float_dtype("W", W)
        _array("W", W, dtype, (None, None))
        k, n = W.shape
        B = _rows("x", x, dtype, k)
        _array("dy", dy, dtype, (B, n))
        _derivative_inputs(z, y, act_id, alpha, dtype, (B, n))
        inputs = (("dy", dy), ("x", x), ("W", W), ("z", z), ("y", y))
        if dx is not None:
            _output("dx", dx, dtype, (B, k), *inputs)
        _output("dW", dW, dtype, (k, n), *inputs, ("dx", dx))
        _output("db", db, dtype, (n,), *inputs, ("dx", dx), ("dW", dW))
        self.engine.dense_backward(dy, x, W, z, y, act_id, alpha, dx, dW, db)

    def mlp_forward(self, x, params, layers, out):
        # the batch-1 hot path: every check in one expression (each call costs ~0.1 µs), the
        # detailed checks that name the culprit only when it fails
        entry = _RECORDS.get(id(layers))
        if not (entry is not None and entry[0]() is layers
                and type(params) is np.ndarray and params.dtype in _FLOATS and params.ndim == 1
                and params.shape[0] >= entry[1] and params.flags.c_contiguous
                and type(x) is np.ndarray and x.dtype == params.dtype and x.ndim == 2 and x.shape[1] == entry[2]
                and x.shape[0] and x.flags.c_contiguous
                and type(out) is np.ndarray and out.dtype == params.dtype and out.shape == (x.shape[0], entry[3])
                and out.flags.c_contiguous and out.flags.writeable):
            dtype, n_inputs, n_outputs = _network(params, layers)
            B = _batch_rows("x", x, dtype, n_inputs)
            _fresh_output("out", out, dtype, (B, n_outputs))
        self.engine.mlp_forward(x, params, layers, out)

    def loss(self, loss_id, outputs, targets, grad):
        dtype = _float_dtype("outputs", outputs)
        B = _rows("outputs", outputs, dtype, None)
        _targets("targets", targets, loss_id, dtype, B, outputs.shape[1])
        if grad is not None:
            _output("grad", grad, dtype, outputs.shape, ("outputs", outputs), ("targets", targets))
        return self.engine.loss(loss_id, outputs, targets, grad)

    def sgd_step(self, params, grads, velocity, lr, momentum, nesterov, weight_decay):
        dtype = _float_dtype("params", params)
        _output("params", params, dtype, (None,))
        _array("grads", grads, dtype, params.shape)
        _output("velocity", velocity, dtype, params.shape if momentum else (None,), ("params", params),
                ("grads", grads))
        self.engine.sgd_step(params, grads, velocity, lr, momentum, nesterov, weight_decay)

    def adam_step(self, params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
        dtype = _float_dtype("params", params)
        _output("params", params, dtype, (None,))
        _array("grads", grads, dtype, params.shape)
        _output("m", m, dtype, params.shape, ("params", params), ("grads", grads))
        _output("v", v, dtype, params.shape, ("params", params), ("grads", grads), ("m", m))
        if not 1 <= step <= MAX_STEP:
            raise ValueError(f"step: expected an integer in [1, 2**53] (the 1-based step count), got {step!r}")
        self.engine.adam_step(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled)

    def _train_buffers(self, params, grads, opt_state, layers, hyper):
        network = _network(params, layers)
        if not params.flags.writeable:
            raise ValueError("params: the array is read-only; pass a writeable array")
        _fresh_output("grads", grads, params.dtype, params.shape, ("params", params))
        _optimizer(opt_state, hyper, params)
        if np.may_share_memory(opt_state, grads):
            raise ValueError("opt_state: shares memory with grads; pass a separate array")
        _dropout_step(layers, hyper)
        return network

    def _batch(self, x, targets, loss_id, sample_weight, network):
        """(B, n_out) after checking a training batch against the network."""
        dtype, n_inputs, n_out = network
        B = _batch_rows("x", x, dtype, n_inputs)
        _targets("y", targets, loss_id, dtype, B, n_out)
        _weights(sample_weight, dtype, B)
        return B, n_out

    def mlp_gradient(self, x, targets, params, grads, layers, loss_id, sample_weight=None):
        network = _network(params, layers)
        _fresh_output("grads", grads, params.dtype, params.shape, ("params", params))
        self._batch(x, targets, loss_id, sample_weight, network)
        return self.engine.mlp_gradient(x, targets, params, grads, layers, loss_id, sample_weight)

    def mlp_train_step(self, x, targets, params, grads, opt_state, layers, loss_id, hyper, outputs=None,
                       sample_weight=None):
        network = self._train_buffers(params, grads, opt_state, layers, hyper)
        B, n_out = self._batch(x, targets, loss_id, sample_weight, network)
        if outputs is not None:
            _fresh_output("outputs", outputs, params.dtype, (B, n_out), ("x", x), ("params", params),
                          ("grads", grads))
        return self.engine.mlp_train_step(x, targets, params, grads, opt_state, layers, loss_id, hyper, outputs,
                                          sample_weight)

    def mlp_train_epoch(self, x, targets, order, batch_size, params, grads, opt_state, layers, loss_id, hyper,
                        sample_weight, batch_losses, outputs, penalty_over_weight, epsilon_on_sqrt_v):
        network = self._train_buffers(params, grads, opt_state, layers, hyper)
        n, _ = self._batch(x, targets, loss_id, sample_weight, network)
        m = n if order is None else _order(order, n)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        n_batches = -(-m // min(int(batch_size), m))
        applied = hyper[abi.H_APPLIED]
        if not (0 <= applied <= MAX_STEP - n_batches and applied == int(applied)):
            raise ValueError(f"hyper[H_APPLIED]: expected the step count, an integer in [0, 2**53 - {n_batches}] "
                             f"(this epoch takes {n_batches} steps), got {applied!r}")
        _fresh_output("batch_losses", batch_losses, np.dtype(np.float64), (n_batches,), ("hyper", hyper))
        if outputs is not None:
            _fresh_output("outputs", outputs, params.dtype, (m, network[2]), ("params", params), ("grads", grads),
                          ("opt_state", opt_state), ("x", x), ("targets", targets))
        for name, flag in (("penalty_over_weight", penalty_over_weight), ("epsilon_on_sqrt_v", epsilon_on_sqrt_v)):
            if not isinstance(flag, (bool, np.bool_)):
                raise ValueError(f"{name}: expected True or False, got {flag!r}")
        return self.engine.mlp_train_epoch(x, targets, order, int(batch_size), params, grads, opt_state, layers,
                                           loss_id, hyper, sample_weight, batch_losses, outputs,
                                           bool(penalty_over_weight),
                                           bool(epsilon_on_sqrt_v))

    @staticmethod
    def _embedding(layers, vocab_size, context):
        """The table (vocab_size × dim, dim = n_inputs / context) must sit before the first layer."""
        _, n_inputs, _, first_offset = _RECORDS[id(layers)][1:5]
        if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or not (
                context >= 1 and n_inputs % context == 0):
            raise ValueError(f"context: expected a positive divisor of the first layer's {n_inputs} inputs, "
                             f"got {context!r}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
            raise ValueError(f"vocab_size: expected a positive integer, got {vocab_size!r}")
        dim = n_inputs // context
        if vocab_size * dim > first_offset:
            raise ValueError(f"vocab_size: a table of {vocab_size} × {dim} does not fit before the first layer "
                             f"(offset {first_offset})")

    def _tokens(self, tokens, layers, vocab_size):
        """Rows of (B >= 1, context) int64 token ids in [0, vocab_size) for this network's table."""
        if type(tokens) is not np.ndarray or tokens.dtype != np.int64 or tokens.ndim != 2 or not tokens.size \
                or not tokens.flags.c_contiguous:
            _array("x", tokens, np.dtype(np.int64), (None, None))
            raise ValueError(f"x: expected at least one row of token ids, got shape {tokens.shape}")
        self._embedding(layers, vocab_size, tokens.shape[1])
        if _outside(tokens, vocab_size):
            raise ValueError(f"x: token ids must be in [0, {vocab_size}), got values in "
                             f"[{tokens.min()}, {tokens.max()}]")
        return tokens.shape[0]

    def embedding_forward(self, tokens, params, layers, vocab_size, out):
        dtype, _, n_outputs = _network(params, layers)
        B = self._tokens(tokens, layers, vocab_size)
        _fresh_output("out", out, dtype, (B, n_outputs))
        self.engine.embedding_forward(tokens, params, layers, vocab_size, out)

    def embedding_train_step(self, tokens, labels, params, grads, opt_state, layers, hyper, vocab_size,
                             outputs=None):
        dtype, _, n_out = self._train_buffers(params, grads, opt_state, layers, hyper)
        B = self._tokens(tokens, layers, vocab_size)
        _labels("y", labels, B, n_out)
        if outputs is not None:
            _fresh_output("outputs", outputs, dtype, (B, n_out), ("params", params), ("grads", grads))
        return self.engine.embedding_train_step(tokens, labels, params, grads, opt_state, layers, hyper,
                                                vocab_size, outputs)

    def embedding_generate(self, params, layers, vocab_size, context, uniforms, temperature, boundary,
                           tokens, lengths):
        _, _, n_outputs = _network(params, layers)
        self._embedding(layers, vocab_size, context)
        _sampling(n_outputs, vocab_size, uniforms, temperature, boundary, tokens, lengths)
        self.engine.embedding_generate(params, layers, vocab_size, context, uniforms, temperature, boundary,
                                       tokens, lengths)

    def quantized_dense_forward(self, x, qbuffer, qlayers, layer, y, acc=None):
        _, _, kind = _quantized(qbuffer, qlayers)
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < len(qlayers):
            raise ValueError(f"layer: expected a layer index in [0, {len(qlayers)}), got {layer!r}")
        fan_in, fan_out = int(qlayers[layer]["fan_in"]), int(qlayers[layer]["fan_out"])
        B = _rows("x", x, _F32, fan_in)
        _output("y", y, _F32, (B, fan_out), ("x", x), ("qbuffer", qbuffer))
        if acc is not None:
            if kind != QUANT_INT8:
                raise ValueError("acc: a bf16 layer has no integer accumulations; pass None")
            _output("acc", acc, np.dtype(np.int32), (B, fan_out), ("x", x), ("y", y), ("qbuffer", qbuffer))
        self.engine.quantized_dense_forward(x, qbuffer, qlayers, int(layer), y, acc)

    def quantized_mlp_forward(self, x, qbuffer, qlayers, out):
        # the batch-1 hot path, as mlp_forward: every check in one expression, the detailed ones
        # (which name the culprit) only when it fails
        entry = _QRECORDS.get(id(qlayers))
        if not (entry is not None and entry[0]() is qlayers
                and type(qbuffer) is np.ndarray and qbuffer.dtype == _U8 and qbuffer.ndim == 1
                and qbuffer.shape[0] >= entry[1] and qbuffer.flags.c_contiguous
                and type(x) is np.ndarray and x.dtype == _F32 and x.ndim == 2 and x.shape[1] == entry[2]
                and x.shape[0] and x.flags.c_contiguous
                and type(out) is np.ndarray and out.dtype == _F32 and out.shape == (x.shape[0], entry[3])
                and out.flags.c_contiguous and out.flags.writeable):
            n_inputs, n_outputs, _ = _quantized(qbuffer, qlayers)
            B = _batch_rows("x", x, _F32, n_inputs)
            _fresh_output("out", out, _F32, (B, n_outputs), ("qbuffer", qbuffer))
        self.engine.quantized_mlp_forward(x, qbuffer, qlayers, out)

    def quantized_embedding_generate(self, embeddings, qbuffer, qlayers, context, uniforms, temperature, boundary,
                                     tokens, lengths):
        n_inputs, n_outputs, _ = _quantized(qbuffer, qlayers)
        _array("embeddings", embeddings, _F32, (None, None))
        vocab_size, dim = embeddings.shape
        if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or not (
                context >= 1 and dim >= 1 and context * dim == n_inputs):
            raise ValueError(f"context: expected context x embedding width ({dim}) = the first layer's {n_inputs} "
                             f"inputs, got {context!r}")
        _sampling(n_outputs, vocab_size, uniforms, temperature, boundary, tokens, lengths)
        self.engine.quantized_embedding_generate(embeddings, qbuffer, qlayers, int(context), uniforms,
                                                 float(temperature), int(boundary), tokens, lengths)


    def sparse_dense_forward(self, indptr, indices, values, W, b, act_id, alpha, y, z=None):
        dtype = _float_dtype("W", W)
        _array("W", W, dtype, (None, None))
        k, n = W.shape
        if k == 0 or n == 0:
            raise ValueError(f"W: expected a non-empty array, got shape {W.shape}")
        B = _csr(indptr, indices, values, dtype, k)
        _array("b", b, dtype, (n,))
        _activation(act_id, alpha)
        _output("y", y, dtype, (B, n), ("W", W), ("X.data", values))
        if z is not None:
            _output("z", z, dtype, (B, n), ("y", y), ("W", W), ("X.data", values))
        self.engine.sparse_dense_forward(indptr, indices, values, W, b, act_id, alpha, y, z)

    def sparse_mlp_forward(self, indptr, indices, values, params, layers, out):
        # a sparse predict's hot path: the network and out in one expression (as mlp_forward),
        # the CSR's contents (what keeps the gather inside W0) always
        entry = _RECORDS.get(id(layers))
        if entry is not None and entry[0]() is layers and type(params) is np.ndarray and params.dtype in _FLOATS \
                and params.ndim == 1 and params.shape[0] >= entry[1] and params.flags.c_contiguous:
            dtype, n_inputs, n_outputs = params.dtype, entry[2], entry[3]
        else:
            dtype, n_inputs, n_outputs = _network(params, layers)
        B = _csr(indptr, indices, values, dtype, n_inputs)
        _fresh_output("out", out, dtype, (B, n_outputs), ("params", params), ("X.data", values))
        self.engine.sparse_mlp_forward(indptr, indices, values, params, layers, out)

    def sparse_dense_backward(self, dy, indptr, indices, values, z, y, act_id, alpha, rows, dW_rows, db):
        dtype = _float_dtype("dy", dy)
        B, n = _rows("dy", dy, dtype, None), dy.shape[1]
        if _csr(indptr, indices, values, dtype, np.iinfo(np.int64).max) != B:
            raise ValueError(f"X: expected {B} rows (as dy), got {indptr.shape[0] - 1}")
        _derivative_inputs(z, y, act_id, alpha, dtype, (B, n))
        _array("rows", rows, _INT64, (None,))
        if not np.array_equal(rows, np.unique(indices)):  # the kernels look every index up in rows
            raise ValueError(f"rows: expected the sorted distinct column indices of X "
                             f"(numpy.unique(X.indices)), got {rows.shape[0]} other values")
        inputs = (("dy", dy), ("X.data", values), ("z", z), ("y", y))
        _output("dW_rows", dW_rows, dtype, (rows.shape[0], n), *inputs)
        _output("db", db, dtype, (n,), *inputs, ("dW_rows", dW_rows))
        self.engine.sparse_dense_backward(dy, indptr, indices, values, z, y, act_id, alpha, rows, dW_rows, db)

    def sparse_train_step(self, indptr, indices, values, targets, params, grads, opt_state, layers, loss_id,
                          hyper, outputs=None, sample_weight=None):
        dtype, n_features, n_out = _network(params, layers)
        if len(layers) < 2:
            raise ValueError("layers: the sparse training step needs a dense layer after the sparse first "
                             "layer, got a network of one layer")
        if _RECORDS[id(layers)][5]:
            raise ValueError(f"layers: the sparse training step has no dropout; got dropout rates "
                             f"{layers['dropout'].tolist()} (train on dense input, or without dropout)")
        if not params.flags.writeable:
            raise ValueError("params: the array is read-only; pass a writeable array")
        _fresh_output("grads", grads, dtype, params.shape, ("params", params))
        _optimizer(opt_state, hyper, params, adagrad=True)
        if layers[0]["l1"] or layers[0]["l2"]:
            raise ValueError(f"layers[0]: the sparse first layer takes no kernel penalty (its lazy update moves "
                             f"only the batch's rows; a penalty on every row would make every step dense), got "
                             f"l1={layers[0]['l1']!r}, l2={layers[0]['l2']!r}")
        if np.may_share_memory(opt_state, grads):
            raise ValueError("opt_state: shares memory with grads; pass a separate array")
        B = _csr(indptr, indices, values, dtype, n_features)
        _targets("y", targets, loss_id, dtype, B, n_out)
        _weights(sample_weight, dtype, B)
        if outputs is not None:
            _fresh_output("outputs", outputs, dtype, (B, n_out), ("params", params), ("grads", grads))
        return self.engine.sparse_train_step(indptr, indices, values, targets, params, grads, opt_state, layers,
                                             loss_id, hyper, outputs, sample_weight)

    def quantized_sparse_forward(self, indptr, indices, values, table, scales, b, act_id, alpha, y):
        if type(table) is not np.ndarray or table.dtype not in _TABLE_DTYPES:
            raise TypeError("table: expected a numpy array of int8 codes or bf16 bit patterns (uint16), got "
                            + (f"dtype {table.dtype}" if isinstance(table, np.ndarray) else type(table).__name__))
        _array("table", table, table.dtype, (None, None))
        k, n = table.shape
        if k == 0 or n == 0:
            raise ValueError(f"table: expected a non-empty array, got shape {table.shape}")
        B = _csr(indptr, indices, values, _F32, k)
        _array("scales", scales, _F32, (n,))
        _array("b", b, _F32, (n,))
        _activation(act_id, alpha)
        _output("y", y, _F32, (B, n), ("table", table), ("X.data", values), ("scales", scales), ("b", b))
        self.engine.quantized_sparse_forward(indptr, indices, values, table, scales, b, act_id, alpha, y)

    def __getattr__(self, name):
        # everything else an engine module offers (its thread helpers, blas_num_threads) passes
        # through; the contract's functions are all defined above
        return getattr(self.engine, name)
