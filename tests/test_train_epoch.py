"""mlp_train_epoch (one engine call per epoch) against the same epoch as one mlp_train_step a
batch, written out here: same batches, per-batch weights rescaled to sum to the batch's rows,
scikit-learn's penalty scale 1/Σw, Adam's ε on √v; on every engine, float64 and float32."""
import math
import warnings

import numpy as np
import pytest

import fusedense as fd
from fusedense import _backends, abi

ENGINES = _backends.backends()


def _problem(dtype, loss_id, n=53, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(dtype)
    if loss_id == abi.LOSS_SPARSE_XENT:
        targets = rng.integers(0, 4, n).astype(np.int64)
    else:
        targets = rng.standard_normal((n, 4)).astype(dtype)
    weights = rng.uniform(0, 3, n).astype(dtype)
    weights[:7] = 0  # a batch of zero weights (sums to 0: the whole batch contributes nothing)
    return x, targets, weights, rng.permutation(n)


def _net(backend, dtype, loss_id, optimizer):
    out = "softmax" if loss_id == abi.LOSS_SPARSE_XENT else "identity"
    net = fd.MLP([6, 9, 4], ["tanh", out], random_state=1, dtype=dtype, backend=backend)
    net.penalties = [[0.0, 0.3], [0.0, 0.3]]
    net.set_optimizer(optimizer)
    return net


def _by_steps(net, x, targets, loss_id, batch_size, order, weights, over_weight, sqrt_v):
    """The epoch as separate steps: the per-batch hyper values set by hand."""
    rows_visited = np.arange(len(x)) if order is None else order
    base_eps, base_scale = net._hyper[abi.H_EPS], net._hyper[abi.H_PENALTY_SCALE]
    losses = []
    for start in range(0, len(rows_visited), batch_size):
        rows = rows_visited[start:start + batch_size]
        w, total = None, float(len(rows))
        if weights is not None:
            total = float(weights[rows].astype(np.float64).sum())
            w = (weights[rows].astype(np.float64) * (len(rows) / total if total > 0 else 0.0)).astype(x.dtype)
        step = net.step + 1
        if sqrt_v:
            net._hyper[abi.H_EPS] = base_eps / math.sqrt(1 - net._hyper[abi.H_BETA2] ** step)
        net._hyper[abi.H_PENALTY_SCALE] = (base_scale / total if total > 0 else 0.0) if over_weight else base_scale
        losses.append(net.fused_step(np.ascontiguousarray(x[rows]), np.ascontiguousarray(targets[rows]), loss_id,
                                     sample_weight=w))
    net._hyper[abi.H_EPS], net._hyper[abi.H_PENALTY_SCALE] = base_eps, base_scale
    return losses


CONFIGS = {  # optimizer, loss, order shuffled, sample weights, penalty over weight, ε on √v
    "adam-xent-shuffled-weighted-sklearn": ("adam", abi.LOSS_SPARSE_XENT, True, True, True, True),
    "adam-mse-stored-order": ("adam", abi.LOSS_MSE, False, False, False, False),
    "sgd-momentum-xent-weighted": (fd.optimizers.SGD(0.05, 0.9, True), abi.LOSS_SPARSE_XENT, True, True, True, False),
    "sgd-plain-mse-shuffled": (fd.optimizers.SGD(0.05), abi.LOSS_MSE, True, False, True, False),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("backend", ENGINES)
def test_an_epoch_call_is_the_same_steps_one_call_each(backend, config, dtype):
    optimizer, loss_id, shuffled, weighted, over_weight, sqrt_v = CONFIGS[config]
    x, targets, weights, order = _problem(dtype, loss_id)
    order = order if shuffled else None
    weights = weights if weighted else None
    epoch, steps = (_net(backend, dtype, loss_id, optimizer) for _ in range(2))
    for _ in range(2):  # two epochs: the step count and Adam's moments carry over
        mean = epoch.fused_epoch(x, targets, loss_id, 10, order, weights, over_weight, sqrt_v)
        losses = _by_steps(steps, x, targets, loss_id, 10, order, weights, over_weight, sqrt_v)
        rows = np.diff(np.r_[0:len(x):10, len(x)])
        tol = 1e-12 if dtype == np.float64 else 2e-5
        np.testing.assert_allclose(mean, np.dot(losses, rows) / len(x), rtol=tol)
        np.testing.assert_allclose(epoch.params, steps.params, rtol=tol, atol=tol)
        np.testing.assert_allclose(epoch.opt_state, steps.opt_state, rtol=tol, atol=tol)
        assert epoch.step == steps.step
    assert epoch.step == 12  # 6 batches (5 of 10 rows, one of 3) a pass
    # the hyper vector's own values come back as they were
    np.testing.assert_array_equal(epoch._hyper[[abi.H_EPS, abi.H_PENALTY_SCALE]],
                                  steps._hyper[[abi.H_EPS, abi.H_PENALTY_SCALE]])


@pytest.mark.parametrize("backend", ENGINES)
def test_an_epoch_stops_at_the_first_diverging_batch_and_leaves_it_unapplied(backend):
    x, targets, _, _ = _problem(np.float64, abi.LOSS_SPARSE_XENT)
    x[25] = np.nan  # in the third batch of 10
    net, ref = (_net(backend, np.float64, abi.LOSS_SPARSE_XENT, "adam") for _ in range(2))
    with pytest.raises(FloatingPointError, match="batch 3 of 6"):
        net.fused_epoch(x, targets, abi.LOSS_SPARSE_XENT, 10)
    ref.fused_epoch(x[:20], targets[:20], abi.LOSS_SPARSE_XENT, 10)  # the two batches before it
    assert net.step == 2
    np.testing.assert_array_equal(net.params, ref.params)
    np.testing.assert_array_equal(net.opt_state, ref.opt_state)
    losses = np.empty(6)
    loss = net.engine.mlp_train_epoch(x, targets, None, 10, net.params, net.grads, net.opt_state, net.layers,
                                      abi.LOSS_SPARSE_XENT, net._hyper, None, losses, None, False, False)
    assert math.isnan(loss) and np.isfinite(losses[:2]).all() and np.isnan(losses[2:]).all()


def test_the_estimator_runs_an_epoch_in_one_engine_call(monkeypatch):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X, y = X[:300] / 16, y[:300]
    calls = []
    clf = fd.MLPClassifier(max_iter=3, tol=0.0, random_state=0)
    original = fd.MLP.fused_epoch
    monkeypatch.setattr(fd.MLP, "fused_epoch", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    monkeypatch.setattr(fd.MLP, "fused_step", lambda *a, **k: pytest.fail("a per-batch step"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter reached
        clf.fit(X, y)
    assert len(calls) == 3 and len(clf.loss_curve_) == 3
