"""The public functional API: validate once, allocate outputs, make one backend call."""
from __future__ import annotations

import numpy as np

from . import _backends, abi
from .activations import get_activation, resolve_alpha
from .gate import checked_record
from .validation import (as_float_array, as_labels, check_float_dtype, check_nonempty, check_out,
                         check_shape, common_float_dtype)

__all__ = ["dense", "dense_grad", "activate", "activation_grad", "mlp_forward",
           "softmax_cross_entropy", "binary_cross_entropy", "mean_squared_error",
           "sgd_step", "adam_step", "sparse_dense", "sparse_dense_grad"]


def _rows(name, a, n_features_name, n_features):
    """(B, n) view of an array whose last axis has n_features (leading axes are the batch)."""
    if a.ndim == 0:
        raise ValueError(f"{name}: expected an array with at least 1 dimension, got a 0-d array")
    if a.shape[-1] != n_features:
        raise ValueError(f"{name}: last dimension must equal {n_features_name} = {n_features}, "
                         f"got shape {a.shape}")
    check_nonempty(name, a)
    return a.reshape(-1, n_features)


def _output(out, shape, dtype, *inputs):
    """The array a kernel writes to: ``out`` itself, or a scratch array when ``out`` is
    not C-contiguous or overlaps an input (the kernel would read what it already wrote)."""
    if out is None:
        return np.empty(shape, dtype), None
    check_out(out, shape, dtype)
    if not out.flags.c_contiguous:
        return np.empty(shape, dtype), out
    for a in inputs:
        if a is not None and np.may_share_memory(out, a):
            return np.empty(shape, dtype), out
    return out, None


def _finish(result, out):
    if out is None:
        return result
    out[...] = result
    return out


def dense(x, W, b=None, activation="relu", alpha=None, backend=None, out=None,
          return_preactivation=False):
    """``y = activation(x @ W + b)`` in one fused pass.

    x: (..., in_features); W: (in_features, out_features); b: (out_features,) or None.
    With ``return_preactivation=True`` returns ``(y, z)`` where ``z = x @ W + b`` (for training).
    """
    act = get_activation(activation)
    alpha = resolve_alpha(act, alpha)
    dtype = common_float_dtype(x=x, W=W, b=b)
    W = as_float_array("W", W, dtype, ndim=2)
    check_nonempty("W", W)
    n_in, n_out = W.shape
    x = as_float_array("x", x, dtype)
    lead = x.shape[:-1]
    x2 = _rows("x", x, "W.shape[0] (in_features)", n_in)
    if b is None:
        b = np.zeros(n_out, dtype)
    else:
        b = as_float_array("b", b, dtype, ndim=1)
        check_shape("b", b, (n_out,), "out_features = W.shape[1]")
    y, user_out = _output(out, lead + (n_out,), dtype, x, W, b)
    z = np.empty_like(y) if return_preactivation else None
    _backends.load(backend).dense_forward(x2, W, b, act.id, alpha, y.reshape(-1, n_out),
                                          None if z is None else z.reshape(-1, n_out))
    y = _finish(y, user_out)
    return (y, z) if return_preactivation else y


def dense_grad(dy, x, W, z=None, y=None, activation="relu", alpha=None, need_dx=True, backend=None):
    """Gradients of a dense layer: returns ``(dx, dW, db)`` (dx is None when need_dx=False).

    dz = dy · act'(z), dW = xᵀ dz, db = Σ dz, dx = dz Wᵀ. Pass ``z`` (the pre-activation) or,
    for activations whose derivative follows from the output (relu, sigmoid, tanh, ...), ``y``.
    """
    act = get_activation(activation)
    alpha = resolve_alpha(act, alpha)
    dtype = common_float_dtype(dy=dy, x=x, W=W, z=z, y=y)
    W = as_float_array("W", W, dtype, ndim=2)
    check_nonempty("W", W)
    n_in, n_out = W.shape
    x = as_float_array("x", x, dtype)
    x2 = _rows("x", x, "W.shape[0] (in_features)", n_in)
    batch_shape = x.shape[:-1] + (n_out,)
    dy = as_float_array("dy", dy, dtype)
    check_shape("dy", dy, batch_shape, "x.shape[:-1] + (out_features,)")
    if z is not None:
        z = as_float_array("z", z, dtype)
        check_shape("z", z, batch_shape, "the pre-activation of this layer")
    if y is not None:
        y = as_float_array("y", y, dtype)
        check_shape("y", y, batch_shape, "the output of this layer")
    if z is None and (y is None or not act.from_output):
        needs = "z" if not act.from_output else "z or y"
        raise ValueError(f"{needs}: activation {act.name!r} needs {needs} to compute its derivative, got none")
    dx = np.empty_like(x) if need_dx else None
    dW = np.empty_like(W)
    db = np.empty(n_out, dtype)
    flat = lambda a: None if a is None else a.reshape(-1, n_out)  # noqa: E731
    _backends.load(backend).dense_backward(flat(dy), x2, W, flat(z), flat(y), act.id, alpha,
                                           None if dx is None else dx.reshape(-1, n_in), dW, db)
    return dx, dW, db


