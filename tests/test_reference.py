"""The oracle against first principles: finite differences and hand-computed optimizer steps."""
import numpy as np
import pytest

from fusedense import abi, reference
from fusedense.activations import BY_ID, get_activation, resolve_alpha
from fusedense.layout import make_layout
from support import record

ACTIVATIONS = [a.name for a in BY_ID]


def finite_difference_grad(f, a, h=1e-6):
    """Central differences of scalar f with respect to every element of a (modified in place)."""
    grad = np.zeros_like(a)
    flat, gflat = a.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return grad


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(1, 3, 2), (5, 9, 7), (4, 17, 3)], ids=["b1", "odd", "wide"])
def test_dense_backward_matches_finite_differences(name, shape, rng):
    B, n_in, n_out = shape
    act = get_activation(name)
    alpha = resolve_alpha(act, None)
    x, W, b = rng.normal(size=(B, n_in)), rng.normal(size=(n_in, n_out)), rng.normal(size=n_out)
    z = x @ W + b
    if not act.rowwise:  # keep every z at least 1e-3 from 0, the kink of relu-like activations
        b += np.where(np.abs(z) < 1e-3, 1e-2, 0).max(axis=0)
    dy = rng.normal(size=(B, n_out))

    def loss():
        return (reference.dense_forward(x, W, b, act, alpha)[0] * dy).sum()

    y, z = reference.dense_forward(x, W, b, act, alpha)
    dx, dW, db = reference.dense_backward(dy, x, W, z, y, act, alpha)
    for got, wrt in ((dx, x), (dW, W), (db, b)):
        np.testing.assert_allclose(got, finite_difference_grad(loss, wrt), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss_id", [abi.LOSS_SPARSE_XENT, abi.LOSS_CATEGORICAL_XENT,
                                     abi.LOSS_BINARY_XENT, abi.LOSS_MSE])
@pytest.mark.parametrize("hidden", ["tanh", "gelu", "elu", "softplus", "silu"])
def test_mlp_backward_matches_finite_differences(loss_id, hidden, rng):
    last = {abi.LOSS_SPARSE_XENT: "softmax", abi.LOSS_CATEGORICAL_XENT: "softmax",
            abi.LOSS_BINARY_XENT: "sigmoid", abi.LOSS_MSE: "tanh"}[loss_id]
    layout, alphas, n = make_layout([5, 7, 3, 4], [hidden, hidden, last])
    params = rng.normal(size=n) * 0.5
    x = rng.normal(size=(3, 5))
    if loss_id == abi.LOSS_SPARSE_XENT:
        targets = np.array([0, 3, 1])
    elif loss_id == abi.LOSS_CATEGORICAL_XENT:
        targets = rng.dirichlet(np.ones(4), size=3)
    else:
        targets = rng.uniform(size=(3, 4))
    _, grads = reference.mlp_loss_and_grad(x, targets, params, record(layout, alphas), loss_id)
    numeric = finite_difference_grad(
        lambda: reference.mlp_loss_and_grad(x, targets, params, record(layout, alphas), loss_id)[0], params)
    np.testing.assert_allclose(grads, numeric, rtol=1e-5, atol=1e-8)


def test_mlp_forward_equals_chain_of_dense_layers(rng):
    layout, alphas, n = make_layout([6, 8, 5, 3], ["relu", "leaky_relu", "softmax"], [None, 0.2, None])
    params = rng.normal(size=n)
    x = rng.normal(size=(4, 6))
    h = x
    for (offset, fan_in, fan_out, act_id), alpha in zip(layout, alphas):
        W = params[offset:offset + fan_in * fan_out].reshape(fan_in, fan_out)
        b = params[offset + fan_in * fan_out:offset + fan_in * fan_out + fan_out]
        h = BY_ID[act_id].forward(h @ W + b, alpha)
    np.testing.assert_allclose(reference.mlp_forward(x, params, record(layout, alphas)), h, rtol=1e-14)


@pytest.mark.parametrize("loss_fn, make_targets", [
    (reference.softmax_cross_entropy, lambda rng: np.array([2, 0, 1, 2])),
    (reference.softmax_cross_entropy_probs, lambda rng: rng.dirichlet(np.ones(3), size=4)),
    (reference.binary_cross_entropy_with_logits, lambda rng: rng.uniform(size=(4, 3))),
    (reference.mean_squared_error, lambda rng: rng.normal(size=(4, 3))),
], ids=["sparse_xent", "prob_xent", "bce", "mse"])
def test_loss_gradient_matches_finite_differences(loss_fn, make_targets, rng):
    logits = rng.normal(size=(4, 3)) * 3
    targets = make_targets(rng)
    _, grad = loss_fn(logits, targets)
    np.testing.assert_allclose(grad, finite_difference_grad(lambda: loss_fn(logits, targets)[0], logits),
                               rtol=1e-6, atol=1e-9)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    loss, grad = reference.softmax_cross_entropy(np.array([[1e4, 0.0, -1e4]]), np.array([1]))
    assert loss == pytest.approx(1e4) and np.isfinite(grad).all()
    np.testing.assert_allclose(grad, [[1.0, -1.0, 0.0]])


