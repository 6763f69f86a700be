"""Every available backend against the NumPy reference, op by op, for both dtypes."""
import numpy as np
import pytest

import fusedense as fd
from fusedense import _backends, abi, reference
from fusedense.activations import BY_ID, activation_vjp, get_activation, resolve_alpha
from fusedense.layout import make_layout

from support import TOLERANCES, assert_close, make_hyper, record

ACTIVATIONS = [a.name for a in BY_ID]
# (batch, in, out): batch 1, odd sizes, tall and wide, one large enough for blocked/BLAS paths
SHAPES = [(1, 3, 2), (3, 17, 129), (17, 129, 3), (64, 100, 33), (129, 257, 130)]


def layer_inputs(rng, dtype, B, n_in, n_out):
    x = rng.normal(size=(B, n_in))
    W = rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)
    b = rng.normal(size=n_out)
    return x.astype(dtype), W.astype(dtype), b.astype(dtype)


def f64(*arrays):
    return [None if a is None else a.astype(np.float64) for a in arrays]


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dense_forward_matches_reference(backend, dtype, activation, shape, rng):
    x, W, b = layer_inputs(rng, dtype, *shape)
    act = get_activation(activation)
    y, z = fd.dense(x, W, b, activation=activation, backend=backend, return_preactivation=True)
    y_ref, z_ref = reference.dense_forward(*f64(x, W, b), act, resolve_alpha(act, None))
    assert y.dtype == z.dtype == dtype
    assert_close(z, z_ref, dtype)
    assert_close(y, y_ref, dtype)
    np.testing.assert_array_equal(fd.dense(x, W, b, activation=activation, backend=backend), y)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dense_backward_matches_reference(backend, dtype, activation, shape, rng):
    x, W, b = layer_inputs(rng, dtype, *shape)
    act = get_activation(activation)
    alpha = resolve_alpha(act, None)
    y, z = fd.dense(x, W, b, activation=activation, backend="numpy", return_preactivation=True)
    dy = rng.normal(size=y.shape).astype(dtype)
    expected = reference.dense_backward(*f64(dy, x, W, z, y), act, alpha)
    scale = np.sqrt(max(shape))  # sums over the batch or the width grow the rounding error
    for kwargs in ([dict(z=z), dict(y=y)] if act.from_output else [dict(z=z)]):
        dx, dW, db = fd.dense_grad(dy, x, W, activation=activation, backend=backend, **kwargs)
        for got, want in zip((dx, dW, db), expected):
            assert got.dtype == dtype
            assert_close(got, want, dtype, scale)


def test_dense_backward_skips_dx_when_not_needed(backend, rng):
    x, W, b = layer_inputs(rng, np.float64, 4, 5, 3)
    y = fd.dense(x, W, b, backend=backend)
    dx, dW, db = fd.dense_grad(np.ones_like(y), x, W, y=y, need_dx=False, backend=backend)
    assert dx is None and dW.shape == W.shape and db.shape == (3,)


@pytest.mark.parametrize("activation", ["leaky_relu", "elu"])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 2.5])
def test_alpha_reaches_the_kernel(backend, dtype, activation, alpha, rng):
    x, W, b = layer_inputs(rng, dtype, 8, 6, 5)
    act = get_activation(activation)
    y, z = fd.dense(x, W, b, activation=activation, alpha=alpha, backend=backend, return_preactivation=True)
    assert_close(y, act.forward(z.astype(np.float64), alpha), dtype)
    dy = np.ones_like(y)
    _, dW, _ = fd.dense_grad(dy, x, W, y=y, activation=activation, alpha=alpha, backend=backend)
    assert_close(dW, reference.dense_backward(*f64(dy, x, W, z, y), act, alpha)[1], dtype, 4)


def test_non_contiguous_and_fortran_inputs_give_the_same_result(backend, dtype, rng):
    x, W, b = layer_inputs(rng, dtype, 10, 12, 7)
    expected = fd.dense(x, W, b, activation="gelu", backend=backend)
    wide = np.zeros((10, 24), dtype)
    wide[:, ::2] = x
    got = fd.dense(wide[:, ::2], np.asfortranarray(W), b, activation="gelu", backend=backend)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_kernels_match_reference(backend, dtype, activation, rng):
    act = get_activation(activation)
    alpha = resolve_alpha(act, None)
    z = (rng.normal(size=(7, 33)) * 5).astype(dtype)
    z[0, :4] = [-1e4, 1e4, -90, 90]  # saturation, overflow-prone exponentials
    y = fd.activate(z, activation, backend=backend)
    assert_close(y, act.forward(z.astype(np.float64), alpha), dtype)
    dy = rng.normal(size=z.shape).astype(dtype)
    expected = activation_vjp(act, *f64(dy, z), None, alpha)
    assert_close(fd.activation_grad(dy, z=z, activation=activation, backend=backend), expected, dtype)