def sparse_dense(X, W, b=None, activation="relu", alpha=None, backend=None, return_preactivation=False):
    """``y = activation(X @ W + b)`` for a SciPy sparse ``X`` (B, in_features), in one pass that
    reads only the rows of W that X's non-zeros name (a gather-sum); X is never densified.
    Its values are cast to W's dtype. Returns y, or (y, z) with ``return_preactivation``."""
    from .sparse import as_csr

    act = get_activation(activation)
    alpha = resolve_alpha(act, alpha)
    W = as_float_array("W", W, common_float_dtype(W=W), ndim=2)
    check_nonempty("W", W)
    n_in, n_out = W.shape
    X = as_csr(X, W.dtype)
    if X.shape[1] != n_in:
        raise ValueError(f"X: expected {n_in} columns (W.shape[0], in_features), got shape {X.shape}")
    b = np.zeros(n_out, W.dtype) if b is None else as_float_array("b", b, W.dtype, ndim=1)
    check_shape("b", b, (n_out,), "out_features = W.shape[1]")
    y = np.empty((X.shape[0], n_out), W.dtype)
    z = np.empty_like(y) if return_preactivation else None
    _backends.load(backend).sparse_dense_forward(X.indptr, X.indices, X.data, W, b, act.id, alpha, y, z)
    return (y, z) if return_preactivation else y


def sparse_dense_grad(dy, X, z=None, y=None, activation="relu", alpha=None, backend=None):
    """Gradients of :func:`sparse_dense`: returns ``(rows, dW_rows, db)``, W's gradient only at
    its rows ``rows`` (the sorted distinct columns of X): ``dW[rows] = dW_rows``, zero elsewhere,
    without a dense dW. Pass z, or y where the derivative follows from the output."""
    from .sparse import as_csr

    act = get_activation(activation)
    alpha = resolve_alpha(act, alpha)
    dtype = common_float_dtype(dy=dy, z=z, y=y)
    dy = as_float_array("dy", dy, dtype, ndim=2)
    X = as_csr(X, dtype)
    z = None if z is None else as_float_array("z", z, dtype, ndim=2)
    y = None if y is None else as_float_array("y", y, dtype, ndim=2)
    rows = np.unique(X.indices)
    dW_rows = np.empty((rows.size, dy.shape[1]), dtype)
    db = np.empty(dy.shape[1], dtype)
    _backends.load(backend).sparse_dense_backward(dy, X.indptr, X.indices, X.data, z, y, act.id, alpha, rows,
                                                  dW_rows, db)
    return rows, dW_rows, db


def activate(z, activation, alpha=None, backend=None, out=None):
    """``activation(z)`` element-wise (row-wise over the last axis for softmax/log_softmax)."""
    act = get_activation(activation)
    alpha = resolve_alpha(act, alpha)
    z = as_float_array("z", z, common_float_dtype(z=z), min_ndim=1)
    check_nonempty("z", z)
    y, user_out = _output(out, z.shape, z.dtype, z)
    two_d = (-1, z.shape[-1])
    _backends.load(backend).activation_forward(z.reshape(two_d), act.id, alpha, y.reshape(two_d))
    return _finish(y, user_out)


