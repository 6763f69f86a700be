"""Sample weights in the fused losses and the gradient-only call (mlp_gradient), every engine
against the oracle, and the oracle against duplicated rows (an independent way to weight)."""
import numpy as np
import pytest

from fusedense import _backends, abi, reference
from fusedense.layout import make_layout

from support import TOLERANCES, assert_close, make_hyper, record

ENGINES = _backends.backends()
LOSSES = {abi.LOSS_SPARSE_XENT: "softmax", abi.LOSS_CATEGORICAL_XENT: "softmax",
          abi.LOSS_BINARY_XENT: "sigmoid", abi.LOSS_MSE: "tanh"}


def _problem(loss_id, dtype, batch=23, seed=0):
    rng = np.random.default_rng(seed)
    layout, alphas, n = make_layout([7, 12, 4], ["relu", LOSSES[loss_id]])
    params = (rng.normal(size=n) * 0.4).astype(dtype)
    x = rng.normal(size=(batch, 7)).astype(dtype)
    if loss_id == abi.LOSS_SPARSE_XENT:
        targets = rng.integers(0, 4, batch).astype(np.int64)
    elif loss_id == abi.LOSS_CATEGORICAL_XENT:
        targets = rng.dirichlet(np.ones(4), batch).astype(dtype)
    else:
        targets = rng.random((batch, 4)).astype(dtype)
    weights = rng.integers(0, 4, batch).astype(dtype)
    return x, targets, params, record(layout, alphas), weights


@pytest.mark.parametrize("loss_id", sorted(LOSSES))
def test_oracle_weights_equal_repeated_rows(loss_id):
    x, targets, params, layers, weights = _problem(loss_id, np.float64)
    repeat = weights.astype(int)
    loss, grads = reference.mlp_loss_and_grad(x, targets, params, layers, loss_id, sample_weight=weights)
    dup_loss, dup_grads = reference.mlp_loss_and_grad(np.repeat(x, repeat, 0), np.repeat(targets, repeat, 0),
                                                      params, layers, loss_id)
    scale = repeat.sum() / len(x)  # the weighted mean divides by B, the repeated batch by Σw
    np.testing.assert_allclose(loss, dup_loss * scale, rtol=1e-12)
    np.testing.assert_allclose(grads, dup_grads * scale, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss_id", sorted(LOSSES))
@pytest.mark.parametrize("weighted", [False, True])
def test_mlp_gradient_matches_the_oracle(backend, dtype, loss_id, weighted):
    x, targets, params, layers, weights = _problem(loss_id, dtype)
    weights = weights if weighted else None
    grads = np.full_like(params, np.nan)  # every element must be written
    before = params.copy()
    loss = _backends.load(backend).mlp_gradient(x, targets, params, grads, layers, loss_id, weights)
    f64 = None if weights is None else weights.astype(np.float64)
    want_loss, want_grads = reference.mlp_loss_and_grad(
        x.astype(np.float64), targets if targets.dtype == np.int64 else targets.astype(np.float64),
        params.astype(np.float64), layers, loss_id, sample_weight=f64)
    assert loss == pytest.approx(want_loss, rel=10 * TOLERANCES[dtype]["rtol"])
    assert_close(grads, want_grads, dtype, 4)
    np.testing.assert_array_equal(params, before)  # no update


@pytest.mark.parametrize("backend", ENGINES)
@pytest.mark.parametrize("loss_id", sorted(LOSSES))
def test_weighted_train_step_matches_the_oracle(backend, loss_id):
    dtype = np.float64
    x, targets, params, layers, weights = _problem(loss_id, dtype)
    state = np.zeros((2, params.size))
    hyper = make_hyper("adam", step=1, lr=0.01)
    want_params, want_state = params.copy(), state.copy()
    want_loss, _ = reference.mlp_train_step(x, targets, want_params, layers, want_state, loss_id, hyper,
                                            sample_weight=weights)
    loss = _backends.load(backend).mlp_train_step(x, targets, params, np.empty_like(params), state, layers,
                                                  loss_id, hyper, None, weights)
    assert loss == pytest.approx(want_loss, rel=1e-10)
    assert_close(params, want_params, dtype, 4)
    assert hyper[abi.H_APPLIED] == 1


@pytest.mark.parametrize("backend", ENGINES)
def test_negative_or_non_finite_weights_are_refused_before_the_engine(backend):
    x, targets, params, layers, weights = _problem(abi.LOSS_MSE, np.float32)
    for bad in (-1.0, np.nan, np.inf):
        weights[3] = bad
        with pytest.raises(ValueError, match="sample_weight: expected finite weights >= 0"):
            _backends.load(backend).mlp_gradient(x, targets, params, np.empty_like(params), layers,
                                                 abi.LOSS_MSE, weights)
