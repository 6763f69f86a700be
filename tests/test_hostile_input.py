"""Hostile input that is valid gets the right answer from every backend: NaN/inf propagate as
NumPy does, leading batch dimensions, aliasing outputs, read-only and odd-typed arguments.

(Hostile input that is invalid is in test_validation.py's CASES table.)
Each case is one line: ``(id, call(backend, dtype), expected(dtype))``; both sides are compared
with NaN == NaN, so a NaN that goes missing or appears from nowhere fails.
"""
import numpy as np
import pytest

import fusedense as fd
from fusedense import reference
from fusedense.activations import BY_ID, activation_vjp
from fusedense.layout import make_layout

from support import assert_close, record

NAN, INF = np.nan, np.inf
RNG = np.random.default_rng(7)
X = RNG.normal(size=(4, 3))
W = RNG.normal(size=(3, 2))
SQUARE = RNG.normal(size=(3, 3))
B = RNG.normal(size=2)
DY = RNG.normal(size=(4, 2))
LABELS = np.array([0, 1, 1, 0])
LAYOUT, ALPHAS, N_PARAMS = make_layout([3, 5, 3], ["gelu", "softmax"])
PARAMS = RNG.normal(size=N_PARAMS) * 0.5
# every special value an activation meets, plus saturation and a kink
SPECIALS = np.array([[NAN, INF, -INF, 0.0, -0.0, 1e4, -1e4, 90.0, -90.0, 1e-30]])


def with_nan(a, index):
    a = a.copy()
    a[index] = NAN
    return a


def with_inf(a, index, sign=1):
    a = a.copy()
    a[index] = sign * INF
    return a


