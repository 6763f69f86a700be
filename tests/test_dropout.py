"""Dropout inside the fused training step (issue #20): the mask generator, every engine against
the oracle (the same kept set bit for bit, the step within float tolerance), the oracle against
finite differences, reproducibility, rate 0, inference, and the Keras front."""
import numpy as np
import pytest

import fusedense as fd
from fusedense import _backends, abi, reference
from fusedense.gate import checked_record
from fusedense.keras_io import _keras_layer_config
from fusedense.keras_io import _model as keras_model_from_configs

MASK64 = 2**64 - 1


def python_keep(seed, step, layer, n_rows, n_cols, rate):
    """The generator's definition (reference.py) in Python integers: independent of NumPy's uint64."""
    def mix64(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)
    golden = 0x9E3779B97F4A7C15
    key = mix64(mix64(mix64(seed ^ golden) ^ step) ^ layer)
    threshold = int(rate * 2**16)
    keep = [(mix64((key + (i // 4 + 1) * golden) & MASK64) >> (16 * (i % 4))) & 0xFFFF >= threshold
            for i in range(n_rows * n_cols)]
    return np.array(keep).reshape(n_rows, n_cols)


@pytest.mark.parametrize("seed, step, layer, rate", [(0, 1, 0, 0.5), (2**63 - 1, 2**53, 3, 0.1),
                                                     (12345, 7, 1, 0.9), (1, 2, 0, 1e-4)])
def test_the_oracles_mask_is_the_generators_definition(seed, step, layer, rate):
    np.testing.assert_array_equal(reference.dropout_keep(seed, step, layer, 9, 13, rate),
                                  python_keep(seed, step, layer, 9, 13, rate))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_the_mask_keeps_one_minus_rate_of_the_elements(rate):
    keep = reference.dropout_keep(3, 1, 0, 400, 500, rate)
    n = keep.size  # binomial: 5 standard deviations
    assert abs(keep.mean() - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / n)
    # rows and columns are not correlated with the mask: every row keeps about as many
    assert abs(keep.mean(axis=1) - (1 - rate)).max() < 6 * np.sqrt(rate * (1 - rate) / 500)


def _hyper(step, optimizer="sgd"):
    hyper = fd.optimizers.get(optimizer).hyper(0)
    hyper[abi.H_STEP] = step
    return hyper


def _identity_net(width, dtype, rates, seeds):
    """Two identity layers with W = I, b = 0: the outputs are the masked input, scaled."""
    net = fd.MLP([width, width, width], "identity", dtype=dtype, dropout=rates, dropout_seeds=seeds, backend="numpy")
    for W, b in net.weights:
        W[...] = np.eye(width)
        b[...] = 0
    return net


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("width", [16, 400], ids=["micro-kernels", "blas"])  # 400² float64 > 1 MiB: the BLAS path
@pytest.mark.parametrize("layer", [0, 1])
def test_every_engine_keeps_the_oracles_mask_bit_for_bit(backend, dtype, layer, width, threads):
    rate, seed, step, B = 0.3, 42, 5, 70
    rates = [rate if l == layer else 0.0 for l in range(2)]
    net = _identity_net(width, dtype, rates, [seed, seed])
    x = np.random.default_rng(0).uniform(1, 2, (B, width)).astype(dtype)
    outputs = np.empty_like(x)
    engine = _backends.load(backend)
    with _threads(threads):
        engine.mlp_train_step(x, x.copy(), net.params.copy(), np.empty_like(net.params),
                              np.zeros((1, net.n_params), dtype), net.layers, abi.LOSS_MSE, _hyper(step), outputs,
                              None)
    keep = reference.dropout_keep(seed, step, layer, B, width, rate)
    np.testing.assert_array_equal(outputs != 0, keep)
    np.testing.assert_array_equal(outputs, x * keep * np.array(1 / (1 - rate), dtype))


class _threads:
    def __init__(self, n):
        self.n = n

    def __enter__(self):
        self.before = fd.get_num_threads()
        fd.set_num_threads(self.n)

    def __exit__(self, *exc):
        fd.set_num_threads(self.before)


TOLERANCE = {np.float32: dict(rtol=2e-4, atol=2e-6), np.float64: dict(rtol=1e-10, atol=1e-13)}


@pytest.mark.parametrize("loss_id", [abi.LOSS_SPARSE_XENT, abi.LOSS_MSE])
def test_every_engines_training_step_with_dropout_matches_the_oracle(backend, dtype, loss_id):
    rng = np.random.default_rng(1)
    net = fd.MLP([12, 20, 16, 5], ["tanh", "relu", "identity"], dtype=dtype, random_state=0,
                 dropout=[0.2, 0.5, 0.3], dropout_seeds=[1, 2, 3])
    x = rng.standard_normal((33, 12)).astype(dtype)
    targets = rng.integers(0, 5, 33) if loss_id == abi.LOSS_SPARSE_XENT else rng.standard_normal((33, 5)).astype(dtype)
    results = {}
    for name in ("numpy", backend):
        params, grads = net.params.copy(), np.zeros_like(net.params)
        state, hyper, outputs = np.zeros((2, net.n_params), dtype), _hyper(4, "adam"), np.empty((33, 5), dtype)
        loss = _backends.load(name).mlp_train_step(x, targets, params, grads, state, net.layers, loss_id, hyper,
                                                    outputs, None)
        results[name] = (loss, grads, params, outputs)
    want, got = results["numpy"], results[backend]
    assert got[0] == pytest.approx(want[0], rel=TOLERANCE[dtype]["rtol"])
    for a, b in zip(got[1:], want[1:]):
        np.testing.assert_allclose(a, b, **TOLERANCE[dtype])
    # the masks were applied: the same step without dropout gives another loss
    plain = reference.mlp_loss_and_grad(x, targets, net.params, net.layers, loss_id)[0]
    assert abs(plain - want[0]) > 1e-3


def test_every_engines_embedding_step_with_dropout_matches_the_oracle(backend, dtype):
    rng = np.random.default_rng(2)
    net = fd.EmbeddingMLP(11, 4, 3, [24, 11], "tanh", dtype=dtype, random_state=0, dropout=[0.25, 0.4],
                          dropout_seeds=[5, 6])
    tokens, labels = rng.integers(0, 11, (40, 3)), rng.integers(0, 11, 40)
    results = {}
    for name in ("numpy", backend):
        params, grads = net.params.copy(), np.zeros_like(net.params)
        state, outputs = np.zeros((2, net.n_params), dtype), np.empty((40, 11), dtype)
        loss = _backends.load(name).embedding_train_step(tokens, labels, params, grads, state, net.layers,
                                                          _hyper(9, "adam"), 11, outputs)
        results[name] = (loss, grads, params, outputs)
    want, got = results["numpy"], results[backend]
    assert got[0] == pytest.approx(want[0], rel=TOLERANCE[dtype]["rtol"])
    for a, b in zip(got[1:], want[1:]):
        np.testing.assert_allclose(a, b, **TOLERANCE[dtype])


def _finite_differences(f, a, eps=1e-6):
    grad = np.zeros_like(a)
    for i in range(a.size):
        saved = a.flat[i]
        a.flat[i] = saved + eps
        up = f()
        a.flat[i] = saved - eps
        down = f()
        a.flat[i] = saved
        grad.flat[i] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize("loss_id", [abi.LOSS_SPARSE_XENT, abi.LOSS_MSE])
def test_the_oracles_dropout_gradient_matches_finite_differences_with_the_mask_fixed(loss_id):
    rng = np.random.default_rng(3)
    net = fd.MLP([5, 7, 6, 3], ["tanh", "sigmoid", "identity"], dtype=np.float64, random_state=0,
                 dropout=[0.3, 0.5, 0.4], dropout_seeds=[11, 12, 13])
    x = rng.standard_normal((8, 5))
    targets = rng.integers(0, 3, 8) if loss_id == abi.LOSS_SPARSE_XENT else rng.standard_normal((8, 3))
    step = 3  # the mask is a function of the step: fixed while the parameters move

    def loss():
        return reference.mlp_loss_and_grad(x, targets, net.params, net.layers, loss_id, step=step)[0]
    _, (grads, dx) = reference.mlp_loss_and_grad(x, targets, net.params, net.layers, loss_id, need_dx=True,
                                                 step=step)
    np.testing.assert_allclose(grads, _finite_differences(loss, net.params), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dx, _finite_differences(loss, x), rtol=1e-6, atol=1e-9)
    assert (dx == 0).any()  # the first layer's mask reaches the input gradient


def _model(backend, rate=0.5, seed=7, with_dropout=True):
    layers = [fd.Input(shape=(10,)), fd.layers.Dense(16, activation="relu")]
    layers += [fd.layers.Dropout(rate, seed=seed)] if with_dropout else []
    layers += [fd.layers.Dense(4, activation="softmax")]
    model = fd.Sequential(layers, seed=0, backend=backend)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def _data(n=96):
    rng = np.random.default_rng(4)
    return rng.standard_normal((n, 10)).astype(np.float32), rng.integers(0, 4, n)


def test_fit_with_dropout_is_reproducible_by_seed_and_the_mask_changes_every_step(backend):
    x, y = _data()
    runs = {}
    for seed in (7, 7, 8):
        model = _model(backend, seed=seed)
        model.fit(x, y, epochs=2, batch_size=32, verbose=0, shuffle=False)
        runs.setdefault(seed, []).append(np.concatenate([w.ravel() for w in model.get_weights()]))
    np.testing.assert_array_equal(runs[7][0], runs[7][1])
    assert not np.array_equal(runs[7][0], runs[8][0])
    net = _model(backend).network  # the steps' own masks: new at every step, the same for the same step
    masks = [reference.dropout_keep(int(net.dropout_seeds[1]), step, 1, 32, 16, 0.5) for step in (1, 2, 1)]
    assert not np.array_equal(masks[0], masks[1]) and np.array_equal(masks[0], masks[2])


def test_rate_zero_trains_exactly_as_without_dropout(backend):
    x, y = _data()
    weights = []
    for model in (_model(backend, rate=0.0), _model(backend, with_dropout=False)):
        model.fit(x, y, epochs=2, batch_size=16, verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_inference_is_the_identity(backend):
    x, y = _data()
    model, plain = _model(backend), _model(backend, with_dropout=False)
    model.fit(x, y, epochs=1, verbose=0)
    plain.set_weights(model.get_weights())
    np.testing.assert_array_equal(model.predict(x), plain.predict(x))
    assert model.evaluate(x, y, verbose=0) == plain.evaluate(x, y, verbose=0)


def test_keras_dropout_drops_the_activations_feeding_the_next_dense_layer(backend):
    """One fused step against Keras's formula written out by hand: h = relu(x W0 + b0), the
    dropped h̃ = h · keep / (1 − rate) feeds Dense 2, the loss is the mean cross-entropy."""
    x, y = _data(32)
    model = _model(backend)
    W0, b0, W1, b1 = (w.astype(np.float64) for w in model.get_weights())
    assert model.network.dropout.tolist() == [0.0, 0.5] and model.network.dropout_seeds.tolist() == [0, 7]
    keep = python_keep(7, 1, 1, 32, 16, 0.5)
    h = np.maximum(x @ W0 + b0, 0) * keep / 0.5
    logits = h @ W1 + b1
    logp = logits - logits.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    history = model.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False)
    assert history.history["loss"][0] == pytest.approx(-logp[np.arange(32), y].mean(), rel=1e-5)


def test_dropout_after_the_embedding_drops_the_first_layers_input(backend):
    rng = np.random.default_rng(5)
    tokens, labels = rng.integers(0, 9, (64, 3)), rng.integers(0, 9, 64)
    model = fd.Sequential([fd.layers.Embedding(9, 4, input_length=3), fd.layers.Flatten(), fd.layers.Dropout(0.2),
                           fd.layers.Dense(12, activation="tanh"), fd.layers.Dropout(0.3, seed=1), fd.layers.Dense(9)],
                          seed=0, backend=backend)
    model.compile(optimizer="adam", loss=fd.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(tokens, labels, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.network.dropout.tolist() == pytest.approx([0.2, 0.3]) and model.network.dropout_seeds[1] == 1


def test_consecutive_dropouts_become_one_rate():
    model = fd.Sequential([fd.Input(shape=(3,)), fd.layers.Dropout(0.5, seed=2), fd.layers.Dropout(0.5),
                           fd.layers.Dense(2)])
    model.build()
    assert model.network.dropout.tolist() == [0.75] and model.network.dropout_seeds.tolist() == [2]


def test_what_dropout_cannot_train_is_refused_with_a_clear_error():
    x, y = _data()
    last = fd.Sequential([fd.Input(shape=(10,)), fd.layers.Dense(4), fd.layers.Dropout(0.5)])
    last.compile(loss=fd.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(NotImplementedError, match="after the last Dense layer"):
        last.fit(x, y, verbose=0)
    on_outputs = fd.Sequential([fd.Input(shape=(10,)), fd.layers.Dense(8), fd.layers.Dropout(0.5),
                                fd.layers.Dense(4, activation="softmax")])
    with pytest.warns(UserWarning, match="does not represent logits"):  # Keras's words: the outputs' loss
        on_outputs.compile(loss=fd.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(NotImplementedError, match="loss on the outputs"):
        on_outputs.fit(x, y, verbose=0)
    for rate in (1.0, -0.1, float("nan"), 2):
        with pytest.raises(ValueError, match="rate"):
            fd.layers.Dropout(rate)


def test_save_load_pickle_and_keras_configs_keep_the_rate_and_seed(tmp_path):
    import pickle

    x, y = _data()
    model = _model("numpy", rate=0.25, seed=None)  # a seed drawn at build (from the model's seed)
    model.fit(x, y, epochs=1, verbose=0)
    seeds = model.network.dropout_seeds.tolist()
    model.save(tmp_path / "m.npz")
    loaded = fd.load_model(tmp_path / "m.npz")
    assert loaded.network.dropout.tolist() == [0.0, 0.25] and loaded.network.dropout_seeds.tolist() == seeds
    copy = pickle.loads(pickle.dumps(model.network))
    assert copy.dropout.tolist() == [0.0, 0.25] and copy.dropout_seeds.tolist() == seeds
    net = fd.MLP([3, 4, 2], dropout=[0.0, 0.5], dropout_seeds=[0, 9])
    net.save(tmp_path / "net.npz")
    assert fd.load_model(tmp_path / "net.npz").dropout_seeds.tolist() == [0, 9]
    # Keras's config both ways (fusedense.keras_io): the rate and the seed
    dropout = next(layer for layer in model.layers if isinstance(layer, fd.layers.Dropout))
    assert _keras_layer_config(dropout, model)[1]["rate"] == 0.25
    imported = _model_from_keras_configs()
    assert imported.network.dropout.tolist() == [0.0, 0.3] and imported.network.dropout_seeds.tolist() == [0, 5]


def _model_from_keras_configs():
    return keras_model_from_configs("m", [("Dense", {"name": "d0", "units": 6, "activation": "relu"}),
                                          ("Dropout", {"name": "drop", "rate": 0.3, "seed": 5}),
                                          ("Dense", {"name": "d1", "units": 2, "activation": "linear"})],
                                    [None, 4], "float32", None)


def test_a_keras_file_round_trip_keeps_the_rate_and_seed(tmp_path):
    pytest.importorskip("h5py")  # the keras extra (as tests/test_keras_io.py)
    model = fd.Sequential([fd.Input(shape=(6,)), fd.layers.Dense(8, activation="relu"), fd.layers.Dropout(0.3, seed=5),
                           fd.layers.Dense(3)], seed=0)
    model.build()
    model.save(tmp_path / "m.keras")
    loaded = fd.load_keras(tmp_path / "m.keras")
    assert loaded.network.dropout.tolist() == [0.0, 0.3] and loaded.network.dropout_seeds.tolist() == [0, 5]


@pytest.mark.parametrize("sizes", [[12, 20, 16, 5], [40, 600, 3]], ids=["micro", "blas"])
def test_every_engines_step_with_dropout_and_kernel_penalties_matches_the_oracle(backend, dtype, sizes):
    """Both in one record: the penalty on W, the mask on each layer's input, in one fused step."""
    rng = np.random.default_rng(6)
    n_layers = len(sizes) - 1
    net = fd.MLP(sizes, "tanh", dtype=dtype, random_state=0, dropout=[0.2, 0.5, 0.3][:n_layers],
                 dropout_seeds=[1, 2, 3][:n_layers], penalties=[(0.01, 0.02), (0.0, 0.05), (0.03, 0.0)][:n_layers])
    x = rng.standard_normal((33, sizes[0])).astype(dtype)
    targets = rng.integers(0, sizes[-1], 33)
    hyper = _hyper(4, "adam")
    hyper[abi.H_PENALTY_SCALE] = 0.5
    results = {}
    for name in ("numpy", backend):
        params, grads = net.params.copy(), np.zeros_like(net.params)
        state, outputs = np.zeros((2, net.n_params), dtype), np.empty((33, sizes[-1]), dtype)
        loss = _backends.load(name).mlp_train_step(x, targets, params, grads, state, net.layers,
                                                    abi.LOSS_SPARSE_XENT, hyper.copy(), outputs, None)
        results[name] = (loss, grads, params, outputs)
    want, got = results["numpy"], results[backend]
    assert got[0] == pytest.approx(want[0], rel=TOLERANCE[dtype]["rtol"])
    for a, b in zip(got[1:], want[1:]):
        np.testing.assert_allclose(a, b, **TOLERANCE[dtype])
    # the oracle composes the two independently: the dropout step's loss and gradient plus the
    # penalty's formula, 0.5·(l1·Σ|W| + l2·ΣW²) and 0.5·(l1·sign(W) + 2·l2·W) on W only
    unpenalised = fd.MLP(sizes, "tanh", dtype=dtype, dropout=net.dropout, dropout_seeds=net.dropout_seeds)
    loss, grads = reference.mlp_loss_and_grad(x, targets, net.params, unpenalised.layers, abi.LOSS_SPARSE_XENT,
                                              step=4)
    penalty_grads = np.zeros_like(grads)
    for (W, _), (dW, _), (l1, l2) in zip(net.weights, fd.layout.layer_views(penalty_grads, net.layers),
                                         net.penalties):
        loss += 0.5 * (l1 * np.abs(W.astype(np.float64)).sum() + l2 * np.square(W.astype(np.float64)).sum())
        dW[...] = 0.5 * (l1 * np.sign(W) + 2 * l2 * W)
    assert want[0] == pytest.approx(loss, rel=TOLERANCE[dtype]["rtol"])
    np.testing.assert_allclose(want[1], grads + penalty_grads, **TOLERANCE[dtype])


def test_sequential_fit_with_dropout_and_a_kernel_regularizer_matches_the_oracle(backend):
    """Keras's Dropout and kernel_regularizer in one model train on every engine as on the oracle
    (both reach the fused step through the layer record)."""
    x, y = _data()
    weights, losses = {}, {}
    for name in ("numpy", backend):
        model = fd.Sequential([fd.Input(shape=(10,)),
                               fd.layers.Dense(16, activation="relu", kernel_regularizer=fd.regularizers.l1_l2(l1=0.01, l2=0.02)),
                               fd.layers.Dropout(0.5, seed=7),
                               fd.layers.Dense(4, kernel_regularizer=fd.regularizers.l2(0.05))], seed=0, backend=name)
        model.compile(optimizer="adam", loss=fd.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(x, y, epochs=2, batch_size=32, verbose=0, shuffle=False)
        weights[name], losses[name] = model.get_weights(), history.history["loss"]
    assert losses[backend] == pytest.approx(losses["numpy"], rel=1e-4)
    for a, b in zip(weights[backend], weights["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # both acted: without the regularizers, or without the Dropout, the first loss differs
    plain = fd.Sequential([fd.Input(shape=(10,)), fd.layers.Dense(16, activation="relu"),
                           fd.layers.Dropout(0.5, seed=7), fd.layers.Dense(4)], seed=0, backend="numpy")
    plain.compile(optimizer="adam", loss=fd.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert abs(plain.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False).history["loss"][0]
               - losses["numpy"][0]) > 1e-3