def activation_grad(dy, z=None, y=None, activation="relu", alpha=None, backend=None):
    """``dz = dy · ∂activation/∂z``; pass z, or y where the derivative follows from the output."""
    act = get_activation(activation)
    alpha = resolve_alpha(act, alpha)
    dtype = common_float_dtype(dy=dy, z=z, y=y)
    dy = as_float_array("dy", dy, dtype, min_ndim=1)
    check_nonempty("dy", dy)
    if z is not None:
        z = as_float_array("z", z, dtype)
        check_shape("z", z, dy.shape, "same as dy")
    if y is not None:
        y = as_float_array("y", y, dtype)
        check_shape("y", y, dy.shape, "same as dy")
    if z is None and (y is None or not act.from_output):
        needs = "z" if not act.from_output else "z or y"
        raise ValueError(f"{needs}: activation {act.name!r} needs {needs} to compute its derivative, got none")
    dz = np.empty_like(dy)
    two_d = (-1, dy.shape[-1])
    flat = lambda a: None if a is None else a.reshape(two_d)  # noqa: E731
    _backends.load(backend).activation_backward(flat(dy), flat(z), flat(y), act.id, alpha, flat(dz))
    return dz


def mlp_forward(x, params, layout, alphas=None, backend=None, out=None):
    """Runs a whole network over a flat parameter buffer in one call (see fusedense.layout)."""
    dtype = common_float_dtype(x=x, params=params)
    params = as_float_array("params", params, dtype, ndim=1)
    layers = network_record(layout, alphas, params.size)
    x = as_float_array("x", x, dtype, ndim=2)
    _rows("x", x, "layout[0, 1] (fan_in of the first layer)", int(layers[0]["fan_in"]))
    y, user_out = _output(out, (x.shape[0], int(layers[-1]["fan_out"])), dtype, x, params)
    _backends.load(backend).mlp_forward(x, params, layers, y)
    return _finish(y, user_out)


#: Records already built, keyed by the layout's and alphas' bytes and n_params: a caller runs
#: mlp_forward with the same few layouts over and over, and building a record costs more than
#: a batch-1 forward pass.
_RECORDS: dict = {}


def network_record(layout, alphas, n_params):
    """The gate's layer record for a public ``layout`` (n_layers, 4) and ``alphas``."""
    arr = np.asarray(layout)
    alpha_arr = None if alphas is None else np.asarray(alphas)
    key = (arr.dtype.str, arr.shape, arr.tobytes(), n_params,
           None if alpha_arr is None else (alpha_arr.dtype.str, alpha_arr.shape, alpha_arr.tobytes()))
    record = _RECORDS.get(key)
    if record is None:
        record = checked_record(arr, alpha_arr, n_params)
        if len(_RECORDS) >= 256:
            _RECORDS.clear()
        _RECORDS[key] = record
    return record


def softmax_cross_entropy(logits, labels, backend=None):
    """Mean softmax cross-entropy and its gradient ``(softmax − onehot)/B``.

    labels: integer class ids of shape (B,), or probability targets of shape (B, C).
    """
    logits = as_float_array("logits", logits, common_float_dtype(logits=logits), ndim=2)
    check_nonempty("logits", logits)
    B, C = logits.shape
    if np.ndim(labels) == 2:
        targets = as_float_array("labels", labels, logits.dtype, ndim=2)
        check_shape("labels", targets, (B, C), "probability targets like logits")
        return _loss(backend, abi.LOSS_CATEGORICAL_XENT, logits, targets)
    return _loss(backend, abi.LOSS_SPARSE_XENT, logits, as_labels("labels", labels, B, C))


def _loss(backend, loss_id, outputs, targets):
    """(loss, gradient) of a loss over an N-D ``outputs``, through the engine's loss kernel."""
    grad = np.empty_like(outputs)
    two_d = (-1, outputs.shape[-1])
    loss = _backends.load(backend).loss(loss_id, outputs.reshape(two_d),
                                        targets if targets.dtype == np.int64 else targets.reshape(two_d),
                                        grad.reshape(two_d))
    return loss, grad


def _targets_like(name, pred, targets):
    targets = as_float_array("targets", targets, pred.dtype)
    check_shape("targets", targets, pred.shape, f"same as {name}")
    return targets


def binary_cross_entropy(logits, targets, backend=None):
    """Mean sigmoid cross-entropy from logits and its gradient ``(σ(logits) − t)/size``."""
    logits = as_float_array("logits", logits, common_float_dtype(logits=logits, targets=targets), min_ndim=1)
    check_nonempty("logits", logits)
    return _loss(backend, abi.LOSS_BINARY_XENT, logits, _targets_like("logits", logits, targets))


