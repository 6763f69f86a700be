"""Kernel penalties in the layer record (``l1``, ``l2``; Keras's kernel_regularizer, scikit-learn's
alpha): the oracle against an independent formula and finite differences, every engine's fused
step against the oracle (both dtypes, the micro-kernel and the BLAS path, the embedding and the
sparse steps), the gate's checks, and the scale the training step reads from hyper."""
import numpy as np
import pytest

import fusedense as fd
from fusedense import abi, reference
from fusedense import _backends
from fusedense.layout import layer_views, make_layout
from support import assert_close, make_hyper, record

SIZES = [6, 9, 4]
PENALTIES = np.array([[0.03, 0.2], [0.0, 0.05]])  # (l1, l2) per layer: l1 only where it is not zero


def _network(rng, dtype, sizes=SIZES, penalties=PENALTIES, activations=("tanh", "identity")):
    layout, alphas, n_params = make_layout(sizes, list(activations))
    layers = record(layout, alphas, n_params, penalties=penalties)
    params = rng.normal(scale=0.5, size=n_params).astype(dtype)
    x = rng.normal(size=(7, sizes[0])).astype(dtype)
    labels = rng.integers(0, sizes[-1], 7)
    return layers, params, x, labels


def _penalty_by_hand(params, layers, scale=1.0):
    """Σ over layers of scale·(l1·Σ|W| + l2·ΣW²), with the weight matrices cut out by hand."""
    total, offset = 0.0, 0
    for fan_in, fan_out, l1, l2 in zip(layers["fan_in"], layers["fan_out"], layers["l1"], layers["l2"]):
        W = params[offset:offset + fan_in * fan_out].astype(np.float64)
        total += scale * (l1 * np.abs(W).sum() + l2 * (W ** 2).sum())
        offset += (fan_in + 1) * fan_out
    return total


def test_oracle_adds_the_penalty_by_formula_and_only_to_the_kernels(rng):
    layers, params, x, labels = _network(rng, np.float64)
    plain = record(layers[["offset", "fan_in", "fan_out", "activation"]].tolist(), layers["alpha"], params.size)
    loss, grads = reference.mlp_loss_and_grad(x, labels, params, layers, abi.LOSS_SPARSE_XENT, penalty_scale=0.5)
    loss0, grads0 = reference.mlp_loss_and_grad(x, labels, params, plain, abi.LOSS_SPARSE_XENT)
    assert loss - loss0 == pytest.approx(_penalty_by_hand(params, layers, 0.5), rel=1e-12)
    for (W, b), (dW, db), (dW0, db0), layer in zip(layer_views(params, layers), layer_views(grads, layers),
                                                   layer_views(grads0, layers), layers):
        np.testing.assert_array_equal(db, db0)  # biases are never penalised
        np.testing.assert_allclose(dW - dW0, 0.5 * (layer["l1"] * np.sign(W) + 2 * layer["l2"] * W), atol=1e-15)


@pytest.mark.parametrize("loss_id", [abi.LOSS_SPARSE_XENT, abi.LOSS_MSE])
def test_oracle_penalised_gradient_matches_finite_differences(rng, loss_id):
    layers, params, x, labels = _network(rng, np.float64)
    targets = labels if loss_id == abi.LOSS_SPARSE_XENT else rng.normal(size=(7, SIZES[-1]))
    scale = 0.7

    def loss_at(p):
        return reference.mlp_loss_and_grad(x, targets, p, layers, loss_id, penalty_scale=scale)[0]

    _, grads = reference.mlp_loss_and_grad(x, targets, params, layers, loss_id, penalty_scale=scale)
    numeric = np.empty_like(params)
    h = 1e-6  # |W| >> h for these draws: l1's kink at 0 is never crossed
    assert np.abs(params).min() > 10 * h
    for i in range(params.size):
        up, down = params.copy(), params.copy()
        up[i] += h
        down[i] -= h
        numeric[i] = (loss_at(up) - loss_at(down)) / (2 * h)
    np.testing.assert_allclose(grads, numeric, rtol=1e-6, atol=1e-8)


