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
microsecond each, because a batch-1 forward pass costs a few.
"""
from __future__ import annotations

import weakref

import numpy as np

from . import abi
from .activations import BY_ID
from .layout import layer_record

__all__ = ["Gate", "checked_record"]

#: Records built by ``layer_record``, by id, with the buffer size they were checked against:
#: the gate accepts only these, so a record cannot be forged or edited past its check.
_RECORDS: "weakref.WeakValueDictionary[int, np.ndarray]" = weakref.WeakValueDictionary()
_RECORD_PARAMS: dict = {}


def checked_record(layout, alphas, n_params, name="layout") -> np.ndarray:
    """``layout_record`` registered with the gate (the only way to make a record it accepts)."""
    record = layer_record(layout, alphas, n_params, name)
    _register(record, n_params)
    return record


def _register(record, n_params):
    key = id(record)
    _RECORDS[key] = record
    _RECORD_PARAMS[key] = n_params
    weakref.finalize(record, _RECORD_PARAMS.pop, key, None)


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _fail_array(name, a, expected):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected {expected}, got {type(a).__name__}")
    raise ValueError(f"{name}: expected {expected}, got an array of shape {a.shape} and dtype {a.dtype}"
                     + ("" if a.flags.c_contiguous else " (not C-contiguous)"))


def _array(name, a, dtype, shape):
    """``a`` must be a C-contiguous ndarray of ``dtype`` and ``shape`` (None entries: any size)."""
    if (type(a) is not np.ndarray or a.dtype is not dtype and a.dtype != dtype
            or not a.flags.c_contiguous or len(a.shape) != len(shape)
            or any(want is not None and got != want for got, want in zip(a.shape, shape))):
        wanted = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        _fail_array(name, a, f"a C-contiguous {dtype} array of shape {wanted}")
    return a


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


def _network(params, layers, name="params"):
    """params' dtype, after checking that ``layers`` is a registered record that fits ``params``."""
    dtype = _float_dtype(name, params)
    if params.ndim != 1 or not params.flags.c_contiguous:
        _fail_array(name, params, "a C-contiguous 1-D float array")
    n_params = _RECORD_PARAMS.get(id(layers)) if _RECORDS.get(id(layers)) is layers else None
    if n_params is None:
        raise TypeError("layers: expected a layer record from fusedense.gate.checked_record, got "
                        + (f"an array of dtype {layers.dtype}" if isinstance(layers, np.ndarray)
                           else type(layers).__name__))
    if params.shape[0] < n_params:
        raise ValueError(f"{name}: the layout needs {n_params} parameters, got an array of {params.shape[0]}")
    return dtype


def _labels(name, labels, n_rows, n_classes):
    _array(name, labels, np.dtype(np.int64), (n_rows,))
    if n_rows and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise ValueError(f"{name}: labels must lie in [0, {n_classes}), got {bad}")


def _targets(name, targets, loss_id, dtype, n_rows, n_out):
    if loss_id == abi.LOSS_SPARSE_XENT:
        _labels(name, targets, n_rows, n_out)
    elif loss_id in (abi.LOSS_CATEGORICAL_XENT, abi.LOSS_BINARY_XENT, abi.LOSS_MSE):
        _array(name, targets, dtype, (n_rows, n_out))
    else:
        raise ValueError(f"loss: expected a loss id in [0, 4), got {loss_id!r}")