def test_sparse_and_onehot_cross_entropy_agree(rng):
    logits, labels = rng.normal(size=(5, 4)), np.array([0, 3, 3, 1, 2])
    sparse = reference.softmax_cross_entropy(logits, labels)
    dense = reference.softmax_cross_entropy_probs(logits, np.eye(4)[labels])
    assert sparse[0] == pytest.approx(dense[0], rel=1e-14)
    np.testing.assert_allclose(sparse[1], dense[1], rtol=1e-14)


def test_sgd_step_matches_hand_computed_values():
    p, g, v = np.array([1.0, -2.0]), np.array([0.5, 0.25]), np.array([0.1, 0.0])
    reference.sgd_step(p, g, v, lr=0.1, momentum=0.9, nesterov=False, weight_decay=0.01)
    # g' = g + 0.01 p = [0.51, 0.23]; v = 0.9 v + g' = [0.6, 0.23]; p -= 0.1 v
    np.testing.assert_allclose(v, [0.6, 0.23])
    np.testing.assert_allclose(p, [1.0 - 0.06, -2.0 - 0.023])


def test_nesterov_sgd_step_matches_hand_computed_values():
    p, g, v = np.array([1.0]), np.array([0.5]), np.array([0.1])
    reference.sgd_step(p, g, v, lr=0.1, momentum=0.9, nesterov=True)
    # v = 0.09 + 0.5 = 0.59; update = g + 0.9 v = 0.5 + 0.531 = 1.031
    np.testing.assert_allclose(p, [1.0 - 0.1031])


def test_plain_sgd_step_ignores_velocity():
    p, g = np.array([1.0, 2.0]), np.array([1.0, -1.0])
    reference.sgd_step(p, g, np.empty(0), lr=0.5)
    np.testing.assert_allclose(p, [0.5, 2.5])


def test_adam_first_step_moves_each_parameter_by_lr():
    # at step 1 the bias-corrected m̂/√v̂ is g/|g| (up to eps): every parameter moves by lr
    p, g = np.array([1.0, -1.0, 3.0]), np.array([0.2, -4.0, 1e-3])
    m, v = np.zeros(3), np.zeros(3)
    reference.adam_step(p, g, m, v, step=1, lr=0.01, eps=1e-12)
    np.testing.assert_allclose(p, [0.99, -0.99, 2.99], rtol=1e-9)
    np.testing.assert_allclose(m, 0.1 * g)
    np.testing.assert_allclose(v, 0.001 * g * g)


def test_adam_second_step_matches_hand_computed_values():
    p, m, v = np.array([1.0]), np.array([0.1 * 0.2]), np.array([0.001 * 0.04])
    reference.adam_step(p, np.array([0.4]), m, v, step=2, lr=0.01, eps=1e-8)
    m2, v2 = 0.9 * 0.02 + 0.1 * 0.4, 0.999 * 4e-5 + 0.001 * 0.16
    m_hat, v_hat = m2 / (1 - 0.81), v2 / (1 - 0.999**2)
    np.testing.assert_allclose(p, [1.0 - 0.01 * m_hat / (np.sqrt(v_hat) + 1e-8)], rtol=1e-12)


def test_adamw_decays_weights_before_the_adam_update():
    p, g = np.array([2.0]), np.array([0.0])
    reference.adam_step(p, g, np.zeros(1), np.zeros(1), step=1, lr=0.1, weight_decay=0.5, decoupled=True)
    np.testing.assert_allclose(p, [2.0 - 0.1 * 0.5 * 2.0])  # zero gradient: only the decay acts


def test_adam_l2_adds_decay_to_the_gradient():
    p, g = np.array([2.0]), np.array([0.0])
    reference.adam_step(p, g, np.zeros(1), np.zeros(1), step=1, lr=0.1, weight_decay=0.5, eps=1e-12)
    np.testing.assert_allclose(p, [1.9])  # g' = 1.0 > 0: one step of size lr


def test_train_step_decreases_the_loss(rng):
    layout, alphas, n = make_layout([4, 16, 3], ["tanh", "softmax"])
    params = rng.normal(size=n) * 0.3
    x, labels = rng.normal(size=(32, 4)), rng.integers(0, 3, 32)
    state = np.zeros((2, n))
    hyper = np.zeros(abi.N_HYPER)
    hyper[[abi.H_OPTIMIZER, abi.H_LR, abi.H_BETA1, abi.H_BETA2, abi.H_EPS]] = abi.OPT_ADAM, 0.05, 0.9, 0.999, 1e-8
    losses = []
    for step in range(1, 80):
        hyper[abi.H_STEP] = step
        losses.append(reference.mlp_train_step(x, labels, params, record(layout, alphas), state, abi.LOSS_SPARSE_XENT, hyper)[0])
    assert losses[-1] < 0.5 * losses[0]