def _step_on(engine_name, layers, params, x, targets, loss_id, hyper, opt_rows):
    engine = _backends.load(engine_name)
    p, grads = params.copy(), np.zeros_like(params)
    state, h = np.zeros((opt_rows, params.size), params.dtype), hyper.copy()
    loss = engine.mlp_train_step(x, targets, p, grads, state, layers, loss_id, h, None, None)
    return loss, p, grads, state


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("sizes", [SIZES, [40, 600, 3]], ids=["micro", "blas"])
def test_every_engine_trains_the_penalty_as_the_oracle(backend, dtype, rng, optimizer, sizes):
    """mlp_train_step with kernel penalties times H_PENALTY_SCALE: the loss, the gradient and the
    update equal the oracle's (a 600-wide layer takes the BLAS backward in the Cython engine)."""
    penalties = np.array([[0.01, 0.3], [0.02, 0.0]])
    layers, params, x, labels = _network(rng, dtype, sizes, penalties)
    hyper = make_hyper(optimizer, lr=0.05, penalty_scale=0.25)
    rows = 1 if optimizer == "sgd" else 2
    expected = _step_on("numpy", layers, params, x, labels, abi.LOSS_SPARSE_XENT, hyper, rows)
    got = _step_on(backend, layers, params, x, labels, abi.LOSS_SPARSE_XENT, hyper, rows)
    assert got[0] == pytest.approx(expected[0], rel=1e-5 if dtype == np.float32 else 1e-12)
    for a, b in zip(got[1:], expected[1:]):
        assert_close(a, b, dtype, scale=10)
    plain = _step_on(backend, layers, params, x, labels, abi.LOSS_SPARSE_XENT, make_hyper(optimizer, lr=0.05,
                                                                                          penalty_scale=0.0), rows)
    assert got[0] - plain[0] == pytest.approx(_penalty_by_hand(params, layers, 0.25), rel=1e-4)


def test_every_engine_gradient_takes_the_record_penalties_as_they_are(backend, dtype, rng):
    layers, params, x, _ = _network(rng, dtype)
    targets = rng.normal(size=(7, SIZES[-1])).astype(dtype)
    engine = _backends.load(backend)
    grads = np.zeros_like(params)
    loss = engine.mlp_gradient(x, targets, params, grads, layers, abi.LOSS_MSE, None)
    expected_loss, expected = reference.mlp_loss_and_grad(x, targets, params, layers, abi.LOSS_MSE)
    assert loss == pytest.approx(expected_loss, rel=1e-5 if dtype == np.float32 else 1e-12)
    assert_close(grads, expected, dtype, scale=10)


@pytest.mark.parametrize("penalties", [[[0.03, 0.0], [0.0, 0.05]], [[0.0, 0.0], [0.02, 0.0]]],
                         ids=["l1-only-then-l2-only", "none-then-l1-only"])
def test_every_engine_sums_each_penalty_alone_over_any_length(backend, dtype, rng, penalties):
    """A layer with only l1 or only l2 (the compiled sums skip the other) and weight counts that
    are not a multiple of the compiled kernels' 8 partial sums (54 and 36 weights): the loss
    adds exactly the penalty by hand, the gradient is the oracle's."""
    penalties = np.array(penalties)
    layers, params, x, _ = _network(rng, dtype, penalties=penalties)
    plain = record(*make_layout(SIZES, ["tanh", "identity"]))
    targets = rng.normal(size=(7, SIZES[-1])).astype(dtype)
    engine = _backends.load(backend)
    grads, plain_grads = np.zeros_like(params), np.zeros_like(params)
    loss = engine.mlp_gradient(x, targets, params, grads, layers, abi.LOSS_MSE, None)
    plain_loss = engine.mlp_gradient(x, targets, params, plain_grads, plain, abi.LOSS_MSE, None)
    assert loss - plain_loss == pytest.approx(_penalty_by_hand(params, layers),
                                              rel=1e-4 if dtype == np.float32 else 1e-10)
    _, expected = reference.mlp_loss_and_grad(x, targets, params, layers, abi.LOSS_MSE)
    assert_close(grads, expected, dtype, scale=10)


def test_every_engine_penalises_the_layers_behind_an_embedding(backend, rng):
    vocab, dim, context = 11, 3, 2
    net = fd.EmbeddingMLP(vocab, dim, context, [5, 4], "tanh", dtype=np.float64, random_state=0, backend="numpy",
                          penalties=[[0.01, 0.1], [0.0, 0.2]])
    tokens = rng.integers(0, vocab, (6, context))
    labels = rng.integers(0, 4, 6)
    hyper = make_hyper("adam", lr=0.01, penalty_scale=0.5)
    results = []
    for name in ("numpy", backend):
        p, grads, state, h = net.params.copy(), np.zeros_like(net.params), np.zeros((2, net.n_params)), hyper.copy()
        loss = _backends.load(name).embedding_train_step(tokens, labels, p, grads, state, net.layers, h, vocab, None)
        results.append((loss, p, grads))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-12)
    for a, b in zip(results[1][1:], results[0][1:]):
        assert_close(a, b, np.float64)
    unpenalised = reference.embedding_loss_and_grad(tokens, labels, net.params, net.layers, vocab, 0.0)[0]
    assert results[0][0] - unpenalised == pytest.approx(_penalty_by_hand(net.params[vocab * dim:],
                                                                         _shifted(net.layers, vocab * dim), 0.5))