def mean_squared_error(y, targets, backend=None):
    """Mean squared error over all elements and its gradient ``2 (y − t)/size``."""
    y = as_float_array("y", y, common_float_dtype(y=y, targets=targets), min_ndim=1)
    check_nonempty("y", y)
    return _loss(backend, abi.LOSS_MSE, y, _targets_like("y", y, targets))


def _inplace_buffer(name, a, dtype, shape=None):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array (updated in place), got {type(a).__name__}")
    check_float_dtype(name, a)
    if a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} like params, got dtype {a.dtype}")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape} like params, got shape {a.shape}")
    if not a.flags.c_contiguous or not a.flags.writeable:
        raise ValueError(f"{name}: must be a writeable C-contiguous array to be updated in place")
    return a.reshape(-1)


def _hyper(name, value, low=0.0, high=None, low_inclusive=True):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}") from None
    ok = (value >= low if low_inclusive else value > low) and (high is None or value < high)
    if not np.isfinite(value) or not ok:
        bound = f"{'>=' if low_inclusive else '>'} {low}" + (f" and < {high}" if high is not None else "")
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")
    return value


def sgd_step(params, grads, velocity=None, lr=0.01, momentum=0.0, nesterov=False,
             weight_decay=0.0, backend=None):
    """SGD in place on a flat buffer (PyTorch semantics; ``velocity`` needed when momentum > 0)."""
    params = _inplace_buffer("params", params, params.dtype if isinstance(params, np.ndarray) else None)
    grads = _grads_like(grads, params)
    lr, momentum = _hyper("lr", lr, 0, low_inclusive=False), _hyper("momentum", momentum, 0, 1)
    weight_decay = _hyper("weight_decay", weight_decay)
    if velocity is None:
        if momentum:
            raise ValueError("velocity: momentum > 0 needs a velocity buffer (np.zeros_like(params))")
        velocity = np.empty(0, params.dtype)  # never read without momentum
    else:
        velocity = _inplace_buffer("velocity", velocity, params.dtype, params.shape)
    _check_separate(params=params, grads=grads, velocity=velocity)
    _backends.load(backend).sgd_step(params, grads, velocity, lr, momentum, bool(nesterov), weight_decay)


def adam_step(params, grads, m, v, step, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0, decoupled=False, backend=None):
    """Adam (or AdamW with ``decoupled=True``) in place on a flat buffer; ``step`` counts from 1.

    In float32 on AVX-512 the cython backend divides by √v̂ + ε through a reciprocal
    estimate refined by one Newton step: about 1 ulp, so the last bit can differ between
    machines (float64 and the other backends divide exactly)."""
    params = _inplace_buffer("params", params, params.dtype if isinstance(params, np.ndarray) else None)
    grads = _grads_like(grads, params)
    m = _inplace_buffer("m", m, params.dtype, params.shape)
    v = _inplace_buffer("v", v, params.dtype, params.shape)
    _check_separate(params=params, grads=grads, m=m, v=v)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step: expected an integer >= 1 (the 1-based step count), got {step!r}")
    lr = _hyper("lr", lr, 0, low_inclusive=False)
    beta1, beta2 = _hyper("beta1", beta1, 0, 1), _hyper("beta2", beta2, 0, 1)
    eps, weight_decay = _hyper("eps", eps, 0, low_inclusive=False), _hyper("weight_decay", weight_decay)
    _backends.load(backend).adam_step(params, grads, m, v, int(step), lr, beta1, beta2, eps,
                                      weight_decay, bool(decoupled))


def _grads_like(grads, params):
    grads = as_float_array("grads", grads, params.dtype)
    if grads.dtype != params.dtype:
        raise TypeError(f"grads: expected dtype {params.dtype} like params, got dtype {grads.dtype}")
    if grads.size != params.size:
        raise ValueError(f"grads: expected {params.size} elements like params, got shape {grads.shape}")
    return grads.reshape(-1)


def _check_separate(**buffers):
    """Optimizer buffers are updated in place element by element; if two of them share memory
    the result depends on the order of the updates, so it would differ between backends."""
    names = list(buffers)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if np.may_share_memory(buffers[a], buffers[b]):
                raise ValueError(f"{b}: shares memory with {a}; pass separate arrays")