def test_nan_propagates_like_numpy(backend, dtype, rng):
    x, W, b = layer_inputs(rng, dtype, 3, 4, 5)
    x[1, 2] = np.nan
    y = fd.dense(x, W, b, activation="gelu", backend=backend)
    assert np.isnan(y[1]).all() and np.isfinite(y[[0, 2]]).all()
    z = np.array([[np.nan, 1.0, -np.inf, np.inf]], dtype)
    for name in ("relu", "sigmoid", "tanh", "gelu_erf", "softplus"):
        with np.errstate(invalid="ignore"):  # inf - inf inside the reference forms
            got = fd.activate(z, name, backend=backend)
        assert np.isnan(got[0, 0]), name


@pytest.mark.parametrize("batch", [1, 5, 64, 300])
def test_mlp_forward_equals_chain_of_dense_calls(backend, dtype, batch, rng):
    acts = ["relu", "gelu", "tanh", "softmax"]
    layout, alphas, n = make_layout([37, 64, 19, 33, 10], acts)
    params = (rng.normal(size=n) * 0.2).astype(dtype)
    x = rng.normal(size=(batch, 37)).astype(dtype)
    out = fd.mlp_forward(x, params, layout, alphas, backend=backend)
    h = x
    for (W, b), act in zip(fd.layer_views(params, layout), acts):
        h = fd.dense(h, W, b, activation=act, backend=backend)
    assert_close(out, h, dtype, 4)
    assert_close(out, reference.mlp_forward(*f64(x, params), record(layout, alphas)), dtype, 4)


def test_softmax_xent_matches_reference(backend, dtype, rng):
    logits = (rng.normal(size=(33, 7)) * 4).astype(dtype)
    labels = rng.integers(0, 7, 33)
    loss, grad = fd.softmax_cross_entropy(logits, labels, backend=backend)
    loss_ref, grad_ref = reference.softmax_cross_entropy(logits.astype(np.float64), labels)
    assert loss == pytest.approx(loss_ref, rel=TOLERANCES[dtype]["rtol"])
    assert grad.dtype == dtype
    assert_close(grad, grad_ref, dtype)


@pytest.mark.parametrize("momentum, nesterov, weight_decay", [(0.0, False, 0.0), (0.9, False, 0.01), (0.9, True, 0.0)])
def test_sgd_step_matches_reference(backend, dtype, momentum, nesterov, weight_decay, rng):
    p, g, v = (rng.normal(size=1001).astype(dtype) for _ in range(3))
    expected = [a.astype(np.float64) for a in (p, g, v)]
    reference.sgd_step(expected[0], expected[1], expected[2], 0.1, momentum, nesterov, weight_decay)
    fd.sgd_step(p, g, v, lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, backend=backend)
    assert_close(p, expected[0], dtype)
    if momentum:
        assert_close(v, expected[2], dtype)


@pytest.mark.parametrize("weight_decay, decoupled", [(0.0, False), (0.01, False), (0.01, True)])
def test_adam_step_matches_reference(backend, dtype, weight_decay, decoupled, rng):
    p, g = rng.normal(size=1001).astype(dtype), rng.normal(size=1001).astype(dtype)
    m, v = (rng.normal(size=1001) * 0.1).astype(dtype), rng.uniform(size=1001).astype(dtype)
    expected = [a.astype(np.float64) for a in (p, g, m, v)]
    reference.adam_step(*expected, 3, 0.01, 0.9, 0.999, 1e-8, weight_decay, decoupled)
    fd.adam_step(p, g, m, v, 3, lr=0.01, weight_decay=weight_decay, decoupled=decoupled, backend=backend)
    for got, want in zip((p, m, v), (expected[0], expected[2], expected[3])):
        assert_close(got, want, dtype)


def test_adam_flushes_moments_that_decay_below_normal_range(compiled_backend, dtype):
    """A zero gradient decays m by beta1 each step; the compiled kernels set a moment that falls
    below the smallest normal number to zero (denormal arithmetic is ~100x slower), and still
    let NaN through. The update differs from the oracle's by less than lr·tiny/eps."""
    tiny = np.finfo(dtype).tiny
    p = np.array([1.0, 1.0, 1.0, 1.0], dtype)
    g = np.array([0.0, 0.0, 0.0, np.nan], dtype)
    m = np.array([tiny, -tiny, 1.0, 0.0], dtype)
    v = np.array([tiny, tiny, 1.0, 0.0], dtype)
    expected = [a.astype(np.float64) for a in (p, g, m, v)]
    reference.adam_step(*expected, 3, 0.01, 0.9, 0.999, 1e-8)
    fd.adam_step(p, g, m, v, 3, lr=0.01, backend=compiled_backend)
    np.testing.assert_array_equal(m[:2], 0.0)
    np.testing.assert_array_equal(v[:2], 0.0)
    assert np.isnan(p[3]) and np.isnan(m[3]) and np.isnan(v[3])
    assert_close(p[:3], expected[0][:3], dtype)
    assert_close(m[2:3], expected[2][2:3], dtype)