def _shifted(layers, by):
    shifted = layers.copy()
    shifted["offset"] -= by
    return shifted


def test_every_engine_penalises_the_dense_layers_above_a_sparse_input(backend, rng):
    sparse = pytest.importorskip("scipy.sparse")
    net = fd.MLP([12, 6, 3], "relu", "identity", dtype=np.float64, random_state=0, backend="numpy",
                 penalties=[[0.0, 0.0], [0.02, 0.3]])
    X = sparse.random(8, 12, density=0.3, random_state=1, format="csr", dtype=np.float64)
    csr = net.as_inputs(X)
    labels = rng.integers(0, 3, 8)
    hyper = make_hyper("sgd", lr=0.1, momentum=0.5, penalty_scale=0.5)
    results = []
    for name in ("numpy", backend):
        p, grads, state, h = net.params.copy(), np.zeros_like(net.params), np.zeros((1, net.n_params)), hyper.copy()
        loss = _backends.load(name).sparse_train_step(csr.indptr, csr.indices, csr.data, labels, p, grads, state,
                                                      net.layers, abi.LOSS_SPARSE_XENT, h, None, None)
        results.append((loss, p))
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-12)
    assert_close(results[1][1], results[0][1], np.float64)
    W1 = net.weights[1][0]
    dense = reference.sparse_loss_and_grad(csr.indptr, csr.indices, csr.data, labels, net.params, net.layers,
                                           abi.LOSS_SPARSE_XENT, penalty_scale=0.0)[0]
    assert results[0][0] - dense == pytest.approx(0.5 * (0.02 * np.abs(W1).sum() + 0.3 * (W1 ** 2).sum()))


def test_the_gate_checks_penalties_and_their_scale(rng):
    layout, alphas, n_params = make_layout(SIZES, ["tanh", "identity"])
    for bad in ([[0.1, -1.0], [0, 0]], [[np.nan, 0], [0, 0]], [[0, np.inf], [0, 0]]):
        with pytest.raises(ValueError, match="penalties: expected finite numbers >= 0"):
            record(layout, alphas, n_params, penalties=bad)
    with pytest.raises(ValueError, match=r"penalties: expected shape \(2, 2\)"):
        record(layout, alphas, n_params, penalties=[0.1, 0.2])
    net = fd.MLP(SIZES, "tanh", dtype=np.float64, random_state=0)
    with pytest.raises(ValueError, match="penalties: expected finite numbers"):
        net.penalties = [[0, -0.1], [0, 0]]
    layers, params, x, labels = _network(rng, np.float64)
    hyper = make_hyper("sgd", penalty_scale=np.nan)
    with pytest.raises(ValueError, match=r"hyper\[H_PENALTY_SCALE\]: expected a finite number >= 0"):
        _backends.load("numpy").mlp_train_step(x, labels, params.copy(), np.zeros_like(params),
                                               np.zeros((1, params.size)), layers, abi.LOSS_SPARSE_XENT, hyper,
                                               None, None)
    sparse = pytest.importorskip("scipy.sparse")
    csr = net.as_inputs(sparse.random(3, 6, density=0.5, random_state=0, format="csr"))
    net.penalties = [[0, 0.1], [0, 0]]
    with pytest.raises(ValueError, match=r"layers\[0\]: the sparse first layer takes no kernel penalty"):
        _backends.load("numpy").sparse_train_step(csr.indptr, csr.indices, csr.data, np.zeros(3, np.int64),
                                                  net.params, np.zeros_like(net.params), np.zeros((1, net.n_params)),
                                                  net.layers, abi.LOSS_SPARSE_XENT, make_hyper("sgd"), None, None)


def test_penalties_survive_pickling_and_a_change_of_alphas():
    import pickle
    net = fd.MLP([4, 5, 2], ["leaky_relu", "identity"], dtype=np.float64, random_state=0, penalties=[[0.1, 0.2], [0, 0.3]])
    net.alphas = [0.2, 0.0]
    copy = pickle.loads(pickle.dumps(net))
    np.testing.assert_array_equal(copy.penalties, [[0.1, 0.2], [0, 0.3]])
    np.testing.assert_array_equal(copy.alphas, [0.2, 0.0])