def _optimizer(opt_state, hyper, params):
    _array("hyper", hyper, np.dtype(np.float64), (abi.N_HYPER,))
    optimizer = hyper[abi.H_OPTIMIZER]
    if optimizer == abi.OPT_SGD:
        rows = 1
    elif optimizer == abi.OPT_ADAM:
        rows = 2
        if not hyper[abi.H_STEP] >= 1:
            raise ValueError(f"step: Adam's step count must be >= 1, got {hyper[abi.H_STEP]!r}")
    else:
        raise ValueError(f"hyper: unknown optimizer code {optimizer!r}")
    _output("opt_state", opt_state, params.dtype, (rows, params.shape[0]), ("params", params))


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
        inputs = (("x", x), ("W", W), ("b", b))
        _output("y", y, dtype, (B, n), *inputs)
        if z is not None:
            _output("z", z, dtype, (B, n), *inputs, ("y", y))
        self.engine.dense_forward(x, W, b, act_id, alpha, y, z)

    def dense_backward(self, dy, x, W, z, y, act_id, alpha, dx, dW, db):
        dtype = _float_dtype("W", W)
        _array("W", W, dtype, (None, None))
        k, n = W.shape
        B = _rows("x", x, dtype, k)
        _array("dy", dy, dtype, (B, n))
        for name, a in (("z", z), ("y", y)):
            if a is not None:
                _array(name, a, dtype, (B, n))
        _activation(act_id, alpha)
        act = BY_ID[act_id]
        if z is None and (y is None or not act.from_output):
            needs = "z" if not act.from_output else "z or y"
            raise ValueError(f"{needs}: activation {act.name!r} needs {needs} to compute its derivative, got none")
        inputs = (("dy", dy), ("x", x), ("W", W), ("z", z), ("y", y))
        if dx is not None:
            _output("dx", dx, dtype, (B, k), *inputs)
        _output("dW", dW, dtype, (k, n), *inputs, ("dx", dx))
        _output("db", db, dtype, (n,), *inputs, ("dx", dx), ("dW", dW))
        self.engine.dense_backward(dy, x, W, z, y, act_id, alpha, dx, dW, db)

    def mlp_forward(self, x, params, layers, out):
        dtype = _network(params, layers)
        B = _rows("x", x, dtype, int(layers[0]["fan_in"]))
        _output("out", out, dtype, (B, int(layers[-1]["fan_out"])), ("x", x), ("params", params))
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
        if not step >= 1:
            raise ValueError(f"step: expected an integer >= 1 (the 1-based step count), got {step!r}")
        self.engine.adam_step(params, grads, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled)

    def _train_buffers(self, params, grads, opt_state, layers, hyper):
        dtype = _network(params, layers)
        _output("params", params, dtype, (None,))
        _output("grads", grads, dtype, params.shape, ("params", params))
        _optimizer(opt_state, hyper, params)
        if np.may_share_memory(opt_state, grads):
            raise ValueError("opt_state: shares memory with grads; pass a separate array")
        return dtype

    def mlp_train_step(self, x, targets, params, grads, opt_state, layers, loss_id, hyper, outputs=None):
        dtype = self._train_buffers(params, grads, opt_state, layers, hyper)
        B = _rows("x", x, dtype, int(layers[0]["fan_in"]))
        n_out = int(layers[-1]["fan_out"])
        _targets("y", targets, loss_id, dtype, B, n_out)
        if outputs is not None:
            _output("outputs", outputs, dtype, (B, n_out), ("x", x), ("params", params), ("grads", grads))
        return self.engine.mlp_train_step(x, targets, params, grads, opt_state, layers, loss_id, hyper, outputs)

    def _tokens(self, tokens, layers, vocab_size):
        _array("x", tokens, np.dtype(np.int64), (None, None))
        B, context = tokens.shape
        if B == 0 or context == 0 or int(layers[0]["fan_in"]) % context:
            raise ValueError(f"x: expected (n_samples >= 1, context) token ids whose context divides the first "
                             f"layer's {int(layers[0]['fan_in'])} inputs, got shape {tokens.shape}")
        if tokens.min() < 0 or tokens.max() >= vocab_size:
            raise ValueError(f"x: token ids must be in [0, {vocab_size}), got values in "
                             f"[{tokens.min()}, {tokens.max()}]")
        return B

    def _embedding_table(self, params, layers, vocab_size, context):
        """The table sits before the first layer: vocab_size · dim <= layers[0].offset."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
            raise ValueError(f"vocab_size: expected a positive integer, got {vocab_size!r}")
        dim = int(layers[0]["fan_in"]) // context
        if vocab_size * dim > int(layers[0]["offset"]):
            raise ValueError(f"vocab_size: a table of {vocab_size} × {dim} does not fit before the first layer "
                             f"(offset {int(layers[0]['offset'])})")

    def embedding_forward(self, tokens, params, layers, vocab_size, out):
        dtype = _network(params, layers)
        B = self._tokens(tokens, layers, vocab_size)
        self._embedding_table(params, layers, vocab_size, tokens.shape[1])
        _output("out", out, dtype, (B, int(layers[-1]["fan_out"])), ("params", params))
        self.engine.embedding_forward(tokens, params, layers, vocab_size, out)

    def embedding_train_step(self, tokens, labels, params, grads, opt_state, layers, hyper, vocab_size,
                             outputs=None):
        dtype = self._train_buffers(params, grads, opt_state, layers, hyper)
        B = self._tokens(tokens, layers, vocab_size)
        self._embedding_table(params, layers, vocab_size, tokens.shape[1])
        n_out = int(layers[-1]["fan_out"])
        _labels("y", labels, B, n_out)
        if outputs is not None:
            _output("outputs", outputs, dtype, (B, n_out), ("params", params), ("grads", grads))
        return self.engine.embedding_train_step(tokens, labels, params, grads, opt_state, layers, hyper,
                                                vocab_size, outputs)

    def embedding_generate(self, params, layers, vocab_size, context, uniforms, temperature, boundary,
                           tokens, lengths):
        _network(params, layers)
        if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or not (
                context >= 1 and int(layers[0]["fan_in"]) % context == 0):
            raise ValueError(f"context: expected a positive divisor of the first layer's "
                             f"{int(layers[0]['fan_in'])} inputs, got {context!r}")
        self._embedding_table(params, layers, vocab_size, context)
        if int(layers[-1]["fan_out"]) != vocab_size:
            raise ValueError(f"generate: the output layer has {int(layers[-1]['fan_out'])} units; sampling "
                             f"feeds each token back as input, so it needs one unit per vocabulary token "
                             f"({vocab_size})")
        n = _rows("uniforms", uniforms, np.dtype(np.float64), None)
        if not 0 <= boundary < vocab_size:
            raise ValueError(f"boundary: expected a token id in [0, {vocab_size}), got {boundary!r}")
        if not (temperature >= 0 and temperature < np.inf):
            raise ValueError(f"temperature: expected a finite number >= 0, got {temperature!r}")
        _output("tokens", tokens, np.dtype(np.int64), uniforms.shape)
        _output("lengths", lengths, np.dtype(np.int64), (n,), ("tokens", tokens))
        self.engine.embedding_generate(params, layers, vocab_size, context, uniforms, temperature, boundary,
                                       tokens, lengths)

    def __getattr__(self, name):
        # everything else an engine module offers (its thread helpers, blas_num_threads) passes
        # through; the contract's functions are all defined above
        return getattr(self.engine, name)