LOSS_SETUPS = {  # loss → (last activation, targets)
    abi.LOSS_SPARSE_XENT: ("softmax", lambda rng, B, C: rng.integers(0, C, B)),
    abi.LOSS_CATEGORICAL_XENT: ("softmax", lambda rng, B, C: rng.dirichlet(np.ones(C), size=B)),
    abi.LOSS_BINARY_XENT: ("sigmoid", lambda rng, B, C: (rng.uniform(size=(B, C)) > 0.5).astype(float)),
    abi.LOSS_MSE: ("identity", lambda rng, B, C: rng.normal(size=(B, C))),
}


@pytest.mark.parametrize("loss_id", sorted(LOSS_SETUPS))
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
@pytest.mark.parametrize("batch", [1, 32, 130])
def test_mlp_train_step_matches_reference(backend, dtype, loss_id, optimizer, batch, rng):
    last, make_targets = LOSS_SETUPS[loss_id]
    layout, alphas, n = make_layout([20, 48, 24, 6], ["relu", "tanh", last])
    params = (rng.normal(size=n) * 0.3).astype(dtype)
    x = rng.normal(size=(batch, 20)).astype(dtype)
    targets = make_targets(rng, batch, 6)
    if loss_id != abi.LOSS_SPARSE_XENT:
        targets = targets.astype(dtype)
    n_state = 1 if optimizer == "sgd" else 2
    state = (rng.uniform(size=(n_state, n)) * 0.01).astype(dtype)
    expected_params, expected_state = params.astype(np.float64), state.astype(np.float64)
    hyper = make_hyper("nesterov" if optimizer == "sgd" else optimizer, step=3,
                       lr=0.1 if optimizer == "sgd" else 0.01, momentum=0.9,
                       weight_decay=1e-3 if optimizer == "sgd" else 1e-2)
    targets64 = targets if loss_id == abi.LOSS_SPARSE_XENT else targets.astype(np.float64)
    loss_ref, grads_ref = reference.mlp_train_step(x.astype(np.float64), targets64, expected_params,
                                                   record(layout, alphas), expected_state, loss_id, hyper)
    grads = np.zeros_like(params)
    loss = _backends.load(backend).mlp_train_step(x, targets, params, grads, state, record(layout, alphas), loss_id, hyper)
    assert loss == pytest.approx(loss_ref, rel=10 * TOLERANCES[dtype]["rtol"])
    assert_close(grads, grads_ref, dtype, 4)
    assert_close(params, expected_params, dtype, 4)
    assert_close(state, expected_state, dtype, 4)


@pytest.mark.parametrize("loss_id", sorted(LOSS_SETUPS))
def test_mlp_train_step_reports_the_outputs_before_its_update(backend, dtype, loss_id, rng):
    """outputs= receives the forward pass of the step (the oracle's mlp_forward with the old
    parameters), and asking for it changes nothing else, to the bit."""
    last, make_targets = LOSS_SETUPS[loss_id]
    layout, alphas, n = make_layout([20, 48, 6], ["relu", last])
    params = (rng.normal(size=n) * 0.3).astype(dtype)
    x = rng.normal(size=(37, 20)).astype(dtype)
    targets = make_targets(rng, 37, 6)
    if loss_id != abi.LOSS_SPARSE_XENT:
        targets = targets.astype(dtype)
    expected = reference.mlp_forward(x.astype(np.float64), params.astype(np.float64), record(layout, alphas))
    kernels, hyper = _backends.load(backend), make_hyper("adam", step=2)
    results = []
    for outputs in (None, np.full((37, 6), np.nan, dtype)):
        p, grads, state = params.copy(), np.zeros_like(params), np.zeros((2, n), dtype)
        loss = kernels.mlp_train_step(x, targets, p, grads, state, record(layout, alphas), loss_id, hyper, outputs)
        results.append((loss, p, grads, state))
    assert_close(outputs, expected, dtype)
    assert results[0][0] == results[1][0]
    for without, with_outputs in zip(results[0][1:], results[1][1:]):
        np.testing.assert_array_equal(without, with_outputs)


def test_results_are_identical_across_repeated_calls(backend, rng):
    x, W, b = layer_inputs(rng, np.float32, 300, 200, 150)
    first = fd.dense(x, W, b, activation="silu", backend=backend)
    dy = rng.normal(size=first.shape).astype(np.float32)
    grads = fd.dense_grad(dy, x, W, z=x @ W + b, activation="silu", backend=backend)
    for _ in range(3):
        np.testing.assert_array_equal(fd.dense(x, W, b, activation="silu", backend=backend), first)
        for a, b_ in zip(fd.dense_grad(dy, x, W, z=x @ W + b, activation="silu", backend=backend), grads):
            np.testing.assert_array_equal(a, b_)