def read_only(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def ref(fn, *args):
    """The oracle in float64, quiet about the inf - inf and 0 * inf it is asked to compute."""
    with np.errstate(all="ignore"):
        return fn(*args)


def ref_dense(x, W, b, act="relu"):
    return ref(reference.dense_forward, x, W, b, fd.activations.get_activation(act), 0.0)[0]


def ref_dense_grad(dy, x, W, y, act="relu"):
    return ref(reference.dense_backward, dy, x, W, None, y, fd.activations.get_activation(act), 0.0)


def sgd_result(backend, dtype, grads):
    params = PARAMS.astype(dtype)
    fd.sgd_step(params, grads.astype(dtype), lr=0.1, backend=backend)
    return params


def adam_result(backend, dtype, grads):
    params, m, v = PARAMS.astype(dtype), np.zeros(N_PARAMS, dtype), np.zeros(N_PARAMS, dtype)
    fd.adam_step(params, grads.astype(dtype), m, v, 1, lr=0.1, backend=backend)
    return params, m, v


def adam_expected(grads):
    params, m, v = PARAMS.copy(), np.zeros(N_PARAMS), np.zeros(N_PARAMS)
    ref(reference.adam_step, params, grads, m, v, 1, 0.1)
    return params, m, v


def aliased_dense(backend, dtype):
    x = SQUARE.astype(dtype)
    result = fd.dense(x, SQUARE.astype(dtype), activation="tanh", backend=backend, out=x)
    assert result is x  # the caller's out= array holds the answer
    return result


def aliased_activate(backend, dtype):
    z = X.astype(dtype)
    assert fd.activate(z, "sigmoid", backend=backend, out=z) is z
    return z


def aliased_mlp(backend, dtype):
    x = X.astype(dtype)
    return fd.mlp_forward(x, PARAMS.astype(dtype), LAYOUT, ALPHAS, backend=backend, out=x)


def fortran_out(backend, dtype):
    out = np.zeros((2, 4), dtype).T  # F-contiguous (4, 2)
    fd.dense(X.astype(dtype), W.astype(dtype), B.astype(dtype), backend=backend, out=out)
    return out


NAN_W = with_nan(W, (1, 0))
INF_X = with_inf(X, (2, 1))
GRADS_NAN = with_nan(np.ones(N_PARAMS), 3)
GRADS_INF = with_inf(np.ones(N_PARAMS), 3)
HUGE = (DY * 1e4).astype(np.float32).astype(np.float64)  # exact in both dtypes

# (id, call(backend, dtype), expected in float64): adding a case is one line
ACCEPTED = [
    # NaN / inf propagate exactly where NumPy puts them
    ("dense_nan_in_x", lambda be, dt: fd.dense(with_nan(X, (1, 2)).astype(dt), W.astype(dt), B.astype(dt), backend=be),
     lambda: ref_dense(with_nan(X, (1, 2)), W, B)),
    ("dense_nan_in_W", lambda be, dt: fd.dense(X.astype(dt), NAN_W.astype(dt), B.astype(dt), backend=be),
     lambda: ref_dense(X, NAN_W, B)),
    ("dense_inf_in_x", lambda be, dt: fd.dense(INF_X.astype(dt), W.astype(dt), B.astype(dt), activation="identity", backend=be),
     lambda: ref_dense(INF_X, W, B, "identity")),
    ("dense_inf_in_b_sigmoid", lambda be, dt: fd.dense(X.astype(dt), W.astype(dt), np.array([INF, -INF], dt), activation="sigmoid", backend=be),
     lambda: ref_dense(X, W, np.array([INF, -INF]), "sigmoid")),
    ("dense_grad_nan_in_dy", lambda be, dt: fd.dense_grad(with_nan(DY, (0, 1)).astype(dt), X.astype(dt), W.astype(dt),
                                                          y=np.abs(DY).astype(dt), backend=be),
     lambda: ref_dense_grad(with_nan(DY, (0, 1)), X, W, np.abs(DY))),
    ("dense_grad_inf_in_x", lambda be, dt: fd.dense_grad(DY.astype(dt), INF_X.astype(dt), W.astype(dt), y=np.abs(DY).astype(dt),
                                                         backend=be),
     lambda: ref_dense_grad(DY, INF_X, W, np.abs(DY))),
    ("mlp_nan_in_x", lambda be, dt: fd.mlp_forward(with_nan(X, (3, 0)).astype(dt), PARAMS.astype(dt), LAYOUT, ALPHAS, backend=be),
     lambda: ref(reference.mlp_forward, with_nan(X, (3, 0)), PARAMS, record(LAYOUT, ALPHAS))),
    ("mlp_inf_in_params", lambda be, dt: fd.mlp_forward(X.astype(dt), with_inf(PARAMS, 0).astype(dt), LAYOUT, ALPHAS, backend=be),
     lambda: ref(reference.mlp_forward, X, with_inf(PARAMS, 0), record(LAYOUT, ALPHAS))),
    ("xent_nan_logit", lambda be, dt: fd.softmax_cross_entropy(with_nan(DY, (2, 0)).astype(dt), LABELS, backend=be),
     lambda: ref(reference.softmax_cross_entropy, with_nan(DY, (2, 0)), LABELS)),
    ("xent_inf_logit", lambda be, dt: fd.softmax_cross_entropy(with_inf(DY, (2, 0)).astype(dt), LABELS, backend=be),
     lambda: ref(reference.softmax_cross_entropy, with_inf(DY, (2, 0)), LABELS)),
    ("xent_huge_logits_stay_finite", lambda be, dt: fd.softmax_cross_entropy(HUGE.astype(dt), LABELS, backend=be),
     lambda: ref(reference.softmax_cross_entropy, HUGE, LABELS)),
    ("bce_nan_and_inf", lambda be, dt: fd.binary_cross_entropy(with_inf(with_nan(DY, (0, 0)), (1, 1), -1).astype(dt), np.ones((4, 2), dt)),
     lambda: ref(reference.binary_cross_entropy_with_logits, with_inf(with_nan(DY, (0, 0)), (1, 1), -1), np.ones((4, 2)))),
    ("mse_inf", lambda be, dt: fd.mean_squared_error(with_inf(DY, (0, 0)).astype(dt), np.zeros((4, 2), dt)),
     lambda: ref(reference.mean_squared_error, with_inf(DY, (0, 0)), np.zeros((4, 2)))),
    ("sgd_nan_grad", lambda be, dt: sgd_result(be, dt, GRADS_NAN),
     lambda: PARAMS - 0.1 * GRADS_NAN),
    ("adam_inf_grad", lambda be, dt: adam_result(be, dt, GRADS_INF), lambda: adam_expected(GRADS_INF)),
    # leading batch dimensions (3-d x is supported by dense, dense_grad and activate)
    ("dense_3d_x", lambda be, dt: fd.dense(np.stack([X, -X]).astype(dt), W.astype(dt), B.astype(dt), activation="gelu", backend=be),
     lambda: ref_dense(np.concatenate([X, -X]), W, B, "gelu").reshape(2, 4, 2)),
    ("dense_1d_x", lambda be, dt: fd.dense(X[0].astype(dt), W.astype(dt), B.astype(dt), backend=be),
     lambda: ref_dense(X[:1], W, B)[0]),
    ("dense_grad_3d_x", lambda be, dt: fd.dense_grad(np.stack([DY, DY]).astype(dt), np.stack([X, -X]).astype(dt), W.astype(dt),
                                                     y=np.abs(np.stack([DY, DY])).astype(dt), backend=be),
     lambda: (lambda dx, dW, db: (dx.reshape(2, 4, 3), dW, db))(
         *ref_dense_grad(np.concatenate([DY, DY]), np.concatenate([X, -X]), W, np.abs(np.concatenate([DY, DY]))))),
    ("activate_3d_softmax_rows", lambda be, dt: fd.activate(np.stack([X, X * 3]).astype(dt), "softmax", backend=be),
     lambda: ref(BY_ID[10].forward, np.stack([X, X * 3]), 0.0)),
    # outputs that alias inputs, and awkward out= arrays
    ("dense_out_is_x", aliased_dense, lambda: ref_dense(SQUARE, SQUARE, np.zeros(3), "tanh")),
    ("activate_out_is_z", aliased_activate, lambda: ref(BY_ID[4].forward, X, 0.0)),
    ("mlp_out_is_x", aliased_mlp, lambda: ref(reference.mlp_forward, X, PARAMS, record(LAYOUT, ALPHAS))),
    ("dense_fortran_out", fortran_out, lambda: ref_dense(X, W, B)),
    # read-only, list and odd integer-typed arguments that are valid
    ("dense_read_only_inputs", lambda be, dt: fd.dense(read_only(X.astype(dt)), read_only(W.astype(dt)), read_only(B.astype(dt)),
                                                       backend=be), lambda: ref_dense(X, W, B)),
    ("dense_grad_read_only", lambda be, dt: fd.dense_grad(read_only(DY.astype(dt)), read_only(X.astype(dt)), read_only(W.astype(dt)),
                                                          y=read_only(np.abs(DY).astype(dt)), backend=be),
     lambda: ref_dense_grad(DY, X, W, np.abs(DY))),
    ("mlp_read_only", lambda be, dt: fd.mlp_forward(read_only(X.astype(dt)), read_only(PARAMS.astype(dt)), read_only(LAYOUT),
                                                    read_only(ALPHAS), backend=be),
     lambda: ref(reference.mlp_forward, X, PARAMS, record(LAYOUT, ALPHAS))),
    ("mlp_layout_as_int32_list", lambda be, dt: fd.mlp_forward(X.astype(dt), PARAMS.astype(dt), LAYOUT.astype(np.int32).tolist(),
                                                               backend=be),
     lambda: ref(reference.mlp_forward, X, PARAMS, record(LAYOUT, np.zeros(2)))),
    ("xent_labels_uint8_read_only", lambda be, dt: fd.softmax_cross_entropy(DY.astype(dt), read_only(LABELS.astype(np.uint8)), backend=be),
     lambda: ref(reference.softmax_cross_entropy, DY, LABELS)),
    ("xent_labels_strided", lambda be, dt: fd.softmax_cross_entropy(DY.astype(dt), np.repeat(LABELS, 2)[::2], backend=be),
     lambda: ref(reference.softmax_cross_entropy, DY, LABELS)),
    ("xent_labels_list", lambda be, dt: fd.softmax_cross_entropy(DY.astype(dt), LABELS.tolist(), backend=be),
     lambda: ref(reference.softmax_cross_entropy, DY, LABELS)),
    ("dense_x_int_list", lambda be, dt: fd.dense([[1, 2, 3]], W.astype(dt), backend=be),
     lambda: ref_dense(np.array([[1.0, 2, 3]]), W, np.zeros(2))),
    ("sgd_0d_params", lambda be, dt: (lambda q: (fd.sgd_step(q, np.array(2.0, dt), lr=0.5, backend=be), q)[1])(np.array(1.0, dt)),
     lambda: np.array(0.0)),
]


@pytest.mark.parametrize("call, expected", [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_valid_hostile_input_gives_the_reference_result(backend, dtype, call, expected):
    with np.errstate(all="ignore"):  # the inputs ask for inf - inf; kernels may use NumPy too
        got = call(backend, dtype)
    want = expected()
    as_tuple = lambda v: v if isinstance(v, tuple) else (v,)  # noqa: E731
    for g, w in zip(as_tuple(got), as_tuple(want), strict=True):
        g = np.asarray(g)
        if g.dtype.kind == "f":
            assert g.dtype == dtype or g.ndim == 0
        assert_close(g, np.asarray(w), dtype, scale=10)


@pytest.mark.parametrize("act", BY_ID, ids=lambda a: a.name)
def test_special_values_go_through_every_activation_as_in_numpy(backend, dtype, act):
    """NaN, ±inf, ±0, saturation and denormal-range inputs, forward and backward."""
    z = SPECIALS.astype(dtype)
    dy = np.ones_like(z)
    with np.errstate(all="ignore"):
        y = fd.activate(z, act.name, backend=backend)
        dz = fd.activation_grad(dy, z=z, activation=act.name, backend=backend)
        want_y = act.forward(z.astype(np.float64), act.default_alpha or 0.0)
        want_dz = activation_vjp(act, dy.astype(np.float64), z.astype(np.float64), None, act.default_alpha or 0.0)
    if act.rowwise:  # a NaN anywhere in the row makes the whole row NaN
        assert np.isnan(y).all() and np.isnan(dz).all()
        return
    assert_close(y, want_y, dtype)
    assert_close(dz, want_dz, dtype)
